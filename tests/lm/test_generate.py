"""Generation: the jitted prefill + decode loop equals step-by-step argmax of the full forward; sampling; errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.convert.common import check_against_init
from jaxlab.lm import convert_to_dijiang, generate, sample_token
from jaxlab.models.lm import PRESETS, CausalLM, LMConfig
from tests.conftest import GoldenCase

CASE = GoldenCase("dijiang", "dijiang_lm_forward")


@pytest.fixture(scope="module")
def models():
    dijiang = from_torch("dijiang", CASE.meta["constructor"]["kwargs"], CASE.state_dict)
    cfg = LMConfig.from_dict(PRESETS["tiny"] | {"max_position_embeddings": 32})
    softmax_module = CausalLM(cfg)
    params = nn.unbox(jax.jit(softmax_module.init)(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree.map(lambda x: x * 8 if x.ndim == 2 else x, params)  # sharper distributions
    return {"dijiang": dijiang, "softmax": (softmax_module, params)}


def _naive_greedy(module, params, prompt, n):
    """Full forwards over a fixed-length buffer (causal: position p sees only <= p), one compilation."""
    fwd = jax.jit(lambda p, x: module.apply({"params": p}, x)[0])
    p0 = prompt.shape[1]
    ids = np.zeros((prompt.shape[0], p0 + n), np.int32)
    ids[:, :p0] = prompt
    for i in range(p0, p0 + n):
        ids[:, i] = np.argmax(fwd(params, ids)[:, i - 1], -1)
    return ids


@pytest.mark.parametrize("kind", ["softmax", "dijiang"])
def test_greedy_generation_equals_full_forward_argmax(models, kind):
    module, params = models[kind]
    prompt = CASE["inputs/input_ids"][:, :6]
    out = generate(module, params, prompt, max_new_tokens=10)
    np.testing.assert_array_equal(out, _naive_greedy(module, params, prompt, 10))


def test_eos_stops_and_fills(models):
    module, params = models["dijiang"]
    prompt = CASE["inputs/input_ids"][:, :6]
    free = generate(module, params, prompt, max_new_tokens=10)
    eos = int(free[0, 8])  # row 0 emits this token at its third step
    out = generate(module, params, prompt, max_new_tokens=10, eos_id=eos)
    first = np.flatnonzero(out[0, 6:] == eos)[0]
    np.testing.assert_array_equal(out[0, 6 : 6 + first + 1], free[0, 6 : 6 + first + 1])
    assert (out[0, 6 + first :] == eos).all()


def test_top_p_sampling():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: sample_token(logits, k, jnp.float32(1.0), jnp.float32(0.7), False))(
        jax.random.split(jax.random.key(0), 2000))[:, 0]
    counts = np.bincount(np.asarray(draws), minlength=4) / 2000
    assert counts[2] == counts[3] == 0  # outside the 0.8 nucleus that reaches 0.7
    np.testing.assert_allclose(counts[:2], [0.5 / 0.8, 0.3 / 0.8], atol=0.04)
    tiny = sample_token(logits, jax.random.key(1), jnp.float32(1.0), jnp.float32(1e-3), False)
    assert int(tiny[0]) == 0  # top_p -> 0 is greedy


def test_temperature_sampling_is_seeded(models):
    module, params = models["softmax"]
    prompt = CASE["inputs/input_ids"][:, :4]
    a = generate(module, params, prompt, max_new_tokens=8, temperature=1.0, top_p=0.9, rng=jax.random.key(3))
    b = generate(module, params, prompt, max_new_tokens=8, temperature=1.0, top_p=0.9, rng=jax.random.key(3))
    np.testing.assert_array_equal(a, b)


def test_bad_prompts_are_rejected_before_tracing(models):
    module, params = models["softmax"]
    with pytest.raises(ValueError, match=r"token ids \[128\] are outside the vocabulary \[0, 128\)"):
        generate(module, params, np.array([[1, 128]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(module, params, np.array([[-1, 3]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds the 32 positions"):
        generate(module, params, np.zeros((1, 30), np.int32), max_new_tokens=3)
    with pytest.raises(ValueError, match="needs an rng"):
        generate(module, params, np.zeros((1, 3), np.int32), max_new_tokens=3, temperature=0.5)


def test_convert_to_dijiang_keeps_softmax_weights_and_adds_dijiang_ones(models):
    module, params = models["softmax"]
    cfg, new = convert_to_dijiang(params, module.config, jax.random.key(0))
    assert cfg.attention == "dijiang" and len(cfg.dijiang_weights) == cfg.num_layers
    target = CausalLM(cfg)
    check_against_init(target, new, jnp.zeros((1, 2), jnp.int32))  # same names and shapes as a DiJiang init
    np.testing.assert_array_equal(new["layers_1"]["attn"]["query_key_value"]["kernel"],
                                  params["layers_1"]["attn"]["query_key_value"]["kernel"])
    np.testing.assert_allclose(np.exp(new["layers_0"]["attn"]["log_d1"][0, :3]), (1 - 1 / 32) ** np.arange(3), rtol=1e-6)
    logits, _ = jax.jit(target.apply)({"params": new}, CASE["inputs/input_ids"])
    assert np.isfinite(logits).all()
    with pytest.raises(ValueError, match="needs a softmax-attention model"):
        convert_to_dijiang(new, cfg, jax.random.key(0))
