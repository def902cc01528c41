"""U-DiT: Downsample Tokens in U-Shaped Diffusion Transformers (Tian et al., NeurIPS 2024).

Faithful to ``YuchuanTian/U-DiT`` ``udit_models.py`` (class ``U_DiT``); images are NHWC here.

A 3-level U-Net of DiT-style blocks on the (unpatchified) latent: encoder levels at widths C,
2C, a latent level at 4C, decoder levels at 2C and 2C. Every block holds two sub-layers, each
``x += gate * attn(mod(LN(x)))`` then ``x += gate * ffn(mod(LN(x)))`` with its own adaLN-Zero
modulation. Attention runs on *downsampled tokens*: the (depthwise-conv pre-mixed) map is split
into ``f*f`` pixel-unshuffle sub-grids and attention runs inside each sub-grid only.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.common import (
    ModelConfig,
    check_cfg_channels,
    check_labels,
    forward_with_cfg,
    maybe_remat,
    repeated_blocks,
)
from jaxlab.nn import (
    AdaLNModulation,
    ConvFinalLayer,
    LabelEmbedder,
    Mlp,
    TimestepEmbedder,
    dense,
    dot_product_attention,
    dense_general,
    layer_norm_no_affine,
    logical_init,
    modulate,
)
from jaxlab.nn.conv import conv2d, pixel_shuffle, pixel_unshuffle
from jaxlab.nn.cosine_attention import LOGIT_SCALE_INIT, cosine_attention
from jaxlab.nn.rope2d import apply_rope_interleaved, rope_2d_table

STAGES = ("encoder_level_1", "encoder_level_2", "latent", "decoder_level_2", "decoder_level_1")
# Per stage: width as a multiple of hidden_size, and resolution divisor. Conditions: enc1 uses c1,
# the latent stage c3, all others (and the final layer) c2.
STAGE_WIDTH = (1, 2, 4, 2, 2)
STAGE_STRIDE = (1, 2, 4, 2, 1)
# The reference clamps the cosine-attention log-temperature at 4.6052 (about log 100).
MAX_LOGIT_SCALE = 4.6052
FFN_TYPES = ("rep", "basic")
ATTN_TYPES = (None, "v2")
POSEMB_TYPES = (None, "rope2d")


@dataclasses.dataclass(frozen=True)
class UDiTConfig(ModelConfig):
    """Architecture of a U-DiT; the fields are the official ``U_DiT`` constructor arguments.

    Defaults are the official constructor's, except ``downsampler`` (required upstream, where
    ``None`` crashes): "dwconv5", the value of every named config.

    Attributes:
      input_size: latent side (32 for 256px). Only sets the sampling shape; the model runs on any
        size the down factors divide (the reference never uses it either).
      down_factor: token-downsampling factor ``f`` of the attention, one int or five per stage
        ``[enc1, enc2, latent, dec2, dec1]``; 1 = full attention.
      depth: blocks per stage ``[enc1, enc2, latent, dec2, dec1]``; each block has 2 sub-layers.
      num_heads: heads at every stage (so head_dim grows 1x/2x/4x with the width).
      mlp_ratio: FFN hidden width = ``int(width * mlp_ratio)``.
      rep: with ``ffn_type="rep"``, the re-parameterisable multi-branch FFN; else a plain
        1x1 -> GELU -> depthwise 5x5 -> 1x1 FFN.
      ffn_type: "rep" (depthwise-conv FFN) or "basic" (timm Mlp, tanh GELU).
      attn_type: None (scaled dot product) or "v2" (cosine attention, learnable temperature).
      posemb_type: None (no positional information) or "rope2d" (2-D RoPE on the sub-grids).
      downsampler: "dwconv<k>": depthwise ``k x k`` conv that pre-mixes the attention input.
      down_shortcut: add the identity to the depthwise conv's output.
      dtype / remat: jaxlab's compute dtype (params stay float32) and per-block remat policy.
      scan_blocks: run each stage's (identical) blocks as one ``nn.scan`` (one compiled block per
        stage; parameters stacked under ``<stage>/block``). The ``enc1_block0`` intermediate is
        sown only without it; the attentions' ``tokens`` are stacked per stage.
    """

    input_size: int = 32
    down_factor: int | tuple[int, ...] = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: tuple[int, ...] = (2, 5, 8, 5, 2)
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    cfg_channels: int = 0  # output channels classifier-free guidance acts on; 0: common.guided_channels
    rep: bool = True
    ffn_type: str = "rep"
    attn_type: str | None = None
    posemb_type: str | None = None
    downsampler: str = "dwconv5"
    down_shortcut: bool = False
    dtype: str = "float32"
    remat: str = "none"
    scan_blocks: bool = False

    def __post_init__(self):
        # JSON / ConfigDict give lists and 0/1 flags; store hashable tuples and bools.
        for name in ("depth", "down_factor"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("rep", "down_shortcut", "learn_sigma"):
            value = getattr(self, name)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1):
                object.__setattr__(self, name, bool(value))
        if _is_int(self.mlp_ratio):
            object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))

    POSITIVE = ("input_size", "in_channels", "hidden_size", "num_heads", "num_classes", "mlp_ratio")
    PROBABILITIES = ("class_dropout_prob",)

    def validate(self) -> None:
        super().validate()
        check_cfg_channels(self)
        if not (isinstance(self.depth, tuple) and len(self.depth) == 5 and all(_is_int(d) and d >= 0 for d in self.depth)):
            raise ValueError(f"depth must be 5 non-negative ints [enc1, enc2, latent, dec2, dec1], got {self.depth!r}")
        factors = self.down_factor if isinstance(self.down_factor, tuple) else (self.down_factor,) * 5
        if len(factors) != 5 or not all(_is_int(f) and f >= 1 for f in factors):
            raise ValueError(f"down_factor must be a positive int or 5 positive ints (one per stage), got {self.down_factor!r}")
        for name in ("rep", "down_shortcut", "learn_sigma"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool (or 0/1), got {getattr(self, name)!r}")
        if self.hidden_size <= 0 or self.hidden_size % 2:
            raise ValueError(f"hidden_size={self.hidden_size} must be even (the downsampler halves it before pixel-unshuffle)")
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.ffn_type not in FFN_TYPES:
            raise ValueError(f"ffn_type={self.ffn_type!r} is not supported; allowed values: {list(FFN_TYPES)}")
        if self.attn_type not in ATTN_TYPES:
            raise ValueError(f"attn_type={self.attn_type!r} is not supported; allowed values: {list(ATTN_TYPES)}")
        if self.posemb_type not in POSEMB_TYPES:
            raise ValueError(f"posemb_type={self.posemb_type!r} is not supported; allowed values: {list(POSEMB_TYPES)}")
        if self.posemb_type == "rope2d" and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"rope2d needs head_dim = hidden_size/num_heads divisible by 4, got "
                f"{self.hidden_size}/{self.num_heads} = {self.hidden_size // self.num_heads}"
            )
        if not isinstance(self.downsampler, str) or not self.downsampler[-1:].isdigit() or int(self.downsampler[-1]) % 2 == 0:
            raise ValueError(
                f"downsampler={self.downsampler!r} must name an odd depthwise kernel size in its last "
                f"character, e.g. 'dwconv5' or 'dwconv3'"
            )
        if not 0.0 <= self.class_dropout_prob <= 1.0:
            raise ValueError(f"class_dropout_prob={self.class_dropout_prob} must be in [0, 1]")
        if self.mlp_ratio <= 0 or int(self.hidden_size * self.mlp_ratio) < 2:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} gives an empty FFN for hidden_size={self.hidden_size}")
        if self.in_channels <= 0 or self.num_classes <= 0:
            raise ValueError(f"in_channels={self.in_channels} and num_classes={self.num_classes} must be positive")
        check_resolution(self, self.input_size, self.input_size, what="input_size")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def down_factors(self) -> tuple[int, ...]:
        """One token-downsampling factor per stage ``[enc1, enc2, latent, dec2, dec1]``."""
        return self.down_factor if isinstance(self.down_factor, tuple) else (self.down_factor,) * 5

    @property
    def kernel_size(self) -> int:
        """Kernel side of the attention's depthwise pre-mixing conv (``downsampler``'s last digit)."""
        return int(self.downsampler[-1])


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_resolution(cfg: UDiTConfig, height: int, width: int, what: str = "input") -> None:
    """Raises unless ``height x width`` fits the two 2x downsamplings and every stage's down factor."""
    if height <= 0 or width <= 0 or height % 4 or width % 4:
        raise ValueError(f"U-DiT {what} {height}x{width} must have sides divisible by 4 (two 2x downsamplings)")
    for stage, stride, factor, depth in zip(STAGES, STAGE_STRIDE, cfg.down_factors, cfg.depth):
        h, w = height // stride, width // stride
        if depth and (h % factor or w % factor):
            raise ValueError(
                f"U-DiT {what} {height}x{width}: stage {stage} runs at {h}x{w}, which down_factor={factor} "
                f"does not divide; pick a size divisible by {4 * max(cfg.down_factors)} or smaller down factors"
            )


