"""Quantising DiC's block convolutions (``jaxlab.quant.conv``, unfused smoothing) on the converted
tiny official DiC."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from jaxlab.convert import from_torch
from jaxlab.diffusion.pipeline import sampling_diffusion
from jaxlab.quant import quantizers as qz
from jaxlab.quant.calibration import CalibrationSpec, is_target, step_timesteps, trajectory_inputs
from jaxlab.quant.config import method_config
from jaxlab.quant.conv import conv_padding, int_conv, pad
from jaxlab.quant.families import DIC_BLOCK_PATTERN, DIC_CONVS
from jaxlab.quant.ptq import quantize_dit
from jaxlab.quant.runtime import conv, quantized_apply, variables
from jaxlab.quant.unfused import build_unfused
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASE = GoldenCase("dic", "dic_forward_small")
SPEC = CalibrationSpec(num_samples=8, sampler="ddim", num_steps=5, cfg_scale=1.5)
LAYER = "enc_blocks_0_1/conv0"  # a 3x3 conv, 12 -> 12 channels, zero padding 1


@pytest.fixture(scope="module")
def converted():
    module, params = from_torch("dic", CASE.meta["constructor"], CASE.state_dict)
    return module, params


def _synthetic_stats(params, k, seed=0):
    """Random per-step input ranges for every DiC block conv (what ``calibrate`` would record);
    ranges that move with the step and do not contain 0, so the shift is far from zero."""
    rng = np.random.default_rng(seed)
    stats = {}
    for path, leaf in flatten_dict(params, sep="/").items():
        layer = path.rsplit("/", 1)[0]
        if path.endswith("/kernel") and is_target(layer, DIC_CONVS, DIC_BLOCK_PATTERN):
            c = leaf.shape[2]
            centre = 3.0 + rng.normal(size=(k, c)) + np.linspace(0, 2, k)[:, None]
            half = rng.uniform(0.5, 2.0, size=(k, c))
            stats[layer] = {"min": (centre - half).astype(np.float32), "max": (centre + half).astype(np.float32)}
    return stats


def test_int_conv_is_exact_beyond_float32_integers():
    """``int8 x int8 -> int32`` conv with zero-point corrections == int64 numpy, with sums past
    2**24 (a float32 accumulator could not hold them exactly)."""
    rng = np.random.default_rng(0)
    qx = np.where(rng.random((1, 5, 5, 256)) < 0.5, -128, 127)
    qw = rng.integers(-128, 128, (3, 3, 256, 4))
    qw[..., 0] = np.where(qx[0, :3, :3] > 0, 127, -128)  # window (0, 0) of channel 0: ~3.7e7
    zx, zw = -5, rng.integers(-20, 20, 4)
    got = np.asarray(int_conv(jnp.asarray(qx), jnp.asarray(qw), zx, jnp.asarray(zw)))
    windows = np.lib.stride_tricks.sliding_window_view(qx - zx, (3, 3), axis=(1, 2))  # [1, 3, 3, 256, 3, 3]
    want = np.einsum("nijcab,abco->nijo", windows.astype(np.int64), (qw - zw).astype(np.int64))
    assert got.dtype == np.int32 and np.abs(want).max() > 2**24
    np.testing.assert_array_equal(got, want)


def test_unfused_conv_smoothing_is_exact(converted):
    """Every block conv of the converted official DiC gets an explicit shift/scale; run in float
    (zero padding before the shift, bias ``b + z . sum W``), the tables reproduce the reference
    output at the golden tolerance. Subtracting the shift before padding fails this (border)."""
    module, params = converted
    x, t, y = nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"]
    timesteps = np.unique(np.concatenate([t, [0, 500, 999]]))[::-1]  # sampling order; holds t[0]
    stats = _synthetic_stats(params, len(timesteps))
    assert len(stats) == 40  # 18 blocks x (conv0, conv1) + the 4 decoder blocks that take a skip (1x1 skip conv)
    qmodel = build_unfused(params, stats, timesteps, method_config("htg", num_groups=2, weight_search="minmax"), 1000,
                           convs=DIC_CONVS)
    entry = qmodel.tables["layers"][LAYER]
    assert entry["in_shift"].shape == (2, 12) and entry["w_int"].shape == (9 * 12, 12)
    assert np.abs(entry["in_shift"]).min() > 0.5  # a real shift: the border value -z/s is far from 0
    with jax.default_matmul_precision("highest"):
        out = jax.jit(quantized_apply(module, qmodel.meta, "float"))(variables(params, qmodel), x, t, y)
    CASE.assert_close("forward", nhwc_to_nchw(out))


@pytest.mark.parametrize("weight_symmetric", [True, False])
def test_fake_and_integer_conv_give_identical_integers(converted, weight_symmetric):
    """One smoothed DiC conv: the integer path's int32 accumulator equals the fake-quant path's
    conv divided by the two steps (and the integer output's), with shift and scale applied."""
    _, params = converted
    timesteps = np.array([999, 500, 0])
    qcfg = method_config("htg", num_groups=2, weight_symmetric=weight_symmetric)
    stats = _synthetic_stats(params, len(timesteps), seed=1)
    qmodel = build_unfused(params, {LAYER: stats[LAYER]}, timesteps, qcfg, 1000, convs=DIC_CONVS)
    entry = dict(qmodel.tables["layers"][LAYER])
    entry["bias"] = np.zeros_like(entry["bias"])  # the accumulator alone
    x = jnp.asarray(np.random.default_rng(2).normal(3.0, 2.0, (2, 8, 8, 12)), jnp.float32)
    k = jnp.asarray(2)
    with jax.default_matmul_precision("highest"):
        fake, _ = conv(entry, x, k, "fake", 8, False, 3, 1)
        integer, _ = conv(entry, x, k, "integer", 8, False, 3, 1)
    g = entry["act_row"][2]
    a_step, a_zp = entry["a_step"][g], entry["a_zp"][g]
    smoothed = (pad(x, 1) - entry["in_shift"][entry["in_shift_row"][2]]) * entry["in_inv_scale"]
    qx = qz.quantize(smoothed, a_step, a_zp, 8, False)
    acc = np.asarray(int_conv(qx, entry["w_int"].reshape(3, 3, 12, 12), a_zp, entry["w_zp"]))
    assert fake.shape == (2, 8, 8, 12) and np.abs(acc).max() > 1000
    np.testing.assert_array_equal(np.rint(np.asarray(fake) / (a_step * entry["w_step"])), acc)
    np.testing.assert_array_equal(np.rint(np.asarray(integer) / (a_step * entry["w_step"])), acc)


def test_unsupported_convs_are_refused_by_name():
    for conv_module, problem in ((nn.Conv(4, (3, 3), strides=2), "strides=2"),
                                 (nn.Conv(4, (3, 3), feature_group_count=2), "feature_group_count=2"),
                                 (nn.Conv(4, (3, 3), padding="CIRCULAR"), "padding='CIRCULAR'")):
        with pytest.raises(ValueError, match=f"quantises stride-1, ungrouped.*{problem}"):
            conv_padding(conv_module)
    assert conv_padding(nn.Conv(4, (3, 3), padding=1)) == 1 and conv_padding(nn.Conv(4, (1, 1), padding=0)) == 0


def test_other_families_are_refused():
    with pytest.raises(ValueError, match="Dense is not supported: jaxlab.quant quantises DiT, U-DiT and DiC"):
        quantize_dit(nn.Dense(3), {}, None, SPEC, method_config("htg"))


@pytest.mark.slow
def test_calibrated_w8a8_dic_within_bound(converted):
    """End to end through ``quantize_dit`` (calibration records the block convs' padded inputs), on
    held-out trajectories of the same sampler: W8A8 HTG moves the converted official DiC's output
    by < 5% of its max at step 3 of 5 (measured 3.2%, fake and integer), and at the noisiest step,
    whose inputs are ~30x smaller than the last steps' in this random-weight model, HTG's
    per-group activation ranges keep the error under half of min-max's single range (measured
    19% vs 48%). Slow (27-65 s): the default tests above cover the tables and runtime."""
    module, params = converted
    diffusion = sampling_diffusion(SPEC.sampler, SPEC.num_steps, module.config.learn_sigma)
    qmodel, stats = quantize_dit(module, params, diffusion, SPEC, method_config("htg", num_groups=2))
    assert sorted(qmodel.tables["layers"]) == sorted(stats) and len(stats) == 40
    assert qmodel.meta["smoothing"] == "unfused" and qmodel.meta["family"] == "dic"
    assert all(s["min"].max() <= 0 <= s["max"].min() for p, s in stats.items() if not p.endswith("skip"))  # padding
    minmax, _ = quantize_dit(module, params, diffusion, SPEC, method_config("minmax"), stats=stats)
    inputs, y = trajectory_inputs(module, params, diffusion, jnp.arange(2, dtype=jnp.int32), jax.random.key(7), SPEC)

    def rel_error(q, mode, step):
        t = jnp.full((y.shape[0],), int(step_timesteps(diffusion)[step]), jnp.int32)
        want = module.apply({"params": params}, inputs[step], t, y)
        got = quantized_apply(module, q.meta, mode)(variables(params, q), inputs[step], t, y)
        return float(jnp.abs(got - want).max()) / float(jnp.abs(want).max())

    for mode in ("fake", "integer"):
        assert 0 < rel_error(qmodel, mode, 3) < 0.05, mode
    assert rel_error(qmodel, "fake", 0) < 0.5 * rel_error(minmax, "fake", 0)
