"""FID Inception: golden equivalence with pytorch-fid's fid_inception_v3 through from_torch.

The reference parameters (23.9M) are not stored: they are redrawn here from the NumPy recipe of
``tests/golden/fid/SPEC.md`` (PCG64 streams are platform independent).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models.inception_fid import InceptionConfig, InceptionV3FID
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw



@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    """Implicit rank promotion is an error in these tests (scoped: other modules keep the default)."""
    with jax.numpy_rank_promotion("raise"):
        yield

CASE = GoldenCase("fid", "inception_fid_forward")
TOL = CASE.meta["tolerance_per_output"]  # per output only (the case has no global "tolerance")


def assert_close(name: str, actual) -> None:
    expected = CASE[f"outputs/{name}"] if f"outputs/{name}" in CASE.arrays else CASE[f"intermediates/{name}"]
    assert actual.shape == expected.shape, f"{name}: {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=TOL[name]["rtol"], atol=TOL[name]["atol"], err_msg=name)


def recipe_state_dict(meta: dict) -> dict[str, np.ndarray]:
    """The SPEC's parameter recipe: one ``default_rng(seed)`` stream over the sorted state_dict keys."""
    rng = np.random.default_rng(meta["params_recipe"]["seed"])
    out = {}
    for key, shape in meta["params_recipe"]["shapes_in_draw_order"]:
        shape = tuple(shape)
        if key.endswith(".conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2 / fan_in))
        elif key.endswith((".bn.weight", ".bn.running_var")):
            value = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        elif key.endswith((".bn.bias", ".bn.running_mean")):
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        elif key == "fc.weight":
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / math.sqrt(2048))
        elif key == "fc.bias":
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
        else:
            raise AssertionError(f"the SPEC's recipe has no rule for {key}")
        out[key] = value
    return out


@pytest.fixture(scope="module")
def converted():
    state_dict = recipe_state_dict(CASE.meta)
    assert sum(v.size for v in state_dict.values()) == CASE.meta["params_recipe"]["num_params"]
    state_dict["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)  # in every real file; ignored
    return state_dict, *from_torch("inception_fid", {}, state_dict)


@pytest.fixture(scope="module")
def forward(converted):
    _, module, params = converted
    x = np.random.default_rng(CASE.meta["input"]["seed"]).uniform(-1.0, 1.0, size=(2, 3, 299, 299)).astype(np.float32)
    fn = jax.jit(lambda p, x: module.apply({"params": p}, x, mutable=["intermediates"]))
    return fn(params, nchw_to_nhwc(x))


def test_outputs_match_pytorch_fid(forward):
    out, _ = forward
    assert_close("pool3", np.asarray(out["pool3"]))
    assert_close("logits", np.asarray(out["logits"]))
    assert_close("mixed_6d_branch1x1", nhwc_to_nchw(out["spatial"]))


def test_intermediates_match_pytorch_fid(forward):
    _, state = forward
    for name in ("block1_maxpool2", "mixed_7c"):
        got = nhwc_to_nchw(state["intermediates"][name][0][:1])
        assert_close(name, got)


def test_logits_without_bias_are_the_adm_softmax_input(converted, forward):
    state_dict, _, _ = converted
    out, _ = forward
    pool3 = np.asarray(out["pool3"], np.float64)
    np.testing.assert_allclose(out["logits_nobias"], pool3 @ state_dict["fc.weight"].T.astype(np.float64), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
        np.asarray(out["logits"]) - np.asarray(out["logits_nobias"]), np.broadcast_to(state_dict["fc.bias"], (2, 1008)), atol=1e-3
    )


def test_converter_rejects_other_networks_and_leftovers(converted):
    state_dict, _, _ = converted
    with pytest.raises(ValueError, match="no constructor kwargs"):
        from_torch("inception_fid", {"num_classes": 1000}, state_dict)
    with pytest.raises(KeyError, match="not pytorch-fid"):
        from_torch("inception_fid", {}, {k: v for k, v in state_dict.items() if not k.startswith("fc.")})
    with pytest.raises(ValueError, match="not converted"):
        from_torch("inception_fid", {}, {**state_dict, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)})


def test_module_rejects_wrong_image_size():
    module = InceptionV3FID(InceptionConfig())
    with pytest.raises(ValueError, match="299x299"):
        jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3))))


def test_batched_features_take_uint8_through_the_adm_input_path(converted):
    from jaxlab.eval.inception import InceptionFeatures, adm_inception_input
    from jaxlab.eval.metrics import softmax

    _, module, params = converted
    images = np.random.default_rng(2).integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    feats = InceptionFeatures(module, params, batch_size=2)(images)  # two batches, the last one padded
    direct = jax.jit(lambda p, x: module.apply({"params": p}, adm_inception_input(x)))(params, images)
    assert feats["pool3"].shape == (3, 2048) and feats["spatial"].shape == (3, 17 * 17 * 7)
    np.testing.assert_allclose(feats["pool3"], direct["pool3"], rtol=1e-4, atol=1e-4)
    spatial = np.asarray(direct["spatial"])[..., :7].reshape(3, -1)  # ADM: mixed_6/conv[..., :7], NHWC-flattened
    np.testing.assert_allclose(feats["spatial"], spatial, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats["probs"], softmax(np.asarray(direct["logits_nobias"])), rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        InceptionFeatures(module, params)(images.astype(np.float32))