# Official named configs (``DiT_models`` in udit_models.py): ``U_DiT`` kwargs they hard-code.
_NAMED = dict(
    down_factor=2,
    depth=(2, 5, 8, 5, 2),
    ffn_type="rep",
    rep=1,
    mlp_ratio=2,
    attn_type="v2",
    posemb_type="rope2d",
    downsampler="dwconv5",
    down_shortcut=1,
)
PRESETS: dict[str, dict] = {
    "U-DiT-S": dict(hidden_size=96, num_heads=4, **_NAMED),
    "U-DiT-B": dict(hidden_size=192, num_heads=8, **_NAMED),
    "U-DiT-L": dict(hidden_size=384, num_heads=16, **_NAMED),
}


def to_token_groups(x: jax.Array, f: int) -> jax.Array:
    """``[B, H, W, D] -> [B, f*f, H*W/f^2, D]``: group ``i*f + j`` holds pixels ``(r*f + i, c*f + j)``, row-major."""
    b, h, w, d = x.shape
    x = x.reshape(b, h // f, f, w // f, f, d).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, f * f, (h // f) * (w // f), d)


def from_token_groups(x: jax.Array, f: int, h: int, w: int) -> jax.Array:
    """Inverse of ``to_token_groups``: ``[B, f*f, N, D] -> [B, H, W, D]``."""
    b, _, _, d = x.shape
    x = x.reshape(b, f, f, h // f, w // f, d).transpose(0, 3, 1, 4, 2, 5)
    return x.reshape(b, h, w, d)


class DownsampledAttention(nn.Module):
    """Token-downsampled self-attention (``DownSample_Attn``): ``[B, H, W, D] -> [B, H, W, D]``.

    Depthwise ``k x k`` conv (+ identity), split into ``f*f`` sub-grids of ``N = HW/f^2`` tokens,
    qkv Linear, optional 2-D RoPE on q/k, scaled-dot-product or cosine attention within each
    sub-grid, merge back, 1x1 output projection (applied per token before the merge; it is
    pointwise, so the order does not matter).
    """

    num_heads: int
    down_factor: int
    kernel_size: int
    shortcut: bool
    cosine: bool
    rope: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWD: jax.Array) -> jax.Array:
        b, h, w, d = x_BHWD.shape
        f, heads = self.down_factor, self.num_heads
        head_dim = d // heads
        z = conv2d(d, (None, "embed"), kernel_size=self.kernel_size, groups=d, dtype=self.dtype, name="downsampler")(x_BHWD)
        if self.shortcut:
            z = z + x_BHWD
        tokens_BGND = to_token_groups(z, f)
        self.sow("intermediates", "tokens", tokens_BGND)
        n = tokens_BGND.shape[2]
        qkv = dense_general(
            (3, heads, head_dim), ("embed", None, "heads", "kv"), dtype=self.dtype, name="to_qkv"
        )(tokens_BGND.reshape(b * f * f, n, d))
        q_bNHK, k_bNHK, v_bNHK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope:
            cos, sin = rope_2d_table(head_dim, n)
            q_bNHK = apply_rope_interleaved(q_bNHK, cos, sin)
            k_bNHK = apply_rope_interleaved(k_bNHK, cos, sin)
        if self.cosine:
            logit_scale = self.param(
                "logit_scale", logical_init(nn.initializers.constant(LOGIT_SCALE_INIT), ("heads",)), (heads,), jnp.float32
            )
            out_bNHK = cosine_attention(q_bNHK, k_bNHK, v_bNHK, logit_scale, max_logit_scale=MAX_LOGIT_SCALE)
        else:
            out_bNHK = dot_product_attention(q_bNHK, k_bNHK, v_bNHK)  # scale head_dim**-0.5
        out_bND = dense_general(d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name="to_out")(out_bNHK)
        return from_token_groups(out_bND.reshape(b, f * f, n, d), f, h, w)


class RepFeedForward(nn.Module):
    """U-DiT's depthwise-conv FFN (``FeedForward``): ``[B, H, W, D] -> [B, H, W, D]``.

    ``rep=True`` (the training form, what checkpoints hold): 1x1 ``D -> hid/2`` -> 1x1
    ``hid/2 -> hid`` -> exact GELU -> ``h + dw5(h) + dw3(h) + dw1(h)`` -> 1x1 ``hid -> hid/2`` ->
    1x1 ``hid/2 -> D``. ``rep=False``: 1x1 ``D -> hid`` -> exact GELU -> depthwise 5x5 -> 1x1
    ``hid -> D``, which is also the form ``reparameterize`` fuses a rep FFN into (the
    reference's ``eval()`` fusion, done once on the parameters instead of on every call).
    """

    hidden_features: int
    rep: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWD: jax.Array) -> jax.Array:
        d, hid = x_BHWD.shape[-1], self.hidden_features
        x = x_BHWD.astype(self.dtype)
        if not self.rep:
            h = jax.nn.gelu(dense(hid, ("embed", "mlp"), dtype=self.dtype, name="project_in")(x), approximate=False)
            h = self._dwconv(h, 5, "dwconv")
            return dense(d, ("mlp", "embed"), dtype=self.dtype, name="project_out")(h)
        half = hid // 2
        h = dense(half, ("embed", None), dtype=self.dtype, name="project_in_0")(x)
        h = jax.nn.gelu(dense(hid, (None, "mlp"), dtype=self.dtype, name="project_in_1")(h), approximate=False)
        out = h
        for i, k in enumerate((5, 3, 1)):
            out = out + self._dwconv(h, k, f"dwconv_{i}")
        out = dense(half, ("mlp", None), dtype=self.dtype, name="project_out_0")(out)
        return dense(d, (None, "embed"), dtype=self.dtype, name="project_out_1")(out)

    def _dwconv(self, h: jax.Array, k: int, name: str) -> jax.Array:
        return conv2d(h.shape[-1], (None, "mlp"), kernel_size=k, groups=h.shape[-1], dtype=self.dtype, name=name)(h)


