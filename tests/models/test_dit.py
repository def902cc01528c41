"""DiT: golden equivalence with facebookresearch/DiT, presets, switches and input errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models import build_model, count_params
from jaxlab.models.dit import PRESETS, DiT, DiTConfig
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw
from tests.convert.dit_shapes import official_state_dict_shapes

CASE = GoldenCase("dit", "dit_forward_small")


@pytest.fixture(scope="module")
def converted():
    return from_torch("dit", CASE.meta["constructor"], CASE.state_dict)


def test_forward_matches_reference(converted):
    module, params = converted
    out = jax.jit(module.apply)({"params": params}, nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"])
    CASE.assert_close("forward", nhwc_to_nchw(out))


@pytest.mark.default_xla
def test_forward_with_cfg_matches_reference(converted):
    module, params = converted
    out = jax.jit(lambda p, *args: module.apply(p, *args, method=DiT.forward_with_cfg))(
        {"params": params},
        nchw_to_nhwc(CASE["inputs/cfg_x"]),
        CASE["inputs/cfg_t"],
        CASE["inputs/cfg_y"],
        CASE["inputs/cfg_scale"],
    )
    CASE.assert_close("forward_with_cfg", nhwc_to_nchw(out))


def test_intermediates_match_reference(converted):
    """Localises a mismatch: embeddings, block 0 and the final layer against the reference's tensors."""
    module, params = converted
    x, t, y = nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"]
    ref = lambda name: CASE[f"intermediates/forward/{name}"]
    tol = CASE.tolerance("forward")

    def run(method):
        return module.apply({"params": params}, method=method)

    t_emb = run(lambda m: m.t_embedder(jnp.asarray(t)))
    y_emb = run(lambda m: m.y_embedder(jnp.asarray(y), False))
    np.testing.assert_allclose(t_emb, ref("t_emb"), **tol)
    np.testing.assert_allclose(y_emb, ref("y_emb"), **tol)
    block0 = run(lambda m: m.blocks[0](jnp.asarray(ref("tokens_plus_pos")), jnp.asarray(ref("c"))))
    np.testing.assert_allclose(block0, ref("block0_out"), **tol)
    _, captured = module.apply(
        {"params": params}, x, t, y, capture_intermediates=lambda m, method: m.name == "final_layer"
    )
    np.testing.assert_allclose(captured["intermediates"]["final_layer"]["__call__"][0], ref("final_layer_out"), **tol)


