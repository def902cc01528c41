"""IPT: Pre-Trained Image Processing Transformer (Chen et al., CVPR 2021).

Faithful to ``huawei-noah/Pretrained-IPT`` ``model/ipt.py`` (class ``ipt``, ``VisionTransformer``,
``TransformerEncoderLayer``, ``TransformerDecoderLayer``) and ``model/common.py`` (``MeanShift``,
``ResBlock``, ``Upsampler``); images are NHWC here, in ``[0, rgb_range]``.

One task ``t`` (an index into ``scale``, the official task list) runs::

    x - mean -> head_t (conv3x3, 2 x ResBlock(5x5)) -> h
    h -> body(h, t) (shared transformer over p x p feature patches, task query t) -> b
    b + h -> tail_t (Upsampler(scale[t]), conv3x3) -> + mean

The body is built for one image size (``patch_size``); larger images go through
``jaxlab.models.ipt_ops.tiled_apply`` (the official ``forward_chop``'s job). Tokens are the
feature patches flattened channel-major ``(c, ky, kx)`` like ``F.unfold``, so the official
``linear_encoding`` / ``mlp_head`` weights apply unchanged. Attention is standard multi-head
attention without biases (``nn.MultiheadAttention(bias=False)``) through
``jaxlab.nn.dot_product_attention``; q, k, v and out are separate ``[D, D]`` kernels so that each
is one weight matrix (what ``jaxlab.models.ipt_modulation`` adds low-rank task biases to).
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.common import ModelConfig
from jaxlab.nn import dense, dot_product_attention
from jaxlab.nn.conv import conv2d, pixel_shuffle

# DIV2K RGB mean used by the official MeanShift (rgb_std = 1).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclasses.dataclass(frozen=True)
class IPTConfig(ModelConfig):
    """Architecture of an IPT; field names are the official ``option.py`` arguments.

    ``scale`` is the task list: one head, tail and task query per entry; the value is the
    tail's upsampling factor (1 for same-size tasks such as denoising, 2/3/4 for SR).
    ``patch_size`` is the (square) image size the body is built for, ``patch_dim`` the
    feature-patch side p (embedding ``D = n_feats * p * p``, FFN ``4D``). ``no_mlp`` drops
    ``linear_encoding``, ``mlp_head`` and the task queries; ``no_pos`` drops the learned
    positions; ``pos_every`` adds them to q/k of every layer instead of once; ``no_norm`` makes
    every LayerNorm the identity. ``dropout_rate`` is accepted for the official kwargs but
    must be 0 (the released models use 0). ``dtype``: compute dtype (params stay float32).
    ``global_residual`` (not in the official code, default off): same-size tasks output
    ``x + tail(...)`` instead of ``mean + tail(...)``, and the tail's last conv is initialised
    to zero, so a new model is exactly the identity (jaxlab's choice for short CPU trainings;
    every task must then have scale 1).
    """

    n_feats: int = 64
    n_colors: int = 3
    rgb_range: int = 255
    scale: tuple[int, ...] = (1,)
    patch_size: int = 48
    patch_dim: int = 3
    num_heads: int = 12
    num_layers: int = 12
    num_queries: int = 1
    dropout_rate: float = 0.0
    no_mlp: bool = False
    pos_every: bool = False
    no_pos: bool = False
    no_norm: bool = False
    global_residual: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.scale, (int, np.integer)):
            object.__setattr__(self, "scale", (int(self.scale),))
        elif isinstance(self.scale, Sequence) and not isinstance(self.scale, str):
            object.__setattr__(self, "scale", tuple(int(s) for s in self.scale))

    @property
    def embedding_dim(self) -> int:
        return self.n_feats * self.patch_dim**2

    @property
    def num_patches(self) -> int:
        return (self.patch_size // self.patch_dim) ** 2

    @property
    def num_tasks(self) -> int:
        return len(self.scale)

    def validate(self) -> None:
        super().validate()
        for name in ("n_feats", "n_colors", "rgb_range", "patch_size", "patch_dim", "num_heads", "num_layers", "num_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.scale:
            raise ValueError("scale (the task list) is empty; give one upsampling factor per task, e.g. (1,) or (2, 3, 4, 1)")
        for s in self.scale:
            if s < 1 or (s & (s - 1) and s != 3):
                raise ValueError(f"scale={list(self.scale)}: {s} is not 1, 3 or a power of two (the official Upsampler's factors)")
        if self.patch_size % self.patch_dim:
            raise ValueError(f"patch_size={self.patch_size} is not divisible by patch_dim={self.patch_dim}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding dim n_feats*patch_dim^2 = {self.embedding_dim} is not divisible by num_heads={self.num_heads}"
            )
        if not self.no_mlp and self.num_queries < self.num_tasks:
            raise ValueError(
                f"num_queries={self.num_queries} < {self.num_tasks} tasks: task t reads query row t; "
                f"set num_queries >= len(scale)"
            )
        if self.pos_every and self.no_pos:
            raise ValueError("pos_every=True needs positions; it cannot be combined with no_pos=True")
        if self.global_residual and any(s != 1 for s in self.scale):
            raise ValueError(f"global_residual=True adds the input to the output, which needs scale 1 for every task; "
                             f"scale={list(self.scale)}")
        if self.dropout_rate != 0:
            raise ValueError(f"dropout_rate={self.dropout_rate}: only 0 is supported (the released IPT models use 0)")

    def check_task(self, task: int) -> None:
        if not isinstance(task, (int, np.integer)) or not 0 <= task < self.num_tasks:
            raise ValueError(f"task={task!r} is not a task index; this IPT has tasks 0..{self.num_tasks - 1} (scale={list(self.scale)})")


PRESETS: dict[str, dict] = {
    # option.py defaults (the released checkpoints: one scale entry per file, e.g. IPT_sr2.pt -> (2,)).
    "IPT": dict(n_feats=64, patch_size=48, patch_dim=3, num_heads=12, num_layers=12),
    # A CPU-sized single-task IPT (one head/tail, one query): the shared model that Instruct-IPT
    # weight modulation (jaxlab.models.ipt_modulation) turns into a multi-task one.
    "IPT-tiny": dict(n_feats=16, patch_size=24, patch_dim=3, num_heads=4, num_layers=1),
}


def _norm(cfg: IPTConfig, name: str):
    if cfg.no_norm:
        return lambda x: x
    return nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)


class Attention(nn.Module):
    """``nn.MultiheadAttention(D, heads, bias=False)`` on batch-first ``[B, L, D]``.

    ``q``/``k``/``v``/``out`` kernels are ``[D, D]`` (the official ``in_proj_weight`` rows
    ``[Wq; Wk; Wv]`` and ``out_proj.weight``, transposed); heads are contiguous slices.
    """

    num_heads: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, q_BLD, k_BSD, v_BSD):
        b, l, d = q_BLD.shape
        h = self.num_heads

        def proj(x, name):
            y = dense(d, ("embed", "heads"), dtype=self.dtype, use_bias=False, name=name)(x)
            return y.reshape(*x.shape[:2], h, d // h)

        o_BLNH = dot_product_attention(proj(q_BLD, "q"), proj(k_BSD, "k"), proj(v_BSD, "v"))
        return dense(d, ("heads", "embed"), dtype=self.dtype, use_bias=False, name="out")(o_BLNH.reshape(b, l, d))


class FeedForward(nn.Module):
    """``linear2(relu(linear1(x)))``, width ``hidden``."""

    hidden: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BLD):
        y = nn.relu(dense(self.hidden, ("embed", "mlp"), dtype=self.dtype, name="linear1")(x_BLD))
        return dense(x_BLD.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="linear2")(y)


class EncoderLayer(nn.Module):
    """Pre-norm: ``s += MHA(LN1 s (+pos), LN1 s (+pos), LN1 s)``; ``s += FFN(LN2 s)``."""

    config: IPTConfig

    @nn.compact
    def __call__(self, s_BLD, pos_LD=None):
        cfg = self.config
        y = _norm(cfg, "norm1")(s_BLD)
        qk = y if pos_LD is None else y + pos_LD
        s_BLD = s_BLD + Attention(cfg.num_heads, cfg.dtype, name="self_attn")(qk, qk, y)
        return s_BLD + FeedForward(4 * cfg.embedding_dim, cfg.dtype, name="ffn")(_norm(cfg, "norm2")(s_BLD))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention (q=k=+query), cross-attention on un-normalised memory, FFN."""

    config: IPTConfig

    @nn.compact
    def __call__(self, t_BLD, memory_BLD, pos_LD=None, query_BLD=None):
        cfg = self.config
        add = lambda x, p: x if p is None else x + p  # noqa: E731
        y = _norm(cfg, "norm1")(t_BLD)
        t_BLD = t_BLD + Attention(cfg.num_heads, cfg.dtype, name="self_attn")(add(y, query_BLD), add(y, query_BLD), y)
        y = _norm(cfg, "norm2")(t_BLD)
        t_BLD = t_BLD + Attention(cfg.num_heads, cfg.dtype, name="multihead_attn")(
            add(y, query_BLD), add(memory_BLD, pos_LD), memory_BLD
        )
        return t_BLD + FeedForward(4 * cfg.embedding_dim, cfg.dtype, name="ffn")(_norm(cfg, "norm3")(t_BLD))


