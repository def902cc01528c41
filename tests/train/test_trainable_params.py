"""config.optimizer.trainable_params: only matching parameters train (jaxlab.train.optim.restrict_to)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs.common import training_defaults
from jaxlab.train.config import validate
from jaxlab.train.optim import make_optimizer


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "mlp"))
        x = nn.Dense(4, kernel_init=init, name="body")(x)
        return nn.Dense(1, name="conf_out")(x)


def _optimizer(**opt):
    config = ml_collections.ConfigDict()
    training_defaults(config)
    config.optimizer.update(learning_rate=0.1, weight_decay=0.5, grad_clip_norm=1.0, **opt)
    validate(config)
    return make_optimizer(config.optimizer, 10)[0]


def test_only_matching_parameters_train():
    boxed = _Net().init(jax.random.key(0), jnp.ones((1, 3)))["params"]  # the loop builds the state from boxed params
    tx = _optimizer(trainable_params="^conf_")
    state, params = nn.unbox(tx.init(boxed)), nn.unbox(boxed)
    assert sum(x.size for x in jax.tree.leaves(state)) == 2 * (4 + 1) + 2  # head-only Adam moments + two step counts
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), params)
    step = jax.jit(lambda params, state: (lambda u, s: (optax.apply_updates(params, u), s))(
        *tx.update(grads, state, params)))
    for _ in range(2):
        params, state = step(params, state)
    start = nn.unbox(boxed)
    frozen = jax.tree.map(np.array_equal, params["body"], start["body"])
    assert all(jax.tree.leaves(frozen))  # no update, no weight decay
    assert not np.array_equal(params["conf_out"]["kernel"], start["conf_out"]["kernel"])
    # Without the switch every parameter moves (so the assertion above can fail).
    everything = _optimizer()
    updates, _ = everything.update(grads, nn.unbox(everything.init(boxed)), start)
    assert np.abs(updates["body"]["kernel"]).sum() > 0


def test_bad_patterns_are_refused():
    boxed = _Net().init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    with pytest.raises(ValueError, match="matches no parameter.*top-level names: \\['body', 'conf_out'\\]"):
        _optimizer(trainable_params="^head").init(boxed)
    with pytest.raises(ValueError, match="matches every parameter"):
        _optimizer(trainable_params="kernel|bias").init(boxed)
    with pytest.raises(ValueError, match="is not a regular expression"):
        _optimizer(trainable_params="conf_(")
    with pytest.raises(ValueError, match="trainable_params=3 must be str"):
        _optimizer(trainable_params=3)
