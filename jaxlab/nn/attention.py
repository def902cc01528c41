"""Scaled dot-product attention, and multi-head self-attention with a fused, head-major qkv projection."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn import attention_kernels as kernels
from jaxlab.nn.linear import dense_general


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    implementation: str | None = None,
) -> jax.Array:
    """``softmax(q k^T * scale) v`` per head, as ``jax.nn.dot_product_attention`` computes it.

    Args:
      q: ``[B, T, N, H]`` queries.
      k, v: ``[B, S, K, H]`` keys and values; ``K`` divides ``N`` (grouped-query attention:
        query head ``n`` uses key/value head ``n // (N / K)``).
      mask: optional bool, broadcastable to ``[B, N, T, S]``; False hides a key (a row with
        every key hidden attends uniformly to all keys, as in JAX's).
      scale: logit scale (> 0), default ``H ** -0.5``.
      is_causal: query ``i`` sees keys ``j <= i`` only (top-left aligned, as ``jax.nn``'s),
        combined with ``mask``.
      implementation: None picks per platform when the program is lowered (below); ``"xla"``
        always runs the XLA arrangement.

    Returns:
      ``[B, T, N, H]`` in ``q.dtype``. Logits and softmax are float32; the products take the
      inputs' dtype (bf16 on accelerators) and accumulate in float32.

    Kernel per platform, chosen by ``jax.lax.platform_dependent`` at lowering time (so a
    program traced on a CPU host and lowered for TPU gets the TPU kernel):

    - TPU: Pallas flash attention; GPU (cuda): Pallas Triton flash attention (see
      ``jaxlab.nn.attention_kernels`` for why these and their constraints). Where a kernel
      cannot take the shapes or the mask it logs one line and that platform runs the XLA path.
    - CPU and others: ``xla_attention``.

    Autodiff: reverse mode (``jax.grad``) uses the kernels' backward kernels. The Pallas kernels
    define first-order VJPs only (no forward mode, no second derivatives), so where forward-mode
    autodiff is visible when this function is traced (``jax.jvp``, ``jax.jacfwd``,
    ``jax.hessian`` applied around the call) the XLA path runs on every platform instead, with a
    one-line log. A forward-mode transformation applied to an already-traced program (e.g.
    ``jax.hessian(jax.jit(f))``, or through ``nn.scan``/``nn.remat`` bodies, which are traced
    before they are differentiated) cannot be seen here; pass ``implementation="xla"`` for such
    uses (the Pallas TPU kernel raises "Higher-order AD not supported" otherwise).

    Where the kernels and the XLA path differ: a query that sees no key at all (all its keys
    masked) gets the mean of all values from the XLA path; the kernels return another value for
    such rows when ``is_causal`` is combined with a key padding mask (an example whose keys are
    all hidden gets the mean of its values from the kernels too).
    """
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    if n % kv_heads:
        raise ValueError(f"{n} query heads cannot share {kv_heads} key/value heads (it must divide {n})")
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != h:
        raise ValueError(f"keys {k.shape} and values {v.shape} must both be [B={b}, S, K, H={h}] for queries {q.shape}")
    scale = h**-0.5 if scale is None else float(scale)
    if scale <= 0:
        raise ValueError(f"scale={scale} must be positive")
    if implementation not in (None, "xla"):
        raise ValueError(f"implementation={implementation!r}; use None (per platform) or 'xla'")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(f"mask must be bool (True = visible), got {mask.dtype}")
        try:
            jnp.broadcast_shapes(mask.shape, (b, n, t, s))
        except ValueError:
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to [B, N, T, S] = {(b, n, t, s)}") from None

    if implementation == "xla":
        return xla_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)
    if _under_forward_mode(q, k, v):
        kernels.log_fallback("TPU/GPU flash attention", "forward-mode autodiff (jvp, jacfwd, hessian) is tracing it")
        return xla_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)
    key_padding = _key_padding_kind(mask)
    use_tpu = _kernel_applies("TPU flash attention", kernels.tpu_constraint_error(t, s, h, key_padding))
    use_gpu = _kernel_applies("GPU flash attention", kernels.gpu_constraint_error(t, s, h, key_padding, is_causal))
    if not (use_tpu or use_gpu):
        return xla_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)
    axes = kernels.shard_axes(q.shape, k.shape)
    return _per_platform(q, k, v, mask, scale, is_causal, use_tpu, use_gpu, axes)


def _under_forward_mode(*arrays) -> bool:
    """Whether a forward-mode autodiff tracer (``jax.jvp``, also inside ``jax.hessian``/``jacfwd``)
    is among the tracers wrapping ``arrays``. Reverse mode (``jax.grad``/``vjp``) linearizes
    without JVP tracers and is not detected. Walks each tracer's wrapped value (``primal`` of
    autodiff tracers, ``val`` of batching / shard_map tracers)."""
    from jax._src.interpreters.ad import JVPTracer

    pending = [x for x in arrays if isinstance(x, jax.core.Tracer)]
    while pending:
        x = pending.pop()
        if isinstance(x, JVPTracer):
            return True
        for attr in ("primal", "val"):
            inner = getattr(x, attr, None)
            if isinstance(inner, jax.core.Tracer):
                pending.append(inner)
    return False


def _kernel_applies(kernel: str, reason: str | None) -> bool:
    if reason is not None:
        kernels.log_fallback(kernel, reason)
    return reason is None


@partial(jax.jit, static_argnums=range(4, 9))
def _per_platform(q, k, v, mask, scale, is_causal, use_tpu, use_gpu, axes):
    """``jax.lax.platform_dependent`` over the kernels that apply and the XLA path. Jitted so
    that the blocks of a model, which call it with the same shapes, trace the kernels once."""

    def xla(q, k, v, kv_valid):
        return xla_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)

    branches = {}
    if use_tpu:
        tpu = partial(kernels.tpu_flash_attention, scale=scale, is_causal=is_causal)
        branches["tpu"] = partial(_with_key_padding, partial(kernels.per_device, tpu, axes))
    if use_gpu:
        gpu = partial(kernels.gpu_flash_attention, scale=scale, is_causal=is_causal)
        branches["cuda"] = partial(kernels.per_device, gpu, axes)
    kv_valid = None if mask is None else _kv_valid(mask, q.shape[0], k.shape[1])
    return jax.lax.platform_dependent(q, k, v, kv_valid, default=xla, **branches)


def _with_key_padding(kernel, q, k, v, kv_valid):
    """``kernel`` with a key padding mask, where an example whose keys are all hidden gets the
    mean of its values (the XLA path's uniform attention; the kernel itself sees all its keys)."""
    if kv_valid is None:
        return kernel(q, k, v, None)
    hidden = ~kv_valid.any(axis=-1)  # [B]
    out = kernel(q, k, v, kv_valid | hidden[:, None])
    mean_v = jnp.repeat(v.astype(jnp.float32).mean(axis=1), q.shape[2] // k.shape[2], axis=1)  # [B, N, H]
    return jnp.where(hidden[:, None, None, None], mean_v[:, None].astype(out.dtype), out)


def _key_padding_kind(mask: jax.Array | None) -> bool | None:
    """False without a mask, True for a key padding mask (shape ``[B or 1, 1, 1, S or 1]``),
    None for any other mask."""
    if mask is None:
        return False
    shape = (1,) * (4 - mask.ndim) + mask.shape
    return True if shape[1] == 1 and shape[2] == 1 else None


def _kv_valid(mask: jax.Array, b: int, s: int) -> jax.Array:
    """A key padding mask ``[B or 1, 1, 1, S or 1]`` as ``[B, S]``."""
    shape = (1,) * (4 - mask.ndim) + mask.shape
    return jnp.broadcast_to(mask.reshape(shape[0], shape[3]), (b, s))


def xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    scale: float,
    is_causal: bool = False,
) -> jax.Array:
    """The XLA path of ``dot_product_attention`` (same arguments), arranged for XLA:CPU.

    On XLA:CPU it runs DiT-S/2's attention forward + backward ~20% faster than
    ``jax.nn.dot_product_attention``: the softmax normalisation divides the ``[T, H]`` output
    rather than the ``[T, S]`` probabilities, and the scale is folded into the exponent
    (``exp(scale * (logits - max))``, one fused elementwise pass). Grouped key/value heads are
    read in place (queries viewed as ``[B, T, K, N/K, H]``), not repeated; without grouping the
    products stay 4-D, which XLA:CPU runs faster.

    Numerics: ``q`` and ``k`` enter the product in their dtype and the logits accumulate in
    float32 (the scale is applied to the float32 logits, so bf16 queries are not rounded after
    scaling); the weights are cast to ``v.dtype`` for the second product (float32
    accumulation), and the denominator sums those same cast weights, so each output is an exact
    convex combination of the values with the weights that were used.
    """
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    g = n // kv_heads
    if g > 1:  # query heads grouped per key/value head
        q_heads, kv, w = "btkgh", "bskh", "bkgts"
        q = q.reshape(b, t, kv_heads, g, h)
    else:  # plain multi-head: 4-D products (XLA:CPU runs the grouped 5-D form ~30% slower at DiT-S/2's shapes)
        q_heads, kv, w = "btnh", "bsnh", "bnts"
    logits = jnp.einsum(f"{q_heads},{kv}->{w}", q, k, preferred_element_type=jnp.float32)
    visible = None if mask is None else jnp.broadcast_to(mask, (b, n, t, s)).reshape(logits.shape)
    if is_causal:
        causal = jnp.tril(jnp.ones((t, s), bool))
        visible = causal if visible is None else visible & causal
    if visible is not None:
        logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    peak = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    weights = jnp.exp((logits - peak) * scale).astype(v.dtype)
    out = jnp.einsum(f"{w},{kv}->{q_heads}", weights, v, preferred_element_type=jnp.float32)
    denom = jnp.moveaxis(weights.astype(jnp.float32).sum(axis=-1), -1, 1)  # [B, T, heads as in out]
    out = out / denom[..., None]
    return out.reshape(b, t, n, h).astype(q.dtype)


class MultiHeadSelfAttention(nn.Module):
    """timm-style ``Attention``: ``[N, T, D] -> [N, T, D]``.

    The qkv kernel is ``[D, 3, heads, head_dim]`` (the reference's ``[3D, D]`` Linear,
    whose outputs are ``[q | k | v]``, each head-major), so heads can be sharded on a
    tensor-parallel mesh axis. The output projection kernel is ``[heads, head_dim, D]``.
    """

    num_heads: int
    qkv_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads
        # DenseGeneral initialises the flat [D, 3D] / [D, D] view: Xavier as in the reference.
        qkv = dense_general(
            (3, self.num_heads, head_dim),
            ("embed", None, "heads", "kv"),
            use_bias=self.qkv_bias,
            dtype=self.dtype,
            name="qkv",
        )(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        out = dot_product_attention(q, k, v, mask=mask)
        return dense_general(
            d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name="proj"
        )(out)
