"""U-DiT: golden equivalence with YuchuanTian/U-DiT, re-parameterisation, presets, sampling and errors."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.udit import get_config
from jaxlab.config_utils import to_dict
from jaxlab.convert import from_torch
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.models import build_model, count_params
from jaxlab.models.udit import PRESETS, UDiT, UDiTConfig, forward_macs, param_count, reparameterize
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASES = ("udit_forward_small", "udit_forward_variant")
# Reference intermediate name -> where jaxlab sows it (``mutable=["intermediates"]``).
INTERMEDIATES = {
    "x_embed": ("x_embed",),
    "c1": ("c1",),
    "c2": ("c2",),
    "c3": ("c3",),
    "enc1_b0_attn1_tokens": ("encoder_level_1_0", "sub1", "attn", "tokens"),
    "enc1_block0": ("enc1_block0",),
    "down1_2": ("down1_2_out",),
    "latent_out": ("latent_out",),
    "dec2_out": ("dec2_out",),
}


class Converted:
    """A golden case converted through ``from_torch``, with jitted eval / train forwards (compiled once)."""

    def __init__(self, name: str):
        self.golden = GoldenCase("udit", name)
        self.module, self.params = from_torch("udit", self.golden.meta["constructor"], self.golden.state_dict)
        self.x, self.t, self.y = nchw_to_nhwc(self.golden["inputs/x"]), self.golden["inputs/t"], self.golden["inputs/y"]
        apply = self.module.apply
        self.eval = jax.jit(lambda p, x, t, y: apply({"params": p}, x, t, y, mutable=["intermediates"]))
        self.train = jax.jit(lambda p, x, t, y, drop: apply({"params": p}, x, t, y, True, drop))
        self.cfg = jax.jit(lambda p, x, t, y, s: apply({"params": p}, x, t, y, s, method=UDiT.forward_with_cfg))


@functools.lru_cache(maxsize=None)
def converted(name: str) -> Converted:
    return Converted(name)


@pytest.fixture(params=CASES)
def case(request):
    return converted(request.param)


def test_forward_and_intermediates_match_reference(case):
    golden = case.golden
    out, state = case.eval(case.params, case.x, case.t, case.y)
    golden.assert_close("out", nhwc_to_nchw(out))
    sown = state["intermediates"]
    names = [k.removeprefix("intermediates/") for k in golden.arrays if k.startswith("intermediates/")]
    assert names, "the case has no intermediates"
    for name in names:
        value = sown
        for key in INTERMEDIATES[name]:
            value = value[key]
        value = np.asarray(value[0])
        if value.ndim == 4 and name != "enc1_b0_attn1_tokens":  # NHWC maps; the tokens are [B, f*f, N, D]
            value = nhwc_to_nchw(value)
        golden.assert_close(name, value, golden[f"intermediates/{name}"])


@pytest.mark.default_xla
def test_forward_with_cfg_matches_reference(case):
    golden = case.golden
    x, t, y = nchw_to_nhwc(golden["inputs/x_cfg"]), golden["inputs/t_cfg"], golden["inputs/y_cfg"]
    golden.assert_close("out_cfg", nhwc_to_nchw(case.cfg(case.params, x, t, y, golden["inputs/cfg_scale"])))


def test_reparameterized_model_matches_reference(case):
    """The fused inference model (the reference's eval() form) computes the same outputs."""
    cfg = case.module.config
    fused_cfg, fused = reparameterize(cfg, case.params)
    if cfg.ffn_type != "rep":
        assert fused_cfg == cfg and fused is case.params
        return
    assert not fused_cfg.rep and count_params(fused) < count_params(case.params)
    assert set(fused["encoder_level_1_0"]["sub1"]["mlp"]) == {"project_in", "dwconv", "project_out"}
    out = jax.jit(UDiT(fused_cfg).apply)({"params": fused}, case.x, case.t, case.y)
    case.golden.assert_close("out", nhwc_to_nchw(out))


def test_train_mode_changes_only_the_labels():
    """train=True with no label dropped equals eval; with all dropped it equals eval on the null label."""
    case = converted(CASES[0])
    zeros = np.zeros_like(case.y)
    case.golden.assert_close("out", nhwc_to_nchw(case.train(case.params, case.x, case.t, case.y, zeros)))
    dropped = case.train(case.params, case.x, case.t, case.y, np.ones_like(case.y))
    null, _ = case.eval(case.params, case.x, case.t, np.full_like(case.y, case.module.config.num_classes))
    np.testing.assert_allclose(dropped, null, **case.golden.tolerance("out"))


def test_scanned_stages_match_the_unscanned_model_and_fuse():
    """``scan_blocks`` (with remat inside the scan) converts the same checkpoint to stacked stages
    that compute the unscanned model's output; ``reparameterize`` fuses every stacked layer as it
    fuses the unscanned ones (whose fused model matches the reference, above)."""
    case = converted("udit_forward_variant")  # two blocks in encoder_level_2
    module, params = from_torch("udit", case.golden.meta["constructor"], case.golden.state_dict, scan_blocks=True,
                                remat="dots_saveable")
    assert not any(name.startswith("encoder_level_2_") for name in params)
    assert params["encoder_level_2"]["block"]["sub1"]["adaLN_modulation"]["linear"]["kernel"].shape[0] == 2
    expected, _ = case.eval(case.params, case.x, case.t, case.y)
    np.testing.assert_allclose(jax.jit(module.apply)({"params": params}, case.x, case.t, case.y), expected,
                               rtol=1e-5, atol=1e-5)

    rep = converted("udit_forward_small")  # rep FFNs
    module, params = from_torch("udit", rep.golden.meta["constructor"], rep.golden.state_dict, scan_blocks=True)
    (_, fused), (_, expected) = reparameterize(module.config, params), reparameterize(rep.module.config, rep.params)
    for stage in ("encoder_level_1", "latent"):
        for a, b in zip(jax.tree_util.tree_leaves(fused[stage]["block"]), jax.tree_util.tree_leaves(expected[f"{stage}_0"])):
            np.testing.assert_allclose(a[0], b, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- presets

# (parameters as built by the official code, parameters after rep-FFN fusion = the paper's Tab. 8, GFLOPs (MACs)).
OFFICIAL = {
    "U-DiT-S": (58.90, 52.05, 6.04),
    "U-DiT-B": (231.25, 204.43, 22.22),
    "U-DiT-L": (916.34, 810.19, 85.00),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_official_parameter_counts_and_flops(preset):
    cfg = build_model("udit", preset).config
    code, fused, gmacs = OFFICIAL[preset]
    assert round(param_count(cfg) / 1e6, 2) == code
    assert round(param_count(cfg, fused=True) / 1e6, 2) == fused
    # The paper counts MACs with torchprofile, which also counts a few elementwise ops.
    assert abs(forward_macs(cfg) / 1e9 - gmacs) / gmacs < 0.005


def test_config_variants_build_the_presets():
    for variant, preset in (("S", "U-DiT-S"), ("B", "U-DiT-B"), ("L", "U-DiT-L")):
        config = get_config(variant)
        assert config.model_family == "udit"
        built = UDiTConfig.from_dict(to_dict(config.model))
        assert built.down_factors == UDiTConfig.from_dict(PRESETS[preset]).down_factors
        assert built.replace(down_factor=2) == UDiTConfig.from_dict(PRESETS[preset]).replace(mlp_ratio=2.0)
    tiny = UDiTConfig.from_dict(to_dict(get_config("tiny").model))
    assert tiny.input_size == 8 and tiny.attn_type == "v2" and tiny.posemb_type == "rope2d"
    with pytest.raises(ValueError, match="unknown udit config variant 'XL'"):
        get_config("XL")


# --------------------------------------------------------------------------- tiny model: sampling, remat, errors


def _randomised(cfg: UDiTConfig, seed: int = 0):
    """``UDiT(cfg)`` and N(0, 0.2^2) parameters of the right shapes (adaLN-Zero init would output 0)."""
    module = UDiT(cfg)
    x, t = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels)), jnp.zeros((1,), jnp.int32)
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x, t, t)["params"])
    rng = np.random.default_rng(seed)
    return module, jax.tree_util.tree_map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def tiny():
    """The ``tiny`` config of configs/udit.py, randomised."""
    return _randomised(UDiTConfig.from_dict(to_dict(get_config("tiny").model)))


