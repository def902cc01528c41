"""QAC (Liang et al. 2024, "Learning Quantized Adaptive Conditions for Diffusion Models", arXiv
2409.17487): an EDM denoiser trained jointly with a tiny encoder whose quantised code of the clean
image is an extra condition, so that the probability-flow ODE bends less and few NFE suffice.

The paper's method section was not readable (``/work/shared/papers/qac_adaptive_conditions.md``).
Known from the abstract: an "extremely light-weight quantized encoder", ~1% extra training
parameters, no extra regularisation term, ODE acceleration, SDE-style editing kept. Everything
else here is **a choice, not the paper's recipe** (docs/qac.md lists them with the alternatives):

- Encoder (``ConditionEncoder``): the clean image ``x_0 [N, H, W, C]`` only (not the noise; Lee,
  Kim & Ye 2023 encode the pair) -> conv3x3(w)-SiLU, avgpool 2, conv3x3(2w)-SiLU, avgpool 2,
  conv3x3(2w)-SiLU, flatten, per-example standardisation, dense without bias -> ``[N, L, d]``
  pre-quantisation values. ``encoder_width`` w = 16: 18,144 parameters, 1.4% of the digits DiT (the paper: ~1%).
  Why (measured on the digits, docs/qac.md): with a mean-pooled feature and a biased projection
  512 digits start with 1-5% distinct codes and a batch collapses to one code during the lr
  warm-up (a shared shift of z flips every image's bits together); flattened, standardised
  features and a bias-free projection start at 13-15% and recover sooner after the warm-up.
- Quantiser (``CodeSpec``): ``binary`` (sign, d bits per token, vocabulary 2^d) or ``fsq``
  (``fsq_levels`` per token channel, vocabulary prod(levels)); both straight-through, no
  auxiliary loss (``jaxlab.diffusion.quantizers``). VQ (codebook + commitment loss) is the
  alternative not implemented: it needs the extra loss the abstract says QAC does without.
- Injection (``QACDenoiser``, switch ``injection``): ``embedding`` (default) maps the flattened
  code by one dense layer to the backbone width and adds it to the timestep + label embedding
  (the path of a class label: DiT's ``cond`` input); ``input`` maps it by one dense layer to an
  image-shaped bias added to the backbone's input ``c_in x`` (works with any backbone).
- Training: EDM's loss on ``D(x_0 + sigma n, sigma, Q(E(x_0)))``, gradients into the encoder
  through the straight-through quantiser, one optimiser for both (``QACTask``).
- Sampling: the code comes from a prior over codes (``jaxlab.diffusion.qac_prior``).

Params: ``{"encoder": ..., "denoiser": {"backbone": <registry model>, "code_embed": ...}}``.
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion import quantizers
from jaxlab.models.registry import get_family
from jaxlab.nn.conv import conv2d
from jaxlab.nn.linear import dense

QUANTIZERS = ("binary", "fsq")
INJECTIONS = ("embedding", "input")


@dataclasses.dataclass(frozen=True)
class CodeSpec:
    """The discrete code: ``tokens`` L positions of ``token_dim`` d quantised channels each.

    ``binary``: d = ``bits`` channels of +-1 per token (vocabulary 2^d). ``fsq``: d =
    ``len(fsq_levels)`` channels, channel i on ``fsq_levels[i]`` values (vocabulary prod(levels)).
    """

    quantizer: str = "binary"
    tokens: int = 2
    bits: int = 4
    fsq_levels: tuple[int, ...] = (5, 3)

    def __post_init__(self):
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"config.qac.quantizer={self.quantizer!r} is unknown; allowed values: {list(QUANTIZERS)}")
        if not isinstance(self.tokens, int) or self.tokens < 1:
            raise ValueError(f"config.qac.code_tokens={self.tokens!r} must be an int >= 1")
        if self.quantizer == "binary" and not (isinstance(self.bits, int) and 1 <= self.bits <= 16):
            raise ValueError(f"config.qac.bits={self.bits!r} must be an int in [1, 16] (vocabulary 2^bits per token)")
        if self.quantizer == "fsq":
            levels = tuple(int(v) for v in self.fsq_levels)
            if not levels or min(levels) < 2 or int(np.prod(levels)) > 2**16:
                raise ValueError(f"config.qac.fsq_levels={list(self.fsq_levels)} needs >= 1 channel, each >= 2 levels, "
                                 f"product <= 65536 (the vocabulary per token)")
            object.__setattr__(self, "fsq_levels", levels)

    @property
    def token_dim(self) -> int:
        return self.bits if self.quantizer == "binary" else len(self.fsq_levels)

    @property
    def vocab_size(self) -> int:
        return 2**self.bits if self.quantizer == "binary" else int(np.prod(self.fsq_levels))

    @property
    def shape(self) -> tuple[int, int]:
        """``(L, d)``: one example's code."""
        return (self.tokens, self.token_dim)

    @property
    def num_codes(self) -> int:
        return self.vocab_size**self.tokens

    def quantize(self, z: jax.Array) -> jax.Array:
        """``[N, L, d]`` continuous -> quantised code, straight-through gradients."""
        if self.quantizer == "binary":
            return quantizers.binary_quantize(z)
        return quantizers.fsq_quantize(z, self.fsq_levels)

    def indices(self, code: jax.Array) -> jax.Array:
        """``[N, L, d]`` code -> ``[N, L]`` int32 token indices in ``[0, vocab_size)``."""
        self.check_code(code)
        if self.quantizer == "binary":
            return quantizers.binary_indices(code)
        return quantizers.fsq_indices(code, self.fsq_levels)

    def from_indices(self, indices: jax.Array) -> jax.Array:
        """``[N, L]`` token indices -> ``[N, L, d]`` float32 code."""
        if indices.ndim != 2 or indices.shape[1] != self.tokens:
            raise ValueError(f"code indices must be [N, {self.tokens}] (config.qac.code_tokens), got {tuple(indices.shape)}")
        if self.quantizer == "binary":
            return quantizers.binary_from_indices(indices, self.bits)
        return quantizers.fsq_from_indices(indices, self.fsq_levels)

    def check_code(self, code) -> None:
        """A clear error unless ``code`` is ``[N, L, d]`` for this spec."""
        if code.ndim != 3 or tuple(code.shape[1:]) != self.shape:
            raise ValueError(
                f"codes must be [N, {self.tokens}, {self.token_dim}] ({self.quantizer}: code_tokens={self.tokens}, "
                f"{self.token_dim} channels per token), got {tuple(code.shape)}: encode images with the same "
                f"config.qac, or draw codes from this run's prior"
            )


