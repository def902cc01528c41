"""DiC: Rethinking Conv3x3 Designs in Diffusion Models (Tian et al., CVPR 2025).

A purely 3x3-convolutional hourglass denoiser. Faithful to ``YuchuanTian/DiC``
``dic_models.py`` (class ``DiC``, blocks ``U_Block`` -> ``UNetBlock``); images are NHWC here.

Stages (``levels`` = 3 or 4): encoder stages ``enc_blocks_0 .. enc_blocks_{L-2}`` each followed
by a downsampler (3x3 conv to C/4 + pixel unshuffle), the middle stage ``lat_blocks_0``, and
decoder stages ``dec_blocks_0 .. dec_blocks_{L-2}`` each preceded by an upsampler (3x3 conv to
4C + pixel shuffle). Skips are sparse: encoder blocks push every ``skip_stride``-th activation
counted from the stage end; decoder blocks ``b % skip_stride == 0`` take ``concat([x, skip])``.
Each level has its own timestep + label embedders; the decoder reuses the encoder's.
"""

import dataclasses
from collections.abc import Sequence

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
from jaxlab.nn import ConvFinalLayer, LabelEmbedder, TimestepEmbedder, dense, group_count, group_norm, modulate
from jaxlab.nn.conv import conv2d, pixel_shuffle, pixel_unshuffle
from jaxlab.nn.linear import xavier_uniform, zeros

_ACTIVATIONS = ("gelu", "silu")


