"""LLaDA's masked-diffusion loss (golden), the SFT variant, the Task, and the likelihood estimator."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.dlm.likelihood import (
    any_order_log_likelihood,
    exact_elbo,
    log_likelihood,
    masks_with_counts,
    stratified_mask_counts,
)
from jaxlab.dlm.objective import draw_noise, forward_process, masked_diffusion_loss, weighted_token_ce
from jaxlab.dlm.task import MaskedDiffusionTask
from jaxlab.train.task import Task
from tests.conftest import GoldenCase

LOSS_CASE = GoldenCase("dlm", "llada_loss")
MASK_ID = LOSS_CASE.meta["special_ids"]["mask_id"]


@pytest.fixture(scope="module")
def golden_model():
    module, params = from_torch("llada", LOSS_CASE.meta["constructor"]["kwargs"], LOSS_CASE.state_dict)
    return module, params, jax.jit(lambda tokens: module.apply({"params": params}, tokens))


def test_pretrain_loss_matches_reference(golden_model):
    _, _, logits_fn = golden_model
    case = LOSS_CASE
    tokens = jnp.asarray(case["inputs/input_ids"], jnp.int32)
    loss, aux = masked_diffusion_loss(logits_fn, tokens, case["inputs/t"], case["inputs/u"], MASK_ID)
    np.testing.assert_array_equal(aux["masked"], case["intermediates/masked_indices"].astype(bool))
    np.testing.assert_array_equal(aux["noisy"], case["intermediates/noisy_batch"])
    case.assert_close("token_loss", aux["token_loss"])
    case.assert_close("per_seq_loss", aux["per_seq_loss"])
    case.assert_close("loss", loss)


def test_sft_loss_matches_reference(golden_model):
    _, _, logits_fn = golden_model
    case = LOSS_CASE
    tokens = jnp.asarray(case["inputs/input_ids"], jnp.int32)
    prompt_lengths = case["inputs/prompt_lengths"]
    loss, aux = masked_diffusion_loss(
        logits_fn, tokens, case["inputs/t"], case["inputs/u"], MASK_ID, prompt_lengths=prompt_lengths
    )
    np.testing.assert_array_equal(aux["masked"], case["intermediates/sft_masked_indices"].astype(bool))
    np.testing.assert_array_equal(aux["noisy"], case["intermediates/sft_noisy_batch"])
    case.assert_close("sft_token_loss", aux["token_loss"])
    case.assert_close("sft_loss", loss)


def test_weighted_ce_from_stored_logits_localises_the_loss():
    """Same numbers from the reference's own logits: isolates the loss from the network."""
    case = LOSS_CASE
    masked = case["intermediates/masked_indices"].astype(bool)
    weighted = weighted_token_ce(
        jnp.asarray(case["intermediates/logits"]), jnp.asarray(case["inputs/input_ids"]), masked,
        jnp.asarray(case["intermediates/p_mask"]),
    )
    case.assert_close("token_loss", weighted)


def test_forward_process_properties():
    tokens = jnp.arange(4 * 2000, dtype=jnp.int32).reshape(4, 2000) % 50
    t = jnp.array([0.0, 0.25, 0.5, 1.0])
    _, u = draw_noise(jax.random.key(0), 4, 2000)
    noisy, masked, p_mask = forward_process(tokens, t, u, 60, prompt_lengths=jnp.array([0, 0, 100, 0]))
    np.testing.assert_allclose(p_mask[:, 0], [1e-3, 0.25075, 0.5005, 1.0], rtol=1e-6)
    np.testing.assert_allclose(masked.mean(1), [1e-3, 0.25075, 0.5005 * 1900 / 2000, 1.0], atol=0.035)
    assert not masked[2, :100].any() and masked[3].all()
    np.testing.assert_array_equal(noisy, np.where(masked, 60, tokens))
    t_draw, u_draw = draw_noise(jax.random.key(1), 4096, 3)
    assert 0.0 < float(t_draw.min()) and float(t_draw.max()) <= 1.0 and abs(float(t_draw.mean()) - 0.5) < 0.02
    with pytest.raises(ValueError, match=r"t must be \[4\] and u \[4, 2000\]"):
        forward_process(tokens, t[:3], u, 60)


def test_loss_normalisation_is_by_positions_not_masked_tokens():
    """Uniform logits: CE = log V at each masked token, so the loss is sum(log V / p_mask) / (b*l)."""
    vocab, b, l = 8, 2, 6
    tokens = jnp.zeros((b, l), jnp.int32)
    t = jnp.array([0.3, 1.0])
    u = jnp.tile(jnp.linspace(0.0, 0.99, l), (b, 1))
    loss, aux = masked_diffusion_loss(lambda x: jnp.zeros(x.shape + (vocab,)), tokens, t, u, 7)
    p = (1 - 1e-3) * np.asarray(t) + 1e-3
    counts = np.asarray(aux["masked"]).sum(1)
    assert list(counts) == [2, 6]
    np.testing.assert_allclose(loss, np.sum(counts * np.log(vocab) / p) / (b * l), rtol=1e-6)
    sft, aux = masked_diffusion_loss(
        lambda x: jnp.zeros(x.shape + (vocab,)), tokens, t, u, 7, prompt_lengths=jnp.array([1, 4])
    )
    sft_counts = np.asarray(aux["masked"]).sum(1)
    assert list(sft_counts) == [1, 2]
    np.testing.assert_allclose(sft, np.sum(sft_counts * np.log(vocab) / p / np.array([5, 2])) / b, rtol=1e-6)


