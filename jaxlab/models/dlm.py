"""LLaDA: the bidirectional transformer of the masked-diffusion language model (Nie et al., 2025).

Faithful to ``LLaDAModelLM`` with ``block_type='llama'`` as in ``shuyingte/DCD`` (and the
identical ``NVlabs/Fast-dLLM``) ``llada/model/modeling_llada.py``: token embedding (no position
embedding), pre-norm blocks ``h = x + attn_out(Attn(RMS(x)))``, ``out = h + ff_out(silu(ff_proj(
RMS(h))) * up_proj(RMS(h)))``, final RMSNorm and an untied output head. Attention is fully
bidirectional with half-split RoPE; the reference ignores any attention mask, and so does this
module unless ``attention_mask`` is given (a jaxlab extension for padded batches).

Cached calls (``cache=KVCache``) implement the reference's ``replace_position`` mode: a slice of
tokens at absolute offset ``o`` overwrites its rows of the cache in place (where ``write_mask``)
and attends over the whole cache; this is what DCD's and Fast-dLLM's prefix/dual caches need.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models.common import ModelConfig, maybe_remat, scan_blocks
from jaxlab.nn import GatedMlp, KVCache, RMSNorm, RotaryAttention, init_kv_cache
from jaxlab.nn.linear import dense, logical_init


@dataclasses.dataclass(frozen=True)
class LLaDAConfig(ModelConfig):
    """Architecture of a LLaDA model; field names are the official ``LLaDAConfig`` keys.

    Defaults are the released LLaDA-8B (``GSAI-ML/LLaDA-8B-Instruct`` ``config.json``).
    ``embedding_size`` rows in the embedding table and output head (>= ``vocab_size``).
    ``init_std``: all weights N(0, init_std), the blocks' ``ff_out`` divided by
    ``sqrt(2 n_layers)`` (the reference's ``init_fn='normal'``); it only matters for training.
    jaxlab-only fields: ``dtype`` (compute dtype; params and logits stay float32), ``remat``,
    ``scan_blocks`` (see ``DiTConfig``); ``confidence_head`` adds a per-token confidence head
    (``LLaDA.with_confidence``) reading the last block's output through ``confidence_head_blocks``
    extra blocks, an RMSNorm and a ``[D, 1]`` linear layer (RemeDi-style; see ``jaxlab.dlm.confidence``).
    """

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int = 126464
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_sequence_length: int = 4096
    weight_tying: bool = False
    init_std: float = 0.02
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    dtype: str = "float32"
    remat: str = "none"
    scan_blocks: bool = False
    confidence_head: bool = False
    confidence_head_blocks: int = 0

    POSITIVE = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "embedding_size",
                "max_sequence_length", "rms_norm_eps", "rope_theta")

    def validate(self) -> None:
        super().validate()
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head_dim={self.d_model // self.n_heads} must be even for rotary embeddings")
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.embedding_size < self.vocab_size:
            raise ValueError(f"embedding_size={self.embedding_size} must be >= vocab_size={self.vocab_size}")
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.embedding_size:
                raise ValueError(f"{name}={value} is outside the embedding table [0, {self.embedding_size})")
        if self.confidence_head_blocks < 0 or (self.confidence_head_blocks and not self.confidence_head):
            raise ValueError(f"confidence_head_blocks={self.confidence_head_blocks} needs confidence_head=True and "
                             f"must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


_TINY_IDS = dict(vocab_size=64, embedding_size=64, mask_token_id=62, eos_token_id=60, pad_token_id=58)
PRESETS: dict[str, dict] = {
    # GSAI-ML/LLaDA-8B-{Base,Instruct} config.json.
    "LLaDA-8B": dict(
        d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, vocab_size=126464,
        embedding_size=126464, rms_norm_eps=1e-5, rope_theta=500000.0, max_sequence_length=4096,
        weight_tying=False, mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
    ),
    # The golden-vector size (tests/golden/dlm), with the reference's default rope_theta.
    "tiny": dict(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=192, rope_theta=10000.0,
        max_sequence_length=128, **_TINY_IDS,
    ),
    # A CPU-trainable size (~3M parameters with a 64-token vocabulary).
    "small": dict(
        d_model=256, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=704, rope_theta=10000.0,
        max_sequence_length=256, **_TINY_IDS,
    ),
}


def init_cache(config: LLaDAConfig, batch: int, length: int) -> KVCache:
    """An empty fixed-size KV cache ``[n_layers, batch, length, n_kv_heads, head_dim]`` (compute dtype)."""
    return init_kv_cache(config.n_layers, batch, length, config.n_kv_heads, config.head_dim, jnp.dtype(config.dtype))


class LLaDABlock(nn.Module):
    """``LLaDALlamaBlock``: ``[B, T, D] -> [B, T, D]`` (+ this layer's updated ``(k, v)`` cache)."""

    config: LLaDAConfig

    @nn.compact
    def __call__(self, x, positions, mask=None, cache=None, offset=0, write_mask=None):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        init = nn.initializers.normal(cfg.init_std)
        residual_init = nn.initializers.normal(cfg.init_std / math.sqrt(2 * cfg.n_layers))
        h = RMSNorm(cfg.rms_norm_eps, dtype, name="attn_norm")(x)
        att, cache = RotaryAttention(
            cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta, dtype=dtype,
            kernel_init=init, out_kernel_init=init, name="attn",
        )(h, positions, mask, cache, offset, write_mask)
        x = x + att
        h = RMSNorm(cfg.rms_norm_eps, dtype, name="ff_norm")(x)
        x = x + GatedMlp(cfg.mlp_hidden_size, dtype=dtype, kernel_init=init, out_kernel_init=residual_init, name="mlp")(h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), cache


class _ScannedBlock(nn.Module):
    """``LLaDABlock`` with the ``(carry, *xs) -> (carry, ys)`` signature ``nn.scan`` needs."""

    config: LLaDAConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache, offset, write_mask):
        block = maybe_remat(LLaDABlock, self.config.remat)
        return block(self.config, name="block")(x, positions, mask, cache, offset, write_mask)


class LLaDA(nn.Module):
    """The LLaDA mask predictor.

    ``__call__(input_ids [B, T] int, attention_mask=None)`` -> logits ``[B, T, embedding_size]``
    float32. With ``cache=KVCache`` (length L) it returns ``(logits, new_cache)``: the T tokens sit
    at absolute positions ``offset .. offset + T - 1`` (``0 <= offset <= L - T``), their keys and
    values overwrite those cache rows where ``write_mask [B or 1, T]`` (default: all), and they
    attend over the whole cache. ``attention_mask [B, keys]`` (True = visible) hides keys; the
    reference has no such mask, so leave it None for equivalence.

    ``apply(..., mutable=["intermediates"])`` (unscanned blocks) records ``embeddings``,
    ``layer{i}_out`` and ``final_norm_out`` [B, T, D], the reference's hidden states.
    """

    config: LLaDAConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        dtype = jnp.dtype(cfg.dtype)
        init = nn.initializers.normal(cfg.init_std)
        self.wte = nn.Embed(
            cfg.embedding_size, cfg.d_model, dtype=dtype, param_dtype=jnp.float32,
            embedding_init=logical_init(init, ("vocab", "embed")),
        )
        if cfg.scan_blocks:
            in_axes = (nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast)  # the cache is per layer
            self.blocks = scan_blocks(_ScannedBlock, cfg.n_layers, in_axes)(cfg)
        else:
            block = maybe_remat(LLaDABlock, cfg.remat)
            self.blocks = [block(cfg, name=f"blocks_{i}") for i in range(cfg.n_layers)]
        self.ln_f = RMSNorm(cfg.rms_norm_eps, dtype)
        if not cfg.weight_tying:
            self.ff_out = dense(
                cfg.embedding_size, ("embed", "vocab"), use_bias=False, kernel_init=init, dtype=dtype,
                output_dtype=jnp.float32,
            )
        if cfg.confidence_head:
            self.conf_blocks = [LLaDABlock(cfg, name=f"conf_blocks_{i}") for i in range(cfg.confidence_head_blocks)]
            self.conf_norm = RMSNorm(cfg.rms_norm_eps, dtype)
            self.conf_out = dense(1, ("embed", None), kernel_init=nn.initializers.zeros_init(), dtype=dtype,
                                  output_dtype=jnp.float32)

    def with_confidence(self, input_ids: jax.Array, attention_mask: jax.Array | None = None):
        """``(logits [B, T, V], confidence logit [B, T])`` float32 (needs ``confidence_head``).

        The confidence is the logit of "the token at this position is correct": for a [MASK] input,
        of the model's own argmax proposal; for a token input, of that token (RemeDi's target).
        The head is zero-initialised (confidence 0.5 everywhere until trained).
        """
        if not self.config.confidence_head:
            raise ValueError("this LLaDA has no confidence head; build it with confidence_head=True")
        hidden = self._hidden(input_ids, attention_mask)
        positions = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None]
        mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        h = hidden
        for block in self.conf_blocks:
            h, _ = block(h, positions, mask)
        conf = self.conf_out(self.conf_norm(h))[..., 0]
        return self._head(self.ln_f(hidden)), conf

    def _hidden(self, input_ids, attention_mask):
        """The last block's output ``[B, T, D]`` (uncached)."""
        x = self.wte(input_ids)
        positions = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None]
        mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        if self.config.scan_blocks:
            x, _ = self.blocks(x, positions, mask, None, 0, None)
            return x
        for block in self.blocks:
            x, _ = block(x, positions, mask, None, 0, None)
        return x

    def _head(self, x):
        if self.config.weight_tying:
            table = self.wte.embedding.astype(x.dtype)
            return jnp.einsum("btd,vd->btv", x, table, preferred_element_type=jnp.float32)
        return self.ff_out(x)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        offset: jax.Array | int = 0,
        write_mask: jax.Array | None = None,
    ):
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"LLaDA expects token ids [batch, length], got shape {tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        x = self.wte(input_ids)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        self.sow("intermediates", "embeddings", x)
        positions = (offset + jnp.arange(t, dtype=jnp.int32))[None]
        mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        if cfg.scan_blocks:
            x, new_cache = self.blocks(x, positions, mask, cache, offset, write_mask)
            if cache is not None:
                new_cache = KVCache(*new_cache)
        else:
            new_cache = cache
            for i, block in enumerate(self.blocks):
                layer = None if cache is None else (new_cache.k[i], new_cache.v[i])
                x, layer = block(x, positions, mask, layer, offset, write_mask)
                self.sow("intermediates", f"layer{i}_out", x)
                if cache is not None:
                    new_cache = KVCache(new_cache.k.at[i].set(layer[0]), new_cache.v.at[i].set(layer[1]))
        x = self.ln_f(x)
        self.sow("intermediates", "final_norm_out", x)
        if cfg.weight_tying:  # the head's product in the compute dtype, accumulated and returned in float32
            table = self.wte.embedding.astype(x.dtype)
            logits_BTV = jnp.einsum("btd,vd->btv", x, table, preferred_element_type=jnp.float32)
        else:
            logits_BTV = self.ff_out(x)
        logits = nn.with_logical_constraint(logits_BTV, ("batch", "length", "vocab"))
        return logits if cache is None else (logits, new_cache)
