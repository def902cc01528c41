"""Sampling from EDM and QAC training runs (``configs/qac.py``): the one path ``launch.sample``,
``benchmarks/qac_comparison.py`` and the tests use.

- ``load_run(config, workdir)``: the run's Task (``EDMTask`` or ``QACTask``, from ``config``) and
  the EMA params of the workdir's latest checkpoint; a QAC config on a checkpoint without an
  encoder is a clear error.
- ``training_codes``: the code indices ``[M, L]`` of the training images under a QAC run's encoder
  (what the code priors are fitted to).
- ``RunSampler``: ``sample(z, key)`` for fixed noises ``z``: the baseline ignores ``key``; QAC
  draws one code per noise from its prior with ``key``, then solves the ODE with those codes.
  ``options`` (``jaxlab.diffusion.edm.SamplingOptions``) holds the few-NFE switches: the grid's
  ``schedule`` / ``sigma_min`` / ``sigma_max`` / ``rho``, EDM's ``final_denoise`` last step, and
  ``afs`` (analytical first step); None (default) takes the task's (``config.edm``: EDM's sampler
  unless the config sets them).
- ``sdedit``: SDEdit-style editing (noise an image to ``sigma_start``, solve back), QAC with the
  encoded code of a guide image.

Digits runs read their training images directly (``jaxlab.data.digits``); other sources need
the images passed in (``training_codes(task, params, images)``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlab.diffusion.edm import SamplingOptions, make_edm_sampler
from jaxlab.diffusion.edm_task import EDMTask
from jaxlab.diffusion.qac import check_params
from jaxlab.diffusion.qac_prior import fit_prior
from jaxlab.diffusion.qac_task import QACTask
from jaxlab.train.task import task_from_config


def load_run(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
    """``(task, ema_params)`` of an EDM/QAC training workdir, the task built from ``config``."""
    from jaxlab.train.checkpoint import restore_params_subtree

    if "edm" not in config:
        raise ValueError("not an EDM/QAC config (no config.edm): use configs/qac.py:<variant>")
    task = task_from_config(config)
    if not isinstance(task, (EDMTask, QACTask)):
        raise ValueError(f"config.task={config.task!r} is not an EDM or QAC task")
    _, params = restore_params_subtree(f"{workdir}/checkpoints", "ema_params", step=step)
    if isinstance(task, QACTask):
        check_params(params)
    elif isinstance(params, dict) and "encoder" in params:
        raise ValueError(f"{workdir} holds a QAC run (its params have an encoder); sample it with its own config "
                         f"(configs/qac.py:digits-qac)")
    return task, params


def training_images(config: ml_collections.ConfigDict) -> np.ndarray:
    """The training images ``[M, H, W, C]`` in [-1, 1] for ``config.data.source == "digits"``."""
    from jaxlab.data.digits import load_digits

    if config.data.source != "digits":
        raise ValueError(f"config.data.source={config.data.source!r}: pass the training images to training_codes "
                         f"yourself (only the embedded digits are read here)")
    return load_digits(int(config.data.image_size))[0]


def training_codes(task: QACTask, params, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``[M, L]`` int32 code indices of ``images [M, H, W, C]`` under the run's encoder."""
    encode = jax.jit(lambda p, x: task.spec.indices(task.model.encode(p, x)))
    chunks = [np.asarray(encode(params, jnp.asarray(images[i:i + batch_size])))
              for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks)


