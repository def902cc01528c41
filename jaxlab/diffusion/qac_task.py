"""QAC joint training (encoder + denoiser) as a training ``Task`` for the shared loop.

The loss is EDM's (``jaxlab.diffusion.edm``) on the denoiser conditioned on the quantised code of
the clean image: ``lambda(sigma) |D(x_0 + sigma n, sigma, Q(E(x_0))) - x_0|^2``; the gradient
reaches the encoder through the straight-through quantiser. No other loss term (QAC's abstract:
no extra regularisation). See ``jaxlab.diffusion.qac`` for the choices.

Config: ``config.edm`` as for ``EDMTask`` (``use_labels`` must stay False: QAC's benchmarks are
unconditional), plus ``config.qac``: ``quantizer``, ``code_tokens``, ``bits``, ``fsq_levels``,
``encoder_width``, ``injection``, and the sampling prior's ``prior``, ``prior_steps``,
``prior_hidden`` (``jaxlab.diffusion.qac_prior``).

Progress grids (the loop's ``sample`` hook) have no dataset to encode, so they use codes drawn
uniformly from all ``vocab^L`` codes: a view of training progress, not QAC's sampling recipe
(``jaxlab.diffusion.edm_sampling`` draws codes from a prior fitted to the training codes).

The task has no ``model_spec``: a QAC run has two towers, so no ``model.json`` is written;
``jaxlab.diffusion.edm_sampling.load_run(config, workdir)`` rebuilds it from the config.
"""

import jax
import jax.numpy as jnp

from jaxlab.config_utils import to_dict
from jaxlab.diffusion.edm import EDM, make_edm_sampler, steps_for_nfe
from jaxlab.diffusion.edm_task import parse_edm_section, sampling_options
from jaxlab.diffusion.qac import QACModel, code_spec_from_section
from jaxlab.models.registry import get_family

QAC_FIELDS = ("quantizer", "code_tokens", "bits", "fsq_levels", "encoder_width", "injection", "prior", "prior_steps",
              "prior_hidden")
PRIORS = ("empirical", "ar")


def check_qac_section(section: dict) -> None:
    unknown = sorted(set(section) - set(QAC_FIELDS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config.qac; allowed keys: {sorted(QAC_FIELDS)}")
    prior = section.get("prior", "empirical")
    if prior not in PRIORS:
        raise ValueError(f"config.qac.prior={prior!r} is unknown; allowed values: {list(PRIORS)}")


class QACTask:
    """``init_params`` / ``loss_fn`` for joint encoder + denoiser training, and a progress-grid sampler."""

    def __init__(self, family: str, model_config, edm: EDM, qac: dict, *, solver: str = "heun", nfe: int = 35,
                 num_samples: int = 16, use_labels: bool = False, schedule: str = "polynomial",
                 final_denoise: bool = True, afs: bool = False):
        if use_labels:
            raise ValueError("QAC is built for unconditional generation here: set config.edm.use_labels=False")
        if getattr(model_config, "learn_sigma", False):
            raise ValueError("EDM needs a backbone with one output per input channel: set config.model.learn_sigma=False")
        if model_config.num_classes != 1:
            raise ValueError(f"QAC's backbone takes label 0 of a 1-class backbone: set config.model.num_classes=1, "
                             f"got {model_config.num_classes}")
        check_qac_section(qac)
        self.sampling = sampling_options(schedule, final_denoise, afs)
        steps_for_nfe(solver, nfe, self.sampling)
        if num_samples < 1:
            raise ValueError(f"config.edm.num_samples={num_samples} must be >= 1")
        self.family, self.model_config, self.edm, self.qac = family, model_config, edm, dict(qac)
        self.solver, self.nfe, self.num_samples = solver, nfe, num_samples
        self.spec = code_spec_from_section(qac)
        self.model = QACModel.build(family, model_config, self.spec, encoder_width=int(qac.get("encoder_width", 16)),
                                    injection=qac.get("injection", "embedding"))
        self._samplers = {}

    @classmethod
    def from_config(cls, config) -> "QACTask":
        family = get_family(config.model_family)
        model_config = family.config.from_dict(to_dict(config.model))
        edm, task_fields = parse_edm_section(to_dict(config.edm))
        return cls(config.model_family, model_config, edm, to_dict(config.qac), **task_fields)

    # ---------------------------------------------------------------- Task protocol

    def init_params(self, rng: jax.Array, batch) -> dict:
        y = jnp.zeros_like(batch["label"])
        return self.model.init(rng, batch["image"], y)

    def loss_fn(self, params, batch, rng: jax.Array):
        x0 = batch["image"]
        y = jnp.zeros_like(batch["label"])
        loss_rng, dropout_rng = jax.random.split(rng)
        code = self.model.encode(params, x0)

        def raw_fn(x_in, t, yy):
            return self.model.raw(params, x_in, t, yy, code, train=True, rngs={"dropout": dropout_rng})

        per_example = self.edm.loss(raw_fn, x0, loss_rng, y)
        return per_example.mean(), {"code_distinct": distinct_fraction(self.spec.indices(code))}

    # ---------------------------------------------------------------- optional hooks

    grid_columns = 0

    def sample_with_codes(self, params, z: jax.Array, code: jax.Array, *, solver: str | None = None,
                          nfe: int | None = None) -> jax.Array:
        """``z [N, H, W, C]`` standard normal noise and ``code [N, L, d]`` -> samples in the data range."""
        self.spec.check_code(code)
        key = (solver or self.solver, nfe or self.nfe)
        if key not in self._samplers:  # one jit per solver configuration
            self._samplers[key] = make_edm_sampler(self.edm, self.raw_apply, solver=key[0], nfe=key[1],
                                                   options=self.sampling)
        sampler = self._samplers[key]
        return sampler(params, z, jnp.zeros((z.shape[0],), jnp.int32), code)

    def raw_apply(self, params, x_in, t, y, code):
        """``make_edm_sampler``'s ``apply_fn`` with the code as its extra argument."""
        return self.model.raw(params, x_in, t, y, code)

    def sample(self, params, rng: jax.Array) -> jax.Array:
        """Progress grid: ``num_samples`` images, codes uniform over all codes (see the module docstring)."""
        cfg = self.model_config
        noise_rng, code_rng = jax.random.split(rng)
        z = jax.random.normal(noise_rng, (self.num_samples, cfg.input_size, cfg.input_size, cfg.in_channels))
        idx = jax.random.randint(code_rng, (self.num_samples, self.spec.tokens), 0, self.spec.vocab_size)
        return jnp.clip(self.sample_with_codes(params, z, self.spec.from_indices(idx)), -1.0, 1.0)


def distinct_fraction(indices_NL: jax.Array) -> jax.Array:
    """Fraction of distinct rows among ``[N, L]`` code indices (1 = every code different), traceable."""
    same = jnp.all(indices_NL[:, None, :] == indices_NL[None, :, :], axis=-1)  # [N, N]
    earlier = jnp.tril(same, k=-1)
    first = ~jnp.any(earlier, axis=1)
    return jnp.mean(first.astype(jnp.float32))
