"""Decoder-only causal language models: GPT-NeoX (Pythia) and LLaMA layouts, softmax or DiJiang attention.

- ``layout="gpt_neox"``: Hugging Face ``GPTNeoXForCausalLM`` (the Pythia suite): ``embed_in`` ->
  blocks ``h + attn(LN1(h)) + mlp(LN2(h))`` (parallel residual; sequential when
  ``parallel_residual=False``), LayerNorm with bias, fused per-head ``query_key_value`` with biases,
  partial rotate-half RoPE on the first ``rotary_pct * head_dim`` features, exact (erf) GELU MLP,
  ``final_layer_norm``, untied bias-free ``embed_out``.
- ``layout="llama"``: ``LlamaForCausalLM``: pre-norm RMSNorm blocks, separate bias-free q/k/v/o
  projections with grouped-query attention, full rotate-half RoPE, SwiGLU MLP, final RMSNorm,
  ``lm_head`` (tied to the embedding when ``tie_word_embeddings``).
- ``attention="dijiang"`` replaces softmax attention by DiJiang's (Chen et al., ICML 2024; the
  released ``modeling_gpt_neox_dijiang.py``, see ``jaxlab.models.lm_attention``).

``module(input_ids [B, T], segment_ids=None, *, cache=None, offset=0) -> (logits [B, T, V] float32,
cache)``: without a cache the T tokens are a sequence starting at position 0 (``cache`` is returned
as None); ``segment_ids [B, T]`` (non-decreasing) marks packed documents, each attending only to
itself (positions keep counting across documents, as in a plain packed window). With a
cache (``init_cache``) they sit at positions ``offset .. offset + T - 1`` after the cached ones and
the updated cache is returned: a fixed-size ``KVCache`` for softmax attention, a ``[layers, B, heads,
F, head_dim]`` recurrent state for DiJiang (``LinearState``), whose size does not grow with the
context.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from jaxlab.models.common import ModelConfig, remat_policy
from jaxlab.models.lm_attention import CausalSelfAttention, LinearState, dijiang_projections, init_cache
from jaxlab.nn import GatedMlp, KVCache, RMSNorm
from jaxlab.nn.linear import dense, logical_init

LAYOUTS = ("gpt_neox", "llama")
ATTENTIONS = ("softmax", "dijiang")
DIJIANG_FORMS = ("chunked", "parallel", "factorised")


@dataclasses.dataclass(frozen=True)
class LMConfig(ModelConfig):
    """Architecture of a causal LM; field names follow the Hugging Face configs where they exist.

    ``num_kv_heads``: key/value heads (GQA; GPT-NeoX has ``num_kv_heads == num_heads``).
    ``rotary_pct``: fraction of each head's features that are rotated (Pythia 0.25, LLaMA 1.0).
    ``norm_eps``: LayerNorm (gpt_neox) or RMSNorm (llama) epsilon. ``use_bias``: biases on the
    attention and MLP projections (gpt_neox True, llama False).
    ``attention``: "softmax" or "dijiang"; ``dijiang_form``: how DiJiang's full-sequence forward is
    computed ("chunked" = the stable blockwise scan of ``dijiang_chunk`` tokens, used for training;
    "parallel" = the reference's T x T form; "factorised" = the reference's literal gamma^-n
    arithmetic, which overflows past ~2,800 tokens and exists to show it).
    jaxlab-only fields: ``dtype`` (compute dtype; params, norms, softmax and logits stay float32),
    ``remat``, ``scan_blocks`` (as ``DiTConfig``), ``init_std`` (N(0, init_std) weights).
    """

    layout: str = "gpt_neox"
    vocab_size: int = 50304
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    num_kv_heads: int = 8
    intermediate_size: int = 2048
    max_position_embeddings: int = 2048
    rotary_pct: float = 0.25
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    parallel_residual: bool = True
    use_bias: bool = True
    tie_word_embeddings: bool = False
    attention: str = "softmax"
    dijiang_form: str = "chunked"
    dijiang_chunk: int = 64
    dijiang_seed: int = 0
    dijiang_weights: tuple = ()
    init_std: float = 0.02
    dtype: str = "float32"
    remat: str = "none"
    scan_blocks: bool = False

    def __post_init__(self):
        # JSON / ml_collections give lists; the config must stay hashable.
        object.__setattr__(self, "dijiang_weights", tuple(tuple(float(v) for v in w) for w in self.dijiang_weights))

    def validate(self) -> None:
        super().validate()
        for name, value, allowed in (("layout", self.layout, LAYOUTS), ("attention", self.attention, ATTENTIONS),
                                     ("dijiang_form", self.dijiang_form, DIJIANG_FORMS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; allowed values: {list(allowed)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.attention == "dijiang" and self.num_kv_heads != self.num_heads:
            raise ValueError("attention='dijiang' needs num_kv_heads == num_heads (the released model has no GQA)")
        if self.rotary_dim % 2 or not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(
                f"rotary_pct={self.rotary_pct} gives {self.rotary_dim} rotated features of {self.head_dim}; "
                f"it must be in [0, 1] and give an even count"
            )
        if self.dijiang_weights and (len(self.dijiang_weights) != self.num_layers
                                     or any(len(w) != self.head_dim for w in self.dijiang_weights)):
            raise ValueError(
                f"dijiang_weights must hold num_layers={self.num_layers} rows of head_dim={self.head_dim} values "
                f"(the converter fills it from the checkpoint's proj_matrix); leave it empty to draw from dijiang_seed"
            )
        if self.dijiang_chunk < 1:
            raise ValueError(f"dijiang_chunk={self.dijiang_chunk} must be >= 1")
        if self.layout == "llama" and self.use_bias:
            raise ValueError("layout='llama' has bias-free projections; set use_bias=False")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        """``int(head_dim * rotary_pct)``, as GPT-NeoX computes ``rotary_ndims``."""
        return int(self.head_dim * self.rotary_pct)


def _pythia(hidden: int, layers: int, heads: int) -> dict:
    # EleutherAI/pythia-* config.json: vocab 50304, 4x MLP, rotary_pct 0.25, untied output.
    return dict(layout="gpt_neox", vocab_size=50304, hidden_size=hidden, num_layers=layers, num_heads=heads,
                num_kv_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=2048, rotary_pct=0.25,
                rope_theta=10000.0, norm_eps=1e-5, parallel_residual=True, use_bias=True, tie_word_embeddings=False)


PRESETS: dict[str, dict] = {
    "pythia-70m": _pythia(512, 6, 8),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1b": _pythia(2048, 16, 8),
    "pythia-1.4b": _pythia(2048, 24, 16),
    "pythia-2.8b": _pythia(2560, 32, 32),
    # TinyLlama-1.1B's shape (LLaMA-2 architecture, 4 kv heads).
    "llama-1b": dict(layout="llama", vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                     intermediate_size=5632, max_position_embeddings=2048, rotary_pct=1.0, rope_theta=10000.0,
                     norm_eps=1e-5, parallel_residual=False, use_bias=False, tie_word_embeddings=False),
    # CPU sizes (the golden-vector shape and the embedded-corpus runs of configs/lm.py).
    "tiny": dict(layout="gpt_neox", vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
                 intermediate_size=256, max_position_embeddings=512, rotary_pct=0.25),
    "small": dict(layout="gpt_neox", vocab_size=1024, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4,
                  intermediate_size=1024, max_position_embeddings=1024, rotary_pct=0.25),
}
# The DiJiang versions of the Pythia models (same shapes, attention swapped).
PRESETS.update({f"dijiang-{k[len('pythia-'):]}": {**v, "attention": "dijiang"} for k, v in list(PRESETS.items())
                if k.startswith("pythia-")})


class _Norm(nn.Module):
    """LayerNorm (gpt_neox) or RMSNorm (llama), statistics in float32, output in the compute dtype."""

    config: LMConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if cfg.layout == "llama":
            return RMSNorm(cfg.norm_eps, jnp.dtype(cfg.dtype), name="norm")(x)
        ln = nn.LayerNorm(cfg.norm_eps, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False,
                          scale_init=logical_init(nn.initializers.ones_init(), ("embed",)),
                          bias_init=logical_init(nn.initializers.zeros_init(), ("embed",)), name="norm")
        return ln(x.astype(jnp.float32)).astype(cfg.dtype)


class _GeluMlp(nn.Module):
    """GPT-NeoX MLP: ``dense_h_to_4h`` -> exact GELU -> ``dense_4h_to_h``."""

    config: LMConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = nn.initializers.normal(cfg.init_std)
        kw = dict(dtype=jnp.dtype(cfg.dtype), use_bias=cfg.use_bias, kernel_init=init)
        h = dense(cfg.intermediate_size, ("embed", "mlp"), name="up", **kw)(x)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False), ("batch", "length", "mlp"))
        return dense(x.shape[-1], ("mlp", "embed"), name="down", **kw)(h)


class Block(nn.Module):
    """One decoder layer: ``[B, T, D] -> [B, T, D]`` and this layer's updated cache (or None)."""

    config: LMConfig

    @nn.compact
    def __call__(self, x, positions, cache=None, offset=0, proj=None, segment_ids=None):
        cfg = self.config
        x = checkpoint_name(x, "block_input")
        attn = CausalSelfAttention(cfg, name="attn")
        if cfg.layout == "gpt_neox":
            mlp = _GeluMlp(cfg, name="mlp")
        else:
            mlp = GatedMlp(cfg.intermediate_size, dtype=jnp.dtype(cfg.dtype),
                           kernel_init=nn.initializers.normal(cfg.init_std),
                           out_kernel_init=nn.initializers.normal(cfg.init_std), name="mlp")
        att, cache = attn(_Norm(cfg, name="ln_attn")(x), positions, cache, offset, proj, segment_ids)
        if cfg.parallel_residual:
            x = x + att + mlp(_Norm(cfg, name="ln_mlp")(x))
        else:
            x = x + att
            x = x + mlp(_Norm(cfg, name="ln_mlp")(x))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), cache