def fuse_rep_ffn(ffn: dict) -> dict:
    """Parameters of one rep ``RepFeedForward`` -> the equivalent ``rep=False`` parameters.

    ``W_in = W0 W1``, ``b_in = b0 W1 + b1`` (no activation between the two 1x1s), depthwise
    ``k5 + pad(k3) + pad(k1 + 1)`` (the +1 is the identity branch) with summed biases, and the
    same for the output pair; float32 with full-precision matmuls, as the reference fuses.
    """
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), ffn)

    def pair(first, second):
        return {
            "kernel": _matmul(p[first]["kernel"], p[second]["kernel"]),
            "bias": _matmul(p[first]["bias"], p[second]["kernel"]) + p[second]["bias"],
        }

    kernel = p["dwconv_0"]["kernel"].at[1:4, 1:4].add(p["dwconv_1"]["kernel"])
    kernel = kernel.at[2:3, 2:3].add(p["dwconv_2"]["kernel"] + 1.0)
    bias = p["dwconv_0"]["bias"] + p["dwconv_1"]["bias"] + p["dwconv_2"]["bias"]
    return {
        "project_in": pair("project_in_0", "project_in_1"),
        "dwconv": {"kernel": kernel, "bias": bias},
        "project_out": pair("project_out_0", "project_out_1"),
    }


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def reparameterize(cfg: "UDiTConfig", params: dict) -> tuple["UDiTConfig", dict]:
    """Fuses every rep FFN for inference: ``(cfg with rep=False, params)`` computing the same function.

    This is the reference's ``eval()`` re-parameterisation (``FeedForward.add_buffer``), done once
    on the parameters; the fused model has the paper's parameter count and FLOPs. Configs without
    rep FFNs are returned unchanged. Jittable (and usable under ``jax.eval_shape``); the fused
    FFN leaves are float32 ``jax.Array`` s, the other leaves are returned as given.
    """
    if cfg.ffn_type != "rep" or not cfg.rep:
        return cfg, params
    params = nn.unbox(params)

    def walk(tree):
        out = {}
        for key, value in tree.items():
            if key == "mlp" and "dwconv_0" in value:
                stacked = jnp.ndim(value["dwconv_0"]["kernel"]) == 5  # [layers, k, k, 1, C] under scan_blocks
                out[key] = (jax.vmap(fuse_rep_ffn) if stacked else fuse_rep_ffn)(value)
            elif isinstance(value, dict):
                out[key] = walk(value)
            else:
                out[key] = value
        return out

    return cfg.replace(rep=False), walk(params)