@dataclasses.dataclass(frozen=True)
class DiCConfig(ModelConfig):
    """Architecture of a DiC; field names and meanings are the official constructor kwargs.

    Defaults are ``DiC_default``'s (the named configs) with DiC-XL's size. ``depth`` has 5
    entries (3 levels) or 7 (4 levels, three downsamplings) and must be symmetric;
    ``mult_channels`` has ``2L - 1`` entries or ``L`` entries (then mirrored). ``blockconfig``
    0 modulates between the two convs of a block, 1 before the first; ``affinef`` 3 adds the
    conditional gate, 2 has none. ``actf`` switches the two block activations on/off,
    ``actinada`` puts SiLU before each block's condition Linear. ``num_groups`` /
    ``min_channels`` set the first GroupNorm of each block (the second always uses 32 / 4).
    ``init_zero`` zero-initialises the blocks' condition Linears.

    Beyond the reference: ``dtype`` (compute dtype name; params stay float32), ``remat``
    (rematerialise each block: "none", "full" or a ``jax.checkpoint_policies`` name) and
    ``scan_blocks``: the encoder and middle stages, whose blocks are identical, each run as one
    ``nn.scan`` (parameters stacked under ``<stage>/block``; an encoder stage keeps every block's
    output to pick its skips). Decoder blocks stay unrolled: every ``skip_stride``-th one takes
    the concatenated skip (other input width, other parameters), so they are not identical.
    """

    input_size: int = 32
    in_channels: int = 4
    hidden_size: int = 384
    depth: tuple[int, ...] = (7, 7, 8, 7, 7)
    mult_channels: tuple[int, ...] = (1, 2, 4, 2, 1)
    skip_stride: int = 3
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    cfg_channels: int = 0  # output channels classifier-free guidance acts on; 0: common.guided_channels
    blockconfig: int = 0
    affinef: int = 3
    actfunc: str = "gelu"
    actf: tuple[int, ...] = (1, 1)
    actinada: int = 1
    num_groups: int = 32
    min_channels: int = 4
    dropout: float = 0.0
    skip_scale: float = 1.0
    eps: float = 1e-5
    init_zero: int = 0
    dtype: str = "float32"
    remat: str = "none"
    scan_blocks: bool = False

    def __post_init__(self):
        # Lists (JSON, ml_collections) become tuples so the config stays hashable.
        for name in ("depth", "mult_channels", "actf"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(int(v) if isinstance(v, np.integer) else v for v in value))

    POSITIVE = ("input_size", "in_channels", "hidden_size", "num_classes", "skip_stride", "num_groups", "min_channels", "eps")
    PROBABILITIES = ("class_dropout_prob", "dropout")

    def validate(self) -> None:
        super().validate()
        check_cfg_channels(self)
        self._validate_lists()
        _check_in("blockconfig", self.blockconfig, (0, 1))
        _check_in("affinef", self.affinef, (2, 3))
        _check_in("actfunc", self.actfunc, _ACTIVATIONS)
        _check_in("actinada", self.actinada, (0, 1))
        _check_in("init_zero", self.init_zero, (0, 1))
        if len(self.actf) != 2 or any(a not in (0, 1) for a in self.actf):
            raise ValueError(f"actf={self.actf!r} must be two flags (0 or 1), e.g. (1, 1)")
        for name in ("hidden_size", "in_channels", "num_classes", "skip_stride", "num_groups", "min_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.class_dropout_prob < 1 or not 0 <= self.dropout < 1:
            raise ValueError(
                f"class_dropout_prob={self.class_dropout_prob} and dropout={self.dropout} must be in [0, 1)"
            )
        factor = 2 ** (self.levels - 1)
        if self.input_size % factor:
            raise ValueError(
                f"input_size={self.input_size} is not divisible by {factor} (the {self.levels - 1} "
                f"downsamplings of a {self.levels}-level DiC); pick a multiple of {factor}"
            )
        widths = self.stage_widths
        for k in range(1, self.levels):
            if widths[k] % 4:
                raise ValueError(
                    f"stage {k} width hidden_size * mult = {widths[k]} is not divisible by 4, which the "
                    f"pixel-unshuffle downsampler needs; change hidden_size or mult_channels"
                )
        self._validate_conditions()
        self._validate_group_norms()

    def _validate_lists(self) -> None:
        if len(self.depth) in (3, 4):
            raise ValueError(
                f"depth={list(self.depth)}: the official 3/4-entry depth shorthand adds 1 to the decoder "
                f"depths and then fails its own symmetry assert; give all 5 (or 7) stage depths"
            )
        if len(self.depth) not in (5, 7):
            raise ValueError(f"depth={list(self.depth)} must have 5 entries (3 levels) or 7 (4 levels)")
        if any(not isinstance(d, int) or d < 1 for d in self.depth):
            raise ValueError(f"depth={list(self.depth)} must hold positive ints")
        levels = self.levels
        if self.depth[:levels] != self.depth[-levels:][::-1]:
            raise ValueError(
                f"depth={list(self.depth)} is not symmetric: the decoder depths must mirror the encoder "
                f"(depth[:{levels}] == reversed(depth[-{levels}:]))"
            )
        if len(self.stage_mults) != 2 * levels - 1:
            raise ValueError(
                f"mult_channels={list(self.mult_channels)} does not fit {levels} levels: give "
                f"{2 * levels - 1} entries, or {levels} to be mirrored"
            )
        if any(not isinstance(m, int) or m < 1 for m in self.mult_channels):
            raise ValueError(f"mult_channels={list(self.mult_channels)} must hold positive ints")

    def _validate_conditions(self) -> None:
        mults = self.stage_mults
        if mults[-1] not in mults[: self.levels]:
            raise ValueError(
                f"mult_channels={list(mults)}: the last stage's multiplier {mults[-1]} must equal one of "
                f"the encoder levels' {list(mults[: self.levels])} (its condition is that level's)"
            )
        for k, level in enumerate(self.stage_cond_levels):
            if mults[k] != mults[level]:
                raise ValueError(
                    f"mult_channels={list(mults)}: stage {k} (width x{mults[k]}) is conditioned by level "
                    f"{level} (width x{mults[level]}); decoder multipliers must mirror the encoder's"
                )

    def _validate_group_norms(self) -> None:
        for stage in stage_plan(self):
            for b in range(stage.depth):
                c_in, c_out = stage.block_in_channels(b), stage.width
                for channels, groups, which in (
                    (c_in, group_count(c_in, self.num_groups, self.min_channels), "norm0"),
                    (c_out, group_count(c_out), "norm1"),
                ):
                    if groups < 1 or channels % groups:
                        raise ValueError(
                            f"{stage.name} block {b} {which}: {channels} channels cannot be split into "
                            f"{groups} groups (min(num_groups, channels // min_channels)); change "
                            f"hidden_size, mult_channels or num_groups/min_channels"
                        )

    @property
    def levels(self) -> int:
        return 4 if len(self.depth) == 7 else 3

    @property
    def stage_mults(self) -> tuple[int, ...]:
        """Width multiplier per stage (enc..., mid, dec...); 3/4 given entries are mirrored."""
        m = self.mult_channels
        return m + m[:-1][::-1] if len(m) in (3, 4) else m

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.hidden_size * m for m in self.stage_mults)

    @property
    def last_stage_cond_level(self) -> int:
        """The first level whose multiplier equals the last stage's (its condition is reused)."""
        return self.stage_mults[: self.levels].index(self.stage_mults[-1])

    @property
    def stage_cond_levels(self) -> tuple[int, ...]:
        """Which level's condition each stage uses: ``[0..L-1] + [L-2..1] + [last]``."""
        levels = list(range(self.levels))
        return tuple(levels + levels[1:-1][::-1] + [self.last_stage_cond_level])

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels


