"""LVLM: the reference's 4-layer staggered decoder through ``from_torch``, the Qwen2.5-VL-3B layout, bad configs."""

import copy

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.convert.lvlm import config_from_hf, conversion_plan
from jaxlab.models import build_model
from jaxlab.models.lvlm import LVLM, LVLMConfig, init_inputs, positions_for

FAMILY = "circle_rope"


def _hf_kwargs(case, circle_rope="keep"):
    kw = copy.deepcopy(case.meta["constructor"])
    kw.pop("attn_implementation")
    if circle_rope is None:
        kw.pop("circle_rope")
    elif circle_rope != "keep":
        kw["circle_rope"] = circle_rope
    return kw


def _run(case, kwargs):
    module, params = from_torch("lvlm", kwargs, case.state_dict)
    ids, mask = case["inputs/input_ids"], case["inputs/attention_mask"]
    positions, _ = positions_for(module.config, ids, case["inputs/image_grid_thw"], mask)
    logits, state = module.apply({"params": params}, jnp.asarray(ids), positions, jnp.asarray(mask),
                                 inputs_embeds=jnp.asarray(case["inputs/inputs_embeds"]), mutable=["intermediates"])
    return module, logits, state["intermediates"]


def test_staggered_strategy_4_golden(golden):
    case = golden(FAMILY, "circle_rope_attention")
    module, logits, inter = _run(case, _hf_kwargs(case))
    assert module.config.layer_schemes == ("circle", "mrope", "circle", "mrope")
    for i in range(4):
        np.testing.assert_allclose(inter[f"layer{i}_input"][0], case[f"intermediates/layer{i}_input"],
                                   **case.tolerance("logits"), err_msg=f"layer{i}_input")
    case.assert_close("last_hidden_state", inter["final_norm_out"][0])
    case.assert_close("logits", logits)


@pytest.mark.parametrize("age, output", [("strategy_2", "logits_strategy_2"), ("strategy_3", "logits_strategy_3"),
                                         (None, "logits_circle_all"), ("mrope", "logits_mrope_all")])
def test_other_schedules_golden(golden, age, output):
    case = golden(FAMILY, "circle_rope_attention")
    circle = dict(case.meta["constructor"]["circle_rope"])
    circle.pop("AGE_mode")
    if age == "mrope":  # upstream Qwen2.5-VL: no circle_rope key
        kwargs = _hf_kwargs(case, circle_rope=None)
    elif age is None:  # circle_rope without AGE_mode: every layer Circle-RoPE
        kwargs = _hf_kwargs(case, circle_rope=circle)
    else:
        kwargs = _hf_kwargs(case, circle_rope={**circle, "AGE_mode": age})
    _, logits, _ = _run(case, kwargs)
    case.assert_close(output, logits)


def test_per_layer_list_equals_the_named_strategy(golden):
    case = golden(FAMILY, "circle_rope_attention")
    _, logits, _ = _run(case, {**_hf_kwargs(case)})
    module, params = from_torch("lvlm", _hf_kwargs(case), case.state_dict,
                                position_scheme=("circle", "mrope", "circle", "mrope"))
    pos, _ = positions_for(module.config, case["inputs/input_ids"], case["inputs/image_grid_thw"])
    out = module.apply({"params": params}, None, pos, inputs_embeds=jnp.asarray(case["inputs/inputs_embeds"]))
    np.testing.assert_allclose(out, logits, rtol=1e-6, atol=1e-6)


# Qwen2.5-VL-3B-Instruct config.json as released (written out here, independently of the converter).
QWEN25_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
    "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 128000, "max_window_layers": 70,
    "model_type": "qwen2_5_vl", "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": True, "use_sliding_window": False,
    "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
        "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 151936,
    "circle_rope": {"alpha": 0.5, "radius": 10, "method": "circle", "AGE_mode": "strategy_4", "move_to_origin": True},
}