class UDiTSubLayer(nn.Module):
    """One adaLN-Zero attention + FFN pair (``attn{s}``, ``mlp{s}``, ``adaLN_modulation{s}``)."""

    num_heads: int
    down_factor: int
    mlp_ratio: float
    ffn_type: str
    rep: bool
    kernel_size: int
    shortcut: bool
    cosine: bool
    rope: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWD: jax.Array, c_BD: jax.Array) -> jax.Array:
        b, h, w, d = x_BHWD.shape
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = AdaLNModulation(6, dtype=self.dtype, name="adaLN_modulation")(c_BD)
        attn = DownsampledAttention(
            self.num_heads, self.down_factor, self.kernel_size, self.shortcut, self.cosine, self.rope, self.dtype, name="attn"
        )
        y = modulate(layer_norm_no_affine(self.dtype, name="norm1")(x_BHWD), shift_a, scale_a)
        x_BHWD = x_BHWD + gate_a[:, None, None] * attn(y)
        y = modulate(layer_norm_no_affine(self.dtype, name="norm2")(x_BHWD), shift_f, scale_f)
        hid = int(d * self.mlp_ratio)
        if self.ffn_type == "rep":
            y = RepFeedForward(hid, self.rep, self.dtype, name="mlp")(y)
        else:
            y = Mlp(hid, dtype=self.dtype, name="mlp")(y.reshape(b, h * w, d)).reshape(b, h, w, d)
        return x_BHWD + gate_f[:, None, None] * y