class ConditionEncoder(nn.Module):
    """``x_0 [N, H, W, C]`` -> pre-quantisation ``z [N, L, d]`` (float32); a small conv net (module docstring)."""

    spec: CodeSpec
    width: int = 16

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        if x_BHWC.ndim != 4:
            raise ValueError(f"the QAC encoder takes NHWC images, got shape {tuple(x_BHWC.shape)}")
        w = self.width
        h = nn.silu(conv2d(w, (None, None), name="conv_0")(x_BHWC.astype(jnp.float32)))
        h = nn.avg_pool(h, (2, 2), (2, 2)) if h.shape[1] >= 2 else h
        h = nn.silu(conv2d(2 * w, (None, None), name="conv_1")(h))
        h = nn.avg_pool(h, (2, 2), (2, 2)) if h.shape[1] >= 2 else h
        h = nn.silu(conv2d(2 * w, (None, None), name="conv_2")(h))
        h_BD = h.reshape(h.shape[0], -1)
        # Per-example standardised features and no bias on the projection (module docstring: code collapse).
        h_BD = (h_BD - h_BD.mean(-1, keepdims=True)) * jax.lax.rsqrt(h_BD.var(-1, keepdims=True) + 1e-6)
        z = dense(self.spec.tokens * self.spec.token_dim, (None, None), use_bias=False,
                  kernel_init=nn.initializers.lecun_normal(), name="proj")(h_BD)
        return z.reshape(x_BHWC.shape[0], *self.spec.shape)


