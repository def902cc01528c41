"""Gaussian diffusion (iDDPM / DiT ``gaussian_diffusion.py`` + ``respace.py``), NHWC, in JAX.

Schedule arrays are float64 numpy on the host; each coefficient is gathered at ``t`` and cast
to float32 at use time, so the tensor math matches the reference's float32 exactly.

Timesteps: every method takes *respaced* indices ``t`` in ``[0, num_timesteps)``; the model is
always called with the original timestep ``timestep_map[t]`` (no rescaling).

A model is a callable ``model_fn(x, t, **model_kwargs) -> output`` on NHWC arrays; with a
learned variance its output has ``2C`` channels, ``[:C]`` the prediction and ``[C:]`` the
variance values.
"""

import dataclasses
import enum
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl

ModelFn = Callable[..., jax.Array]


class ModelMeanType(enum.Enum):
    EPSILON = "epsilon"  # the model predicts the noise
    START_X = "start_x"  # the model predicts x_0


class ModelVarType(enum.Enum):
    FIXED_SMALL = "fixed_small"  # posterior variance
    FIXED_LARGE = "fixed_large"  # betas (first entry: posterior variance[1])
    LEARNED = "learned"  # the model outputs the log variance
    LEARNED_RANGE = "learned_range"  # the model interpolates between the two fixed log variances