class _ScannedBlock(nn.Module):
    """``Block`` with the ``(carry, *xs) -> (carry, ys)`` signature ``nn.scan`` needs."""

    config: LMConfig

    @nn.compact
    def __call__(self, x, positions, cache, offset, proj, segment_ids):
        block = _maybe_remat(Block, self.config.remat)(self.config, name="block")
        return block(x, positions, cache, offset, proj, segment_ids)


def _maybe_remat(cls, remat: str):
    return cls if remat == "none" else nn.remat(cls, policy=remat_policy(remat))


class CausalLM(nn.Module):
    """The causal LM; see the module docstring for the call signature.

    ``apply(..., mutable=["intermediates"])`` (unscanned blocks) records ``embeddings``, ``layer{i}_out``
    and ``final_hidden`` ``[B, T, D]``.
    """

    config: LMConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        init = nn.initializers.normal(cfg.init_std)
        self.embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32,
                              embedding_init=logical_init(init, ("vocab", "embed")))
        if cfg.scan_blocks:
            self.blocks = nn.scan(
                _ScannedBlock, variable_axes={"params": 0}, variable_broadcast=False, split_rngs={"params": True},
                in_axes=(nn.broadcast, 0, nn.broadcast, 0, nn.broadcast), length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg)
        else:
            block = _maybe_remat(Block, cfg.remat)
            self.blocks = [block(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
        self.final_norm = _Norm(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = dense(cfg.vocab_size, ("embed", "vocab"), use_bias=False, kernel_init=init,
                                 dtype=jnp.dtype(cfg.dtype))

    def __call__(self, input_ids: jax.Array, segment_ids: jax.Array | None = None, *, cache=None,
                 offset: jax.Array | int = 0):
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"CausalLM expects token ids [batch, length], got shape {tuple(input_ids.shape)}")
        if segment_ids is not None and (cache is not None or segment_ids.shape != input_ids.shape):
            raise ValueError(f"segment_ids must be [batch, length] like input_ids {tuple(input_ids.shape)} and "
                             f"cannot be combined with a cache (decoding is one document per row)")
        _check_token_ids(input_ids, cfg.vocab_size)
        t = input_ids.shape[1]
        limit = cfg.max_position_embeddings if cache is None else min(cfg.max_position_embeddings, cache_length(cache, cfg))
        if isinstance(offset, int) and offset + t > limit:
            raise ValueError(
                f"positions {offset}..{offset + t - 1} exceed the {limit} this model supports "
                f"(max_position_embeddings={cfg.max_position_embeddings}, cache length "
                f"{cache_length(cache, cfg) if cache is not None else 'n/a'}); shorten the input or build the model "
                f"with a larger max_position_embeddings"
            )
        x = nn.with_logical_constraint(self.embed(input_ids), ("batch", "length", "embed"))
        self.sow("intermediates", "embeddings", x)
        positions = (offset + jnp.arange(t, dtype=jnp.int32))[None]
        projs = dijiang_projections(cfg)  # frozen constants, not parameters
        projs = None if projs is None else jnp.asarray(projs)
        if cfg.scan_blocks:
            x, new_cache = self.blocks(x, positions, cache, offset, projs, segment_ids)
            if cache is not None:
                new_cache = type(cache)(*new_cache)
        else:
            layers = []
            for i, block in enumerate(self.blocks):
                layer = None if cache is None else jax.tree.map(lambda c, i=i: c[i], tuple(cache))
                x, layer = block(x, positions, layer, offset, None if projs is None else projs[i], segment_ids)
                self.sow("intermediates", f"layer{i}_out", x)
                layers.append(layer)
            new_cache = None if cache is None else type(cache)(*(jnp.stack(parts) for parts in zip(*layers)))
        x = self.final_norm(x)
        self.sow("intermediates", "final_hidden", x)
        logits = self.embed.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        logits = nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))
        return logits, new_cache


def _check_token_ids(input_ids, vocab_size: int) -> None:
    """Concrete ids outside ``[0, vocab_size)`` are an error (an embedding gather would clamp or NaN them).

    Inside ``jit`` the ids are abstract; ``jaxlab.lm.generate`` checks them on the host before tracing.
    """
    if isinstance(input_ids, jax.core.Tracer):
        return
    ids = np.asarray(input_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids in [{ids.min()}, {ids.max()}] fall outside the vocabulary [0, {vocab_size}); "
                         f"tokenise with the model's own tokenizer")


def cache_length(cache, config: LMConfig) -> int:
    """Positions a cache can hold: the KV buffer length, or ``max_position_embeddings`` for a state."""
    return cache.k.shape[2] if isinstance(cache, KVCache) else config.max_position_embeddings


__all__ = ["CausalLM", "LMConfig", "LinearState", "PRESETS", "cache_length", "init_cache"]