class QACDenoiser(nn.Module):
    """EDM's raw network ``F`` with a code: ``(x_in, t [N], y [N], code [N, L, d]) -> [N, H, W, C]``.

    ``backbone_family`` / ``backbone_config``: a registry model (``module(x, t, y, train=...)``);
    ``injection="embedding"`` needs a backbone with DiT's ``cond`` input (DiT), ``"input"`` works
    with any.
    """

    backbone_family: str
    backbone_config: object
    spec: CodeSpec
    injection: str = "embedding"

    def setup(self):
        if self.injection not in INJECTIONS:
            raise ValueError(f"config.qac.injection={self.injection!r} is unknown; allowed values: {list(INJECTIONS)}")
        cfg = self.backbone_config
        self.backbone = get_family(self.backbone_family).module(cfg)
        # Small normal init (as a label embedding table), so the code matters from step 1.
        init = nn.initializers.normal(0.02)
        if self.injection == "embedding":
            self.code_embed = dense(cfg.hidden_size, (None, "embed"), kernel_init=init, name="code_embed")
        else:
            self.code_embed = dense(cfg.input_size * cfg.input_size * cfg.in_channels, (None, None), kernel_init=init,
                                    name="code_embed")

    def __call__(self, x_in: jax.Array, t: jax.Array, y: jax.Array, code: jax.Array, train: bool = False) -> jax.Array:
        self.spec.check_code(code)
        if code.shape[0] != x_in.shape[0]:
            raise ValueError(f"{code.shape[0]} codes for {x_in.shape[0]} images: pass one code per image")
        flat = code.reshape(code.shape[0], -1).astype(jnp.float32)
        if self.injection == "embedding":
            return self.backbone(x_in, t, y, train=train, cond=self.code_embed(flat))
        bias = self.code_embed(flat).reshape(x_in.shape)
        return self.backbone(x_in + bias, t, y, train=train)


@dataclasses.dataclass(frozen=True)
class QACModel:
    """The two towers and the code: ``encode(params, x_0)`` and ``raw(params, x_in, t, y, code)``."""

    encoder: ConditionEncoder
    denoiser: QACDenoiser
    spec: CodeSpec

    @classmethod
    def build(cls, family: str, model_config, spec: CodeSpec, *, encoder_width: int = 16,
              injection: str = "embedding") -> "QACModel":
        if injection not in INJECTIONS:
            raise ValueError(f"config.qac.injection={injection!r} is unknown; allowed values: {list(INJECTIONS)}")
        if injection == "embedding" and family != "dit":
            raise ValueError(f"config.qac.injection='embedding' adds the code to DiT's conditioning (its cond input); "
                             f"model_family={family!r} has none: use injection='input' or model_family='dit'")
        if not isinstance(encoder_width, int) or encoder_width < 1:
            raise ValueError(f"config.qac.encoder_width={encoder_width!r} must be an int >= 1")
        return cls(ConditionEncoder(spec, encoder_width), QACDenoiser(family, model_config, spec, injection), spec)

    def init(self, rng: jax.Array, x: jax.Array, y: jax.Array) -> dict:
        enc_rng, den_rng, drop_rng = jax.random.split(rng, 3)
        enc = self.encoder.init(enc_rng, x)["params"]
        code = jnp.zeros((x.shape[0], *self.spec.shape), jnp.float32)
        t = jnp.zeros(y.shape, jnp.float32)
        den = self.denoiser.init({"params": den_rng, "dropout": drop_rng}, x, t, y, code, train=False)["params"]
        return {"encoder": enc, "denoiser": den}

    def encode(self, params: dict, x0: jax.Array) -> jax.Array:
        """Clean images ``[N, H, W, C]`` -> quantised code ``[N, L, d]`` (straight-through)."""
        check_params(params)
        return self.spec.quantize(self.encoder.apply({"params": params["encoder"]}, x0))

    def raw(self, params: dict, x_in, t, y, code, *, train: bool = False, rngs=None) -> jax.Array:
        check_params(params)
        return self.denoiser.apply({"params": params["denoiser"]}, x_in, t, y, code, train=train, rngs=rngs)


def check_params(params) -> None:
    """A clear error for parameters without QAC's two towers (e.g. an EDM baseline checkpoint)."""
    if not isinstance(params, dict) or "encoder" not in params or "denoiser" not in params:
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"these parameters have no QAC encoder (top-level keys {keys}; expected 'encoder' and 'denoiser'): the "
            f"checkpoint is not a digits-qac-style run; sample an EDM baseline with its own config "
            f"(configs/qac.py:digits-baseline)"
        )


def code_spec_from_section(section: dict) -> CodeSpec:
    """``CodeSpec`` from ``config.qac`` fields (``quantizer``, ``code_tokens``, ``bits``, ``fsq_levels``)."""
    levels: Sequence[int] = section.get("fsq_levels", (5, 3))
    return CodeSpec(
        quantizer=section.get("quantizer", "binary"), tokens=section.get("code_tokens", 2),
        bits=section.get("bits", 4), fsq_levels=tuple(int(v) for v in levels),
    )