class UDiTBlock(nn.Module):
    """``U_DiTBlock``: two ``UDiTSubLayer`` s (``sub1``, ``sub2``). ``[B, H, W, D], [B, D] -> [B, H, W, D]``."""

    num_heads: int
    down_factor: int
    mlp_ratio: float
    ffn_type: str
    rep: bool
    kernel_size: int
    shortcut: bool
    cosine: bool
    rope: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWD: jax.Array, c_BD: jax.Array) -> jax.Array:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(UDiTSubLayer) if f.name not in ("parent", "name")}
        x_BHWD = UDiTSubLayer(**fields, name="sub1")(x_BHWD, c_BD)
        x_BHWD = UDiTSubLayer(**fields, name="sub2")(x_BHWD, c_BD)
        return nn.with_logical_constraint(x_BHWD, ("batch", None, None, "embed"))


class UDiT(nn.Module):
    """Class-conditional U-DiT on NHWC latents.

    ``__call__(x [N, H, W, C], t [N], y [N]) -> [N, H, W, out_channels]`` (float32); with learned
    sigma, channels ``[:C]`` are epsilon and ``[C:]`` the variance interpolation values. ``train``
    enables label dropout (rng stream ``"dropout"``; each level's label embedder draws its own,
    as in the reference). Rep FFNs always run their multi-branch form; ``reparameterize`` gives
    the fused inference model the reference switches to in ``eval()``.

    Intermediates (``mutable=["intermediates"]``): ``x_embed``, ``c1``/``c2``/``c3``,
    ``enc1_block0``, ``down1_2_out``, ``latent_out``, ``dec2_out`` and each attention's ``tokens``.
    """

    config: UDiTConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        dtype = jnp.dtype(cfg.dtype)
        c = cfg.hidden_size
        patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)
        self.x_embedder = conv2d(c, (None, "embed"), kernel_init=patch_init, dtype=dtype)
        self.t_embedders = [TimestepEmbedder(c * m, dtype=dtype, name=f"t_embedder_{k}") for k, m in ((1, 1), (2, 2), (3, 4))]
        self.y_embedders = [
            LabelEmbedder(cfg.num_classes, c * m, cfg.class_dropout_prob, dtype=dtype, name=f"y_embedder_{k}")
            for k, m in ((1, 1), (2, 2), (3, 4))
        ]
        block_cls = maybe_remat(UDiTBlock, cfg.remat)
        stages = []
        for stage, depth, factor in zip(STAGES, cfg.depth, cfg.down_factors):
            fields = dict(
                num_heads=cfg.num_heads, down_factor=factor, mlp_ratio=cfg.mlp_ratio, ffn_type=cfg.ffn_type,
                rep=cfg.rep, kernel_size=cfg.kernel_size, shortcut=cfg.down_shortcut, cosine=cfg.attn_type == "v2",
                rope=cfg.posemb_type == "rope2d", dtype=dtype,
            )
            if cfg.scan_blocks and depth:
                stages.append([repeated_blocks(UDiTBlock, depth, cfg.remat, name=stage, **fields)])
            else:
                stages.append([block_cls(**fields, name=f"{stage}_{i}") for i in range(depth)])
        self.stages = stages
        # 3x3 convs between levels (no bias) and the 1x1 skip reductions; the output width is sharded.
        axes = (None, "embed")
        self.down1_2 = conv2d(c // 2, axes, use_bias=False, dtype=dtype)
        self.down2_3 = conv2d(c, axes, use_bias=False, dtype=dtype)
        self.up3_2 = conv2d(8 * c, axes, use_bias=False, dtype=dtype)
        self.reduce_chan_level2 = dense(2 * c, axes, dtype=dtype)
        self.up2_1 = conv2d(4 * c, axes, use_bias=False, dtype=dtype)
        self.reduce_chan_level1 = dense(2 * c, axes, dtype=dtype)
        self.output = conv2d(2 * c, axes, dtype=dtype)
        self.final_layer = ConvFinalLayer(cfg.out_channels, dtype=dtype)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array,
        train: bool = False,
        force_drop_ids: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        self._check_inputs(x, y)
        dtype = jnp.dtype(cfg.dtype)
        h = self.x_embedder(x.astype(dtype))
        self.sow("intermediates", "x_embed", h)
        c1, c2, c3 = (te(t) + ye(y, train, force_drop_ids) for te, ye in zip(self.t_embedders, self.y_embedders))
        for name, c in (("c1", c1), ("c2", c2), ("c3", c3)):
            self.sow("intermediates", name, c)
        enc1, enc2, latent, dec2, dec1 = self.stages

        e1 = self._run(enc1, h, c1, sow_first="enc1_block0")
        h = pixel_unshuffle(self.down1_2(e1), 2)
        self.sow("intermediates", "down1_2_out", h)
        e2 = self._run(enc2, h, c2)
        h = self._run(latent, pixel_unshuffle(self.down2_3(e2), 2), c3)
        self.sow("intermediates", "latent_out", h)
        h = self.reduce_chan_level2(jnp.concatenate([pixel_shuffle(self.up3_2(h), 2), e2], axis=-1))
        h = self._run(dec2, h, c2)
        self.sow("intermediates", "dec2_out", h)
        h = self.reduce_chan_level1(jnp.concatenate([pixel_shuffle(self.up2_1(h), 2), e1], axis=-1))
        h = self._run(dec1, h, c2)
        out = self.final_layer(self.output(h), c2)
        return out.astype(jnp.float32)

    def _run(self, blocks, h, c, sow_first: str | None = None):
        if self.config.scan_blocks:
            for stack in blocks:  # one scanned stack (none for a stage of depth 0)
                h, _ = stack(h, c)
            return h
        for i, block in enumerate(blocks):
            h = block(h, c)
            if sow_first and i == 0:
                self.sow("intermediates", sow_first, h)
        return h

    def forward_with_cfg(self, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float | jax.Array) -> jax.Array:
        """Classifier-free guidance exactly as the official ``U_DiT.forward_with_cfg`` (see ``common.forward_with_cfg``)."""
        return forward_with_cfg(self, x, t, y, cfg_scale)

    def _check_inputs(self, x: jax.Array, y: jax.Array) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"U-DiT expects NHWC input [N, H, W, {cfg.in_channels}], got {tuple(x.shape)}; transpose NCHW "
                f"with x.transpose(0, 2, 3, 1) or change in_channels in the config"
            )
        check_resolution(cfg, x.shape[1], x.shape[2])
        check_labels(y, cfg.num_classes, allow_null=cfg.class_dropout_prob > 0)


