"""Fused attention kernel vs the XLA path at the models' shapes, on this machine's chip.

  python -m benchmarks.attention_kernels            # on a GPU or TPU chip
  python -m benchmarks.attention_kernels --tiny     # tiny shapes (CPU: both columns are XLA)

For each case (the attention shape of a model in this project) prints one row:

- ``path``: what ``jaxlab.nn.dot_product_attention`` compiled to here, read from the compiled
  program (``triton`` for the Pallas GPU kernel, ``mosaic`` for the Pallas TPU kernel, ``xla``);
- ``err_out``, ``err_grad``: max |kernel - reference| over max |reference| for the output and for
  the gradients of q, k, v (worst of the three), where the reference is ``xla_attention`` on
  float32 copies of the inputs at ``precision="highest"`` (so bf16 rows show the bf16 error of
  each path against exact arithmetic, ``xla_err_*`` the XLA path's own for comparison);
- ``fwd_ms``/``xla_fwd_ms`` and ``fwd_bwd_ms``/``xla_fwd_bwd_ms``: median times of the forward and
  of forward + backward (``jax.grad`` of a weighted sum), kernel path vs XLA path, side by side.
"""

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, print_table, time_fn
from jaxlab.nn import dot_product_attention
from jaxlab.nn.attention import xla_attention


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    length: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    dtype: str


CASES = (
    Case("DiT-XL/2 256px", 32, 256, 16, 16, 72, False, "bfloat16"),
    Case("DiT-XL/2 512px", 8, 1024, 16, 16, 72, False, "bfloat16"),
    Case("LLaDA-1B 512 tokens", 4, 512, 16, 16, 128, False, "bfloat16"),
    Case("causal LM, GQA 16/4", 4, 2048, 16, 4, 64, True, "bfloat16"),
    Case("causal LM 8k tokens", 1, 8192, 16, 16, 128, True, "bfloat16"),
    Case("float32, causal", 4, 512, 8, 8, 64, True, "float32"),
)
TINY_CASES = (
    Case("tiny", 1, 128, 2, 2, 32, False, "float32"),
    Case("tiny causal GQA", 1, 128, 4, 2, 32, True, "bfloat16"),
)


def inputs(case: Case, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (case.batch, case.length, case.heads, case.head_dim))
    k, v = (jax.random.normal(key, (case.batch, case.length, case.kv_heads, case.head_dim)) for key in keys[1:])
    return tuple(a.astype(case.dtype) for a in (q, k, v))


def compiled_path(compiled) -> str:
    """``triton``, ``mosaic`` or ``xla``: the attention implementation in a compiled program."""
    text = compiled.as_text()
    if "__gpu$xla.gpu.triton" in text:  # a Pallas Triton call (XLA's own Triton fusions are named otherwise)
        return "triton"
    if "tpu_custom_call" in text:
        return "mosaic"
    return "xla"


def _loss_and_grad(attention, head_dim: int):
    weights = jnp.cos(jnp.arange(head_dim, dtype=jnp.float32))

    def loss(q, k, v):
        return (attention(q, k, v).astype(jnp.float32) * weights).sum()

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def measure(case: Case, repeats: int) -> dict:
    q, k, v = inputs(case)

    def kernel(q, k, v):
        return dot_product_attention(q, k, v, is_causal=case.causal)

    def xla(q, k, v):
        return dot_product_attention(q, k, v, is_causal=case.causal, implementation="xla")

    def exact(q, k, v):
        with jax.default_matmul_precision("highest"):
            return xla_attention(q, k, v, scale=case.head_dim**-0.5, is_causal=case.causal)

    q32, k32, v32 = (a.astype(jnp.float32) for a in (q, k, v))
    ref_out = jax.jit(exact)(q32, k32, v32)
    ref_grads = _loss_and_grad(exact, case.head_dim)(q32, k32, v32)
    row = dict(case=case.name, shape=f"B{case.batch} T{case.length} N{case.heads}/{case.kv_heads} H{case.head_dim}",
               dtype=case.dtype)
    for label, fn in (("", kernel), ("xla_", xla)):
        fwd = jax.jit(fn).lower(q, k, v).compile()  # compiled once: read for its path, then timed
        if not label:
            row["path"] = compiled_path(fwd)
        grad = _loss_and_grad(fn, case.head_dim)
        out, grads = fwd(q, k, v), grad(q, k, v)
        if not (np.isfinite(np.asarray(out, np.float32)).all() and all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads)):
            raise FloatingPointError(f"{case.name}: non-finite {'XLA' if label else 'kernel'} attention output or gradient")
        row[f"{label}err_out"] = f"{_relative_error(out, ref_out):.1e}"
        row[f"{label}err_grad"] = f"{max(_relative_error(g, r) for g, r in zip(grads, ref_grads)):.1e}"
        row[f"{label}fwd_ms"] = f"{1e3 * time_fn(fwd, q, k, v, repeats=repeats):.3f}"
        row[f"{label}fwd_bwd_ms"] = f"{1e3 * time_fn(grad, q, k, v, repeats=repeats):.3f}"
    return row


COLUMNS = ["case", "shape", "dtype", "path", "err_out", "xla_err_out", "err_grad", "xla_err_grad",
           "fwd_ms", "xla_fwd_ms", "fwd_bwd_ms", "xla_fwd_bwd_ms"]


def run(tiny: bool, repeats: int = 10) -> list[dict]:
    """One row per case, printed as measured; a case that raises becomes a ``failed`` row."""
    rows = []
    for case in TINY_CASES if tiny else CASES:
        try:
            row = measure(case, repeats)
        except Exception as error:  # report it and measure the rest
            message = " ".join(str(error).split())[:200]
            row = dict.fromkeys(COLUMNS, "-") | dict(case=case.name, path=f"failed: {type(error).__name__}: {message}")
        print(row, flush=True)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU smoke run)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rows = run(args.tiny, args.repeats)
    print(f"device: {device_name()}")
    print_table(rows, COLUMNS)
    if any(row["path"].startswith("failed") for row in rows):
        raise SystemExit("some cases failed (rows above)")


if __name__ == "__main__":
    main()