@dataclasses.dataclass(frozen=True)
class Stage:
    """One run of blocks at a fixed resolution; ``name`` is the Flax prefix (torch path with ``_``)."""

    name: str
    width: int
    depth: int
    cond_level: int
    skip_width: int = 0  # decoder: channels concatenated in front of every skip_stride-th block
    skip_stride: int = 1

    def block_in_channels(self, b: int) -> int:
        return self.width + (self.skip_width if self.skip_width and b % self.skip_stride == 0 else 0)

    def scanned(self, config: "DiCConfig") -> bool:
        """Whether ``scan_blocks`` runs this stage as one ``nn.scan`` (identical blocks: not a decoder)."""
        return config.scan_blocks and not self.skip_width and self.depth > 0


def stage_plan(config: DiCConfig) -> list[Stage]:
    """The stages in execution order: ``L-1`` encoder stages, the middle, ``L-1`` decoder stages."""
    levels, widths, depth = config.levels, config.stage_widths, config.depth
    cond = config.stage_cond_levels
    plan = [Stage(f"enc_blocks_{k}", widths[k], depth[k], cond[k]) for k in range(levels - 1)]
    plan.append(Stage("lat_blocks_0", widths[levels - 1], depth[levels - 1], cond[levels - 1]))
    for j in range(levels - 1):
        k = levels + j
        skip_level = levels - 2 - j
        plan.append(Stage(f"dec_blocks_{j}", widths[k], depth[k], cond[k], widths[skip_level], config.skip_stride))
    return plan


# Official named configs (``DiC_models``): DiC_default with depth and hidden_size set.
PRESETS: dict[str, dict] = {
    "DiC-S": dict(depth=(6, 6, 5, 6, 6), hidden_size=96),
    "DiC-B": dict(depth=(6, 6, 5, 6, 6), hidden_size=192),
    "DiC-XL": dict(depth=(7, 7, 8, 7, 7), hidden_size=384),
    "DiC-H": dict(depth=(14, 14, 10, 14, 14), hidden_size=384),
}


def _check_in(name: str, value, allowed) -> None:
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {list(allowed)}")


def _activation(name: str, enabled: int):
    if not enabled:
        return lambda x: x
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)  # torch nn.GELU(): exact erf form
    return nn.silu


