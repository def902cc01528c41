"""A Qwen2.5-VL-shaped vision-language model with 1-D / M-RoPE / Circle-RoPE / staggered (AGE) positions.

Paper: Circle-RoPE (arXiv 2505.16416); reference ``lose4578/CircleRoPE`` @ 063fb2c
(``code/modular_qwen2_5_vl_circle_rope.py``), a patch on transformers 4.49
``Qwen2_5_VLForConditionalGeneration``. Towers by role:

- ``visual``: the Qwen2.5-VL ViT (``jaxlab.models.lvlm_vision``), optional (``vision_depth=0``
  builds a text-only stack that takes ``inputs_embeds``);
- ``model``: the Qwen2 decoder: token embedding, pre-RMSNorm (eps ``rms_norm_eps``, float32
  statistics) blocks with GQA attention (q/k/v with bias, o without, causal, ``1/sqrt(hd)``) under
  the multimodal rotary embedding (``mrope_section``), SiLU-gated MLP, final RMSNorm;
- ``lm_head`` (or the tied embedding).

Position ids are an input (``positions [S, 3, B, T]`` float32, one set per scheme in
``config.position_sets``, computed by ``jaxlab.lvlm.positions.rope_index``); layer ``i`` reads
set ``config.layer_schemes[i]``. ``position_scheme`` is ``"1d"``, ``"mrope"``, ``"circle"``, an AGE
strategy of the reference (``strategy_2``: first half of the layers circle, rest M-RoPE;
``strategy_3`` the reverse; ``strategy_4``: even layers circle, odd M-RoPE) or a tuple naming the
scheme of every layer. The reference hard-codes its AGE lists for 36 layers; for other depths
"half" is ``num_hidden_layers // 2``.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.lvlm.positions import SCHEMES, RopeOptions, rope_index
from jaxlab.models.common import ModelConfig, remat_policy
from jaxlab.models.lvlm_vision import VisionTower
from jaxlab.nn import GatedMlp, KVCache, RMSNorm, dense, dense_general, dot_product_attention, init_kv_cache, logical_init
from jaxlab.nn.kv_cache import write_slice
from jaxlab.nn.mrope import check_mrope_section, mrope_sin_cos
from jaxlab.nn.rope import apply_rope

AGE_STRATEGIES = ("strategy_2", "strategy_3", "strategy_4")


@dataclasses.dataclass(frozen=True)
class LVLMConfig(ModelConfig):
    """Architecture; text fields are Hugging Face ``Qwen2_5_VLConfig`` keys, vision fields its
    ``vision_config`` keys prefixed ``vision_``, Circle-RoPE options ``circle_rope`` keys prefixed
    ``circle_``. Defaults are Qwen2.5-VL-3B with the released Circle-RoPE config (AGE strategy_4).
    """

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple = (16, 24, 24)
    tie_word_embeddings: bool = True
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    position_scheme: str | tuple = "strategy_4"
    circle_alpha: float = 0.5
    circle_radius: float | str = 10.0
    circle_method: str = "circle"
    circle_move_to_origin: bool = True
    circle_move_to_positive: bool | str | float = False
    circle_dff_rate: float = 0.0
    vision_depth: int = 32
    vision_hidden_size: int = 1280
    vision_intermediate_size: int = 3420
    vision_num_heads: int = 16
    vision_in_channels: int = 3
    vision_patch_size: int = 14
    vision_temporal_patch_size: int = 2
    vision_window_size: int = 112
    vision_fullatt_block_indexes: tuple = (7, 15, 23, 31)
    spatial_merge_size: int = 2
    dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        for name in ("mrope_section", "vision_fullatt_block_indexes", "position_scheme"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def layer_schemes(self) -> tuple[str, ...]:
        """The position scheme of every decoder layer."""
        n, s = self.num_hidden_layers, self.position_scheme
        if isinstance(s, tuple):
            return s
        if s == "strategy_4":
            return tuple("circle" if i % 2 == 0 else "mrope" for i in range(n))
        if s == "strategy_2":
            return tuple("circle" if i < n // 2 else "mrope" for i in range(n))
        if s == "strategy_3":
            return tuple("mrope" if i < n // 2 else "circle" for i in range(n))
        return (s,) * n

    @property
    def position_sets(self) -> tuple[str, ...]:
        """The distinct schemes the layers use, in ``SCHEMES`` order: the leading axis of ``positions``."""
        used = set(self.layer_schemes)
        return tuple(s for s in SCHEMES if s in used)

    @property
    def decode_scheme(self) -> str:
        """Whose ``rope_deltas`` the decode-time positions use: circle under AGE, as the reference caches."""
        return "circle" if "circle" in self.position_sets else self.position_sets[0]

    def rope_options(self) -> RopeOptions:
        return RopeOptions(
            image_token_id=self.image_token_id, video_token_id=self.video_token_id,
            vision_start_token_id=self.vision_start_token_id, spatial_merge_size=self.spatial_merge_size,
            alpha=self.circle_alpha, radius=self.circle_radius, method=self.circle_method,
            move_to_origin=self.circle_move_to_origin, move_to_positive=self.circle_move_to_positive,
            dff_rate=self.circle_dff_rate,
        )

    def validate(self) -> None:
        super().validate()
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        if self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of num_key_value_heads={self.num_key_value_heads}")
        check_mrope_section(self.mrope_section, self.head_dim)
        s = self.position_scheme
        if isinstance(s, tuple):
            if len(s) != self.num_hidden_layers:
                raise ValueError(
                    f"position_scheme lists {len(s)} layer schemes but num_hidden_layers={self.num_hidden_layers}; "
                    "give one of 1d/mrope/circle per layer"
                )
            bad = sorted(set(s) - set(SCHEMES))
            if bad:
                raise ValueError(f"position_scheme has unknown layer scheme(s) {bad}; allowed: {list(SCHEMES)}")
        elif s not in SCHEMES + AGE_STRATEGIES:
            raise ValueError(f"position_scheme={s!r}; allowed: {list(SCHEMES + AGE_STRATEGIES)} or a per-layer tuple")
        self.rope_options().validate()
        if self.vision_depth:
            ids = dict(image_token_id=self.image_token_id, vision_start_token_id=self.vision_start_token_id,
                       vision_end_token_id=self.vision_end_token_id)
            bad = {k: v for k, v in ids.items() if not 0 <= v < self.vocab_size}
            if bad:
                raise ValueError(f"{bad} outside the vocabulary [0, {self.vocab_size}); set the special token ids")
            if self.vision_hidden_size % self.vision_num_heads or (self.vision_hidden_size // self.vision_num_heads) % 4:
                raise ValueError(
                    f"vision_hidden_size={self.vision_hidden_size} / vision_num_heads={self.vision_num_heads} must be "
                    "a head dim divisible by 4 (2-D rotary)"
                )
            bad = [i for i in self.vision_fullatt_block_indexes if not 0 <= i < self.vision_depth]
            if bad:
                raise ValueError(f"vision_fullatt_block_indexes {bad} are outside [0, vision_depth={self.vision_depth})")


_TINY_TEXT = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=10000.0, mrope_section=(2, 3, 3), tie_word_embeddings=False)
PRESETS: dict[str, dict] = {
    # Qwen2.5-VL-3B (config.json of the released checkpoint) + code/config.json's circle_rope.
    "Qwen2.5-VL-3B-CircleRoPE": dict(position_scheme="strategy_4"),
    "Qwen2.5-VL-3B": dict(position_scheme="mrope"),
    # The golden stack (tests/golden/circle_rope/circle_rope_attention), no vision tower.
    "tiny": dict(_TINY_TEXT, vision_depth=0),
    # CPU-trainable: the tiny decoder + a 2-block ViT on 4-pixel patches (the shapes VQA task).
    "small": dict(
        _TINY_TEXT, vision_start_token_id=124, vision_end_token_id=125, image_token_id=126, video_token_id=127,
        vision_depth=2, vision_hidden_size=32, vision_intermediate_size=64, vision_num_heads=2,
        vision_patch_size=4, vision_window_size=16, vision_fullatt_block_indexes=(1,),
    ),
}


def init_cache(config: LVLMConfig, batch: int, length: int) -> KVCache:
    """An empty fixed-size cache ``[layers, batch, length, kv_heads, head_dim]`` (compute dtype)."""
    return init_kv_cache(config.num_hidden_layers, batch, length, config.num_key_value_heads, config.head_dim,
                         jnp.dtype(config.dtype))


class DecoderLayer(nn.Module):
    """``Qwen2_5_VLDecoderLayer``: ``[B, T, D] -> [B, T, D]`` (+ this layer's updated cache)."""

    config: LVLMConfig

    @nn.compact
    def __call__(self, x_BTD, sin, cos, mask, cache=None, offset=0):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        n, kvh, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        h = RMSNorm(cfg.rms_norm_eps, dtype, name="input_layernorm")(x_BTD)
        q = dense_general((n, hd), ("embed", "heads", "kv"), dtype=dtype, name="q_proj")(h)
        k = dense_general((kvh, hd), ("embed", "heads", "kv"), dtype=dtype, name="k_proj")(h)
        v = dense_general((kvh, hd), ("embed", "heads", "kv"), dtype=dtype, name="v_proj")(h)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        if cache is not None:
            k, v = write_slice(cache[0], k, offset, None), write_slice(cache[1], v, offset, None)
            cache = (k, v)
        att = dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask)
        x_BTD = x_BTD + dense_general(cfg.hidden_size, ("heads", "kv", "embed"), axis=(-2, -1), use_bias=False,
                                      dtype=dtype, name="o_proj")(att)
        h = RMSNorm(cfg.rms_norm_eps, dtype, name="post_attention_layernorm")(x_BTD)
        x_BTD = x_BTD + GatedMlp(cfg.intermediate_size, dtype=dtype, name="mlp")(h)
        return nn.with_logical_constraint(x_BTD, ("batch", "length", "embed")), cache


