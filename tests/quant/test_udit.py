"""Quantising the converted tiny official U-DiT (unfused smoothing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from jaxlab.convert import from_torch
from jaxlab.diffusion.pipeline import sampling_diffusion
from jaxlab.quant.calibration import CalibrationSpec, is_target, step_timesteps
from jaxlab.quant.config import method_config
from jaxlab.quant.families import UDIT_BLOCK_PATTERN, UDIT_LINEARS
from jaxlab.quant.ptq import quantize_dit
from jaxlab.quant.runtime import linear, quantized_apply, variables
from jaxlab.quant.unfused import build_unfused
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASE = GoldenCase("udit", "udit_forward_small")
SPEC = CalibrationSpec(num_samples=8, sampler="ddim", num_steps=5, cfg_scale=1.5)


def _inputs(diffusion, step):
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 4))
    t = jnp.full((2,), int(step_timesteps(diffusion)[step]), jnp.int32)
    return x, t, jnp.arange(2, dtype=jnp.int32)


@pytest.fixture(scope="module")
def converted():
    module, params = from_torch("udit", CASE.meta["constructor"], CASE.state_dict)
    return module, params, sampling_diffusion(SPEC.sampler, SPEC.num_steps, module.config.learn_sigma)


def _synthetic_stats(params, k=SPEC.num_steps, seed=0):
    """Random per-step input ranges for every U-DiT block linear (what ``calibrate`` would record)."""
    rng = np.random.default_rng(seed)
    stats = {}
    for path, leaf in flatten_dict(params, sep="/").items():
        layer = path.rsplit("/", 1)[0]
        if path.endswith("/kernel") and is_target(layer, UDIT_LINEARS, UDIT_BLOCK_PATTERN):
            c = leaf.size // flatten_dict(params, sep="/")[f"{layer}/bias"].size
            centre = rng.normal(size=(k, c)) + np.linspace(0, 2, k)[:, None]  # ranges that move with the step
            half = rng.uniform(0.5, 3.0, size=(k, c))
            stats[layer] = {"min": (centre - half).astype(np.float32), "max": (centre + half).astype(np.float32)}
    return stats


def test_unfused_smoothing_is_exact(converted):
    """Every block linear of the converted official U-DiT gets an explicit shift/scale; run in
    float, the smoothed tables reproduce the reference output at the golden tolerance (shift
    subtracted at the layer and compensated in the bias; dropping ``in_shift`` fails this)."""
    module, params, _ = converted
    x, t, y = nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"]
    timesteps = np.unique(np.concatenate([t, [0, 500, 999]]))[::-1]  # sampling order; holds t[0]
    stats = _synthetic_stats(params, k=len(timesteps))
    assert len(stats) == 60  # 5 stages x 1 block x 2 sub-layers x (to_qkv, to_out, four rep-FFN 1x1s)
    qmodel = build_unfused(params, stats, timesteps, method_config("htg", num_groups=2, weight_search="minmax"), 1000)
    entry = qmodel.tables["layers"]["encoder_level_1_0/sub1/attn/to_qkv"]
    assert entry["in_shift"].shape == (2, 16) and np.count_nonzero(np.diff(entry["in_shift_row"])) == 1  # 2 groups
    with jax.default_matmul_precision("highest"):
        out = jax.jit(quantized_apply(module, qmodel.meta, "float"))(variables(params, qmodel), x, t, y)
    CASE.assert_close("out", nhwc_to_nchw(out))
    # the quantised paths of a shifted layer: identical integers, so equal up to float rounding
    x2 = jax.random.normal(jax.random.key(0), (64, 16)) * 2 + 1
    k = jnp.asarray(len(timesteps) - 1)
    fake, _ = linear(entry, x2, k, "fake", 8, False)
    integer, _ = linear(entry, x2, k, "integer", 8, False)
    np.testing.assert_allclose(integer, fake, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_calibrated_w8a8_udit_within_bound(converted):
    """End to end through ``quantize_dit`` (calibration on U-DiT's block paths): W8A8 HTG moves
    the output by < 10% of its max (measured 8.0%; integer 7.1%: 60 linears with random weights).
    Slow (~3 min under load): the default test
    above covers the same tables and runtime."""
    module, params, diffusion = converted
    qmodel, stats = quantize_dit(module, params, diffusion, SPEC, method_config("htg", num_groups=2))
    assert sorted(qmodel.tables["layers"]) == sorted(stats) and len(stats) == 60
    assert qmodel.meta["smoothing"] == "unfused" and qmodel.meta["family"] == "udit"
    x, t, y = _inputs(diffusion, 3)
    want = module.apply({"params": params}, x, t, y)
    fake = quantized_apply(module, qmodel.meta, "fake")(variables(params, qmodel), x, t, y)
    assert 0 < float(jnp.abs(fake - want).max()) < 0.1 * float(jnp.abs(want).max())