def test_task_protocol_trains_a_tiny_llada(golden_model):
    module, params, _ = golden_model
    task = MaskedDiffusionTask(module, mask_id=MASK_ID, objective="sft")
    assert isinstance(task, Task)
    batch = {"tokens": jnp.asarray(LOSS_CASE["inputs/input_ids"], jnp.int32),
             "prompt_lengths": jnp.asarray(LOSS_CASE["inputs/prompt_lengths"], jnp.int32)}
    init = nn.unbox(task.init_params(jax.random.key(0), batch))
    assert jax.tree.structure(jax.tree.map(np.shape, init)) == jax.tree.structure(jax.tree.map(np.shape, params))

    @jax.jit
    def sgd(p, key):
        (loss, metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(p, batch, key)
        return jax.tree.map(lambda w, g: w - 0.02 * g, p, grads), loss, metrics

    losses = []
    p = params
    for step in range(25):
        p, loss, metrics = sgd(p, jax.random.key(step % 5))
        losses.append(float(loss))
    assert set(metrics) == {"loss", "masked_fraction", "masked_ce", "masked_accuracy"}
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    with pytest.raises(KeyError, match="prompt_lengths"):
        task.loss_fn(params, {"tokens": batch["tokens"]}, jax.random.key(0))
    with pytest.raises(ValueError, match="objective='ar'"):
        MaskedDiffusionTask(module, mask_id=MASK_ID, objective="ar")


# ------------------------------------------------------------------ likelihood


def _toy_logits_fn(vocab: int, seed: int = 0):
    """A small bidirectional network (position- and context-dependent) standing in for a DLM."""
    k_emb, k_pos, k_out = jax.random.split(jax.random.key(seed), 3)
    emb = jax.random.normal(k_emb, (vocab + 1, 8))
    pos = jax.random.normal(k_pos, (16, 8))
    out = jax.random.normal(k_out, (8, 8, vocab)) * 0.7

    def logits_fn(tokens):
        h = emb[tokens] + pos[: tokens.shape[1]]
        ctx = jnp.tanh(h + h.mean(axis=1, keepdims=True))
        return jnp.einsum("bld,dev,ble->blv", ctx, out, h)

    return logits_fn


def test_exact_elbo_equals_any_order_autoregressive_likelihood():
    """sum_S sum_{i in S} 1/(k C(L,k)) log p == mean over orders of the AR log-likelihood."""
    logits_fn = _toy_logits_fn(vocab=5)
    prompt, answer = np.array([1, 2]), np.array([3, 0, 4, 2])
    exact = exact_elbo(logits_fn, prompt, answer, mask_id=5)
    np.testing.assert_allclose(exact, any_order_log_likelihood(logits_fn, prompt, answer, mask_id=5), rtol=1e-5)


def test_elbo_is_a_lower_bound_summing_to_at_most_one():
    """exp(ELBO) <= E_order p_order(a), which sums to 1 over all answers (vocab 4, length 3)."""
    logits_fn = _toy_logits_fn(vocab=4, seed=3)
    prompt = np.array([2])
    total = sum(
        float(jnp.exp(exact_elbo(logits_fn, prompt, np.array(answer), mask_id=4)))
        for answer in itertools.product(range(4), repeat=3)
    )
    assert 0.5 < total <= 1.0 + 1e-5


def test_monte_carlo_estimate_converges_to_exact_elbo():
    logits_fn = _toy_logits_fn(vocab=5, seed=1)
    prompt, answer = np.array([1, 2, 0]), np.array([3, 0, 4, 2, 1])
    exact = float(exact_elbo(logits_fn, prompt, answer, mask_id=5))
    estimate, draws = jax.jit(
        lambda key: log_likelihood(logits_fn, prompt, answer, key, mask_id=5, mc_num=2048, batch_size=16,
                                   return_draws=True)
    )(jax.random.key(0))
    stderr = float(np.std(draws)) / np.sqrt(draws.size)
    assert abs(float(estimate) - exact) < 4 * stderr, (float(estimate), exact, stderr)
    assert draws.shape == (2048,)
    with pytest.raises(ValueError, match="multiple of batch_size=16"):
        log_likelihood(logits_fn, prompt, answer, jax.random.key(0), mask_id=5, mc_num=20)


def test_stratified_counts_and_masks_follow_the_reference_recipe():
    length, batch = 7, 16
    for seed in range(20):
        counts = np.asarray(stratified_mask_counts(jax.random.key(seed), batch, length))
        assert counts.min() >= 1 and counts.max() <= length
        # linspace(k0, k0 + (b-1) L/b) wrapped into 1..L; L/b = 0.4375 is exact in binary, so the
        # float64 values below are exact and rounding ties go to even as in torch.round
        assert set(np.diff(counts) % length) <= {0, 1}
        k0 = counts[0]
        expected = (np.round(np.linspace(k0, k0 + (batch - 1) * length / batch, batch)).astype(int) - 1) % length + 1
        np.testing.assert_array_equal(counts, expected)
    masks = np.asarray(masks_with_counts(jax.random.key(0), jnp.array([1, 3, 7]), 2, length))
    assert masks.shape == (3, 9) and not masks[:, :2].any()
    np.testing.assert_array_equal(masks.sum(1), [1, 3, 7])


def test_likelihood_estimate_is_finite_deterministic_and_changed_by_cfg(golden_model):
    """With the tiny LLaDA: the estimate is finite, deterministic per key and CFG changes it."""
    _, _, logits_fn = golden_model
    prompt, answer = np.arange(6), np.arange(10, 16)
    run = jax.jit(lambda key, cfg: log_likelihood(logits_fn, prompt, answer, key, mask_id=MASK_ID, mc_num=32,
                                                  batch_size=16, cfg_scale=cfg), static_argnums=1)
    a, b = float(run(jax.random.key(0), 0.0)), float(run(jax.random.key(0), 0.0))
    assert np.isfinite(a) and a < 0 and a == b
    assert float(run(jax.random.key(0), 1.0)) != a
