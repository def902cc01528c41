"""Golden equivalence of the DLM decoders with DCD, LLaDA generate and Fast-dLLM (token-exact traces)."""

import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.dlm import DecodeConfig, decode, generate, generate_with_dual_cache
from tests.conftest import GoldenCase
from tests.dlm.tracing import count_jit_traces, programs

DCD_CASES = ("dcd_sliding_threshold", "dcd_static_threshold", "dcd_sliding_fixed", "dcd_sliding_dualcache")
EXACT = ("tokens", "window", "forward_length", "pass_cache", "num_committed", "commit_step", "committed")


def _model(case: GoldenCase):
    return from_torch("llada", case.meta["constructor"]["kwargs"], case.state_dict)


def _assert_equal(name, actual, expected):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    np.testing.assert_array_equal(actual, expected, err_msg=name)


def _committed_values(values_bl, committed):
    """Gathers ``[B, L]`` per-position values at the ``[S, B, K]`` committed positions (-1 padded)."""
    rows = np.arange(committed.shape[1])[None, :, None]
    return np.where(committed >= 0, values_bl[rows, np.maximum(committed, 0)], 0)


@pytest.mark.parametrize("name", DCD_CASES)
def test_dcd_decode_matches_reference(name):
    case = GoldenCase("dlm", name)
    module, params = _model(case)
    config = DecodeConfig(**case.meta["constructor"]["decode_config"])
    result = decode(module, params, case["inputs/prompt"], config)
    assert result.num_forward == int(case["outputs/num_forward"]) == case.meta["num_forward"]
    for key in EXACT:
        _assert_equal(key, getattr(result, key), case[f"outputs/{key}"])
    committed = case["outputs/committed"]
    _assert_equal("committed_token", _committed_values(result.tokens, committed), np.where(committed >= 0, case["intermediates/committed_token"], 0))
    np.testing.assert_allclose(
        _committed_values(result.commit_conf, committed), case["intermediates/committed_conf"], **case.tolerance("committed_conf")
    )


def test_llada_generate_matches_reference():
    case = GoldenCase("dlm", "llada_generate_block")
    module, params = _model(case)
    kw = dict(steps=16, gen_length=32, block_length=8, temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=62)
    result = generate(module, params, case["inputs/prompt"], **kw)
    assert result.num_forward == case.meta["num_forward"] == 16
    for key in ("tokens", "committed", "commit_step"):
        _assert_equal(key, getattr(result, key), case[f"outputs/{key}"])
    with count_jit_traces() as traces:
        generate(module, params, case["inputs/prompt"][::-1], **kw)  # new prompts, same shape: no retrace
    assert not programs(traces)


def test_fastdllm_dual_cache_matches_reference():
    case = GoldenCase("dlm", "fastdllm_dualcache")
    module, params = _model(case)
    kw = dict(steps=16, gen_length=32, block_length=8, temperature=0.0, remasking="low_confidence", mask_id=62,
              threshold=0.9)
    result = generate_with_dual_cache(module, params, case["inputs/prompt"], **kw)
    with count_jit_traces() as traces:
        generate_with_dual_cache(module, params, case["inputs/prompt"] + 1, **kw)  # new prompt, same shape: no retrace
    assert not programs(traces)
    assert result.num_forward == int(case["outputs/num_forward"]) == 25
    _assert_equal("tokens", result.tokens, case["outputs/tokens"])
    _assert_equal("commit_step", result.commit_step, case["outputs/commit_step"])
    _assert_equal("committed", result.committed[:, 0], case["outputs/committed"])
    _assert_equal("num_committed", result.num_committed[:, 0], case["outputs/num_committed"])
    _assert_equal("cached_call", result.cached_call, case["outputs/cached_call"])
    _assert_equal("recomputed_range", result.recomputed_range, case["outputs/recomputed_range"])
