"""Running a ``QuantizedDiT``: a flax method interceptor that replaces the tabled linears.

A table entry with ``in_shift`` (``jaxlab.quant.unfused``, U-DiT and DiC) first maps its input to
``(X - z_k) / s``; folded entries (DiT) receive the already smoothed input. Tabled ``nn.Conv``
layers (DiC) run as ``jaxlab.quant.conv`` describes: zero-pad, smooth, quantise, ``VALID`` conv
(``int8 x int8 -> int32`` ``conv_general_dilated`` in integer mode).

``quantized_apply(module, mode)`` returns an ``apply(variables, x, t, y, *args, method=None)``
with ``module.apply``'s signature, where ``variables = {"params": {"float": params, "quant":
tables}}`` (both are jit arguments, not constants). The sampling step ``k`` comes from the
timestep: ``tables["step_of_timestep"][t[0]]`` (a sampler calls the model with one timestep per
batch); it selects each layer's bias row and activation-quantiser group.

Modes:

- ``"float"``: the folded float kernels, no quantisation (equals the original model: the folding
  is exact; tests/quant/test_folding.py).
- ``"fake"``: ``dequant(quant(x)) @ dequant(w_int) + bias`` in float32 (simulated quantisation).
- ``"integer"``: ``quant(x)`` as int8, one ``int8 x int8 -> int32`` ``dot_general`` with the
  int8 weights, int32 zero-point corrections, then ``acc * (a_step * w_step) + bias`` in float32.
  The integers are the fake-quant path's (same quantiser); only the float rounding of the
  product differs.
- ``"probe"``: the float model, plus per-layer sums of squared output errors sown into
  ``quant_error`` (``act``: activations quantised, ``both``: weights too, ``ref``: the float
  output's sum of squares) for the per-layer error tables.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.quant.calibration import channels_last, layer_path, num_contracted
from jaxlab.quant.conv import conv_padding, conv_valid, int_conv, pad
from jaxlab.quant.quantizers import dequantize, int_matmul, quantize

MODES = ("float", "fake", "integer", "probe")


def _features(module) -> tuple[int, ...]:
    f = module.features
    return tuple(f) if isinstance(f, (tuple, list)) else (f,)


def linear(entry: dict, x2: jax.Array, k: jax.Array, mode: str, bits: int, act_symmetric: bool):
    """One tabled linear on ``x2 [..., I]`` at step ``k``: ``[..., O]`` float32 (and the probe's sums)."""
    return _tabled(entry, x2, k, mode, bits, act_symmetric, jnp.matmul, int_matmul)


def conv(entry: dict, x_NHWC: jax.Array, k: jax.Array, mode: str, bits: int, act_symmetric: bool, kernel_size: int,
         padding: int):
    """One tabled conv (``jaxlab.quant.conv``) on ``x [N, H, W, C]`` at step ``k``: ``[N, H', W', O]``
    float32 (and the probe's sums). The zero padding comes first, the smoothing after it."""
    shape = (kernel_size, kernel_size, x_NHWC.shape[-1], -1)  # the table's kernel is the flattened HWIO

    def product(x, w):
        return conv_valid(x, w.reshape(shape))

    def int_product(qx, w, zx, zw):
        return int_conv(qx, w.reshape(shape), zx, zw)

    return _tabled(entry, pad(x_NHWC, padding), k, mode, bits, act_symmetric, product, int_product)


def _tabled(entry, x, k, mode, bits, act_symmetric, product, int_product):
    """A tabled layer whose float product is ``product(x, kernel)`` and integer one
    ``int_product(qx, w_int, a_zp, w_zp)`` (int32, zero points corrected)."""
    bias = entry["bias"][entry["bias_row"][k]]
    x = x.astype(jnp.float32)
    if "in_shift" in entry:  # unfused smoothing (jaxlab.quant.unfused): X^ = (X - z_k) / s at the layer
        x = (x - entry["in_shift"][entry["in_shift_row"][k]]) * entry["in_inv_scale"]
    if "w_int" not in entry or mode == "float":
        return product(x, entry["kernel"]) + bias, None
    g = entry["act_row"][k]
    a_step, a_zp = entry["a_step"][g], entry["a_zp"][g]
    qx = quantize(x, a_step, a_zp, bits, act_symmetric)
    w_int = entry["w_int"].astype(jnp.int32)
    if mode == "integer":
        acc = int_product(qx, w_int, a_zp, entry["w_zp"])
        return acc.astype(jnp.float32) * (a_step * entry["w_step"]) + bias, None
    xq = dequantize(qx, a_step, a_zp)
    wq = dequantize(w_int, entry["w_step"], entry["w_zp"])
    if mode == "fake":
        return product(xq, wq) + bias, None
    ref = product(x, entry["kernel"]) + bias
    sums = dict(
        act=((product(xq, entry["kernel"]) + bias - ref) ** 2).sum(),
        both=((product(xq, wq) + bias - ref) ** 2).sum(),
        ref=(ref**2).sum(),
    )
    return ref, sums


def _interceptor(tables: dict, k: jax.Array, mode: str, meta: dict):
    q = meta["quant"]

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.DenseGeneral, nn.Conv)):
            return next_fun(*args, **kwargs)
        path = layer_path(module)
        entry = tables["layers"].get(path)
        if entry is None:
            return next_fun(*args, **kwargs)
        x = args[0]
        if isinstance(module, nn.Conv):
            y, sums = conv(entry, x, k, mode, q["act_bits"], q["act_symmetric"], module.kernel_size[0],
                           conv_padding(module))
        else:
            contracted = num_contracted(module)
            y2, sums = linear(entry, channels_last(x, contracted), k, mode, q["act_bits"], q["act_symmetric"])
            y = y2.reshape(*x.shape[: x.ndim - contracted], *_features(module))
        if sums is not None:
            for name, value in sums.items():
                module.sow("quant_error", name, value)
        return y.astype(module.dtype or jnp.float32)

    return interceptor


def quantized_apply(module, meta: dict, mode: str = "fake"):
    """``apply(variables, *args, method=None, **kwargs)`` like ``module.apply`` (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed values: {list(MODES)}")

    def apply(variables, x, t, *args, method=None, **kwargs):
        params = variables["params"]
        tables = params["quant"]
        table = tables["step_of_timestep"]
        k = jnp.maximum(table[jnp.clip(jnp.asarray(t)[0], 0, table.shape[0] - 1)], 0)  # io.check_schedule refuses others
        with nn.intercept_methods(_interceptor(tables, k, mode, meta)):
            return module.apply({"params": params["float"]}, x, t, *args, method=method, **kwargs)

    return apply


def variables(params: dict, qmodel) -> dict:
    """The ``variables`` argument of ``quantized_apply``'s function."""
    return {"params": {"float": params, "quant": qmodel.tables}}