def _qwen3b_state_dict_shapes() -> dict[str, tuple]:
    """Names and shapes of the Hugging Face Qwen2.5-VL-3B safetensors (tied head: no lm_head.weight)."""
    d, ff, v, hd = 2048, 11008, 151936, 128
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    for i in range(36):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.self_attn.q_proj.weight": (16 * hd, d), f"{p}.self_attn.q_proj.bias": (16 * hd,),
            f"{p}.self_attn.k_proj.weight": (2 * hd, d), f"{p}.self_attn.k_proj.bias": (2 * hd,),
            f"{p}.self_attn.v_proj.weight": (2 * hd, d), f"{p}.self_attn.v_proj.bias": (2 * hd,),
            f"{p}.self_attn.o_proj.weight": (d, d), f"{p}.mlp.gate_proj.weight": (ff, d),
            f"{p}.mlp.up_proj.weight": (ff, d), f"{p}.mlp.down_proj.weight": (d, ff),
            f"{p}.input_layernorm.weight": (d,), f"{p}.post_attention_layernorm.weight": (d,),
        })
    dv, ffv = 1280, 3420
    shapes["visual.patch_embed.proj.weight"] = (dv, 3, 2, 14, 14)
    for i in range(32):
        p = f"visual.blocks.{i}"
        shapes.update({
            f"{p}.norm1.weight": (dv,), f"{p}.norm2.weight": (dv,), f"{p}.attn.qkv.weight": (3 * dv, dv),
            f"{p}.attn.qkv.bias": (3 * dv,), f"{p}.attn.proj.weight": (dv, dv), f"{p}.attn.proj.bias": (dv,),
            f"{p}.mlp.gate_proj.weight": (ffv, dv), f"{p}.mlp.gate_proj.bias": (ffv,),
            f"{p}.mlp.up_proj.weight": (ffv, dv), f"{p}.mlp.up_proj.bias": (ffv,),
            f"{p}.mlp.down_proj.weight": (dv, ffv), f"{p}.mlp.down_proj.bias": (dv,),
        })
    shapes.update({"visual.merger.ln_q.weight": (dv,), "visual.merger.mlp.0.weight": (4 * dv, 4 * dv),
                   "visual.merger.mlp.0.bias": (4 * dv,), "visual.merger.mlp.2.weight": (d, 4 * dv),
                   "visual.merger.mlp.2.bias": (d,)})
    return shapes


def test_qwen25_vl_3b_names_and_shapes_without_allocating():
    config = config_from_hf(QWEN25_VL_3B)
    assert config.layer_schemes[:3] == ("circle", "mrope", "circle") and config.vision_depth == 32
    expected = _qwen3b_state_dict_shapes()
    plan = conversion_plan(config)
    assert {name: shape for name, _, shape, _ in plan} == expected
    args, kwargs = init_inputs(config)
    abstract = jax.eval_shape(lambda: LVLM(config).init(jax.random.key(0), *args, **kwargs))
    flat = flax.traverse_util.flatten_dict(flax.linen.unbox(abstract["params"]))
    converted = {path: jax.eval_shape(transform, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
                 for _, path, shape, transform in plan}
    assert set(converted) == set(flat)
    assert all(converted[p] == flat[p].shape for p in flat)
    n_params = sum(int(np.prod(s)) for s in expected.values())
    assert 3.7e9 < n_params < 3.8e9  # Qwen2.5-VL-3B: 3.75B with the tied head


def test_transformers_5_names_and_tied_head(golden):
    case = golden(FAMILY, "circle_rope_attention")
    kw = _hf_kwargs(case)
    sd = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
          for k, v in case.state_dict.items()}
    _, params = from_torch("lvlm", kw, sd)
    _, ref = from_torch("lvlm", kw, case.state_dict)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, ref))
    tied = {k: v for k, v in case.state_dict.items() if k != "lm_head.weight"}
    module, params = from_torch("lvlm", {**kw, "tie_word_embeddings": True}, tied)
    assert "lm_head" not in params and module.config.tie_word_embeddings


def test_small_preset_builds_with_vision_tower():
    model = build_model("lvlm", "small")
    args, kwargs = init_inputs(model.config)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))["params"]
    assert "visual" in params and len([k for k in params if k.startswith("layers_")]) == 4


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mrope_section=(4, 3, 3)), "summing to head_dim/2=8"),
        (dict(position_scheme=("circle", "mrope")), "lists 2 layer schemes but num_hidden_layers=4"),
        (dict(position_scheme="strategy_9"), "position_scheme='strategy_9'"),
        (dict(position_scheme=("circle", "mrope", "2d", "mrope")), "unknown layer scheme"),
        (dict(circle_radius="huge"), "radius"),
        (dict(num_key_value_heads=3), "multiple of num_key_value_heads"),
    ],
)
def test_bad_configs_are_rejected(change, message):
    base = dict(build_model("lvlm", "tiny").config.__dict__)
    with pytest.raises(ValueError, match=message):
        LVLMConfig.from_dict({**base, **change})


