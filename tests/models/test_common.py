"""Classifier-free guidance acts on the configured epsilon channels, never on the variance channels."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models.common import forward_with_cfg, guided_channels
from jaxlab.models.dit import DiTConfig


class _Stub:
    """``model(x, t, y)`` whose output rows differ (cond / uncond), ``2 * in_channels`` channels."""

    def __init__(self, config):
        self.config = config

    def __call__(self, x, t, y):
        out_channels = 2 * self.config.in_channels
        return jnp.broadcast_to(y[:, None, None, None].astype(jnp.float32) + jnp.arange(out_channels), x.shape[:3] + (out_channels,))


@pytest.mark.parametrize(
    "in_channels, cfg_channels, expected", [(4, 0, 3), (4, 4, 4), (1, 0, 1), (3, 0, 3), (3, 2, 2)]
)
def test_guided_channels(in_channels, cfg_channels, expected):
    config = DiTConfig(in_channels=in_channels, cfg_channels=cfg_channels, depth=1, hidden_size=32, num_heads=2, input_size=8)
    assert guided_channels(config) == expected
    x = jnp.zeros((4, 2, 2, in_channels))
    y = jnp.array([1, 2, 10, 10])  # cond labels, then null labels: cond - uncond = -9, -8
    out = forward_with_cfg(_Stub(config), x, jnp.zeros(4), y, 2.0)
    own = _Stub(config)(x, None, y)
    np.testing.assert_array_equal(out[..., expected:], own[..., expected:])  # unguided, variance channels included
    guided = own[2:, ..., :expected] + 2.0 * (own[:2, ..., :expected] - own[2:, ..., :expected])
    np.testing.assert_array_equal(out[:2, ..., :expected], guided)
    np.testing.assert_array_equal(out[2:, ..., :expected], guided)


def test_guiding_more_channels_than_the_model_predicts_is_an_error():
    with pytest.raises(ValueError, match="cfg_channels=5 must be in"):
        DiTConfig(in_channels=4, cfg_channels=5).validate()
