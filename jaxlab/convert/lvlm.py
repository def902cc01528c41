"""Hugging Face ``Qwen2_5_VLForConditionalGeneration`` state_dict -> Flax params for ``jaxlab.models.lvlm.LVLM``.

``hf_config_kwargs`` is the checkpoint's ``config.json`` (transformers 4.49 layout: text keys at
the top level, ``vision_config``, ``rope_scaling.mrope_section``; the 5.x ``text_config`` layout is
read too) plus, for Circle-RoPE checkpoints, its ``circle_rope`` dict (``AGE_mode`` picks the
staggered schedule; without it every layer uses Circle-RoPE, as in the reference; without
``circle_rope`` the model is plain M-RoPE Qwen2.5-VL). Names of both the 4.49 layout
(``model.layers.*``, ``visual.*``) and the 5.x one (``model.language_model.*``, ``model.visual.*``)
are accepted. A state_dict without ``visual.*`` weights gives a text-only model (``vision_depth=0``).

The conversion is a plan: ``conversion_plan(config)`` lists ``(official name, Flax path, official
shape, transform)``, so the 3B layout can be checked on shapes alone (``jax.eval_shape``).
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import numpy as np

from jaxlab.convert.common import StateDict, check_against_init
from jaxlab.models.lvlm import LVLM, LVLMConfig, init_inputs

_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "image_token_id",
              "video_token_id", "vision_start_token_id", "vision_end_token_id")
_VISION_KEYS = {"depth": "vision_depth", "hidden_size": "vision_hidden_size", "intermediate_size": "vision_intermediate_size",
                "num_heads": "vision_num_heads", "in_chans": "vision_in_channels", "in_channels": "vision_in_channels",
                "patch_size": "vision_patch_size", "temporal_patch_size": "vision_temporal_patch_size",
                "window_size": "vision_window_size", "fullatt_block_indexes": "vision_fullatt_block_indexes",
                "spatial_merge_size": "spatial_merge_size"}
# Keys with no effect on the forward pass (generation, initialisation, bookkeeping, HF metadata).
_IGNORED = {"architectures", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "vision_token_id",
            "initializer_range", "max_position_embeddings", "max_window_layers", "model_type", "sliding_window",
            "torch_dtype", "dtype", "transformers_version", "use_cache", "attn_implementation", "head_dim",
            "_name_or_path", "layer_types", "output_attentions", "output_hidden_states", "return_dict"}
_VISION_IGNORED = {"hidden_act", "out_hidden_size", "tokens_per_second", "spatial_patch_size", "model_type",
                   "initializer_range", "torch_dtype", "dtype", "_name_or_path"}


def config_from_hf(hf: Mapping[str, Any], *, with_vision: bool = True, **options) -> LVLMConfig:
    """``config.json`` (+ ``circle_rope``) -> ``LVLMConfig``; jaxlab ``options`` (dtype, remat, position_scheme) win."""
    hf = dict(hf)
    if isinstance(hf.get("text_config"), Mapping):  # transformers 5.x layout
        hf = {**hf.pop("text_config"), **{k: v for k, v in hf.items()}}
    known = set(_TEXT_KEYS) | _IGNORED | {"rope_scaling", "rope_parameters", "vision_config", "circle_rope", "hidden_act",
                                          "use_sliding_window", "spatial_merge_size", "tokens_per_second"}
    unknown = sorted(set(hf) - known)
    if unknown:
        raise ValueError(f"unknown Qwen2.5-VL config key(s) {unknown}; known keys: {sorted(known)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={hf['hidden_act']!r}: only 'silu' (Qwen2.5-VL) is implemented")
    if hf.get("use_sliding_window", False):
        raise ValueError("use_sliding_window=true is not implemented (Qwen2.5-VL checkpoints set it false)")
    fields = {k: hf[k] for k in _TEXT_KEYS if k in hf}
    if "head_dim" in hf and hf["head_dim"] != hf.get("hidden_size", 2048) // hf.get("num_attention_heads", 16):
        raise ValueError(f"head_dim={hf['head_dim']} must equal hidden_size / num_attention_heads (as in Qwen2.5-VL)")
    rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "mrope"):
        raise ValueError(f"rope_scaling type {kind!r} is not supported (only the default/mrope table)")
    if "mrope_section" in rope:
        fields["mrope_section"] = tuple(rope["mrope_section"])
    if "rope_theta" in rope and "rope_theta" not in hf:
        fields["rope_theta"] = rope["rope_theta"]
    vision = hf.get("vision_config")
    if with_vision and isinstance(vision, Mapping):
        unknown = sorted(set(vision) - set(_VISION_KEYS) - _VISION_IGNORED)
        if unknown:
            raise ValueError(f"unknown vision_config key(s) {unknown}; known: {sorted(set(_VISION_KEYS) | _VISION_IGNORED)}")
        if vision.get("hidden_act", "silu") != "silu":
            raise ValueError(f"vision_config.hidden_act={vision['hidden_act']!r}: only 'silu' (Qwen2.5-VL) is implemented")
        out = vision.get("out_hidden_size", fields.get("hidden_size"))
        if out is not None and out != fields.get("hidden_size", 2048):
            raise ValueError(f"vision_config.out_hidden_size={out} must equal the LLM hidden_size={fields.get('hidden_size')}")
        fields.update({_VISION_KEYS[k]: (tuple(v) if isinstance(v, list) else v) for k, v in vision.items() if k in _VISION_KEYS})
    elif with_vision:
        raise ValueError("the state_dict has visual.* weights but the config has no vision_config dict")
    else:
        fields["vision_depth"] = 0
    if "spatial_merge_size" in hf:
        fields.setdefault("spatial_merge_size", hf["spatial_merge_size"])
    fields.update(_circle_fields(hf.get("circle_rope")))
    return LVLMConfig.from_dict({**fields, **options})


def _circle_fields(circle: Mapping[str, Any] | None) -> dict:
    """The reference's ``circle_rope`` dict (its defaults for absent keys) -> ``circle_*`` fields + scheme."""
    if circle is None:
        return {"position_scheme": "mrope"}
    from jaxlab.lvlm.positions import RopeOptions

    o = RopeOptions.from_reference(circle)
    return dict(position_scheme=circle.get("AGE_mode", "circle"), circle_alpha=o.alpha, circle_radius=o.radius,
                circle_method=o.method, circle_move_to_origin=o.move_to_origin,
                circle_move_to_positive=o.move_to_positive, circle_dff_rate=o.dff_rate)


