"""Parameter inheritance: extraction == masked parent, identity layers, depth/width selection, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models.lm import CausalLM, LMConfig
from jaxlab.tinylm import inheritance as inh

CFG = LMConfig(layout="llama", vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=4,
               intermediate_size=48, max_position_embeddings=32, rotary_pct=1.0, parallel_residual=False,
               use_bias=False)
WIDTHS = {"hidden": 16, "heads": 2, "mlp": 24}


@pytest.fixture(scope="module")
def parent():
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, CFG.vocab_size)
    params = nn.unbox(CausalLM(CFG).init(jax.random.key(0), tokens)["params"])
    # trained-looking norms (not all ones) so that the RMSNorm rescaling is exercised
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: np.asarray(x) * (1 + 0.5 * rng.random(x.shape, np.float32))
        if "norm" in jax.tree_util.keystr(path) else np.asarray(x), params)
    return params, {"tokens": np.asarray(tokens)}


@pytest.fixture(scope="module")
def forward():
    return jax.jit(lambda cfg, p, t: CausalLM(cfg).apply({"params": p}, t)[0], static_argnums=0)


def test_all_ones_mask_extraction_reproduces_the_parent_exactly(parent, forward):
    params, batch = parent
    keep = inh.select_units(inh.norm_scores(CFG, params, 2), {"hidden": 32, "heads": 4, "mlp": 48})
    child_cfg, child = inh.extract(CFG, params, keep)
    assert child_cfg == CFG
    np.testing.assert_array_equal(np.asarray(forward(child_cfg, child, batch["tokens"])),
                                  np.asarray(forward(CFG, params, batch["tokens"])))
    masked = inh.apply_masks(CFG, params, inh.ones_masks(CFG))
    np.testing.assert_array_equal(np.asarray(forward(CFG, masked, batch["tokens"])),
                                  np.asarray(forward(CFG, params, batch["tokens"])))


def test_extracted_child_equals_the_hard_masked_parent(parent, forward):
    params, batch = parent
    keep = inh.select_units(inh.random_scores(CFG, seed=3), WIDTHS)
    child_cfg, child = inh.extract(CFG, params, keep)
    assert (child_cfg.hidden_size, child_cfg.num_heads, child_cfg.intermediate_size) == (16, 2, 24)
    masked = inh.apply_masks(CFG, params, inh.hard_masks(CFG, keep))
    np.testing.assert_allclose(np.asarray(forward(child_cfg, child, batch["tokens"])),
                               np.asarray(forward(CFG, masked, batch["tokens"])), atol=2e-5, rtol=2e-5)


def test_dropping_an_identity_initialised_layer_changes_nothing(parent, forward):
    params, batch = parent
    ident = dict(params)
    layer = params["layers_1"]
    ident["layers_1"] = {**layer, "attn": {**layer["attn"], "o_proj": {"kernel": np.zeros_like(layer["attn"]["o_proj"]["kernel"])}},
                         "mlp": {**layer["mlp"], "down": {"kernel": np.zeros_like(layer["mlp"]["down"]["kernel"])}}}
    cfg2, dropped = inh.drop_layers(CFG, ident, [0, 2])
    np.testing.assert_array_equal(np.asarray(forward(cfg2, dropped, batch["tokens"])),
                                  np.asarray(forward(CFG, ident, batch["tokens"])))
    loss = jax.jit(inh.lm_loss, static_argnums=0)
    importance = inh.layer_importance(lambda c, p: float(loss(c, p, batch)), CFG, ident)
    assert importance[1] == 0.0 and importance[0] != 0.0


def test_depth_selection_rules():
    imp = [3.0, 1.0, 0.5, 0.2, 2.0, 5.0]
    assert inh.select_depth(imp, 4) == (0, 1, 4, 5)  # ends + evenly spaced middle
    assert inh.select_depth(imp, 4, middle="importance") == (0, 1, 4, 5)
    assert inh.select_depth(imp, 3, middle="importance") == (0, 4, 5)
    assert inh.select_depth(imp, 6) == tuple(range(6))
    r = inh.select_depth(imp, 4, middle="random", seed=1)
    assert r[0] == 0 and r[-1] == 5 and len(set(r)) == 4 and r == inh.select_depth(imp, 4, middle="random", seed=1)
    assert inh.select_depth(imp, 4, keep_first=2, keep_last=2) == (0, 1, 4, 5)


def test_norm_scores_rank_a_zeroed_unit_last(parent):
    params, _ = parent
    p = jax.tree.map(np.copy, params)
    p["layers_0"]["mlp"]["gate"]["kernel"][:, 5] = 0
    p["layers_0"]["mlp"]["up"]["kernel"][:, 5] = 0
    p["layers_0"]["mlp"]["down"]["kernel"][5] = 0
    for order in (1, 2):
        scores = inh.norm_scores(CFG, p, order)
        assert scores["mlp"][0, 5] == 0 and np.all(np.delete(scores["mlp"][0], 5) > 0)
        assert 5 not in inh.select_units(scores, WIDTHS)["mlp"][0]


def test_learned_masks_move_towards_the_target_width(parent):
    params, batch = parent
    logits, history = inh.learn_masks(inh.lm_loss, CFG, params, WIDTHS, [batch],
                                      inh.MaskConfig(steps=25, learning_rate=0.3, penalty=50.0))
    for g, ratio in inh.keep_ratios(CFG, WIDTHS).items():
        mean = float(jax.nn.sigmoid(logits[g]).mean())
        assert abs(mean - ratio) < 0.2, (g, mean, ratio)  # started at sigmoid(3) = 0.95
    assert len(history) == 25 and np.all(np.isfinite(history))
    # straight-through: the hard forward value with the relaxed gradient
    m = inh.gumbel_sigmoid_st(jnp.zeros(5), jax.random.key(0), 0.5)
    assert set(np.asarray(m).tolist()) <= {0.0, 1.0}
    g = jax.grad(lambda x: inh.gumbel_sigmoid_st(x, jax.random.key(0), 0.5).sum())(jnp.zeros(5))
    assert np.all(np.asarray(g) > 0)


def test_bad_inputs_are_clear_errors(parent):
    params, batch = parent
    with pytest.raises(ValueError, match=r"target depth 7 must be in \[1, 6\]"):
        inh.select_depth(np.ones(6), 7)
    with pytest.raises(ValueError, match="keep_first=2 \\+ keep_last=2"):
        inh.select_depth(np.ones(6), 3, keep_first=2, keep_last=2)
    with pytest.raises(ValueError, match="sparsity target .* out of range"):
        inh.keep_ratios(CFG, {"hidden": 64, "heads": 2, "mlp": 24})
    with pytest.raises(ValueError, match="sparsity target .* out of range"):
        inh.keep_ratios(CFG, {"hidden": 16, "heads": 2, "mlp": 0})
    with pytest.raises(ValueError, match="criterion='fisher' is unknown"):
        inh.unit_scores("fisher", CFG, params, [batch], WIDTHS)
    with pytest.raises(ValueError, match="must equal kept heads"):
        inh.extract(CFG, params, {"hidden": np.arange(12), "heads": np.zeros((3, 2), int), "mlp": np.zeros((3, 4), int)})
    with pytest.raises(ValueError, match="layout='llama'"):
        inh.check_parent(CFG.replace(layout="gpt_neox", use_bias=True), params)
    with pytest.raises(ValueError, match="distinct, ascending"):
        inh.drop_layers(CFG, params, [2, 0])