@dataclasses.dataclass
class RunSampler:
    """Samples of one run at one (solver, NFE); ``prior`` is None for the baseline."""

    task: EDMTask | QACTask
    params: dict
    solver: str
    nfe: int
    prior: object = None
    options: SamplingOptions | None = None

    def __post_init__(self):
        if self.options is None:
            self.options = self.task.sampling
        if isinstance(self.task, QACTask):
            if self.prior is None:
                raise ValueError("a QAC run samples with codes from a prior: pass prior=fit_prior(...)")
            apply_fn = self.task.raw_apply
        else:
            module = self.task.module

            def apply_fn(p, x, t, y):
                return module.apply({"params": p}, x, t, y)

        self._fn = make_edm_sampler(self.task.edm, apply_fn, solver=self.solver, nfe=self.nfe, options=self.options)

    def codes(self, key: jax.Array, n: int) -> jax.Array | None:
        if self.prior is None:
            return None
        return self.task.spec.from_indices(self.prior.sample(key, n))

    def sample(self, z: jax.Array, key: jax.Array, codes: jax.Array | None = None) -> jax.Array:
        """``z [N, H, W, C]`` standard normal -> samples clipped to [-1, 1]."""
        y = jnp.zeros((z.shape[0],), jnp.int32)
        if self.prior is None:
            return jnp.clip(self._fn(self.params, z, y), -1.0, 1.0)
        codes = self.codes(key, z.shape[0]) if codes is None else codes
        self.task.spec.check_code(codes)
        if codes.shape[0] != z.shape[0]:
            raise ValueError(f"{codes.shape[0]} codes for {z.shape[0]} noises: pass one code per sample")
        return jnp.clip(self._fn(self.params, z, y, codes), -1.0, 1.0)


def make_prior(config: ml_collections.ConfigDict, task: QACTask, params, images: np.ndarray | None = None):
    """The prior ``config.qac.prior`` fitted to the training images' codes (digits: read here)."""
    images = training_images(config) if images is None else images
    indices = training_codes(task, params, images)
    q = config.qac
    return fit_prior(q.prior, indices, task.spec.vocab_size, hidden=int(q.prior_hidden), steps=int(q.prior_steps),
                     seed=int(config.seed))


def sdedit(task: EDMTask | QACTask, params, x_src: jax.Array, key: jax.Array, *, sigma_start: float, solver: str = "euler",
           nfe: int = 10, codes: jax.Array | None = None) -> jax.Array:
    """SDEdit-style editing (Meng et al. 2022) with the deterministic EDM solvers.

    ``x_src [N, H, W, C]`` in [-1, 1] is noised to ``sigma_start`` (``x_src + sigma_start n``) and solved
    back to sigma = 0 on EDM's rho grid from ``sigma_start`` to ``sigma_min`` at ``nfe`` evaluations.
    A QAC run needs ``codes [N, L, d]``: e.g. the encoded code of a guide image (``task.model.encode``)
    steers the result towards it, the source's own code keeps it. Returns ``[N, H, W, C]`` clipped
    to [-1, 1]. Larger ``sigma_start``: more change (EDM's sigma_max = 80 is generation).
    """
    from jaxlab.diffusion.edm import solve_ode, steps_for_nfe

    if not task.edm.sigma_min < sigma_start <= task.edm.sigma_max:
        raise ValueError(f"sigma_start={sigma_start} must lie in (sigma_min, sigma_max] = "
                         f"({task.edm.sigma_min}, {task.edm.sigma_max}]")
    is_qac = isinstance(task, QACTask)
    if is_qac:
        if codes is None:
            raise ValueError("a QAC run edits with codes: pass codes=task.model.encode(params, guide_images)")
        task.spec.check_code(codes)
        if codes.shape[0] != x_src.shape[0]:
            raise ValueError(f"{codes.shape[0]} codes for {x_src.shape[0]} images: pass one code per image")
    edm = dataclasses.replace(task.edm, sigma_max=float(sigma_start))
    sigmas = edm.sigmas(steps_for_nfe(solver, nfe))
    y = jnp.zeros((x_src.shape[0],), jnp.int32)

    @jax.jit
    def run(params, x_src, key, codes):
        def raw(x, t, yy):
            if is_qac:
                return task.model.raw(params, x, t, yy, codes)
            return task.module.apply({"params": params}, x, t, yy)

        def denoise(x, s):
            return edm.denoise(raw, x, s, y)

        x_noisy = x_src.astype(jnp.float32) + sigma_start * jax.random.normal(key, x_src.shape, jnp.float32)
        return jnp.clip(solve_ode(denoise, x_noisy, sigmas, solver), -1.0, 1.0)

    return run(params, x_src, key, codes)