class UNetBlock(nn.Module):
    """DiC's residual conv block: ``x [N, H, W, Cin], c [N, Cout] -> [N, H, W, Cout]``.

    blockconfig 0: ``h = conv0(act(GN0(x))); h = act(GN1(h) * (1 + scale) + shift)``;
    blockconfig 1: ``h = conv0(act(GN0(x) * (1 + scale) + shift)); h = act(GN1(h))``; then
    ``out = (gate * conv1(dropout(h)) + skip(x)) * skip_scale`` where ``(gate, scale, shift)``
    (``affinef`` 3; ``(scale, shift)`` and no gate for 2) come from one Linear of ``c``, and
    ``skip`` is a 1x1 conv when ``Cin != Cout``.
    """

    out_channels: int
    config: DiCConfig

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        c_in, c_out = x.shape[-1], self.out_channels
        act0, act1 = (_activation(cfg.actfunc, on) for on in cfg.actf)

        mod_width = c_in if cfg.blockconfig else c_out
        affine_init = zeros if cfg.init_zero else xavier_uniform()
        params_NP = dense(cfg.affinef * mod_width, ("embed", "mlp"), kernel_init=affine_init, dtype=dtype, name="affine")(
            nn.silu(c) if cfg.actinada else c
        )
        chunks = jnp.split(params_NP, cfg.affinef, axis=-1)
        gate, (scale, shift) = (chunks[0], chunks[1:]) if cfg.affinef == 3 else (None, chunks)

        norm0 = group_norm(group_count(c_in, cfg.num_groups, cfg.min_channels), cfg.eps, dtype, name="norm0")
        norm1 = group_norm(group_count(c_out), cfg.eps, dtype, name="norm1")
        conv0 = conv2d(c_out, ("embed", "mlp"), dtype=dtype, name="conv0")
        conv1 = conv2d(c_out, ("mlp", "embed"), dtype=dtype, name="conv1")
        if cfg.blockconfig == 0:
            h = conv0(act0(norm0(x)))
            h = act1(modulate(norm1(h), shift, scale))
        else:
            h = conv0(act0(modulate(norm0(x), shift, scale)))
            h = act1(norm1(h))
        if cfg.dropout > 0:
            h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
        h = conv1(h)
        if gate is not None:
            h = gate[:, None, None, :] * h
        skip = conv2d(c_out, ("embed", "embed"), kernel_size=1, dtype=dtype, name="skip")(x) if c_in != c_out else x
        out = (h + skip) * cfg.skip_scale
        return nn.with_logical_constraint(out, ("batch", None, None, "embed"))


