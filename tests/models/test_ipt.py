"""IPT: golden equivalence with huawei-noah/Pretrained-IPT (SR + denoise heads/tails, task index), conversion and errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models import build_model
from jaxlab.models.ipt import IPTConfig
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

TASKS = (("denoise", 0), ("sr_x2", 1))


@pytest.fixture(scope="module")
def golden():
    case = GoldenCase("ipt", "ipt_forward_small")
    module, params = from_torch("ipt", case.meta["constructor"]["args"], case.state_dict)
    return case, module, params


@pytest.mark.parametrize("name,task", TASKS)
def test_forward_and_intermediates_match_reference(golden, name, task):
    case, module, params = golden
    x = nchw_to_nhwc(case["inputs/x"])
    out, state = jax.jit(lambda p, x: module.apply({"params": p}, x, task, mutable=["intermediates"]))(params, x)
    case.assert_close(name, nhwc_to_nchw(out))
    sown = jax.tree_util.tree_map(np.asarray, state["intermediates"])
    tol = case.tolerance(name)
    for key in ("head_out", "body_out"):
        np.testing.assert_allclose(nhwc_to_nchw(sown[key][0]), case[f"intermediates/{name}/{key}"], **tol, err_msg=key)
    for key in ("encoder_out", "decoder_out"):  # reference is sequence-first [L, B, D]
        np.testing.assert_allclose(sown["body"][key][0].transpose(1, 0, 2), case[f"intermediates/{name}/{key}"], **tol, err_msg=key)


def test_tasks_are_not_interchangeable(golden):
    """The task index picks head, tail and query: running the denoise task must not give the SR-head features."""
    case, module, params = golden
    x = nchw_to_nhwc(case["inputs/x"])
    _, state = jax.jit(lambda p, x: module.apply({"params": p}, x, 1, mutable=["intermediates"]))(params, x)
    assert not np.allclose(nhwc_to_nchw(state["intermediates"]["head_out"][0]), case["intermediates/denoise/head_out"], atol=1e-2)


def test_converter_rejects_mismatched_checkpoints(golden):
    case, _, _ = golden
    args = dict(case.meta["constructor"]["args"])
    with pytest.raises(ValueError, match="not converted"):  # checkpoint has 2 tasks, kwargs name 1
        from_torch("ipt", {**args, "scale": [1], "num_queries": 1}, case.state_dict)
    with pytest.raises(ValueError, match="MeanShift"):
        from_torch("ipt", {**args, "rgb_range": 1}, case.state_dict)
    with pytest.raises(ValueError, match="unsupported IPT argument"):
        from_torch("ipt", {**args, "n_resblocks": 3}, case.state_dict)
    sd = dict(case.state_dict)
    sd.pop("tail.1.0.0.weight")
    with pytest.raises(KeyError, match="tail.1.0.0.weight"):
        from_torch("ipt", args, sd)


def test_bad_inputs_and_configs_are_named(golden):
    _, module, params = golden
    x = np.zeros((1, 24, 24, 3), np.float32)
    with pytest.raises(ValueError, match="task=2 is not a task index"):
        jax.eval_shape(lambda p: module.apply({"params": p}, x, 2), params)
    with pytest.raises(ValueError, match="tiled_apply"):
        jax.eval_shape(lambda p: module.apply({"params": p}, np.zeros((1, 32, 32, 3), np.float32), 0), params)
    with pytest.raises(ValueError, match="num_queries"):
        IPTConfig.from_dict(dict(scale=(1, 2), num_queries=1))
    with pytest.raises(ValueError, match="not 1, 3 or a power of two"):
        IPTConfig.from_dict(dict(scale=(5,)))


def test_upsampler_layouts_for_x3_and_x4():
    model = build_model("ipt", None, n_feats=4, patch_size=6, patch_dim=3, num_heads=2, num_layers=1, scale=(3, 4), num_queries=2)
    x = jax.ShapeDtypeStruct((1, 6, 6, 3), np.float32)
    params = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, 0), x)["params"])
    assert params["tail_0"]["up_0"]["kernel"].shape == (3, 3, 4, 36) and "up_1" not in params["tail_0"]
    assert params["tail_1"]["up_1"]["kernel"].shape == (3, 3, 4, 16)
    assert jax.eval_shape(lambda p, x: model.apply({"params": p}, x, 0), params, x).shape == (1, 18, 18, 3)
    assert jax.eval_shape(lambda p, x: model.apply({"params": p}, x, 1), params, x).shape == (1, 24, 24, 3)


def test_global_residual_switch_adds_the_input_instead_of_the_mean(golden):
    case, module, params = golden
    from jaxlab.models.ipt import IPT, RGB_MEAN

    cfg = module.config.replace(scale=(1,))  # the golden denoise task alone (head_0, tail_0, query row 0)
    x = nchw_to_nhwc(case["inputs/x"])
    plain, residual = (jax.jit(lambda p, x, m=IPT(c): m.apply({"params": p}, x, 0))(params, x)
                       for c in (cfg, cfg.replace(global_residual=True)))
    expected = np.asarray(plain) - np.asarray(RGB_MEAN, np.float32) * cfg.rgb_range + np.asarray(x)
    np.testing.assert_allclose(residual, expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="needs scale 1 for every task"):
        module.config.replace(global_residual=True).validate()
