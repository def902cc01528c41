"""Active remasking samplers (ReMDM, ReMDM's LLaDA variant, RemeDi keep-top-K) on the golden tiny LLaDA."""

import jax
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.dlm import ReMDMSchedule, llada_generate, llada_remask_generate, remdm_generate, remedi_generate
from jaxlab.dlm.remasking import remdm_alphas, remedi_keep_counts
from tests.conftest import GoldenCase
from tests.dlm.oracles import oracle_mdlm
from tests.dlm.tracing import count_jit_traces, counting, programs

CASE = GoldenCase("dlm", "dcd_sliding_threshold")
MASK = 62
PROMPT = np.random.default_rng(1).integers(0, 56, (2, 5))


@pytest.fixture(scope="module")
def model():
    module, params = from_torch("llada", CASE.meta["constructor"]["kwargs"], CASE.state_dict)
    return counting(module), params  # counts its own traces (test_remasking_samplers_compile_once)


@pytest.mark.parametrize("schedule", [ReMDMSchedule("cap", eta=0.0), ReMDMSchedule("rescale", eta=0.0)])
def test_remdm_with_sigma_zero_is_the_mdlm_sampler(model, schedule):
    kw = dict(steps=6, gen_length=12, temperature=1.0, mask_id=MASK, rng=jax.random.key(4))
    result = remdm_generate(*model, PROMPT, schedule=schedule, **kw)
    np.testing.assert_array_equal(result.tokens, oracle_mdlm(*model, PROMPT, **kw))
    assert not result.num_remasked.any() and not (result.tokens == MASK).any()
    remasking_on = remdm_generate(*model, PROMPT, schedule=ReMDMSchedule("rescale", eta=1.0), **kw)
    assert remasking_on.num_remasked.sum() > 0 and not (remasking_on.tokens == MASK).any()


@pytest.mark.parametrize(
    "schedule",
    [ReMDMSchedule("rescale", eta=0.6), pytest.param(ReMDMSchedule("cap", eta=0.1), marks=pytest.mark.slow),
     ReMDMSchedule("loop", eta=0.2, t_on=0.6, t_off=0.2, alpha_on=0.7)],
)
def test_remdm_expected_number_of_masks_follows_the_schedule(model, schedule):
    """Mean masks over 256 independent rows after each step == G (1 - alpha_s), within 4 standard errors."""
    rows, g, steps = 256, 24, 10
    prompt = np.repeat(PROMPT[:1], rows, axis=0)
    result = remdm_generate(*model, prompt, steps=steps, gen_length=g, schedule=schedule, temperature=1.0,
                            mask_id=MASK, rng=jax.random.key(0))
    _, alpha_s, _ = remdm_alphas(schedule, steps)
    masks = result.num_masked.astype(np.float64)  # [steps, rows]
    mean, se = masks.mean(1), masks.std(1) / np.sqrt(rows) + 1e-9
    np.testing.assert_array_less(np.abs(mean - g * (1 - alpha_s)), 4 * se + 1e-6)
    assert result.num_remasked.sum() > 50  # remasking is really exercised
    assert (masks[-1] == 0).all()


def test_remdm_loop_schedule_holds_alpha():
    sched = ReMDMSchedule("loop")  # t_on 0.55, t_off 0.05, alpha_on 0.9, eta 0.02
    alpha_t, alpha_s, sigma = remdm_alphas(sched, 20)
    held = (alpha_t == 0.9) & (alpha_s == 0.9)
    assert held.sum() == 10 and (sigma[held] == 0.02).all() and (sigma[~held] == 0).all()
    assert alpha_t[0] == 0 and alpha_s[-1] == 1 and (np.diff(np.concatenate([alpha_t, alpha_s[-1:]])) >= 0).all()
    _, _, cap = remdm_alphas(ReMDMSchedule("cap", eta=0.3), 10)
    assert cap[-1] == 0 and cap.max() <= 0.3  # sigma_max = 0 at the last step: everything gets committed


