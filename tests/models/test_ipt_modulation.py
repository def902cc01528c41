"""Instruct-IPT weight modulation: B=0 / rank 0 == shared, merged == at-apply-time, gradients, selection, sensitivity."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models import build_model
from jaxlab.models.ipt_modulation import (
    ModulationConfig,
    count_modulation_params,
    init_modulation,
    merge,
    modulate,
    target_paths,
    task_sensitivity,
)

ALL = ("qkv", "attn_out", "ffn", "body_mlp", "head", "tail")


@pytest.fixture(scope="module")
def shared():
    model = build_model("ipt", "IPT-tiny", n_feats=8, patch_size=12, num_heads=2)  # D 72, L 16: cheap compiles
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 12, 12, 3)), jnp.float32)
    # Random params without compiling init (slow on a shared CPU): N(0, 1/fan_in) kernels, small biases.
    shapes = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, 0), x)["params"])
    rng = np.random.default_rng(1)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
        return (1.0 if "scale" in name else 0.0) + 0.05 * rng.normal(size=s.shape).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)

    plain = jax.jit(lambda p: model.apply({"params": p}, x, 0))
    return model, params, x, plain


def _apply_modulated(model, params, mod, task, cfg, x):
    return jax.jit(lambda p, m, t: model.apply({"params": modulate(p, m, t, cfg)}, x, 0))(params, mod, task)


def test_lora_init_and_rank_zero_equal_the_shared_model(shared):
    model, params, x, plain = shared
    base = plain(params)
    for rank in (0, 4):
        cfg = ModulationConfig(num_tasks=3, rank=rank, targets=ALL)
        mod = init_modulation(jax.random.key(1), params, cfg)
        np.testing.assert_array_equal(_apply_modulated(model, params, mod, 2, cfg, x), base)


def test_merged_equals_modulated_at_apply_time_and_tasks_differ(shared):
    model, params, x, plain = shared
    cfg = ModulationConfig(num_tasks=3, rank=4, targets=ALL, init="gaussian", init_std=0.05)
    mod = init_modulation(jax.random.key(1), params, cfg)
    step = jax.jit(lambda p, m, t: model.apply({"params": modulate(p, m, t, cfg)}, x, 0))
    outs = []
    for task in range(3):
        live = step(params, mod, task)
        np.testing.assert_allclose(plain(merge(params, mod, task, cfg)), live, rtol=1e-5, atol=1e-3)
        outs.append(np.asarray(live))
    base = np.asarray(plain(params))
    assert all(np.abs(o - base).max() > 0.1 for o in outs)  # the biases change the model...
    assert np.abs(outs[0] - outs[1]).max() > 0.1  # ...differently per task


def test_gradients_reach_the_task_factors_from_a_zero_init(shared):
    model, params, x, _ = shared
    cfg = ModulationConfig(num_tasks=2, rank=2, targets=("qkv", "ffn"))
    mod = init_modulation(jax.random.key(1), params, cfg)

    def loss(mod, task):
        return jnp.mean(model.apply({"params": modulate(params, mod, task, cfg)}, x, 0) ** 2)

    g = jax.jit(jax.grad(loss))(mod, 1)
    path = "body/encoder_0/ffn/linear1/kernel"
    assert np.abs(g[path]["up"][1]).max() > 0  # B = 0 still learns (through A)...
    assert np.abs(g[path]["up"][0]).max() == 0  # ...only for the task in the batch
    assert np.abs(g[path]["down"]).max() == 0  # A gets no gradient while B = 0 (as in LoRA)


def test_target_selection_and_parameter_count(shared):
    _, params, _, _ = shared
    layers = 2  # IPT-tiny: 1 encoder + 1 decoder layer
    assert len(target_paths(params, ("qkv",))) == 3 * 3 * layers // 2  # enc: 1 attention, dec: 2
    assert all(p.endswith("/kernel") for p in target_paths(params, ALL))
    cfg = ModulationConfig(num_tasks=5, rank=4, targets=("head",))
    mod = init_modulation(jax.random.key(0), params, cfg)
    conv = mod["head_0/conv_0/kernel"]
    assert conv["down"].shape == (5, 3 * 3 * 3, 4) and conv["up"].shape == (5, 4, 8)
    fans = [(np.prod(k.shape[:-1]), k.shape[-1]) for k in (params["head_0"]["conv_0"]["kernel"],)]
    fans += [(5 * 5 * 8, 8)] * 4  # the two 5x5 ResBlocks
    assert count_modulation_params(mod) == 5 * 4 * sum(i + o for i, o in fans)
    with pytest.raises(ValueError, match="unknown target"):
        ModulationConfig(targets=("attention",))
    with pytest.raises(ValueError, match="select no weight"):
        target_paths(params, ("re:nothing/.*",))


def test_task_sensitivity_ranks_the_weight_a_task_moves_most(shared):
    _, params, _, _ = shared
    moved = jax.tree_util.tree_map(np.asarray, params)
    moved = {**moved, "body": {**moved["body"], "decoder_0": {**moved["body"]["decoder_0"]}}}
    attn = dict(moved["body"]["decoder_0"]["multihead_attn"])
    attn["v"] = {"kernel": attn["v"]["kernel"] * 1.5}
    moved["body"]["decoder_0"]["multihead_attn"] = attn
    ranking = task_sensitivity(params, [params, moved])
    assert ranking[0] == ("body/decoder_0/multihead_attn/v/kernel", pytest.approx(0.25))
    assert ranking[1][1] == 0.0