def test_bad_hf_configs_are_rejected(golden):
    case = golden(FAMILY, "circle_rope_attention")
    kw = _hf_kwargs(case)
    with pytest.raises(ValueError, match="unknown Qwen2.5-VL config key"):
        from_torch("lvlm", {**kw, "hiden_size": 64}, case.state_dict)
    with pytest.raises(ValueError, match="summing to head_dim/2"):
        from_torch("lvlm", {**kw, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}, case.state_dict)
    with pytest.raises(ValueError, match="not converted"):
        from_torch("lvlm", kw, {**case.state_dict, "model.extra.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        from_torch("lvlm", {**kw, "tie_word_embeddings": True}, case.state_dict)


def _tiny_text_state_dict(d: int, layers: int = 1, vocab: int = 16, ff: int = 32, heads: int = 2, kv: int = 1):
    rng = np.random.default_rng(0)
    hd = d // heads
    sd = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    for i in range(layers):
        p = f"model.layers.{i}"
        sd.update({f"{p}.self_attn.q_proj.weight": (heads * hd, d), f"{p}.self_attn.q_proj.bias": (heads * hd,),
                   f"{p}.self_attn.k_proj.weight": (kv * hd, d), f"{p}.self_attn.k_proj.bias": (kv * hd,),
                   f"{p}.self_attn.v_proj.weight": (kv * hd, d), f"{p}.self_attn.v_proj.bias": (kv * hd,),
                   f"{p}.self_attn.o_proj.weight": (d, d), f"{p}.mlp.gate_proj.weight": (ff, d),
                   f"{p}.mlp.up_proj.weight": (ff, d), f"{p}.mlp.down_proj.weight": (d, ff),
                   f"{p}.input_layernorm.weight": (d,), f"{p}.post_attention_layernorm.weight": (d,)})
    return {k: rng.normal(size=s).astype(np.float32) for k, s in sd.items()}


def test_vision_tower_matches_transformers(golden):
    """The Qwen2.5-VL ViT (windowed + full attention, 2-D rotary, merger) on two images of different sizes."""
    case = golden("lvlm", "qwen25_vl_vision")
    from jaxlab.models.lvlm_vision import vision_layout

    vision = case.meta["constructor"]["vision_config"]
    d = vision["out_hidden_size"]
    hf = dict(vocab_size=16, image_token_id=13, vision_start_token_id=14, vision_end_token_id=15, video_token_id=12,
              hidden_size=d, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1, tie_word_embeddings=True, rope_scaling={"type": "mrope", "mrope_section": [2, 2, 2]},
              vision_config=vision)
    sd = {**_tiny_text_state_dict(d), **case.state_dict}
    module, params = from_torch("lvlm", hf, sd)
    grid = case["inputs/image_grid_thw"]
    layout = vision_layout(grid, vision["patch_size"], vision["window_size"], vision["spatial_merge_size"])
    run = jax.jit(lambda x, lay: module.apply({"params": params}, x, lay, method=lambda m, a, b: m.visual(a, b)))
    case.assert_close("image_embeds", run(jnp.asarray(case["inputs/pixel_values"]), layout))
    # Same-size images batched [N, P, F] with one image's layout == the flat Hugging Face call.
    pixels = np.random.default_rng(0).normal(size=(2, 16, 96)).astype(np.float32)
    two = vision_layout([[1, 4, 4], [1, 4, 4]], vision["patch_size"], vision["window_size"])
    one = vision_layout([[1, 4, 4]], vision["patch_size"], vision["window_size"])
    np.testing.assert_allclose(run(pixels, one), run(pixels.reshape(32, 96), two), rtol=1e-5, atol=1e-5)


def test_every_parameter_carries_logical_axes_without_repeats():
    model = build_model("lvlm", "small")
    args, kwargs = init_inputs(model.config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, flax.linen.LogicallyPartitioned))
    assert leaves and all(isinstance(x, flax.linen.LogicallyPartitioned) for x in leaves)
    for x in leaves:
        named = [n for n in x.names if n is not None]
        assert len(named) == len(set(named)), x.names  # one mesh axis cannot shard two dims