def test_remdm_conf_remasks_low_confidence_tokens_first(model):
    result = remdm_generate(*model, np.repeat(PROMPT[:1], 64, 0), steps=12, gen_length=16,
                            schedule=ReMDMSchedule("conf"), mask_id=MASK, rng=jax.random.key(2))
    assert result.num_remasked.sum() > 0 and not (result.tokens == MASK).any()


def test_llada_variant_without_remasking_is_llada_generate(model):
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=MASK)
    for extra, off in ((dict(), dict(remask_steps=0)), (dict(temperature=0.7, rng=jax.random.key(1)), dict(remask_number=0))):
        want = llada_generate(*model, PROMPT, **kw, **extra)
        got = llada_remask_generate(*model, PROMPT, **kw, **extra, **off)
        np.testing.assert_array_equal(got.tokens, want.tokens)


def test_llada_variant_never_exceeds_the_block_budget(model):
    block, per_block, extra, number = 8, 8, 5, 2
    result = llada_remask_generate(*model, PROMPT, steps=16, gen_length=16, block_length=block, mask_id=MASK,
                                   remask_number=number, remask_steps=extra)
    on = 7  # floor(7/8 * 8)
    plain = [16 - 1 - j for j in range(per_block)] + [8 - 1 - j for j in range(per_block)]
    expected, remasked = [], []
    for blk in range(2):
        for j in range(per_block + extra):
            phase = on <= j < on + extra
            c = j if j < on else j - extra
            expected.append(plain[blk * per_block + (c if not phase else on - 1)])
            remasked.append(number if phase else 0)
    np.testing.assert_array_equal(result.num_masked, np.array(expected)[:, None].repeat(2, 1))
    np.testing.assert_array_equal(result.num_remasked, np.array(remasked)[:, None].repeat(2, 1))
    np.testing.assert_array_equal(result.tokens[:, :5], PROMPT)
    assert result.num_forward == 2 * (per_block + extra) and not (result.tokens == MASK).any()
    plain_tokens = llada_generate(*model, PROMPT, steps=16, gen_length=16, block_length=block, mask_id=MASK).tokens
    assert not np.array_equal(result.tokens, plain_tokens)  # the remask phase changed some committed token


def test_remedi_keeps_the_cumulative_count_and_remasks_the_rest(model):
    np.testing.assert_array_equal(remedi_keep_counts(10, 4), [2, 4, 7, 10])
    result = remedi_generate(*model, PROMPT, steps=8, gen_length=16, block_length=8, mask_id=MASK)
    keep = remedi_keep_counts(8, 4)
    expected = np.concatenate([16 - keep, 8 - keep])
    np.testing.assert_array_equal(result.num_masked, expected[:, None].repeat(2, 1))
    assert result.num_remasked.sum() > 0 and not (result.tokens == MASK).any()
    logit = remedi_generate(*model, PROMPT, steps=8, gen_length=16, block_length=8, mask_id=MASK, score="logit")
    assert not (logit.tokens == MASK).any()


def _padded(prompts, width, pad=0):
    ids = np.full((len(prompts), width), pad, np.int64)
    att = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], att[i, width - len(p):] = p, True
    return ids, att


@pytest.mark.parametrize("sampler", ["remdm", "llada_remask", "remedi"])
def test_rows_do_not_depend_on_batch_size_or_padding(model, sampler):
    short, long_ = PROMPT[0, :3], PROMPT[1]
    run = {
        "remdm": lambda ids, att: remdm_generate(*model, ids, steps=6, gen_length=8, schedule=ReMDMSchedule("rescale", eta=0.5),
                                                 mask_id=MASK, attention_mask=att, rng=jax.random.key(7)),
        "llada_remask": lambda ids, att: llada_remask_generate(*model, ids, steps=8, gen_length=8, block_length=8,
                                                               mask_id=MASK, remask_number=2, attention_mask=att),
        "remedi": lambda ids, att: remedi_generate(*model, ids, steps=4, gen_length=8, block_length=4, mask_id=MASK,
                                                   attention_mask=att),
    }[sampler]
    alone = run(short[None], None).tokens[0, 3:]
    ids, att = _padded([short, long_], 5)  # the short prompt left-padded next to a full-length one
    batched = run(ids, att).tokens
    np.testing.assert_array_equal(batched[0, 5:], alone)
    ids3, att3 = _padded([short, long_, long_[::-1]], 5)
    np.testing.assert_array_equal(run(ids3, att3).tokens[:2], batched)  # adding a row changes nothing