def patchify(x_BHWC: jax.Array, p: int) -> jax.Array:
    """``F.unfold(kernel=p, stride=p)`` on NHWC: ``[B, H, W, C] -> [B, L, C*p*p]``, raster order, (c, ky, kx) features."""
    b, hh, ww, c = x_BHWC.shape
    x = x_BHWC.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, (hh // p) * (ww // p), c * p * p)


def unpatchify(x_BLF: jax.Array, p: int, hh: int, ww: int) -> jax.Array:
    """The inverse of ``patchify`` (``F.fold`` with stride = kernel): ``[B, L, C*p*p] -> [B, H, W, C]``."""
    b, _, f = x_BLF.shape
    c = f // (p * p)
    x = x_BLF.reshape(b, hh // p, ww // p, c, p, p).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, hh, ww, c)


class Body(nn.Module):
    """The shared ``VisionTransformer``: ``[B, P, P, C] feature map, task -> [B, P, P, C]``."""

    config: IPTConfig

    @nn.compact
    def __call__(self, x_BHWC, task: int):
        cfg = self.config
        d, p = cfg.embedding_dim, cfg.patch_dim
        x_BLD = patchify(x_BHWC, p).astype(cfg.dtype)
        query_BLD = None
        if not cfg.no_mlp:
            x_BLD = dense(d, ("patch", "embed"), dtype=cfg.dtype, name="linear_encoding")(x_BLD) + x_BLD
            table = self.param("query_embed", nn.initializers.normal(1.0), (cfg.num_queries, cfg.num_patches * d), jnp.float32)
            query_BLD = table[task].reshape(1, cfg.num_patches, d).astype(cfg.dtype)
        pos_LD = None
        if not cfg.no_pos:
            pos_LD = self.param("pos_embed", nn.initializers.normal(1.0), (cfg.num_patches, d), jnp.float32).astype(cfg.dtype)
        every = pos_LD if cfg.pos_every else None
        if pos_LD is not None and not cfg.pos_every:
            x_BLD = x_BLD + pos_LD
        for i in range(cfg.num_layers):
            x_BLD = EncoderLayer(cfg, name=f"encoder_{i}")(x_BLD, every)
        self.sow("intermediates", "encoder_out", x_BLD)
        memory_BLD = x_BLD
        for i in range(cfg.num_layers):
            x_BLD = DecoderLayer(cfg, name=f"decoder_{i}")(x_BLD, memory_BLD, every, query_BLD)
        self.sow("intermediates", "decoder_out", x_BLD)
        if not cfg.no_mlp:
            y = nn.relu(dense(4 * d, ("embed", "mlp"), dtype=cfg.dtype, name="mlp_head_0")(x_BLD))
            x_BLD = dense(d, ("mlp", "embed"), dtype=cfg.dtype, name="mlp_head_1")(y) + x_BLD
        return unpatchify(x_BLD, p, *x_BHWC.shape[1:3])


class ResBlock(nn.Module):
    """``conv5x5 -> ReLU -> conv5x5`` plus identity (official ``ResBlock``, res_scale 1, no BN)."""

    features: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x_BHWC):
        conv = lambda name: conv2d(self.features, ("embed", "embed"), kernel_size=5, dtype=self.dtype, name=name)  # noqa: E731
        return x_BHWC + conv("conv_1")(nn.relu(conv("conv_0")(x_BHWC)))


def upsample_steps(scale: int) -> list[tuple[int, int]]:
    """The official ``Upsampler``: ``[(conv out-channel multiplier, pixel-shuffle factor), ...]``."""
    if scale == 1:
        return []
    if scale == 3:
        return [(9, 3)]
    return [(4, 2)] * int(np.log2(scale))


class Head(nn.Module):
    """``conv3x3(n_colors -> n_feats)``, two 5x5 ``ResBlock``s (the official ``head[t]``)."""

    config: IPTConfig

    @nn.compact
    def __call__(self, x_BHWC):
        cfg = self.config
        x = conv2d(cfg.n_feats, (None, "embed"), kernel_size=3, dtype=cfg.dtype, name="conv_0")(x_BHWC)
        x = ResBlock(cfg.n_feats, cfg.dtype, name="res_1")(x)
        return ResBlock(cfg.n_feats, cfg.dtype, name="res_2")(x)


class Tail(nn.Module):
    """``Upsampler(scale)`` (conv3x3 to r*r*n + pixel shuffle r, per step) then ``conv3x3(n_feats -> n_colors)``."""

    config: IPTConfig
    scale: int

    @nn.compact
    def __call__(self, x_BHWC):
        cfg = self.config
        for j, (mult, r) in enumerate(upsample_steps(self.scale)):
            x_BHWC = conv2d(mult * cfg.n_feats, ("embed", "embed"), kernel_size=3, dtype=cfg.dtype, name=f"up_{j}")(x_BHWC)
            x_BHWC = pixel_shuffle(x_BHWC, r)
        # With global_residual the last conv starts at zero, so a new model is exactly the identity.
        init = dict(kernel_init=nn.initializers.zeros) if cfg.global_residual else {}
        return conv2d(cfg.n_colors, ("embed", None), kernel_size=3, dtype=cfg.dtype, name="conv", **init)(x_BHWC)


class IPT(nn.Module):
    """``(x [B, P, P, n_colors] in [0, rgb_range], task) -> [B, P*s, P*s, n_colors]``, ``s = scale[task]``.

    ``task`` is a Python int (it selects the head and tail modules; jit with it static).
    """

    config: IPTConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        self.heads = [Head(cfg, name=f"head_{t}") for t in range(cfg.num_tasks)]
        self.tails = [Tail(cfg, s, name=f"tail_{t}") for t, s in enumerate(cfg.scale)]
        self.body = Body(cfg, name="body")

    def _check_inputs(self, x, task):
        cfg = self.config
        cfg.check_task(task)
        if x.ndim != 4 or x.shape[1:] != (cfg.patch_size, cfg.patch_size, cfg.n_colors):
            raise ValueError(
                f"IPT input must be [B, {cfg.patch_size}, {cfg.patch_size}, {cfg.n_colors}] (NHWC, the body's "
                f"fixed patch_size), got {tuple(x.shape)}; tile larger images with jaxlab.models.ipt_ops.tiled_apply"
            )

    def __call__(self, x_BHWC, task: int):
        cfg = self.config
        self._check_inputs(x_BHWC, task)
        mean = jnp.asarray(RGB_MEAN, jnp.float32) * cfg.rgb_range
        x = (x_BHWC.astype(jnp.float32) - mean).astype(cfg.dtype)
        if self.is_initializing():  # create every task's head and tail; only `task` runs otherwise
            for t in range(cfg.num_tasks):
                self.tails[t](self.heads[t](x))
        h = self.heads[task](x)
        self.sow("intermediates", "head_out", h)
        b = self.body(h, task)
        self.sow("intermediates", "body_out", b)
        y = self.tails[task](b + h)
        base = x_BHWC.astype(jnp.float32) if cfg.global_residual else mean
        return (y.astype(jnp.float32) + base).astype(cfg.dtype)