def test_patch_tokens_plus_position_table_match_reference(converted):
    module, params = converted
    from jaxlab.models.dit import pos_embed_table

    cfg = module.config
    tokens = module.apply({"params": params}, jnp.asarray(nchw_to_nhwc(CASE["inputs/x"])), method=lambda m, x: m.x_embedder(x))
    table = pos_embed_table(cfg.hidden_size, cfg.input_size // cfg.patch_size)
    np.testing.assert_allclose(table, CASE["params/pos_embed"][0], atol=1e-7)
    np.testing.assert_allclose(tokens + table, CASE["intermediates/forward/tokens_plus_pos"], **CASE.tolerance("forward"))


def test_scan_and_remat_compute_the_same_function():
    kwargs = CASE.meta["constructor"]
    x, t, y = nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"]
    reference_out = None
    for options in ({}, {"scan_blocks": True}, {"remat": "full"}, {"scan_blocks": True, "remat": "dots_saveable"}):
        module, params = from_torch("dit", kwargs, CASE.state_dict, **options)
        # The switches take effect: one stacked block under scan, a remat call per block otherwise.
        if options.get("scan_blocks"):
            stacked = params["blocks"]["block"]["mlp"]["fc1"]["kernel"]
            assert "blocks_0" not in params and stacked.shape[0] == kwargs["depth"]
        else:
            assert "blocks" not in params and f"blocks_{kwargs['depth'] - 1}" in params
        jaxpr = str(jax.make_jaxpr(lambda p: module.apply({"params": p}, x, t, y))(params))
        remat_calls = re.findall(r"= (?:remat2?|checkpoint)\[", jaxpr)  # the primitive's name varies by JAX version
        expected_calls = 0 if "remat" not in options else (1 if options.get("scan_blocks") else kwargs["depth"])
        assert len(remat_calls) == expected_calls, options
        out = np.asarray(jax.jit(module.apply)({"params": params}, x, t, y))
        if reference_out is None:
            reference_out = out
        np.testing.assert_allclose(out, reference_out, rtol=1e-5, atol=1e-5, err_msg=str(options))


def test_bfloat16_compute_stays_close_and_returns_float32():
    module, params = from_torch("dit", CASE.meta["constructor"], CASE.state_dict, dtype="bfloat16")
    out = jax.jit(module.apply)({"params": params}, nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"])
    assert out.dtype == jnp.float32
    ref = nchw_to_nhwc(CASE["outputs/forward"])
    error = np.abs(out - ref).max()
    assert error < 0.1 * np.abs(ref).max()
    # The compute really ran in bfloat16 (a float32 forward matches the reference to ~1e-6).
    assert error > 20 * CASE.tolerance("forward")["atol"], error


# Trainable parameter counts of the official models (input 32, 1000 classes, learn_sigma), without pos_embed.
OFFICIAL_PARAMS = {"DiT-XL/2": 674_834_720, "DiT-S/2": 32_865_056}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_matches_official_parameter_count(preset):
    module = build_model("dit", preset)
    cfg = module.config
    x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))
    d, p, c = cfg.hidden_size, cfg.patch_size, cfg.in_channels
    # Closed form of the official module tree (models.py), independent of jaxlab's layout.
    per_block = (3 * d * d + 3 * d) + (d * d + d) + 2 * (4 * d * d) + 4 * d + d + (6 * d * d + 6 * d)
    expected = (
        (c * p * p * d + d)  # patch conv
        + (256 * d + d) + (d * d + d)  # timestep MLP
        + (cfg.num_classes + 1) * d  # label table with the null row
        + cfg.depth * per_block
        + (2 * d * d + 2 * d) + (d * p * p * 2 * c + p * p * 2 * c)  # final layer
    )
    assert count_params(shapes["params"]) == expected
    if preset in OFFICIAL_PARAMS:
        assert expected == OFFICIAL_PARAMS[preset]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_from_torch_accepts_every_official_preset_kwargs(preset):
    """A preset's fields are official ``DiT(...)`` kwargs: ``from_torch`` builds that preset from them and
    converts a state_dict with the official names and shapes (written out in tests/convert, independently
    of jaxlab); two blocks instead of the preset's depth keep it cheap (XL: 2 x 16M zeros)."""
    fields = PRESETS[preset]
    assert DiTConfig.from_dict(fields) == build_model("dit", preset).config
    kwargs = {**fields, "depth": 2}
    shapes = official_state_dict_shapes(**kwargs)
    state_dict = {k: np.zeros(s, np.float32) for k, s in shapes.items() if k != "pos_embed"}
    module, params = from_torch("dit", kwargs, state_dict)
    assert module.config == DiTConfig.from_dict(kwargs)
    assert count_params(params) == sum(v.size for v in state_dict.values())
    d = fields["hidden_size"]
    assert params["blocks_1"]["attn"]["qkv"]["kernel"].shape == (d, 3, fields["num_heads"], d // fields["num_heads"])


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny():
    module = build_model("dit", None, input_size=8, patch_size=2, hidden_size=32, depth=1, num_heads=2, num_classes=10)
    x = jnp.zeros((2, 8, 8, 4))
    params = jax.jit(module.init)(jax.random.key(0), x, jnp.zeros((2,), jnp.int32), jnp.zeros((2,), jnp.int32))
    return module, params


def test_wrong_image_size_is_rejected(tiny):
    module, params = tiny
    with pytest.raises(ValueError, match=r"NHWC input \[N, 8, 8, 4\]"):
        module.apply(params, jnp.zeros((2, 10, 10, 4)), jnp.zeros((2,), jnp.int32), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="NHWC"):  # an NCHW image is caught too
        module.apply(params, jnp.zeros((2, 4, 8, 8)), jnp.zeros((2,), jnp.int32), jnp.zeros((2,), jnp.int32))


def test_patch_size_must_divide_input_size():
    with pytest.raises(ValueError, match="input_size=10 is not divisible by patch_size=4"):
        build_model("dit", None, input_size=10, patch_size=4)


@pytest.mark.parametrize("label", [-1, 11])
def test_label_out_of_range_is_rejected(tiny, label):
    module, params = tiny
    with pytest.raises(ValueError, match=r"class label out of range.*allowed \[0, 10\]"):
        module.apply(params, jnp.zeros((2, 8, 8, 4)), jnp.zeros((2,), jnp.int32), jnp.array([0, label]))


def test_null_label_is_allowed_only_with_label_dropout():
    module = build_model("dit", None, input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=10,
                         class_dropout_prob=0.0)
    x, t = jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,), jnp.int32)
    params = jax.jit(module.init)(jax.random.key(0), x, t, t)
    assert params["params"]["y_embedder"]["embedding_table"].value.shape == (10, 32)
    with pytest.raises(ValueError, match=r"allowed \[0, 9\]"):
        module.apply(params, x, t, jnp.array([10]))


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match=r"unknown DiTConfig field\(s\) \['hiden_size'\]"):
        build_model("dit", "DiT-S/2", hiden_size=10)
    with pytest.raises(ValueError, match="unknown dit preset 'DiT-M/2'"):
        build_model("dit", "DiT-M/2")
    with pytest.raises(ValueError, match="dtype='float8'"):
        build_model("dit", "DiT-S/2", dtype="float8")


def test_label_dropout_in_training_uses_the_null_class(tiny):
    module, params = tiny
    y = jnp.zeros((64,), jnp.int32)
    # force_drop_ids selects the null row exactly where it is 1.
    drop = (jnp.arange(64) % 2).astype(jnp.int32)
    emb = module.apply(params, y, False, drop, method=lambda m, y, tr, d: m.y_embedder(y, tr, d))
    table = params["params"]["y_embedder"]["embedding_table"].value
    np.testing.assert_array_equal(emb[1::2], jnp.broadcast_to(table[10], (32, 32)))
    np.testing.assert_array_equal(emb[0::2], jnp.broadcast_to(table[0], (32, 32)))
    # In train mode, labels are dropped at random (p = 0.1) with the "dropout" stream.
    y = jnp.zeros((1000,), jnp.int32)
    emb = module.apply(params, y, True, method=lambda m, y, tr: m.y_embedder(y, tr), rngs={"dropout": jax.random.key(1)})
    dropped = np.all(np.asarray(emb) == np.asarray(table[10]), axis=-1)
    assert 50 < dropped.sum() < 150
    assert np.all(np.asarray(emb)[~dropped] == np.asarray(table[0]))
