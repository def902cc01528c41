"""EDM training (Karras et al. 2022) as a training ``Task`` for the shared loop, any DiT-like backbone.

The backbone is ``config.model_family`` + ``config.model`` from the model registry and plays
EDM's raw network ``F``: ``module(x_in [N, H, W, C], t [N], y [N], train=...)`` with
``learn_sigma=False`` (C output channels). Its timestep input receives ``c_noise(sigma)``
(``jaxlab.diffusion.edm``). The loss is ``EDM.loss``: log-normal sigma, ``lambda(sigma)``
weighting, mean over pixels and batch.

Conditioning: with ``config.edm.use_labels`` the dataset's labels go to the backbone's label
input; without (EDM's unconditional benchmarks, the QAC baseline) every example gets label 0 of
a ``num_classes = 1`` backbone, i.e. a constant learned embedding.

Batches: ``{"image": [B, H, W, C] float32 in [-1, 1], "label": [B] int32}``.
Config section ``config.edm``: the ``EDM`` fields plus ``use_labels``, the sampler (``solver``,
``nfe``, ``num_samples``) and its few-NFE switches (``schedule``, ``final_denoise``, ``afs``: see
``jaxlab.diffusion.edm.SamplingOptions``; the grid's ``sigma_min`` / ``sigma_max`` / ``rho`` are EDM
fields), used by the progress grids and by ``jaxlab.diffusion.edm_sampling.RunSampler``.
"""

import jax
import jax.numpy as jnp

from jaxlab.config_utils import to_dict
from jaxlab.diffusion.edm import EDM, SamplingOptions, make_edm_sampler, steps_for_nfe
from jaxlab.diffusion.task import check_dataset_labels
from jaxlab.models.registry import get_family

EDM_FIELDS = ("sigma_data", "sigma_min", "sigma_max", "rho", "p_mean", "p_std", "c_noise_scale")
TASK_FIELDS = ("use_labels", "solver", "nfe", "num_samples", "schedule", "final_denoise", "afs")


def parse_edm_section(section: dict) -> tuple[EDM, dict]:
    """``config.edm`` -> ``(EDM, task fields)``; unknown keys are an error naming the allowed ones."""
    unknown = sorted(set(section) - set(EDM_FIELDS) - set(TASK_FIELDS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config.edm; allowed keys: {sorted(EDM_FIELDS + TASK_FIELDS)}")
    edm = EDM(**{k: float(section[k]) for k in EDM_FIELDS if k in section})
    return edm, {k: section[k] for k in TASK_FIELDS if k in section}


def sampling_options(schedule: str = "polynomial", final_denoise: bool = True, afs: bool = False) -> SamplingOptions:
    """``config.edm``'s few-NFE switches as ``SamplingOptions`` (the grid values stay in the EDM)."""
    return SamplingOptions(schedule=schedule, final_denoise=final_denoise, afs=afs)


class EDMTask:
    """``init_params`` / ``loss_fn`` for EDM training, plus an ODE sampler for progress grids."""

    def __init__(self, family: str, model_config, edm: EDM, *, use_labels: bool = False, solver: str = "heun",
                 nfe: int = 35, num_samples: int = 16, schedule: str = "polynomial", final_denoise: bool = True,
                 afs: bool = False):
        if getattr(model_config, "learn_sigma", False):
            raise ValueError(
                "EDM needs a backbone with one output per input channel: set config.model.learn_sigma=False"
            )
        if not use_labels and model_config.num_classes != 1:
            raise ValueError(f"an unconditional EDM model (config.edm.use_labels=False) takes label 0 of a 1-class "
                             f"backbone: set config.model.num_classes=1, got {model_config.num_classes}")
        self.sampling = sampling_options(schedule, final_denoise, afs)
        steps_for_nfe(solver, nfe, self.sampling)  # a bad solver or NFE budget fails here, before training
        if num_samples < 1:
            raise ValueError(f"config.edm.num_samples={num_samples} must be >= 1")
        self.family, self.model_config, self.edm = family, model_config, edm
        self.use_labels, self.solver, self.nfe, self.num_samples = use_labels, solver, nfe, num_samples
        self.module = get_family(family).module(model_config)

    @classmethod
    def from_config(cls, config) -> "EDMTask":
        family = get_family(config.model_family)
        model_config = family.config.from_dict(to_dict(config.model))
        edm, task_fields = parse_edm_section(to_dict(config.edm))
        return cls(config.model_family, model_config, edm, **task_fields)

    def _labels(self, batch) -> jax.Array:
        y = batch["label"]
        return y if self.use_labels else jnp.zeros_like(y)

    # ---------------------------------------------------------------- Task protocol

    def init_params(self, rng: jax.Array, batch) -> dict:
        x, y = batch["image"], self._labels(batch)
        t = jnp.zeros(y.shape, jnp.float32)
        param_rng, dropout_rng = jax.random.split(rng)
        variables = self.module.init({"params": param_rng, "dropout": dropout_rng}, x, t, y, train=False)
        return variables["params"]

    def loss_fn(self, params, batch, rng: jax.Array):
        x, y = batch["image"], self._labels(batch)
        loss_rng, dropout_rng = jax.random.split(rng)

        def raw_fn(x_in, t, y):
            return self.module.apply({"params": params}, x_in, t, y, train=True, rngs={"dropout": dropout_rng})

        per_example = self.edm.loss(raw_fn, x, loss_rng, y)
        return per_example.mean(), {}

    # ---------------------------------------------------------------- optional hooks

    def model_spec(self):
        return self.family, self.model_config

    def check_batch(self, batch) -> None:
        if self.use_labels:
            check_dataset_labels(batch["label"], self.model_config.num_classes)

    @property
    def grid_columns(self) -> int:
        return 10 if self.use_labels and self.num_samples % 10 == 0 else 0

    def sample(self, params, rng: jax.Array) -> jax.Array:
        """``num_samples`` images ``[N, H, W, C]`` in [-1, 1] from ``solver`` at ``nfe`` (labels cycle 0..K-1)."""
        cfg = self.model_config
        sampler = make_edm_sampler(
            self.edm, lambda p, x, t, y: self.module.apply({"params": p}, x, t, y), solver=self.solver, nfe=self.nfe,
            options=self.sampling,
        )
        z = jax.random.normal(rng, (self.num_samples, cfg.input_size, cfg.input_size, cfg.in_channels), jnp.float32)
        n_labels = cfg.num_classes if self.use_labels else 1
        y = jnp.arange(self.num_samples, dtype=jnp.int32) % n_labels
        return jnp.clip(sampler(params, z, y), -1.0, 1.0)
