"""Calibration: per-channel min/max of the quantised linears' inputs at every sampling step.

The model generates its own calibration trajectories with the sampler it will be used with
(``jaxlab.diffusion.sampling.sample_loop``, classifier-free guidance as
``jaxlab.diffusion.pipeline.make_class_sampler``: the batch doubled with null labels), then one
jitted pass re-runs the model on every step's input under a flax method interceptor that
records, for each target ``nn.Dense``/``nn.DenseGeneral``, the min and max of each input channel
over all tokens and samples (for a target ``nn.Conv``: over all pixels of the zero-padded input,
``jaxlab.quant.conv``) (both CFG halves: the quantised model sees both). No model code is
edited. HTG's protocol (as the re-implementation quotes Sec. 5.1): 32 class-conditional
trajectories of the evaluation sampler.

The calibration batch is sharded over the devices (``shard_batch``). Stats are host numpy:
``{layer_path: {"min": [K, C], "max": [K, C]}}`` with step ``k = 0`` the first (noisiest) model call; ``C`` is the flattened input-channel count (the attention
out-projection's ``[heads, head_dim]`` input is ``heads * head_dim`` channels, head-major).
"""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.gaussian import GaussianDiffusion
from jaxlab.diffusion.sampling import sample_loop
from jaxlab.quant.conv import conv_padding, padded_range

# Linears quantised by default in every DiT block (HTG's three smoothed inputs + fc2); the adaLN
# linears ("adaLN_modulation/linear") are opt-in via ``targets``.
BLOCK_LINEARS = ("attn/qkv", "attn/proj", "mlp/fc1", "mlp/fc2")
ADALN = "adaLN_modulation/linear"
# Path prefix of a DiT transformer block (other families: ``jaxlab.quant.families``).
DIT_BLOCK_PATTERN = r"blocks_\d+/"
MIN_CALIBRATION_SAMPLES = 8


def layer_path(module: nn.Module) -> str:
    return "/".join(module.scope.path)


def is_target(path: str, targets: tuple[str, ...], block_pattern: str = DIT_BLOCK_PATTERN) -> bool:
    """A layer of a block (path starting with ``block_pattern``, DiT's ``blocks_<i>/``) whose path
    ends with one of ``targets``."""
    return bool(re.match(block_pattern, path)) and any(path.endswith(t) for t in targets)


def num_contracted(module: nn.Module) -> int:
    """How many trailing input axes the linear contracts (1 for Dense)."""
    if isinstance(module, nn.DenseGeneral):
        axis = tuple(module.axis) if isinstance(module.axis, (tuple, list)) else (module.axis,)
        if sorted(axis) != list(range(-len(axis), 0)):
            raise ValueError(f"{layer_path(module)}: only trailing contraction axes (negative, e.g. (-2, -1)) are "
                             f"supported, got axis={module.axis}")
        return len(axis)
    return 1


def channels_last(x: jax.Array, contracted: int) -> jax.Array:
    """``[..., C]`` with the contracted input axes flattened into ``C``."""
    return x.reshape(*x.shape[: x.ndim - contracted], -1)


def _recording_interceptor(targets, block_pattern):
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Dense, nn.DenseGeneral, nn.Conv)):
            path = layer_path(module)
            if is_target(path, targets, block_pattern):
                if isinstance(module, nn.Conv):  # the padded input's range (jaxlab.quant.conv)
                    mn, mx = padded_range(args[0], conv_padding(module))
                else:
                    x = channels_last(args[0], num_contracted(module)).astype(jnp.float32)
                    x = x.reshape(-1, x.shape[-1])
                    mn, mx = x.min(axis=0), x.max(axis=0)
                module.sow("quant_stats", "min", mn)
                module.sow("quant_stats", "max", mx)
        return next_fun(*args, **kwargs)

    return interceptor


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    """How calibration trajectories are drawn (recorded with the quantised model)."""

    num_samples: int = 32
    sampler: str = "ddim"
    num_steps: int = 50
    cfg_scale: float = 4.0
    eta: float = 0.0
    clip_denoised: bool = False
    seed: int = 0

    def validate(self) -> None:
        if not isinstance(self.num_samples, int) or self.num_samples < MIN_CALIBRATION_SAMPLES:
            raise ValueError(
                f"num_samples={self.num_samples!r} calibration trajectories are too few for stable per-channel "
                f"ranges: use at least {MIN_CALIBRATION_SAMPLES} (HTG uses 32)"
            )
        if self.cfg_scale < 1.0:
            raise ValueError(f"cfg_scale={self.cfg_scale} must be >= 1 (1 disables guidance)")


