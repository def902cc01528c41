"""DLM decoders beyond the golden files: EOS / pad rules, odd lengths, delayed caches, compile-once, bad input.

The plain-loop oracles in ``tests/dlm/oracles.py`` restate the reference control flow; they are
themselves checked against every golden decoding case first.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.dlm import DecodeConfig, decode, fastdllm_generate, make_decoder
from jaxlab.dlm.scoring import exponential_full_range, factor_count, gumbel, top_k_mask, top_p_logits
from tests.conftest import GoldenCase
from tests.dlm.oracles import oracle_decode, oracle_factor_count, oracle_fastdllm
from tests.dlm.tracing import count_jit_traces, counting, programs

CASE = GoldenCase("dlm", "dcd_sliding_threshold")
# eos_id=18 is the token this model proposes most often, so EOS appears mid-sequence.
IDS = dict(mask_id=62, pad_id=58, eos_id=18)
PROMPT = np.random.default_rng(1).integers(0, 56, (2, 5))


@pytest.fixture(scope="module")
def model():
    module, params = from_torch("llada", CASE.meta["constructor"]["kwargs"], CASE.state_dict)
    return counting(module), params  # counts its own traces (test_decoder_compiles_once_per_configuration)


@pytest.mark.parametrize("name", ["dcd_sliding_threshold", "dcd_static_threshold", "dcd_sliding_dualcache"])
def test_oracle_reproduces_golden_cases(model, name):
    case = GoldenCase("dlm", name)
    tokens, trace = oracle_decode(*model, case["inputs/prompt"], DecodeConfig(**case.meta["constructor"]["decode_config"]))
    np.testing.assert_array_equal(tokens, case["outputs/tokens"])
    np.testing.assert_array_equal(trace["window"], case["outputs/window"])
    np.testing.assert_array_equal(trace["commit_step"], case["outputs/commit_step"])


def _assert_same_as_oracle(model, prompt, config):
    result = decode(*model, prompt, config)
    tokens, trace = oracle_decode(*model, prompt, config)
    np.testing.assert_array_equal(result.tokens, tokens)
    assert result.num_forward == len(trace["window"])
    for key in ("window", "forward_length", "pass_cache", "num_committed", "commit_step"):
        np.testing.assert_array_equal(getattr(result, key), trace[key], err_msg=key)
    return result


def test_sliding_eos_pads_at_once_and_keeps_the_eos(model):
    config = DecodeConfig(window_type="sliding", generate_length=27, initial_window_length=6, decode_param=0.8, **IDS)
    result = _assert_same_as_oracle(model, PROMPT, config)
    row = 1  # commits EOS mid-sequence
    e = np.flatnonzero(result.tokens[row] == IDS["eos_id"])[0]
    assert 5 < e < 31 and (result.tokens[row, e + 1 :] == IDS["pad_id"]).all()
    assert (result.commit_step[row, e + 1 :] == -2).any()  # pad-filled, never committed


def test_static_eos_pads_from_the_eos_at_block_end(model):
    """Odd generation length (27 = 3 blocks of 8 + 3); EOS itself is overwritten by pad."""
    config = DecodeConfig(window_type="static", generate_length=27, block_size=8, decode_param=0.8, **IDS)
    result = _assert_same_as_oracle(model, PROMPT, config)
    assert not (result.tokens == IDS["eos_id"]).any() and (result.tokens == IDS["pad_id"]).any()


def test_sliding_dual_delay_cache_with_eos_and_small_max_window(model):
    config = DecodeConfig(window_type="sliding", generate_length=21, initial_window_length=5, decode_param=0.7,
                          max_window_length=7, cache_type="dual-delay2", refresh_count=4, **IDS)
    result = _assert_same_as_oracle(model, PROMPT[:, :4], config)
    assert result.pass_cache.any() and not result.pass_cache.all()


def test_static_prefix_delay_cache_fixed(model):
    config = DecodeConfig(window_type="static", generate_length=20, block_size=6, decode_algo="fixed", decode_param=2,
                          cache_type="prefix-delay1", refresh_count=3, **IDS)
    _assert_same_as_oracle(model, PROMPT[:, :3], config)


@pytest.mark.parametrize("cache,threshold", [("prefix", None), ("none", 0.8)])
def test_fastdllm_variants_match_oracle(model, cache, threshold):
    kw = dict(steps=6, gen_length=24, block_length=8, mask_id=62, threshold=threshold)
    result = fastdllm_generate(*model, PROMPT[:1], cache=cache, **kw)
    x, trace = oracle_fastdllm(*model, PROMPT[:1], cache=cache, **kw)
    np.testing.assert_array_equal(result.tokens, x)
    assert result.num_forward == trace["num_forward"]
    for key in ("commit_step", "num_committed", "cached_call", "recomputed_range"):
        np.testing.assert_array_equal(getattr(result, key), trace[key], err_msg=key)


def test_decoder_compiles_once_per_configuration(model):
    module, params = model
    config = DecodeConfig(window_type="sliding", generate_length=12, initial_window_length=4, cache_type="dual", **IDS)
    before = type(module).model_traces
    with count_jit_traces() as traces:
        first = decode(module, params, PROMPT, config)
    assert programs(traces) == {"_decode": 1}
    model_traces = type(module).model_traces - before
    assert 0 < model_traces < first.num_forward  # a staged loop: the model is traced once per call site
    with count_jit_traces() as traces:
        second = decode(module, params, (PROMPT + 3) % 56, config)  # new prompts, same shape: no retrace
    assert not programs(traces) and type(module).model_traces - before == model_traces
    assert not np.array_equal(first.tokens, second.tokens)
    assert make_decoder(module, config, *PROMPT.shape) is make_decoder(module, config, *PROMPT.shape)


@pytest.mark.parametrize(
    "prompt,change,message",
    [
        (np.zeros((2, 120), np.int32), {}, "exceeds the model context max_sequence_length=128"),
        (np.array([[1, 62, 3]]), {}, "contains the mask id 62"),
        (PROMPT, {"initial_window_length": 40}, "initial_window_length=40 is larger than generate_length=32"),
        (PROMPT, {"window_type": "static", "block_size": 33}, "block_size=33 is larger than generate_length=32"),
        (PROMPT, {"cache_type": "triple"}, "unknown cache_type 'triple'"),
        (PROMPT, {"cache_type": "none-delay2"}, "unknown cache_type 'none-delay2'"),
        (PROMPT, {"decode_algo": "greedy"}, "unknown decode_algo 'greedy'"),
        (PROMPT, {"window_type": "block"}, "window_type='block'"),
        (PROMPT, {"decode_algo": "fixed", "decode_param": 0.5}, "positive integer decode_param"),
        (PROMPT, {"kwargs": {"top_q": 0.5}}, "unsupported DecodeConfig.kwargs ['top_q']"),
        (PROMPT, {"temperature": 0.5}, "pass rng="),
        (np.zeros((4,), np.int32), {}, "must be [batch, prompt_length]"),
    ],
)
def test_bad_input_fails_before_tracing(model, prompt, change, message):
    config = DecodeConfig(**{"generate_length": 32, "initial_window_length": 8, **IDS, **change})
    with count_jit_traces() as traces, pytest.raises(ValueError) as err:
        decode(*model, prompt, config)
    assert message in str(err.value)
    assert not programs(traces)


def test_fastdllm_rejects_a_schedule_the_reference_overruns(model):
    with pytest.raises(ValueError, match="needs >= 2 steps per block"):
        fastdllm_generate(*model, PROMPT[:1], steps=3, gen_length=24, block_length=8, mask_id=62, cache="dual")
    with pytest.raises(ValueError, match="not a multiple of block_length"):
        fastdllm_generate(*model, PROMPT[:1], steps=4, gen_length=20, block_length=8, mask_id=62)


def test_gumbel_max_samples_the_softmax():
    logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    draws = jnp.argmax(logits + gumbel(jax.random.key(3), (200_000, 3)), axis=-1)
    freq = np.bincount(np.asarray(draws), minlength=3) / 200_000
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=5e-3)


def test_exponential_has_unit_mean_and_a_resolved_small_tail():
    e = np.asarray(exponential_full_range(jax.random.key(0), (1_000_000,)), np.float64)
    assert abs(e.mean() - 1) < 5e-3 and e.min() > 0
    # P(E < 1e-4) = 1e-4: a 24-bit uniform would give ~1e-4 too, but only on a 6e-8 grid; here
    # values below 2^-24 are distinct, i.e. the Gumbel tail is not truncated at 16.6.
    assert abs((e < 1e-4).mean() - 1e-4) < 3e-5
    tiny = e[e < 2.0**-22]
    assert len(np.unique(tiny)) == len(tiny)


def test_top_k_mask_matches_a_stable_sort():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 17)).astype(np.float32)
    eligible = rng.random((4, 17)) < 0.6
    k = np.array([0, 3, 17, 5])
    got = np.asarray(top_k_mask(jnp.asarray(scores), jnp.asarray(eligible), jnp.asarray(k)))
    for b in range(4):
        order = np.argsort(-np.where(eligible[b], scores[b], -np.inf), kind="stable")
        want = np.zeros(17, bool)
        want[order[: min(k[b], eligible[b].sum())]] = True
        np.testing.assert_array_equal(got[b], want)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    logits = jnp.log(jnp.array([[0.15, 0.5, 0.05, 0.3]]))
    kept = np.asarray(top_p_logits(logits, 0.7)) > -1e30
    np.testing.assert_array_equal(kept, [[False, True, False, True]])


# ---------------------------------------------------------------------------------------------
# Fast-dLLM's factor rule and DCD's topk_margin confidence


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_fastdllm_factor_rule_matches_oracle(model, cache):
    kw = dict(steps=3, gen_length=24, block_length=8, mask_id=62, threshold=None, factor=1.5)
    result = fastdllm_generate(*model, PROMPT[:1], cache=cache, **kw)
    x, trace = oracle_fastdllm(*model, PROMPT[:1], cache=cache, **kw)
    np.testing.assert_array_equal(result.tokens, x)
    assert result.num_forward == trace["num_forward"]
    for key in ("commit_step", "num_committed", "cached_call"):
        np.testing.assert_array_equal(getattr(result, key), trace[key], err_msg=key)
    assert (result.num_committed > 1).any()  # the rule commits several tokens in some call


@pytest.mark.parametrize(
    "algo,param,window,cache",
    [("factor", 2.0, "sliding", "none"), ("factor", 0.6, "static", "dual"), ("topk_margin-threshold", 0.3, "sliding", "prefix-delay1"),
     ("topk_margin-fixed", 2, "static", "none")],
)
def test_dcd_factor_and_topk_margin_match_oracle(model, algo, param, window, cache):
    config = DecodeConfig(window_type=window, generate_length=20, initial_window_length=6, block_size=6, decode_algo=algo,
                          decode_param=param, cache_type=cache, refresh_count=3, **IDS)
    result = _assert_same_as_oracle(model, PROMPT[:, :4], config)
    if algo.startswith("topk_margin"):  # the recorded confidence is the margin, not the max probability
        conf = result.commit_conf[result.commit_step >= 0]
        assert conf.min() >= 0 and conf.max() <= 1
        max_prob = decode(*model, PROMPT[:, :4], dataclasses.replace(config, decode_algo=algo.split("-")[1]))
        assert not np.allclose(max_prob.commit_conf, result.commit_conf)


def test_factor_count_on_hand_made_scores():
    # f = 1: pass iff (n + 1)(1 - c_n) <= 1. Sorted 0.99, 0.7 (3*0.3 = 0.9 ok), 0.6 (4*0.4 = 1.6 fail), 0.5.
    scores = jnp.array([[0.6, 0.99, 0.5, 0.7], [0.3, 0.2, 0.1, 0.0], [0.99, 0.98, 0.1, 0.0]])
    eligible = jnp.array([[True] * 4, [True] * 4, [True, True, True, False]])
    got = np.asarray(factor_count(scores, eligible, 1.0))
    # row 2: 0.99, 0.98 pass, the last eligible (0.1) fails -> the reference's quirk commits all 3.
    np.testing.assert_array_equal(got, [2, 1, 3])
    for row in range(3):
        s = np.sort(np.asarray(scores[row])[np.asarray(eligible[row])])[::-1]
        assert got[row] == oracle_factor_count(s, 1.0)
    assert int(factor_count(scores, jnp.zeros_like(eligible), 1.0)[0]) == 0


def test_factor_and_margin_bad_input(model):
    with pytest.raises(ValueError, match="both set"):
        fastdllm_generate(*model, PROMPT[:1], steps=3, gen_length=24, block_length=8, mask_id=62, threshold=0.9, factor=1.0)
    with pytest.raises(ValueError, match="factor=0.0 must be > 0"):
        fastdllm_generate(*model, PROMPT[:1], steps=3, gen_length=24, block_length=8, mask_id=62, factor=0.0)
    with pytest.raises(ValueError, match="decode_param = factor f > 0"):
        decode(*model, PROMPT, DecodeConfig(generate_length=16, initial_window_length=4, decode_algo="factor",
                                            decode_param=-1.0, **IDS))
