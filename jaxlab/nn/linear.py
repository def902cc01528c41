"""Dense layers whose parameters carry logical axis names."""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = nn.initializers.Initializer

xavier_uniform = nn.initializers.xavier_uniform
zeros = nn.initializers.zeros_init()


def logical_init(init: Initializer, axes: Sequence[str | None]) -> Initializer:
    """Wraps ``init`` so the created parameter is annotated with ``axes``."""
    return nn.with_logical_partitioning(init, tuple(axes))


class _FlatSafePartitioned(nn.LogicallyPartitioned):
    """``nn.LogicallyPartitioned`` for DenseGeneral kernels and biases, which flax creates flat and
    then reshapes: the sharding constraint that unboxing applies under a mesh is skipped while
    the value's rank does not match the names (it would fail), and applied once it does."""

    def unbox(self, apply_constraint: bool = True):
        return super().unbox(apply_constraint and jnp.ndim(self.value) == len(self.names))


def _flat_safe_init(init: Initializer, axes: Sequence[str | None]) -> Initializer:
    def wrapped(*args, **kwargs):
        return _FlatSafePartitioned(init(*args, **kwargs), tuple(axes))

    return wrapped


def dense(
    features: int,
    axes: tuple[str | None, str | None],
    *,
    dtype=jnp.float32,
    use_bias: bool = True,
    kernel_init: Initializer = xavier_uniform(),
    bias_init: Initializer = zeros,
    output_dtype=None,
    name: str | None = None,
) -> nn.Dense:
    """A ``nn.Dense`` with kernel ``[in, out]`` named ``axes`` and bias ``[out]``.

    ``output_dtype`` (e.g. float32 for logits): the product takes ``dtype`` inputs and
    accumulates and returns in ``output_dtype`` (default: ``dtype``).
    """
    dot_general = None if output_dtype is None else partial(jax.lax.dot_general, preferred_element_type=output_dtype)
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=logical_init(kernel_init, axes),
        bias_init=logical_init(bias_init, axes[-1:]),
        dot_general=dot_general,
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
        kernel_init=_flat_safe_init(kernel_init, axes),
        bias_init=_flat_safe_init(bias_init, tuple(axes)[-n_out:]),
        name=name,
    )