def model_call(module, cfg_scale: float):
    """``call(variables, x, t, y, **apply_kwargs)``: the model as the class sampler calls it."""

    def call(variables, x, t, y, **kwargs):
        if cfg_scale > 1.0:
            return module.apply(variables, x, t, y, cfg_scale, method=module.forward_with_cfg, **kwargs)
        return module.apply(variables, x, t, y, **kwargs)

    return call


def guided_batch(num_classes: int, labels: jax.Array, z: jax.Array, cfg_scale: float):
    """``(z, y)`` doubled with null labels when guided (as ``make_class_sampler``)."""
    if cfg_scale <= 1.0:
        return z, labels
    return jnp.concatenate([z, z]), jnp.concatenate([labels, jnp.full_like(labels, num_classes)])


def trajectory_inputs(module, params, diffusion: GaussianDiffusion, labels, key, spec: CalibrationSpec):
    """``(x_steps [K, B, H, W, C], y [B])``: the model input at each sampling step (B = 2n with CFG)."""
    cfg = module.config
    call = model_call(module, spec.cfg_scale)
    noise_key, loop_key = jax.random.split(key)
    z = jax.random.normal(noise_key, (labels.shape[0], cfg.input_size, cfg.input_size, cfg.in_channels), jnp.float32)
    z, y = guided_batch(cfg.num_classes, labels, z, spec.cfg_scale)
    _, x_steps, _ = sample_loop(
        diffusion, lambda x, t, y: call({"params": params}, x, t, y), z, sampler=spec.sampler, key=loop_key,
        model_kwargs=dict(y=y), clip_denoised=spec.clip_denoised, eta=spec.eta, return_trajectory=True,
    )
    inputs = jnp.concatenate([z[None], x_steps[:-1]])  # the input of step k is the output of step k-1
    return inputs, y


def step_timesteps(diffusion: GaussianDiffusion) -> np.ndarray:
    """Original timesteps ``[K]`` of the model calls in sampling order (step 0 = noisiest)."""
    return np.asarray(diffusion.timestep_map)[::-1].copy()


def shard_batch(labels: jax.Array) -> jax.Array:
    """``labels`` split over all devices along the batch (jit propagates it to the trajectories);
    unchanged on one device or when the batch does not divide. Only run on one device so far."""
    devices = jax.devices()
    if len(devices) == 1 or labels.shape[0] % len(devices):
        return labels
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    return jax.device_put(labels, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))


def calibrate(module, params, diffusion: GaussianDiffusion, spec: CalibrationSpec,
              targets: tuple[str, ...] = BLOCK_LINEARS,
              block_pattern: str = DIT_BLOCK_PATTERN) -> dict[str, dict[str, np.ndarray]]:
    """Per-step per-channel input ranges ``{path: {"min": [K, C], "max": [K, C]}}`` (float32 numpy).

    ``targets``/``block_pattern``: which linears (``is_target``); ``jaxlab.quant.families`` has
    each family's.

    Deterministic for a given ``spec.seed`` (the labels cycle through the classes).
    """
    spec.validate()
    if getattr(module.config, "scan_blocks", False):
        raise ValueError("calibration needs per-block layers: rebuild the model with scan_blocks=False "
                         "(the parameters are the same after unstacking)")
    cfg = module.config
    labels = shard_batch(jnp.asarray(np.arange(spec.num_samples) % cfg.num_classes, jnp.int32))
    call = model_call(module, spec.cfg_scale)
    timesteps = jnp.asarray(step_timesteps(diffusion), jnp.int32)

    @jax.jit
    def run(params, labels, key):
        inputs, y = trajectory_inputs(module, params, diffusion, labels, key, spec)

        def one_step(args):
            x, t = args
            with nn.intercept_methods(_recording_interceptor(targets, block_pattern)):
                _, state = call({"params": params}, x, jnp.full((x.shape[0],), t), y, mutable=["quant_stats"])
            return state["quant_stats"]

        return jax.lax.map(one_step, (inputs, timesteps))

    stats = run(params, labels, jax.random.key(spec.seed))
    flat = {}
    for path, leaf in _flatten(stats).items():
        layer, kind = path.rsplit("/", 1)
        (value,) = leaf  # each layer runs once per model call
        flat.setdefault(layer, {})[kind] = np.asarray(value, np.float32)
    if not flat:
        raise ValueError(f"no layer matched the targets {targets} under {block_pattern!r}: the model has no block "
                         f"linears or convs of that name")
    for layer, s in flat.items():
        if not (np.isfinite(s["min"]).all() and np.isfinite(s["max"]).all()):
            raise FloatingPointError(f"calibration activations of {layer} hold NaN/Inf: the checkpoint is broken")
    return flat


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        p = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, p))
        else:
            out[p] = v
    return out