# Slow: make_class_sampler is tested by tests/diffusion/test_sampling.py::test_class_sampler_with_guidance_on_a_tiny_dit
# and a U-DiT samples through it in tests/colab/test_udit_notebook.py, both in the default run.
@pytest.mark.slow
def test_class_sampler_runs_the_model(tiny):
    module, params = tiny
    diffusion = sampling_diffusion("ddim", 4, module.config.learn_sigma)
    sample = make_class_sampler(module, diffusion, sampler="ddim", cfg_scale=1.5)
    labels = jnp.array([0, 1, 2], jnp.int32)
    out = np.asarray(sample(params, labels, jax.random.key(3)))
    assert out.shape == (3, 8, 8, 4) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, np.asarray(sample(params, labels, jax.random.key(3))))
    other = np.asarray(sample(params, jnp.array([5, 1, 2], jnp.int32), jax.random.key(3)))
    assert np.abs(other[0] - out[0]).max() > 1e-3  # the label conditions the sample
    np.testing.assert_allclose(other[1:], out[1:], rtol=1e-5, atol=1e-5)


def _remat_case(tiny):
    cfg = tiny[0].config.replace(depth=(1, 0, 0, 0, 0))  # one block is enough to check the wrapping
    module, params = _randomised(cfg)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
    t, y = jnp.array([3, 700]), jnp.array([1, 10])
    return module, UDiT(cfg.replace(remat="full")), params, (x, t, y)


