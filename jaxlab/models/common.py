"""Pieces every model family shares: config base class, input checks, CFG, unpatchify."""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_DTYPES = ("float32", "bfloat16", "float16")
_REMAT_NAMED = ("none", "full")


def remat_policy(name: str):
    """``"full"`` -> recompute everything; otherwise a ``jax.checkpoint_policies`` attribute name."""
    if name == "full":
        return None
    policy = getattr(jax.checkpoint_policies, name, None)
    if policy is None:
        raise ValueError(f"unknown remat policy {name!r}; use 'none', 'full' or a jax.checkpoint_policies name")
    return policy


def maybe_remat(cls, remat: str, **remat_kwargs):
    """``cls`` itself for ``remat="none"``, else ``nn.remat(cls)`` with ``remat_policy(remat)``.

    ``remat_kwargs`` go to ``nn.remat`` (e.g. ``static_argnums`` for a static ``train`` flag).
    """
    if remat == "none":
        return cls
    return nn.remat(cls, policy=remat_policy(remat), **remat_kwargs)


def scan_blocks(cls, length: int, in_axes=nn.broadcast):
    """``nn.scan`` over ``length`` copies of ``cls`` (a ``(carry, *xs) -> (carry, ys)`` module):
    parameters stacked on a leading ``"layers"`` axis, each layer initialised (and dropped out)
    with its own rng.
    ``in_axes`` says which extra inputs are broadcast (``nn.broadcast``) or scanned (0).
    Intermediates a block sows are stacked the same way (leading axis = layer)."""
    return nn.scan(
        cls,
        variable_axes={"params": 0, "intermediates": 0},
        variable_broadcast=False,
        split_rngs={"params": True, "dropout": True},
        in_axes=in_axes,
        length=length,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


class ScannedBlock(nn.Module):
    """``block(**kwargs)``, rematerialised per ``remat`` and named ``"block"``, with the
    ``(carry, *broadcast) -> (carry, None)`` signature ``nn.scan`` needs (see ``repeated_blocks``)."""

    block: Any  # a flax Module class: (x, *args) -> x
    kwargs: tuple  # the block's attributes as sorted (name, value) pairs (hashable)
    remat: str = "none"
    remat_kwargs: tuple = ()
    keep_outputs: bool = False

    @nn.compact
    def __call__(self, x, *args):
        cls = maybe_remat(self.block, self.remat, **dict(self.remat_kwargs))
        y = cls(**dict(self.kwargs), name="block")(x, *args)
        return y, (y if self.keep_outputs else None)


def repeated_blocks(block, length: int, remat: str, name: str | None = None, remat_kwargs: dict | None = None,
                    keep_outputs: bool = False, **kwargs) -> nn.Module:
    """``length`` identical ``block(**kwargs)`` applied in sequence as one ``nn.scan`` (one compiled
    block): call it as ``x, outputs = stack(x, *broadcast_args)``; ``outputs`` is None, or with
    ``keep_outputs`` every block's output stacked ``[length, ...]``. Parameters are those of one
    block stacked on a leading ``"layers"`` axis under ``<name>/block``
    (``convert.common.stack_layers`` builds them from per-layer trees); each block is
    rematerialised per ``remat`` (``remat_kwargs`` go to ``nn.remat``)."""
    scanned = scan_blocks(ScannedBlock, length)
    remat_items = tuple(sorted((remat_kwargs or {}).items()))
    return scanned(block, tuple(sorted(kwargs.items())), remat, remat_items, keep_outputs, name=name)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base for the frozen architecture configs of every family.

    Subclasses add fields and extend ``validate``; ``from_dict`` builds one from a mapping
    (e.g. an ``ml_collections.ConfigDict``) and rejects unknown keys by name. ``POSITIVE`` names
    the fields that must be finite and > 0 and ``PROBABILITIES`` those in [0, 1); the base
    ``validate`` checks them before a subclass divides by any of them.
    """

    POSITIVE: ClassVar[tuple[str, ...]] = ()
    PROBABILITIES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed fields: {allowed}")
        config = cls(**dict(values))
        config.validate()
        return config

    def replace(self, **changes):
        return self.from_dict({**dataclasses.asdict(self), **changes})

    def validate(self) -> None:
        dtype = getattr(self, "dtype", "float32")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; allowed values: {list(_DTYPES)}")
        remat = getattr(self, "remat", "none")
        if remat not in _REMAT_NAMED and not hasattr(jax.checkpoint_policies, remat):
            raise ValueError(
                f"remat={remat!r} is not supported; use one of {list(_REMAT_NAMED)} or a "
                f"jax.checkpoint_policies name such as 'dots_with_no_batch_dims_saveable'"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int, "int") and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
                raise ValueError(f"{field.name} must be an int, got {value!r}")
        for name in self.POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < math.inf:
                raise ValueError(f"{name}={value!r} must be a positive number (e.g. the preset's value)")
        for name in self.PROBABILITIES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < 1:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1)")


def check_labels(y: jax.Array, num_classes: int, allow_null: bool) -> None:
    """Raises if concrete labels fall outside ``[0, num_classes]`` (the null label included if allowed).

    Inside ``jit`` the labels are abstract and cannot be checked here; entry points such as
    ``launch/sample.py`` check them before tracing.
    """
    if isinstance(y, jax.core.Tracer):
        return
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"class labels must be integers, got dtype {y.dtype}")
    top = num_classes if allow_null else num_classes - 1
    if y.size and (y.min() < 0 or y.max() > top):
        raise ValueError(
            f"class label out of range: got labels in [{y.min()}, {y.max()}], allowed [0, {top}]"
            + (f" ({num_classes} is the null class used for guidance)" if allow_null else "")
        )


def guided_channels(config) -> int:
    """How many output channels classifier-free guidance acts on, for a config with
    ``in_channels`` and ``cfg_channels``.

    ``cfg_channels > 0`` is used as given. The default (0) is the official value 3 for
    4-channel latents (every reference hard-codes ``[:3]``: guidance on 3 of the 4 latent
    epsilon channels, a known quirk, facebookresearch/DiT #12 and #41, that the official samples
    and the golden CFG case depend on), and all ``in_channels`` epsilon channels otherwise. The
    learned-variance channels ``[in_channels:]`` are never guided.
    """
    if config.cfg_channels:
        return config.cfg_channels
    return 3 if config.in_channels == 4 else config.in_channels


def check_cfg_channels(config) -> None:
    if not 0 <= config.cfg_channels <= config.in_channels:
        raise ValueError(
            f"cfg_channels={config.cfg_channels} must be in [0, in_channels={config.in_channels}] (0: the default, "
            f"{3 if config.in_channels == 4 else config.in_channels} here); guidance never acts on the variance channels"
        )


def forward_with_cfg(model, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float | jax.Array) -> jax.Array:
    """The official ``forward_with_cfg`` of DiT, U-DiT and DiC, for any ``model(x, t, y)`` with a ``config``.

    ``x`` has batch ``2n``; only its first half is used (duplicated). ``t`` and ``y`` are used as
    given (``y = [labels, null labels]`` in the official sampling scripts). Guidance is applied
    to the first ``guided_channels(model.config)`` output channels (3 for the official 4-channel
    latent models, as every reference) and written to both halves; the other channels are each
    row's own output (see ``guided_output``).
    """
    half = x[: x.shape[0] // 2]
    out = model(jnp.concatenate([half, half], axis=0), t, y)
    return guided_output(out, cfg_scale, guided_channels(model.config))


def guided_output(out: jax.Array, cfg_scale: float | jax.Array, guided_channels: int = 3) -> jax.Array:
    """Official DiT classifier-free guidance on a doubled batch ``[cond; uncond]``, NHWC.

    The first ``guided_channels`` output channels become ``uncond + s * (cond - uncond)`` in both
    halves; the other channels are passed through unguided.
    """
    guided, rest = out[..., :guided_channels], out[..., guided_channels:]
    cond, uncond = jnp.split(guided, 2, axis=0)
    half = uncond + cfg_scale * (cond - uncond)
    return jnp.concatenate([jnp.concatenate([half, half], axis=0), rest], axis=-1)


def unpatchify(tokens: jax.Array, patch_size: int, channels: int) -> jax.Array:
    """``[N, T, p*p*C]`` -> ``[N, H, W, C]``; each token reads as ``[p, p, C]`` (channels fastest), tokens row-major."""
    n, t, _ = tokens.shape
    g = int(round(t**0.5))
    if g * g != t:
        raise ValueError(f"unpatchify needs a square token grid, got {t} tokens")
    p = patch_size
    x = tokens.reshape(n, g, g, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, g * p, g * p, channels)


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
