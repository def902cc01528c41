"""AutoencoderKL: golden equivalence with diffusers, the posterior helper, dtypes and input errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models import build_model
from jaxlab.models.vae import AutoencoderKL, VAEConfig, sample_posterior
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASE = GoldenCase("vae", "vae_tiny")


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def converted():
    return from_torch("vae", CASE.meta["constructor"], CASE.state_dict)


def _apply(module, params, x, method, **kwargs):
    return module.apply({"params": params}, x, method=method, mutable=["intermediates"], **kwargs)


def _jit(module, method="__call__"):
    """``module.apply`` of ``method``, jitted (one compile instead of op-by-op dispatch)."""
    return jax.jit(lambda params, *args: module.apply({"params": params}, *args, method=method))


def test_encode_matches_reference_with_intermediates(converted):
    module, params = converted
    (mean, logvar), state = jax.jit(lambda p, x: _apply(module, p, x, "encode"))(params, nchw_to_nhwc(CASE["inputs/x"]))
    CASE.assert_close("latent_mean", nhwc_to_nchw(mean))
    CASE.assert_close("latent_logvar", nhwc_to_nchw(logvar))
    sown = state["intermediates"]
    enc = sown["encoder"]
    pairs = {
        "enc_conv_in": enc["out_conv_in"], "enc_down0": enc["out_down_blocks_0"],
        "enc_mid_attn": enc["mid_block"]["out_attentions_0"], "enc_mid": enc["out_mid_block"],
        "enc_conv_out": enc["out_conv_out"], "quant_conv_moments": sown["moments"],
    }
    for name, (value,) in pairs.items():
        np.testing.assert_allclose(nhwc_to_nchw(value), CASE[f"intermediates/{name}"], **CASE.tolerance("latent_mean"),
                                   err_msg=name)


def test_decode_mean_matches_reference_with_intermediates(converted):
    module, params = converted
    out, state = jax.jit(lambda p, z: _apply(module, p, z, "decode"))(params, nchw_to_nhwc(CASE["outputs/latent_mean"]))
    CASE.assert_close("decode_mean", nhwc_to_nchw(out))
    sown = state["intermediates"]
    dec = sown["decoder"]
    pairs = {"dec_post_quant_conv": sown["out_post_quant_conv"], "dec_conv_in": dec["out_conv_in"],
             "dec_mid": dec["out_mid_block"], "dec_up0": dec["out_up_blocks_0"]}
    for name, (value,) in pairs.items():
        np.testing.assert_allclose(nhwc_to_nchw(value), CASE[f"intermediates/{name}"], **CASE.tolerance("decode_mean"),
                                   err_msg=name)


def test_decode_of_diffusion_latents_matches_reference(converted):
    module, params = converted
    z = nchw_to_nhwc(CASE["inputs/z"]) / module.config.scaling_factor  # sample_ddp.py: vae.decode(z / 0.18215)
    CASE.assert_close("decode_z", nhwc_to_nchw(_jit(module, "decode")(params, z)))


def test_call_decodes_the_mean_or_a_posterior_draw(converted):
    module, params = converted
    x = nchw_to_nhwc(CASE["inputs/x"])
    call = _jit(module)
    CASE.assert_close("decode_mean", nhwc_to_nchw(call(params, x)))
    mean, logvar = _jit(module, "encode")(params, x)
    rng = jax.random.key(3)
    drawn = call(params, x, rng)
    expected = _jit(module, "decode")(params, sample_posterior(mean, logvar, rng))
    np.testing.assert_allclose(drawn, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(drawn) - nchw_to_nhwc(CASE["outputs/decode_mean"])).max() > 1e-3


def test_sample_posterior_has_the_posterior_moments():
    mean = jnp.full((4000, 2, 2, 4), 0.5)
    logvar = jnp.log(jnp.full_like(mean, 0.25))  # std 0.5
    z = np.asarray(sample_posterior(mean, logvar, jax.random.key(0)))
    assert abs(z.mean() - 0.5) < 0.01 and abs(z.std() - 0.5) < 0.01
    np.testing.assert_array_equal(z, sample_posterior(mean, logvar, jax.random.key(0)))
    assert not np.array_equal(z, sample_posterior(mean, logvar, jax.random.key(1)))


def test_logvar_is_clamped_like_the_reference(converted):
    module, params = converted
    params = jax.tree_util.tree_map(np.array, params)
    params["quant_conv"]["bias"][4:] = [100.0, -100.0, 0.0, 0.0]  # logvar channels 0, 1 far out of range
    params["quant_conv"]["kernel"][..., 4:6] = 0.0
    _, logvar = _jit(module, "encode")(params, nchw_to_nhwc(CASE["inputs/x"]))
    np.testing.assert_array_equal(np.asarray(logvar[..., 0]), 20.0)
    np.testing.assert_array_equal(np.asarray(logvar[..., 1]), -30.0)


def test_bfloat16_is_opt_in_and_close(converted):
    module, params = converted
    assert module.config.dtype == "float32"
    bf16 = AutoencoderKL(module.config.replace(dtype="bfloat16"))
    z = nchw_to_nhwc(CASE["inputs/z"]) / module.config.scaling_factor
    out = _jit(bf16, "decode")(params, z)
    assert out.dtype == jnp.float32
    ref = nchw_to_nhwc(CASE["outputs/decode_z"])
    rel = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
    assert 1e-4 < rel < 0.05, rel  # bf16 differs (not silently float32) but stays close; docs/vae.md gives numbers


def test_presets_and_every_parameter_carries_logical_axes():
    tiny = build_model("vae", "tiny")
    assert tiny.config == VAEConfig.from_dict(
        {k: v for k, v in CASE.meta["constructor"].items() if k in VAEConfig.__dataclass_fields__})
    assert build_model("vae", "sd-vae-ft-ema").config.downsample_factor == 8
    boxed = jax.eval_shape(lambda: tiny.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    unannotated = [leaf for leaf in leaves if not isinstance(leaf, nn.Partitioned)]
    assert leaves and not unannotated


def test_input_errors_name_the_fix(converted):
    module, params = converted
    with pytest.raises(ValueError, match="not divisible by the VAE's downsampling factor 2"):
        module.apply({"params": params}, jnp.zeros((1, 31, 32, 3)), method="encode")
    with pytest.raises(ValueError, match=r"expects NHWC images \[N, H, W, 3\].*transpose"):
        module.apply({"params": params}, jnp.zeros((1, 3, 32, 32)), method="encode")
    with pytest.raises(ValueError, match=r"expects NHWC latents \[N, h, w, 4\].*do not come from this VAE"):
        module.apply({"params": params}, jnp.zeros((1, 16, 16, 8)), method="decode")
    with pytest.raises(ValueError, match="norm_num_groups=32"):
        VAEConfig.from_dict(dict(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                 up_block_types=("UpDecoderBlock2D",) * 2))
    with pytest.raises(ValueError, match="down_block_types.*not supported"):
        VAEConfig.from_dict(dict(down_block_types=("AttnDownEncoderBlock2D",) * 4))
    with pytest.raises(ValueError, match="act_fn='tanh' is not supported"):
        VAEConfig.from_dict(dict(act_fn="tanh"))


@pytest.mark.slow  # importing diffusers costs ~10 s; the golden tests cover the default architecture
def test_a_config_beyond_the_golden_case_matches_diffusers():
    """A random diffusers model of another shape (3 levels, 2 layers per block, gelu resnets, 3
    latent channels, no quant convs, no mid-block attention) against jaxlab, through the converter."""
    variant = dict(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4, use_quant_conv=False,
                   use_post_quant_conv=False, mid_block_add_attention=False, latent_channels=3, act_fn="gelu")
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    n = len(variant["block_out_channels"])
    kwargs = dict(down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n, **variant)
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**kwargs).eval()
    with torch.no_grad():
        for p in ref.parameters():  # away from the default init so every parameter matters
            p.add_(0.1 * torch.randn_like(p))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        post = ref.encode(torch.from_numpy(x)).latent_dist
        dec = ref.decode(post.mean).sample
    module, params = from_torch("vae", dict(ref.config), ref.state_dict())
    mean, logvar = module.apply({"params": params}, nchw_to_nhwc(x), method="encode")
    out = module.apply({"params": params}, mean, method="decode")
    tol = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nhwc_to_nchw(mean), post.mean.numpy(), **tol)
    np.testing.assert_allclose(nhwc_to_nchw(logvar), post.logvar.numpy(), **tol)
    np.testing.assert_allclose(nhwc_to_nchw(out), dec.numpy(), **tol)
