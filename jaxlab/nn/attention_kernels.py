"""Fused (flash) attention kernels for TPU and GPU, and when each one applies.

Both are the Pallas kernels that ship with JAX (``jax.experimental.pallas.ops``); the entry point
``jaxlab.nn.dot_product_attention`` picks one per platform when the program is lowered and falls
back to its XLA arrangement, with a one-line log, where a kernel's constraints are not met.

- TPU: ``pallas.ops.tpu.flash_attention`` (Mosaic). The scale is applied to the float32 logits
  inside the kernel (``sm_scale``), so bf16 queries are not rounded after scaling; a key padding
  mask becomes segment ids (queries 1, keys 1 where visible / 0 where hidden); ``is_causal`` is
  the kernel's causal mask. Splash attention (same package) was the alternative: it shares key/
  value heads natively (grouped-query attention without the repeat done here) but has no logit
  scale, so bf16 ``q`` would have to be scaled and rounded before the kernel.
- GPU: ``pallas.ops.gpu.attention.mha`` (Triton). Chosen over cuDNN
  (``jax.nn.dot_product_attention(implementation="cudnn")``) because it lowers without a GPU (the
  tests lower it for "cuda" in CI and run it in interpret mode on CPU), takes float32 as well as
  bf16/fp16, and its constraints are known at trace time; cuDNN checks for a GPU while tracing
  ("cuDNN is not detected"), so a program holding it cannot even be traced on a CPU machine, and
  no test here could run it. Its segment ids are shared by queries and keys, so key padding masks
  fall back to XLA on GPU.

Both kernels take ``[B, T, N, H]`` arrays here; grouped key/value heads are repeated to ``N``
(the kernels are multi-head only). Under a mesh (``jax.set_mesh``) each kernel runs per device
through ``jax.shard_map``: batch over the mesh axes the logical name ``"batch"`` resolves to and
heads over those of ``"heads"`` (flax's logical axis rules in effect), where they divide.
"""

import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

_log = logging.getLogger(__name__)

# Sequence lengths must be multiples of the kernels' blocks (128 rows/keys by default).
BLOCK = 128


def tpu_constraint_error(t: int, s: int, head_dim: int, key_padding: bool | None) -> str | None:
    """Why the TPU flash kernel cannot run these shapes (None: it can). ``key_padding`` None: an
    arbitrary mask the kernel cannot express."""
    if key_padding is None:
        return "the mask is not a key padding mask [B or 1, 1, 1, S]"
    if t % BLOCK or s % BLOCK:
        return f"sequence lengths (queries {t}, keys {s}) are not multiples of {BLOCK}"
    return None


def gpu_constraint_error(t: int, s: int, head_dim: int, key_padding: bool | None, is_causal: bool) -> str | None:
    """Why the GPU (Triton) flash kernel cannot run these shapes (None: it can)."""
    if key_padding is not False:
        return "masks other than is_causal are not supported by the Triton kernel"
    if t % BLOCK or s % BLOCK:
        return f"sequence lengths (queries {t}, keys {s}) are not multiples of {BLOCK}"
    if is_causal and t != s:
        return f"its causal mask needs as many queries as keys (got {t} and {s})"
    if head_dim > 256:
        return f"head_dim {head_dim} > 256"
    return None


@functools.cache
def log_fallback(kernel: str, reason: str) -> None:
    """One log line per distinct (kernel, reason), at trace time: a warning where this process's
    default backend is the kernel's platform, debug level elsewhere (CPU users need not read it;
    the choice itself does not depend on the backend)."""
    platform = "tpu" if kernel.startswith("TPU") else "gpu"
    level = logging.WARNING if jax.default_backend() == platform else logging.DEBUG
    _log.log(level, "dot_product_attention: %s not used (%s); the XLA attention runs instead", kernel, reason)


def _repeat_kv(k: jax.Array, v: jax.Array, num_heads: int) -> tuple[jax.Array, jax.Array]:
    groups = num_heads // k.shape[2]
    if groups == 1:
        return k, v
    return jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)


