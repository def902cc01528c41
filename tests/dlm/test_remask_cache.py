"""Fast-dLLM block caches for the block-local remasking samplers (llada_remask_generate, remedi_generate).

A cache is exact when the K/V it keeps cannot have changed: in a one-layer model a position's K/V
depend only on its token, and the block-local samplers change tokens only inside the current block,
so the cached samplers must reproduce the uncached ones token for token. With one step per block
every call is a refresh, exact at any depth.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.dlm import llada_remask_generate, remedi_generate
from jaxlab.models import build_model

MASK = 62
PROMPT = np.random.default_rng(0).integers(0, 58, (3, 5)).astype(np.int32)


def _model(layers: int):
    module = build_model("llada", "tiny")
    module = type(module)(dataclasses.replace(module.config, n_layers=layers))
    params = module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    # amplified weights: peaked, context-dependent logits, so a wrong cache changes the tokens
    return module, jax.tree_util.tree_map(lambda p: np.asarray(p) * 20 if p.ndim >= 2 else np.asarray(p), params)


@pytest.fixture(scope="module")
def one_layer():
    return _model(1)


@pytest.mark.parametrize("sampler, cache", [
    ("remedi", "prefix"), ("llada_remask", "dual"),
    pytest.param("remedi", "dual", marks=pytest.mark.slow), pytest.param("llada_remask", "prefix", marks=pytest.mark.slow),
])
def test_block_cache_is_exact_where_the_cache_is_exact(one_layer, sampler, cache):
    kw = dict(steps=8, gen_length=16, block_length=4, mask_id=MASK)
    fn = remedi_generate if sampler == "remedi" else llada_remask_generate
    if sampler == "llada_remask":
        kw.update(remask_number=1, remask_start=0.5)
    ref = fn(*one_layer, PROMPT, **kw)
    out = fn(*one_layer, PROMPT, cache=cache, **kw)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.commit_step, ref.commit_step)
    assert out.num_forward == ref.num_forward
    if sampler == "llada_remask":
        assert ref.num_remasked.sum() > 0  # the remask phase ran under the cache


@pytest.mark.slow  # the exactness tests above cover the cached path
def test_block_cache_differs_in_deeper_models_unless_every_call_refreshes():
    two = _model(2)
    kw = dict(gen_length=16, block_length=4, mask_id=MASK)
    approx = remedi_generate(*two, PROMPT, steps=8, cache="dual", **kw)
    assert not np.array_equal(approx.tokens, remedi_generate(*two, PROMPT, steps=8, **kw).tokens)
    every_call_refreshes = remedi_generate(*two, PROMPT, steps=4, cache="prefix", **kw)
    np.testing.assert_array_equal(every_call_refreshes.tokens, remedi_generate(*two, PROMPT, steps=4, **kw).tokens)