@functools.lru_cache(maxsize=16)
def param_shapes(cfg: UDiTConfig) -> dict:
    """The parameter tree of ``UDiT(cfg)`` as ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``; cached)."""
    module = UDiT(cfg)
    x = jax.ShapeDtypeStruct((1, cfg.input_size, cfg.input_size, cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x, t, t)["params"])


def param_count(cfg: UDiTConfig, fused: bool = False) -> int:
    """Number of parameters of ``UDiT(cfg)``; ``fused``: after ``reparameterize`` (the paper's count).

    Counted on the ``scan_blocks`` layout (the same leaves, stacked per stage), which traces one
    block per stage instead of every block."""
    shapes = param_shapes(cfg.replace(scan_blocks=True))
    if fused:
        shapes = jax.eval_shape(lambda p: reparameterize(cfg, p)[1], shapes)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


def forward_macs(cfg: UDiTConfig, height: int | None = None, width: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (convs, linears, attention matmuls).

    Counts the re-parameterised (fused) FFN when ``rep`` is set, as the paper's table does (its
    "GFLOPs" are ``torchprofile`` MACs of the model after ``eval()``). Norms, activations and
    softmax are not counted.
    """
    height = height or cfg.input_size
    width = width or cfg.input_size
    c, k, hw = cfg.hidden_size, cfg.kernel_size, height * width
    total = hw * cfg.in_channels * c * 9  # x_embedder
    total += sum(256 * m * c + (m * c) ** 2 for m in (1, 2, 4))  # timestep MLPs
    for mult, stride, depth, f in zip(STAGE_WIDTH, STAGE_STRIDE, cfg.depth, cfg.down_factors):
        d, t = mult * c, hw // stride**2
        hid = int(d * cfg.mlp_ratio)
        attn = t * d * k * k + t * d * 3 * d + 2 * t * (t // f**2) * d + t * d * d
        if cfg.ffn_type == "basic":
            ffn = 2 * t * d * hid
        else:
            ffn = t * (2 * d * hid + hid * 25)
        total += 2 * depth * (attn + ffn + 6 * d * d)
    total += hw * c * (c // 2) * 9 + (hw // 4) * 2 * c * c * 9  # down1_2, down2_3
    total += (hw // 16) * 4 * c * 8 * c * 9 + (hw // 4) * 4 * c * 2 * c  # up3_2, reduce_chan_level2
    total += (hw // 4) * 2 * c * 4 * c * 9 + hw * 2 * c * 2 * c  # up2_1, reduce_chan_level1
    total += hw * 2 * c * 2 * c * 9 + hw * 2 * c * cfg.out_channels * 9 + 2 * c * 4 * c  # output, final layer
    return total
