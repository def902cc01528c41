"""Dense layers whose parameters carry logical axis names."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

Initializer = nn.initializers.Initializer

xavier_uniform = nn.initializers.xavier_uniform
zeros = nn.initializers.zeros_init()


def logical_init(init: Initializer, axes: Sequence[str | None]) -> Initializer:
    """Wraps ``init`` so the created parameter is annotated with ``axes``."""
    return nn.with_logical_partitioning(init, tuple(axes))


def dense(
    features: int,
    axes: tuple[str | None, str | None],
    *,
    dtype=jnp.float32,
    use_bias: bool = True,
    kernel_init: Initializer = xavier_uniform(),
    bias_init: Initializer = zeros,
    name: str | None = None,
) -> nn.Dense:
    """A ``nn.Dense`` with kernel ``[in, out]`` named ``axes`` and bias ``[out]``."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=logical_init(kernel_init, axes),
        bias_init=logical_init(bias_init, axes[-1:]),
        name=name,
    )


def dense_general(
    features: int | tuple[int, ...],
    axes: Sequence[str | None],
    *,
    axis: int | tuple[int, ...] = -1,
    dtype=jnp.float32,
    use_bias: bool = True,
    kernel_init: Initializer = xavier_uniform(),
    bias_init: Initializer = zeros,
    name: str | None = None,
) -> nn.DenseGeneral:
    """A ``nn.DenseGeneral``; ``axes`` names every kernel dim (inputs then outputs).

    The bias takes the names of the output dims.
    """
    n_out = len(features) if isinstance(features, tuple) else 1
    return nn.DenseGeneral(
        features,
        axis=axis,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=logical_init(kernel_init, axes),
        bias_init=logical_init(bias_init, tuple(axes)[-n_out:]),
        name=name,
    )