class LossType(enum.Enum):
    MSE = "mse"  # mse + vb (vb only with a learned variance)
    RESCALED_MSE = "rescaled_mse"  # vb scaled by num_timesteps / 1000
    KL = "kl"  # the variational bound alone
    RESCALED_KL = "rescaled_kl"  # the variational bound times num_timesteps

    @property
    def is_vb(self) -> bool:
        return self in (LossType.KL, LossType.RESCALED_KL)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianDiffusion:
    """A (possibly respaced) diffusion chain of ``num_timesteps`` steps.

    Build it with ``jaxlab.diffusion.create_diffusion``; ``betas`` are the chain's own betas
    and ``timestep_map[k]`` is the original timestep of respaced index ``k``.
    """

    betas: np.ndarray
    timestep_map: np.ndarray
    model_mean_type: ModelMeanType
    model_var_type: ModelVarType
    loss_type: LossType

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "timestep_map", np.asarray(self.timestep_map, dtype=np.int64))
        alphas = 1.0 - betas
        abar = np.cumprod(alphas, axis=0)
        abar_prev = np.append(1.0, abar[:-1])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        arrays = dict(
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            alphas_cumprod_next=np.append(abar[1:], 0.0),
            sqrt_alphas_cumprod=np.sqrt(abar),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1),
            posterior_variance=post_var,
            # The posterior variance is 0 at the start of the chain: its log is clipped to entry 1.
            posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])) if len(post_var) > 1 else np.log(post_var),
            posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
            log_betas=np.log(betas),
        )
        for name, value in arrays.items():
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    # ---------------------------------------------------------------- forward process

    def q_sample(self, x_start: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """Samples ``x_t ~ q(x_t | x_0)``."""
        return _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start + _gather(
            self.sqrt_one_minus_alphas_cumprod, t, x_start
        ) * noise

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x_start + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    # ---------------------------------------------------------------- reverse process

    def model_timesteps(self, t: jax.Array) -> jax.Array:
        """Respaced indices -> the original timesteps the model is called with."""
        return jnp.asarray(self.timestep_map, jnp.int32)[t]

    def call_model(self, model_fn: ModelFn, x: jax.Array, t: jax.Array, model_kwargs: dict | None = None) -> jax.Array:
        return model_fn(x, self.model_timesteps(t), **(model_kwargs or {}))

    def split_output(self, model_output: jax.Array, channels: int) -> tuple[jax.Array, jax.Array | None]:
        """``[..., 2C]`` -> (prediction ``[..., C]``, variance values ``[..., C]``) for learned variances."""
        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            if model_output.shape[-1] != 2 * channels:
                raise ValueError(
                    f"a learned-variance diffusion needs {2 * channels} output channels, got "
                    f"{model_output.shape[-1]}; build the model with learn_sigma=True or the diffusion with learn_sigma=False"
                )
            return model_output[..., :channels], model_output[..., channels:]
        if model_output.shape[-1] != channels:
            raise ValueError(
                f"a fixed-variance diffusion needs {channels} output channels, got {model_output.shape[-1]}; "
                f"build the model with learn_sigma=False or the diffusion with learn_sigma=True"
            )
        return model_output, None

    def p_mean_variance(self, model_output: jax.Array, x: jax.Array, t: jax.Array, clip_denoised: bool = True) -> dict:
        """``p(x_{t-1} | x_t)`` from a raw model output: mean, variance, log_variance, pred_xstart."""
        prediction, var_values = self.split_output(model_output, x.shape[-1])
        if self.model_var_type == ModelVarType.LEARNED:
            log_variance = var_values
            variance = jnp.exp(log_variance)
        elif self.model_var_type == ModelVarType.LEARNED_RANGE:
            min_log = _gather(self.posterior_log_variance_clipped, t, x)
            max_log = _gather(self.log_betas, t, x)
            frac = (var_values + 1) / 2  # nominally in [0, 1]; not clamped, as in the reference
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = jnp.exp(log_variance)
        else:
            if self.model_var_type == ModelVarType.FIXED_LARGE:
                # Betas, with entry 0 replaced so the log stays finite.
                table = np.append(self.posterior_variance[1], self.betas[1:])
                log_table = np.log(table)
            else:
                table, log_table = self.posterior_variance, self.posterior_log_variance_clipped
            variance = jnp.broadcast_to(_gather(table, t, x), x.shape)
            log_variance = jnp.broadcast_to(_gather(log_table, t, x), x.shape)

        if self.model_mean_type == ModelMeanType.START_X:
            pred_xstart = prediction
        else:
            pred_xstart = self.predict_xstart_from_eps(x, t, prediction)
        if clip_denoised:
            pred_xstart = jnp.clip(pred_xstart, -1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return dict(mean=mean, variance=variance, log_variance=log_variance, pred_xstart=pred_xstart)

    def predict_xstart_from_eps(self, x_t, t, eps):
        return _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / _gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # ---------------------------------------------------------------- single sampler steps

    def p_sample(self, model_output, x, t, noise, clip_denoised: bool = True) -> tuple[jax.Array, jax.Array]:
        """One ancestral (DDPM) step: ``mean + [t != 0] * exp(0.5 log_var) * noise``. Returns (x_prev, pred_xstart)."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        nonzero = _nonzero_mask(t, x)
        return out["mean"] + nonzero * jnp.exp(0.5 * out["log_variance"]) * noise, out["pred_xstart"]

    def ddim_sample(self, model_output, x, t, noise, clip_denoised: bool = True, eta: float = 0.0):
        """One DDIM step (Song et al. 2021, eq. 12); ``noise`` may be None when ``eta == 0``."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        # Re-derive eps from the (possibly clipped) x_0 prediction, as the reference does.
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = _gather(self.alphas_cumprod, t, x)
        abar_prev = _gather(self.alphas_cumprod_prev, t, x)
        sigma = eta * jnp.sqrt((1 - abar_prev) / (1 - abar)) * jnp.sqrt(1 - abar / abar_prev)
        x_prev = out["pred_xstart"] * jnp.sqrt(abar_prev) + jnp.sqrt(1 - abar_prev - sigma**2) * eps
        if noise is not None:
            x_prev = x_prev + _nonzero_mask(t, x) * sigma * noise
        return x_prev, out["pred_xstart"]

    # ---------------------------------------------------------------- training

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: jax.Array,
        t: jax.Array,
        noise: jax.Array,
        model_kwargs: dict | None = None,
    ) -> dict[str, jax.Array]:
        """Per-example losses ``{"loss", "mse", "vb"}`` (each ``[N]``) at respaced indices ``t``.

        ``vb`` is in bits per dimension; at ``t == 0`` it is the decoder NLL. With the MSE loss
        type, ``loss = mse + vb`` (vb only when the variance is learned).
        """
        x_t = self.q_sample(x_start, t, noise)
        model_output = self.call_model(model_fn, x_t, t, model_kwargs)
        terms = {}
        if self.loss_type.is_vb:
            terms["vb"] = self._vb_terms_bpd(model_output, x_start, x_t, t)
            scale = self.num_timesteps if self.loss_type == LossType.RESCALED_KL else 1.0
            terms["loss"] = terms["vb"] * scale
            return terms
        prediction, var_values = self.split_output(model_output, x_t.shape[-1])
        target = noise if self.model_mean_type == ModelMeanType.EPSILON else x_start
        terms["mse"] = mean_flat((target - prediction) ** 2)
        if var_values is not None:
            # The bound trains only the variance: the prediction is frozen inside it.
            frozen = jnp.concatenate([jax.lax.stop_gradient(prediction), var_values], axis=-1)
            vb = self._vb_terms_bpd(frozen, x_start, x_t, t)
            if self.loss_type == LossType.RESCALED_MSE:
                vb = vb * (self.num_timesteps / 1000.0)
            terms["vb"] = vb
            terms["loss"] = terms["mse"] + vb
        else:
            terms["loss"] = terms["mse"]
        return terms

    def _vb_terms_bpd(self, model_output, x_start, x_t, t) -> jax.Array:
        """The variational-bound term for ``t`` in bits/dim: KL to the posterior, or the decoder NLL at 0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / np.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / np.log(2.0)
        return jnp.where(t == 0, nll, kl)

    # ---------------------------------------------------------------- sampling loops

    def p_sample_loop(self, model_fn: ModelFn, noise: jax.Array, **kwargs):
        """DDPM ancestral sampling from ``noise`` (x_T); see ``jaxlab.diffusion.sampling.sample_loop``."""
        from jaxlab.diffusion.sampling import sample_loop

        return sample_loop(self, model_fn, noise, sampler="ddpm", **kwargs)

    def ddim_sample_loop(self, model_fn: ModelFn, noise: jax.Array, **kwargs):
        """DDIM sampling from ``noise`` (x_T); see ``jaxlab.diffusion.sampling.sample_loop``."""
        from jaxlab.diffusion.sampling import sample_loop

        return sample_loop(self, model_fn, noise, sampler="ddim", **kwargs)


def _gather(table: np.ndarray, t: jax.Array, like: jax.Array) -> jax.Array:
    """``table[t]`` as float32, shaped ``[N, 1, ..., 1]`` to broadcast against ``like``."""
    values = jnp.asarray(table, jnp.float32)[t]
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _nonzero_mask(t: jax.Array, like: jax.Array) -> jax.Array:
    return (t != 0).astype(like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))


def respaced_betas(base_alphas_cumprod: np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the chain that keeps ``use_timesteps`` of a base chain, and its timestep map."""
    keep = set(use_timesteps)
    betas, timestep_map, last = [], [], 1.0
    for i, abar in enumerate(base_alphas_cumprod):
        if i in keep:
            betas.append(1 - abar / last)
            last = abar
            timestep_map.append(i)
    return np.array(betas, dtype=np.float64), np.array(timestep_map, dtype=np.int64)
