"""Parameter counts of ``CausalLM`` configs without allocating them (``jax.eval_shape`` of ``init``)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.lm import CausalLM, LMConfig


@functools.lru_cache(maxsize=256)
def lm_param_count(config: LMConfig) -> int:
    """Number of parameters of ``CausalLM(config)`` (shapes only, nothing is initialised)."""
    shapes = jax.eval_shape(lambda: CausalLM(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes["params"]))))
