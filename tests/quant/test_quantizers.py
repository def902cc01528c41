"""Uniform quantisers, the int8 matmul, int4 packing and the per-layer fake/integer agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.quant import quantizers as qz
from jaxlab.quant.runtime import linear


@pytest.mark.parametrize("symmetric", [True, False])
def test_int_matmul_is_exact(symmetric):
    rng = np.random.default_rng(0)
    qmin, qmax = qz.int_range(8, symmetric)
    qx = rng.integers(qmin, qmax + 1, (5, 7, 33))
    qw = rng.integers(qmin, qmax + 1, (33, 6))
    zx = 0 if symmetric else 17
    zw = np.zeros(6, np.int64) if symmetric else rng.integers(-20, 20, 6)
    want = np.einsum("...i,io->...o", qx - zx, qw - zw)
    got = qz.int_matmul(jnp.asarray(qx), jnp.asarray(qw), zx, jnp.asarray(zw))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)])
def test_quantizer_grid_and_roundtrip(bits, symmetric):
    x = jnp.linspace(-3.0, 5.0, 101)
    step, zp = qz.range_to_params(x.min(), x.max(), bits, symmetric)
    q = qz.quantize(x, step, zp, bits, symmetric)
    qmin, qmax = qz.int_range(bits, symmetric)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    assert float(jnp.abs(qz.dequantize(q, step, zp) - x).max()) <= float(step) / 2 + 1e-6
    assert float(qz.fake_quant(jnp.zeros(()), step, zp, bits, symmetric)) == 0.0  # zero is exact


def test_mse_weight_search_beats_minmax_on_outliers():
    w = np.random.default_rng(1).standard_normal((256, 8)).astype(np.float32)
    w[0] *= 30.0  # one outlier row
    err = {}
    for search in ("mse", "minmax"):
        step, zp = qz.weight_params(w, 4, True, search)
        err[search] = float(((qz.fake_quant(w, step, zp, 4, True) - w) ** 2).sum())
    assert err["mse"] < err["minmax"]


def test_int4_pack_roundtrip_and_range():
    q = np.random.default_rng(2).integers(-8, 8, (7, 5))
    packed = qz.pack_int4(q)
    assert packed.dtype == np.uint8 and packed.size == 18
    np.testing.assert_array_equal(qz.unpack_int4(packed, q.shape), q)
    with pytest.raises(ValueError, match="do not fit 4 bits"):
        qz.pack_int4(np.array([8]))


@pytest.mark.parametrize("bits", [1, 9, 8.0, True])
def test_bit_width_out_of_range_is_refused(bits):
    with pytest.raises(ValueError, match="out of range"):
        qz.check_bits(bits, "weight")


@pytest.mark.parametrize("act_symmetric,weight_symmetric", [(False, True), (True, False)])
def test_fake_and_integer_paths_give_identical_integers(act_symmetric, weight_symmetric):
    """One tabled linear: the integer path's int32 accumulator equals the fake-quant path's
    product divided by the two steps (exact float32 sums at this size)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 9, 48)) * 2 + 0.5, jnp.float32)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    w_step, w_zp = qz.weight_params(w, 8, weight_symmetric, "mse")
    a_step, a_zp = qz.range_to_params(jnp.min(x) * 0.8, jnp.max(x) * 0.8, 8, act_symmetric)  # some clipping
    entry = dict(
        kernel=w, bias=jnp.zeros((1, 24)), bias_row=jnp.zeros(1, jnp.int32), act_row=jnp.zeros(1, jnp.int32),
        w_int=qz.quantize(w, w_step, w_zp, 8, weight_symmetric), w_step=w_step, w_zp=w_zp,
        a_step=a_step[None], a_zp=a_zp[None],
    )
    k = jnp.asarray(0)
    with jax.default_matmul_precision("highest"):
        fake, _ = linear(entry, x, k, "fake", 8, act_symmetric)
        integer, _ = linear(entry, x, k, "integer", 8, act_symmetric)
    qx = qz.quantize(x, a_step, a_zp, 8, act_symmetric)
    acc = qz.int_matmul(qx, entry["w_int"], a_zp, w_zp)
    np.testing.assert_array_equal(np.rint(np.asarray(fake) / (a_step * w_step)), np.asarray(acc))
    np.testing.assert_array_equal(np.rint(np.asarray(integer) / (a_step * w_step)), np.asarray(acc))
    np.testing.assert_allclose(fake, integer, rtol=1e-5, atol=1e-5)