Transform = Callable[[Any], Any]


def _t(w):  # Linear [out, in] -> kernel [in, out]
    return w.T


def _heads_in(n: int, hd: int) -> Transform:  # [n*hd, D] -> [D, n, hd]
    return lambda w: w.T.reshape(w.shape[1], n, hd)


def _heads_bias(n: int, hd: int) -> Transform:
    return lambda b: b.reshape(n, hd)


def _heads_out(n: int, hd: int) -> Transform:  # [D, n*hd] -> [n, hd, D]
    return lambda w: w.T.reshape(n, hd, w.shape[0])


def _same(w):
    return w


def conversion_plan(config: LVLMConfig) -> list[tuple[str, tuple[str, ...], tuple[int, ...], Transform]]:
    """``[(official name (4.49 layout), Flax param path, official shape, transform)]`` for ``config``."""
    c = config
    d, hd, n, kv, ff = c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size
    plan = [("model.embed_tokens.weight", ("embed_tokens", "embedding"), (c.vocab_size, d), _same),
            ("model.norm.weight", ("norm", "scale"), (d,), _same)]
    if not c.tie_word_embeddings:
        plan.append(("lm_head.weight", ("lm_head", "kernel"), (c.vocab_size, d), _t))
    for i in range(c.num_hidden_layers):
        p, f = f"model.layers.{i}", f"layers_{i}"
        for name, heads in (("q_proj", n), ("k_proj", kv), ("v_proj", kv)):
            plan += [(f"{p}.self_attn.{name}.weight", (f, name, "kernel"), (heads * hd, d), _heads_in(heads, hd)),
                     (f"{p}.self_attn.{name}.bias", (f, name, "bias"), (heads * hd,), _heads_bias(heads, hd))]
        plan += [(f"{p}.self_attn.o_proj.weight", (f, "o_proj", "kernel"), (d, n * hd), _heads_out(n, hd)),
                 (f"{p}.mlp.gate_proj.weight", (f, "mlp", "gate", "kernel"), (ff, d), _t),
                 (f"{p}.mlp.up_proj.weight", (f, "mlp", "up", "kernel"), (ff, d), _t),
                 (f"{p}.mlp.down_proj.weight", (f, "mlp", "down", "kernel"), (d, ff), _t),
                 (f"{p}.input_layernorm.weight", (f, "input_layernorm", "scale"), (d,), _same),
                 (f"{p}.post_attention_layernorm.weight", (f, "post_attention_layernorm", "scale"), (d,), _same)]
    if c.vision_depth:
        plan += _vision_plan(c)
    return plan