class DiC(nn.Module):
    """Class-conditional convolutional diffusion backbone on NHWC images/latents.

    ``__call__(x [N, H, W, C], t [N], y [N]) -> [N, H, W, out_channels]`` float32, with
    ``out_channels = 2C`` under learned sigma (epsilon first). Any ``H, W`` divisible by
    ``2 ** (levels - 1)`` works (the network is fully convolutional); ``config.input_size`` is
    the training/sampling size. Intermediate tensors are sown to the ``"intermediates"``
    collection (``stem``, ``t_emb_i``, ``cond_i``, ``enc_stage0``, ``down0``, ``mid``,
    ``dec_last_stage``) when it is mutable.
    """

    config: DiCConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array,
        train: bool = False,
        force_drop_ids: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        cfg.validate()
        self._check_inputs(x, y)
        dtype = jnp.dtype(cfg.dtype)
        plan = stage_plan(cfg)
        block_cls = maybe_remat(UNetBlock, cfg.remat, static_argnums=(3,))  # train is static

        h = conv2d(plan[0].width, (None, "embed"), kernel_init=_stem_init(), dtype=dtype, name="x_embedder")(x.astype(dtype))
        self.sow("intermediates", "stem", h)
        conds = self._level_conditions(t, y, train, force_drop_ids, dtype)

        skips = []
        levels = cfg.levels
        for k, stage in enumerate(plan):
            c = conds[stage.cond_level]
            if k >= levels:  # decoder: upsample from the previous stage's width
                j = k - levels
                h = conv2d(4 * stage.width, ("embed", "mlp"), use_bias=False, dtype=dtype, name=f"ups_{j}")(h)
                h = pixel_shuffle(h, 2)
            pushes = [k < levels - 1 and (stage.depth - 1 - b) % cfg.skip_stride == 0 for b in range(stage.depth)]
            if stage.scanned(cfg):
                stack = repeated_blocks(UNetBlock, stage.depth, cfg.remat, name=stage.name, remat_kwargs=dict(
                    static_argnums=(3,)), keep_outputs=any(pushes), out_channels=stage.width, config=cfg)
                h, outputs = stack(h, c, train)
                skips.extend(outputs[b] for b in range(stage.depth) if pushes[b])
            for b in range(0 if stage.scanned(cfg) else stage.depth):
                if stage.skip_width and b % cfg.skip_stride == 0:
                    h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = block_cls(stage.width, cfg, name=f"{stage.name}_{b}")(h, c, train)
                if pushes[b]:
                    skips.append(h)
            if k < levels - 1:  # encoder: downsample to the next stage's width
                if k == 0:
                    self.sow("intermediates", "enc_stage0", h)
                h = conv2d(plan[k + 1].width // 4, ("embed", "mlp"), use_bias=False, dtype=dtype, name=f"downs_{k}")(h)
                h = pixel_unshuffle(h, 2)
                if k == 0:
                    self.sow("intermediates", "down0", h)
            elif k == levels - 1:
                self.sow("intermediates", "mid", h)
        self.sow("intermediates", "dec_last_stage", h)

        h = conv2d(plan[-1].width, ("embed", "embed"), dtype=dtype, name="output")(h)
        out = ConvFinalLayer(cfg.out_channels, dtype, name="final_layer")(h, conds[plan[-1].cond_level])
        return out.astype(jnp.float32)

    def _level_conditions(self, t, y, train, force_drop_ids, dtype) -> list[jax.Array]:
        """``t_emb_i + y_emb_i`` per level ``i`` (width ``hidden * mult_i``); labels dropped once for all."""
        cfg = self.config
        drop_ids = force_drop_ids
        if drop_ids is None and train and cfg.class_dropout_prob > 0:
            drop_ids = (jax.random.uniform(self.make_rng("dropout"), y.shape) < cfg.class_dropout_prob).astype(jnp.int32)
        conds = []
        for i in range(cfg.levels):
            width = cfg.stage_widths[i]
            t_emb = TimestepEmbedder(width, dtype=dtype, name=f"t_embedder_{i}")(t)
            y_emb = LabelEmbedder(cfg.num_classes, width, cfg.class_dropout_prob, dtype=dtype, name=f"y_embedder_{i}")(
                y, False, drop_ids
            )
            self.sow("intermediates", f"t_emb_{i}", t_emb)
            conds.append(t_emb + y_emb)
            self.sow("intermediates", f"cond_{i}", conds[-1])
        return conds

    def forward_with_cfg(self, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float | jax.Array) -> jax.Array:
        """Classifier-free guidance exactly as the official ``DiC.forward_with_cfg`` (see ``common.forward_with_cfg``)."""
        return forward_with_cfg(self, x, t, y, cfg_scale)

    def _check_inputs(self, x: jax.Array, y: jax.Array) -> None:
        cfg = self.config
        factor = 2 ** (cfg.levels - 1)
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels or x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"DiC expects NHWC input [N, H, W, {cfg.in_channels}] with H and W divisible by {factor} "
                f"(e.g. [N, {cfg.input_size}, {cfg.input_size}, {cfg.in_channels}]), got {tuple(x.shape)}; "
                f"transpose NCHW with x.transpose(0, 2, 3, 1) or change in_channels in the config"
            )
        check_labels(y, cfg.num_classes, allow_null=cfg.class_dropout_prob > 0)


def _stem_init():
    """The reference's stem init: xavier-uniform of the ``[out, in * 3 * 3]`` view (fan_out = out)."""
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)
