"""Quantised 2-D convolutions (DiC's block convs): a conv is a linear over ``k x k`` input patches.

A stride-1 ``nn.Conv`` with kernel ``W [k, k, C, O]`` (HWIO) and zero padding ``p`` computes
``y[n, i, j] = sum_{dy, dx, c} X0[n, i + dy, j + dx, c] W[dy, dx, c, o] + b`` on the zero-padded
input ``X0``. ``jaxlab.quant`` therefore

- pads explicitly first (``pad``: zeros in the layer's own input space), then runs every later
  step on the padded tensor with a ``VALID`` conv. The border is what makes DiT's folding
  inapplicable: a shift ``z`` applied before the conv is not ``conv(x) - z * sum(W)`` on the
  border pixels (the padded taps see 0, not ``z``). Padding *before* the unfused smoothing
  ``X^ = (X0 - z) / s`` (``jaxlab.quant.unfused``) maps the border to ``-z / s``, so
  ``conv_valid(X^, diag_C(s) W) + (b + z . sum_{dy,dx} W)`` equals the float conv at every
  pixel, border included (exact in float; tests/quant/test_dic.py), and an asymmetric
  activation quantiser sees the border as an ordinary value (no position-dependent zero-point
  correction);
- quantises the kernel per output channel over its ``k * k * C`` flattened rows (the same
  ``weight_params`` as a linear's ``[I, O]`` kernel; the table stores it flattened), and the
  padded input per tensor with the layer's per-group activation quantiser;
- computes the integer product as one ``int8 x int8 -> int32`` ``lax.conv_general_dilated``
  (``int_conv``; exact on XLA:CPU, tested against int64 numpy beyond 2**24).

Calibration records the per-input-channel min/max of the padded input (``padded_range``: the
zeros of a padded conv widen each channel's range to contain 0), exactly the statistic a
linear records.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_padding(module: nn.Conv) -> int:
    """The symmetric zero padding ``p`` of a stride-1, ungrouped, undilated square ``nn.Conv``
    (the only kind ``jaxlab.quant`` quantises); a clear error otherwise."""
    ks = tuple(module.kernel_size)
    problems = []
    if len(ks) != 2 or ks[0] != ks[1] or ks[0] % 2 == 0:
        problems.append(f"kernel_size={ks} (need an odd square kernel)")
    for name in ("strides", "input_dilation", "kernel_dilation"):
        value = getattr(module, name)
        if value not in (None, 1) and tuple(np.atleast_1d(value)) not in ((1,), (1, 1)):
            problems.append(f"{name}={value}")
    if module.feature_group_count != 1:
        problems.append(f"feature_group_count={module.feature_group_count}")
    padding = module.padding
    if isinstance(padding, str):
        p = {"SAME": ks[0] // 2, "VALID": 0}.get(padding.upper())
    elif isinstance(padding, int):
        p = padding
    else:  # per-dimension ints or (low, high) pairs: only one symmetric value is supported
        values = {int(v) for q in padding for v in np.atleast_1d(q)}
        p = values.pop() if len(values) == 1 else None
    if p is None or p < 0:
        problems.append(f"padding={padding!r} (need the same zero padding on every side)")
    if problems:
        scope = getattr(module, "scope", None)
        name = "/".join(scope.path) if scope is not None else module.name or "nn.Conv"
        raise ValueError(f"{name}: jaxlab.quant quantises stride-1, ungrouped, undilated square convs "
                         f"with symmetric zero padding; this one has {', '.join(problems)}")
    return int(p)


def pad(x_NHWC: jax.Array, p: int) -> jax.Array:
    """Zero padding of the spatial axes (what ``nn.Conv`` does internally)."""
    return jnp.pad(x_NHWC, ((0, 0), (p, p), (p, p), (0, 0))) if p else x_NHWC


def padded_range(x_NHWC: jax.Array, p: int) -> tuple[jax.Array, jax.Array]:
    """Per-channel ``(min [C], max [C])`` of the padded input (float32)."""
    x = x_NHWC.astype(jnp.float32).reshape(-1, x_NHWC.shape[-1])
    mn, mx = x.min(axis=0), x.max(axis=0)
    if p:
        mn, mx = jnp.minimum(mn, 0.0), jnp.maximum(mx, 0.0)
    return mn, mx


def kernel_rows(w_HWIO: np.ndarray) -> np.ndarray:
    """``[C, k * k * O]``: one row per input channel (what a scale ``s [C]`` multiplies)."""
    return np.moveaxis(np.asarray(w_HWIO), 2, 0).reshape(w_HWIO.shape[2], -1)


def conv_valid(x_NHWC: jax.Array, w_HWIO: jax.Array) -> jax.Array:
    """Float32 ``VALID`` conv (the input is already padded)."""
    return jax.lax.conv_general_dilated(x_NHWC, w_HWIO, (1, 1), "VALID", dimension_numbers=_DIMS)


def int_conv(qx_NHWC, qw_HWIO, zx, zw_O) -> jax.Array:
    """``sum_{dy,dx,c} (qx - zx) (qw - zw[o])`` over each ``VALID`` window, exactly, as int32.

    ``qx`` (padded input) and ``qw`` hold int8-range values: one ``int8 x int8 -> int32`` conv,
    then int32 corrections: ``zx * sum(qw[..., o])`` (every window is full, so it is a constant
    per output channel) and ``zw[o] * (window sum of qx)`` (an int8 ones-kernel conv; zero for
    symmetric weights), plus ``K zx zw`` with ``K = k * k * C``.
    """
    qx8, qw8 = qx_NHWC.astype(jnp.int8), qw_HWIO.astype(jnp.int8)
    acc = jax.lax.conv_general_dilated(qx8, qw8, (1, 1), "VALID", dimension_numbers=_DIMS,
                                       preferred_element_type=jnp.int32)
    kh, kw, c, _ = qw_HWIO.shape
    zx = jnp.asarray(zx, jnp.int32)
    zw = jnp.asarray(zw_O, jnp.int32)
    window = jax.lax.conv_general_dilated(qx8, jnp.ones((kh, kw, c, 1), jnp.int8), (1, 1), "VALID",
                                          dimension_numbers=_DIMS, preferred_element_type=jnp.int32)
    acc = acc - zx * qw_HWIO.astype(jnp.int32).sum(axis=(0, 1, 2))
    acc = acc - window * zw
    return acc + kh * kw * c * zx * zw