def tpu_flash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_valid: jax.Array | None, *, scale: float, is_causal: bool
) -> jax.Array:
    """Pallas TPU flash attention. ``q [B, T, N, H]``, ``k, v [B, S, K, H]``, ``kv_valid [B, S]``
    bool or None -> ``[B, T, N, H]`` in ``q.dtype``. Runs on CPU under
    ``jax.experimental.pallas.tpu.force_tpu_interpret_mode()`` (tests)."""
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    b, t, n, _ = q.shape
    s = k.shape[1]
    k, v = _repeat_kv(k, v, n)
    segment_ids = None
    if kv_valid is not None:
        segment_ids = tpu_flash.SegmentIds(q=jnp.ones((b, t), jnp.int32), kv=kv_valid.astype(jnp.int32))
    blocks = tpu_flash.BlockSizes(
        block_q=BLOCK, block_k_major=BLOCK, block_k=BLOCK, block_b=1,
        block_q_major_dkv=BLOCK, block_k_major_dkv=BLOCK, block_k_dkv=BLOCK, block_q_dkv=BLOCK,
        block_k_major_dq=BLOCK, block_k_dq=BLOCK, block_q_dq=BLOCK,
    )
    del s
    out_BNTH = tpu_flash.flash_attention(
        *(a.transpose(0, 2, 1, 3) for a in (q, k, v)),
        segment_ids=segment_ids, causal=is_causal, sm_scale=scale, block_sizes=blocks,
    )
    return out_BNTH.transpose(0, 2, 1, 3).astype(q.dtype)


def gpu_flash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_valid: jax.Array | None, *, scale: float, is_causal: bool,
    interpret: bool = False,
) -> jax.Array:
    """Pallas GPU (Triton) flash attention; shapes as ``tpu_flash_attention`` (``kv_valid`` must be
    None). ``interpret=True`` runs it on CPU (tests)."""
    from jax.experimental.pallas.ops.gpu import attention as gpu_flash

    if kv_valid is not None:
        raise ValueError("the Triton attention kernel takes no key padding mask; use the XLA path")
    k, v = _repeat_kv(k, v, q.shape[2])
    blocks = gpu_flash.BlockSizes(
        block_q=BLOCK, block_k=BLOCK, block_q_dkv=32, block_kv_dkv=32, block_q_dq=32, block_kv_dq=32
    )
    out = gpu_flash.mha(q, k, v, None, sm_scale=scale, causal=is_causal, block_sizes=blocks, interpret=interpret)
    return out.astype(q.dtype)


def shard_axes(q_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> tuple:
    """``(batch_axes, head_axes)``: the mesh axes the logical names ``"batch"`` and ``"heads"``
    resolve to under flax's active rules and the ambient mesh, each None unless they divide the
    batch / every head count. Resolved outside the jitted dispatch (flax's rules are not part of
    jit's cache key)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return None, None
    return _mesh_axes("batch", mesh, (q_shape[0],)), _mesh_axes("heads", mesh, (q_shape[2], k_shape[2]))


def per_device(kernel: Callable, axes: tuple, q: jax.Array, k: jax.Array, v: jax.Array, kv_valid: jax.Array | None):
    """``kernel(q, k, v, kv_valid)`` run per device under the ambient mesh (plain call without one).

    A Pallas kernel is a custom call that XLA's partitioner cannot split; in ``shard_map`` each
    device runs it on its rows of the batch (``axes[0]``) and its heads (``axes[1]``).
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(q, k, v, kv_valid)
    batch_axes, head_axes = axes
    qkv_spec = PartitionSpec(batch_axes, None, head_axes, None)
    in_specs = (qkv_spec, qkv_spec, qkv_spec, None if kv_valid is None else PartitionSpec(batch_axes, None))
    return jax.shard_map(kernel, mesh=mesh, in_specs=in_specs, out_specs=qkv_spec, check_vma=False)(
        q, k, v, kv_valid
    )


def _mesh_axes(logical: str, mesh, sizes: tuple[int, ...]):
    """The mesh axes ``logical`` resolves to under flax's active rules (the one resolver,
    ``jaxlab.train.sharding.logical_to_spec``), if they divide every size."""
    from jaxlab.train.sharding import logical_to_spec

    specs = {logical_to_spec((logical,), (size,), mesh, rules=None)[0] for size in sizes}
    if len(specs) != 1 or None in specs:
        return None
    (axes,) = specs
    return (axes,) if isinstance(axes, str) else tuple(axes)