def test_remat_switch_takes_effect(tiny):
    module, remat, params, (x, t, y) = _remat_case(tiny)
    for m, calls in ((module, 0), (remat, 1)):  # one remat call for the one block
        jaxpr = str(jax.make_jaxpr(lambda p: m.apply({"params": p}, x, t, y))(params))
        assert len(re.findall(r"= (?:remat2?|checkpoint)\[", jaxpr)) == calls, m.config.remat


# Slow: maybe_remat (shared by every family) computing the same function is tested by
# tests/models/test_dit.py::test_scan_and_remat_compute_the_same_function in the default run, and
# remat inside U-DiT's scanned stages by test_scanned_stages_match_the_unscanned_model_and_fuse.
@pytest.mark.slow
def test_remat_computes_the_same_function_and_gradient(tiny):
    module, remat, params, (x, t, y) = _remat_case(tiny)

    def loss(p, m):
        return jnp.mean(m.apply({"params": p}, x, t, y) ** 2)

    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, m) for m in (module, remat))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * np.abs(np.asarray(a)).max() + 1e-7


def test_bad_image_sizes_are_rejected(tiny):
    module, params = tiny
    t = jnp.zeros((1,), jnp.int32)
    with pytest.raises(ValueError, match="divisible by 4"):
        module.apply({"params": params}, jnp.zeros((1, 10, 10, 4)), t, t)
    with pytest.raises(ValueError, match=r"NHWC input \[N, H, W, 4\]"):
        module.apply({"params": params}, jnp.zeros((1, 4, 8, 8)), t, t)
    # Stage latent runs at 2x2, which a down factor of 4 cannot split.
    with pytest.raises(ValueError, match="stage latent runs at 2x2, which down_factor=4"):
        module.config.replace(down_factor=(2, 2, 4, 2, 2))
    with pytest.raises(ValueError, match="stage encoder_level_2 runs at 6x6, which down_factor=4"):
        build_model("udit", "U-DiT-S", input_size=12, down_factor=[4, 4, 1, 4, 4])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match=r"rope2d needs head_dim .* divisible by 4, got 96/16 = 6"):
        build_model("udit", "U-DiT-S", num_heads=16)  # head_dim 6 with rope2d
    with pytest.raises(ValueError, match="attn_type='v3' is not supported"):
        build_model("udit", "U-DiT-S", attn_type="v3")
    with pytest.raises(ValueError, match="downsampler='dwconv4'"):
        build_model("udit", "U-DiT-S", downsampler="dwconv4")
    with pytest.raises(ValueError, match=r"depth must be 5"):
        build_model("udit", "U-DiT-S", depth=[2, 5, 8])
    with pytest.raises(ValueError, match=r"unknown UDiTConfig field\(s\) \['hiden_size'\]"):
        build_model("udit", "U-DiT-S", hiden_size=10)


def test_converter_rejects_unsupported_kwargs_and_checkpoints():
    golden = GoldenCase("udit", "udit_forward_small")
    kwargs, state_dict = golden.meta["constructor"], golden.state_dict
    with pytest.raises(ValueError, match=r"unsupported U-DiT constructor argument\(s\) \['window_size'\]"):
        from_torch("udit", {**kwargs, "window_size": 8}, state_dict)
    with pytest.raises(ValueError, match="needs downsampler='dwconv<k>'"):
        from_torch("udit", {k: v for k, v in kwargs.items() if k != "downsampler"}, state_dict)
    with pytest.raises(ValueError, match="1 state_dict entries were not converted"):
        from_torch("udit", kwargs, {**state_dict, "extra.weight": np.zeros(3)})
    with pytest.raises(KeyError, match="mlp1.fc1.weight"):  # a rep checkpoint read as a basic-FFN model
        from_torch("udit", {**kwargs, "ffn_type": "basic"}, state_dict)