def test_remasking_samplers_compile_once(model):
    kw = dict(steps=4, gen_length=8, mask_id=MASK, rng=jax.random.key(0))
    for run, program, extra in ((remdm_generate, "_remdm", {}), (remedi_generate, "_remedi", {"block_length": 4})):
        before = type(model[0]).model_traces
        with count_jit_traces() as traces:
            first = run(*model, PROMPT, **kw, **extra)
        assert programs(traces) == {program: 1}, traces
        model_traces = type(model[0]).model_traces - before
        assert 0 < model_traces < first.num_forward, run  # a staged loop: the model is traced once per call site
        with count_jit_traces() as traces:
            run(*model, (PROMPT + 1) % 56, **kw, **extra)  # new prompts, same shape: no retrace
        assert not programs(traces) and type(model[0]).model_traces - before == model_traces, run


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: remdm_generate(*m, PROMPT, steps=4, gen_length=8, mask_id=MASK, schedule="linear",
                                  rng=jax.random.key(0)), "unknown ReMDM schedule 'linear'"),
        (lambda m: remdm_generate(*m, PROMPT, steps=4, gen_length=8, mask_id=MASK, rng=jax.random.key(0),
                                  schedule=ReMDMSchedule("rescale", eta=1.5)), "0 <= eta <= 1"),
        (lambda m: remdm_generate(*m, PROMPT, steps=4, gen_length=8, mask_id=MASK, rng=jax.random.key(0),
                                  schedule=ReMDMSchedule("cap", eta=-0.1)), "must be a finite number >= 0"),
        (lambda m: remdm_generate(*m, PROMPT, steps=20, gen_length=8, mask_id=MASK, rng=jax.random.key(0),
                                  schedule=ReMDMSchedule("loop", eta=0.2)), "exceeds the validity bound"),
        (lambda m: remdm_generate(*m, PROMPT, steps=20, gen_length=8, mask_id=MASK, rng=jax.random.key(0),
                                  schedule=ReMDMSchedule("loop", t_on=0.1, t_off=0.3)), "0 < t_off < t_on < 1"),
        (lambda m: remdm_generate(*m, PROMPT, steps=4, gen_length=8, mask_id=MASK, rng=jax.random.key(0),
                                  cache="dual"), "not well-defined"),
        (lambda m: remedi_generate(*m, PROMPT, steps=4, gen_length=8, block_length=4, mask_id=MASK, cache="prefix",
                                   attention_mask=np.ones(PROMPT.shape)), "with an attention_mask"),
        (lambda m: llada_remask_generate(*m, PROMPT, steps=4, gen_length=8, block_length=4, mask_id=MASK,
                                         cache="dual-delay2"), "unknown cache 'dual-delay2'"),
        (lambda m: remdm_generate(*m, np.array([[1, MASK, 3]]), steps=4, gen_length=8, mask_id=MASK,
                                  rng=jax.random.key(0)), "contains the mask id 62"),
        (lambda m: remdm_generate(*m, PROMPT, steps=4, gen_length=8, mask_id=MASK), "pass rng="),
        (lambda m: remedi_generate(*m, PROMPT, steps=16, gen_length=8, block_length=4, mask_id=MASK),
         "at most block_length=4 steps per block"),
        (lambda m: llada_remask_generate(*m, PROMPT, steps=4, gen_length=8, block_length=4, mask_id=MASK,
                                         remask_number=-1), "remask_number=-1"),
    ],
)
def test_bad_input(model, call, message):
    with count_jit_traces() as traces, pytest.raises(ValueError) as err:
        call(model)
    assert message in str(err.value)
    assert not programs(traces)