class LVLM(nn.Module):
    """The model; ``__call__`` returns ``logits [B, T, vocab]`` float32, or ``(logits, cache)`` with a cache.

    ``__call__(input_ids [B, T], positions [S, 3, B, T], attention_mask [B, T or L] = None, *,
    pixel_values [P, C*Tp*p*p] or [N, P, F] = None, vision_layout = None, inputs_embeds [B, T, D] = None,
    cache = None, offset = 0)``:

    - image features (``pixel_values`` + ``jaxlab.models.lvlm_vision.vision_layout`` of the
      batch's ``image_grid_thw``, or of one grid for ``[N, P, F]`` same-size images) replace the image-pad tokens of ``input_ids`` in order;
      ``inputs_embeds`` replaces the embedding lookup altogether (the golden case);
    - attention is causal; ``attention_mask`` (1 = real token) hides padded keys. Without a cache
      it is ``[B, T]``; with a cache (``KVCache`` of length L) the T tokens sit at slots
      ``offset .. offset + T - 1``, write their keys there and attend to slots ``<= own slot``
      where ``attention_mask [B, L]`` is 1.

    ``apply(..., mutable=["intermediates"])`` records ``layer{i}_input`` and ``final_norm_out``.
    """

    config: LVLMConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        dtype = jnp.dtype(cfg.dtype)
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32,
                                     embedding_init=logical_init(nn.initializers.normal(0.02), ("vocab", "embed")))
        layer = DecoderLayer if cfg.remat == "none" else nn.remat(DecoderLayer, policy=remat_policy(cfg.remat))
        self.layers = [layer(cfg, name=f"layers_{i}") for i in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = dense(cfg.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dtype,
                                 kernel_init=nn.initializers.normal(0.02))
        if cfg.vision_depth:
            self.visual = VisionTower(
                cfg.vision_depth, cfg.vision_hidden_size, cfg.vision_intermediate_size, cfg.vision_num_heads,
                cfg.hidden_size, tuple(cfg.vision_fullatt_block_indexes), cfg.spatial_merge_size, dtype,
            )

    def embed(self, input_ids, pixel_values=None, vision_layout=None):
        """Token embeddings with the image features written over the image-pad tokens, ``[B, T, D]``."""
        x = self.embed_tokens(input_ids)
        if pixel_values is None:
            return x
        if not self.config.vision_depth:
            raise ValueError("this model has no vision tower (vision_depth=0); pass inputs_embeds instead of pixel_values")
        feats = self.visual(pixel_values, vision_layout).astype(x.dtype)  # [N_img, D]
        is_img = (input_ids == self.config.image_token_id).reshape(-1)
        rank = jnp.clip(jnp.cumsum(is_img) - 1, 0, feats.shape[0] - 1)
        x = jnp.where(is_img[:, None], feats[rank], x.reshape(-1, x.shape[-1]))
        return x.reshape(input_ids.shape + (-1,))

    def __call__(self, input_ids, positions, attention_mask=None, *, pixel_values=None, vision_layout=None,
                 inputs_embeds=None, cache: KVCache | None = None, offset=0):
        cfg = self.config
        sets = cfg.position_sets
        if positions.ndim != 4 or positions.shape[:2] != (len(sets), 3):
            raise ValueError(
                f"positions must be [{len(sets)}, 3, B, T] (one (t, h, w) set per scheme {list(sets)}), got {positions.shape}"
            )
        x = inputs_embeds if inputs_embeds is not None else self.embed(input_ids, pixel_values, vision_layout)
        b, t = x.shape[:2]
        tables = [mrope_sin_cos(positions[s], cfg.head_dim, cfg.rope_theta, cfg.mrope_section) for s in range(len(sets))]
        mask = _attention_mask(b, t, attention_mask, None if cache is None else cache.length, offset)
        new_cache = cache
        for i, layer in enumerate(self.layers):
            self.sow("intermediates", f"layer{i}_input", x)
            sin, cos = tables[sets.index(cfg.layer_schemes[i])]
            kv = None if cache is None else (new_cache.k[i], new_cache.v[i])
            x, kv = layer(x, sin, cos, mask, kv, offset)
            if cache is not None:
                new_cache = KVCache(new_cache.k.at[i].set(kv[0]), new_cache.v.at[i].set(kv[1]))
        x = self.norm(x)
        self.sow("intermediates", "final_norm_out", x)
        logits = self.embed_tokens.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        logits = nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))
        return logits if cache is None else (logits, new_cache)