def _vision_plan(c: LVLMConfig):
    dv, nv, ffv = c.vision_hidden_size, c.vision_num_heads, c.vision_intermediate_size
    hdv, unit = dv // nv, c.spatial_merge_size**2
    patch = (dv, c.vision_in_channels, c.vision_temporal_patch_size, c.vision_patch_size, c.vision_patch_size)
    plan = [("visual.patch_embed.proj.weight", ("visual", "patch_embed", "kernel"), patch,
             lambda w: w.reshape(w.shape[0], -1).T)]
    for i in range(c.vision_depth):
        p, f = f"visual.blocks.{i}", ("visual", f"blocks_{i}")
        plan += [(f"{p}.norm1.weight", f + ("norm1", "scale"), (dv,), _same),
                 (f"{p}.norm2.weight", f + ("norm2", "scale"), (dv,), _same),
                 (f"{p}.attn.qkv.weight", f + ("qkv", "kernel"), (3 * dv, dv), lambda w: w.T.reshape(w.shape[1], 3, nv, hdv)),
                 (f"{p}.attn.qkv.bias", f + ("qkv", "bias"), (3 * dv,), lambda b: b.reshape(3, nv, hdv)),
                 (f"{p}.attn.proj.weight", f + ("proj", "kernel"), (dv, dv), _heads_out(nv, hdv)),
                 (f"{p}.attn.proj.bias", f + ("proj", "bias"), (dv,), _same)]
        for name, shape in (("gate", (ffv, dv)), ("up", (ffv, dv)), ("down", (dv, ffv))):
            plan += [(f"{p}.mlp.{name}_proj.weight", f + ("mlp", name, "kernel"), shape, _t),
                     (f"{p}.mlp.{name}_proj.bias", f + ("mlp", name, "bias"), shape[:1], _same)]
    m = ("visual",)
    plan += [("visual.merger.ln_q.weight", m + ("ln_q", "scale"), (dv,), _same),
             ("visual.merger.mlp.0.weight", m + ("mlp_0", "kernel"), (unit * dv, unit * dv), _t),
             ("visual.merger.mlp.0.bias", m + ("mlp_0", "bias"), (unit * dv,), _same),
             ("visual.merger.mlp.2.weight", m + ("mlp_2", "kernel"), (c.hidden_size, unit * dv), _t),
             ("visual.merger.mlp.2.bias", m + ("mlp_2", "bias"), (c.hidden_size,), _same)]
    return plan


def canonical_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5.x names (``model.language_model.*``, ``model.visual.*``) -> the 4.49 layout."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = k[len("model."):]
        out[k] = v
    return out


def convert(hf_config_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[LVLM, dict]:
    """Builds the LVLM the config describes and maps the Hugging Face weights onto it."""
    state_dict = canonical_names(state_dict)
    with_vision = any(k.startswith("visual.") for k in state_dict)
    config = config_from_hf(hf_config_kwargs, with_vision=with_vision, **options)
    sd = StateDict(state_dict)
    if config.tie_word_embeddings and "lm_head.weight" in sd:  # a tied head saved by state_dict()
        if not np.array_equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]):
            raise ValueError("tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight; "
                             "set tie_word_embeddings=false in the config")
    flat = {}
    for name, path, shape, transform in conversion_plan(config):
        value = sd[name]
        if value.shape != shape:
            raise ValueError(f"{name}: checkpoint shape {value.shape}, the config implies {shape}")
        flat[path] = np.asarray(transform(value))
    sd.finish()
    module = LVLM(config)
    params = flax.traverse_util.unflatten_dict(flat)
    args, kwargs = init_inputs(config)
    params = check_against_init(module, params, *args, **kwargs)
    return module, params