def _attention_mask(b: int, t: int, key_valid, cache_length: int | None, offset):
    """Bool ``[B, 1, T, S]``: causal (by slot) and, where given, padded keys hidden."""
    if cache_length is None:
        keys = jnp.arange(t)
        mask = keys[None, :] <= keys[:, None]
    else:
        mask = jnp.arange(cache_length)[None, :] <= (offset + jnp.arange(t))[:, None]
    mask = jnp.broadcast_to(mask[None, None], (b, 1) + mask.shape)
    if key_valid is not None:
        mask = mask & key_valid.astype(bool)[:, None, None, :]
    return mask


def positions_for(config: LVLMConfig, input_ids, image_grid_thw, attention_mask=None):
    """``(positions [S, 3, B, T], rope_deltas [B, 1])`` for ``config.position_sets``; deltas of ``decode_scheme``."""
    out = {s: rope_index(input_ids, image_grid_thw, attention_mask, s, config.rope_options()) for s in config.position_sets}
    return jnp.stack([out[s][0] for s in config.position_sets]), out[config.decode_scheme][1]


def init_inputs(config: LVLMConfig) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a minimal call that creates every parameter (one 1-token image if there is a tower)."""
    from jaxlab.models.lvlm_vision import vision_layout

    sets = len(config.position_sets)
    ids = jnp.array([[config.vision_start_token_id, config.image_token_id, config.vision_end_token_id]], jnp.int32)
    args = (ids, jnp.zeros((sets, 3, 1, 3), jnp.float32))
    if not config.vision_depth:
        return args, {}
    m = config.spatial_merge_size
    features = config.vision_in_channels * config.vision_temporal_patch_size * config.vision_patch_size**2
    layout = vision_layout([[1, m, m]], config.vision_patch_size, config.vision_window_size, m)
    return args, dict(pixel_values=jnp.zeros((m * m, features)), vision_layout=layout)
