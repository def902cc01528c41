"""Decoding cost vs context length: softmax attention + KV cache against DiJiang's recurrent state.

  python -m benchmarks.lm_decoding                               # contexts 256, 1k, 4k, 16k
  python -m benchmarks.lm_decoding --contexts=256,1024 --new_tokens=16

Both models have the same size (``--hidden``, ``--layers``, ``--heads``, vocab 1024; GPT-NeoX layout).
For each context length L the cache is filled as if L tokens had been read (random keys and
values for softmax, a random state for DiJiang: the cost of a decode step does not depend on
the values), and ``--new_tokens`` tokens are decoded greedily by one jitted ``lax.scan`` of
one-token model calls starting at position L. Reported per model and length:

- ms/token: median over ``--repeats`` rounds (the two models alternate, round by round, in one
  process, so machine load affects both alike);
- tokens/s: 1000 / ms/token;
- cache MiB: the decoding state (KV cache ``2 x layers x L x heads x head_dim`` for softmax; the
  ``layers x heads x head_dim^2`` float32 state for DiJiang);
- peak MiB: XLA's memory analysis of the compiled decode loop (arguments + outputs + temporaries,
  parameters included).

DiJiang's per-token cost and memory are flat in L; the softmax model's grow linearly.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, print_table
from jaxlab.models.lm import CausalLM, LMConfig, init_cache


def _model(kind: str, args, max_len: int) -> tuple[CausalLM, dict]:
    cfg = LMConfig.from_dict(dict(
        layout="gpt_neox", vocab_size=1024, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
        num_kv_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=max_len,
        attention=kind, dtype=args.dtype,
    ))
    module = CausalLM(cfg)
    params = jax.jit(lambda: jax.tree.map(lambda x: x, __import__("flax").linen.unbox(
        module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"])))()
    return module, params


def _filled_cache(module, batch: int, length: int):
    cache = init_cache(module.config, batch, length)
    return jax.tree.map(lambda x: (0.1 * jax.random.normal(jax.random.key(1), x.shape)).astype(x.dtype), cache)


def _decoder(module, new_tokens: int):
    def run(params, cache, token, offset):
        def step(carry, i):
            tok, cache = carry
            logits, cache = module.apply({"params": params}, tok[:, None], cache=cache, offset=offset + i)
            nxt = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
            return (nxt, cache), nxt

        (_, cache), out = jax.lax.scan(step, (token, cache), jnp.arange(new_tokens))
        return out, cache

    return jax.jit(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="256,1024,4096,16384")
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    max_len = max(contexts) + args.new_tokens
    models = {kind: _model(kind, args, max_len) for kind in ("softmax", "dijiang")}
    setups = {}
    for length in contexts:
        for kind, (module, params) in models.items():
            cache = _filled_cache(module, args.batch, length + args.new_tokens)
            fn = _decoder(module, args.new_tokens)
            token, offset = jnp.zeros((args.batch,), jnp.int32), jnp.int32(length)
            compiled = fn.lower(params, cache, token, offset).compile()
            mem = compiled.memory_analysis()
            peak = None if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                             + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
            jax.block_until_ready(compiled(params, cache, token, offset))  # warm-up
            cache_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))
            setups[(kind, length)] = (compiled, (params, cache, token, offset), cache_bytes, peak)
    times = {key: [] for key in setups}
    for _ in range(args.repeats):  # interleaved rounds: both models see the same machine load
        for key, (compiled, call_args, _, _) in setups.items():
            start = time.perf_counter()
            out, _ = compiled(*call_args)
            jax.block_until_ready(out)
            times[key].append((time.perf_counter() - start) / args.new_tokens)
            if not np.isfinite(np.asarray(out)).all():
                raise FloatingPointError(f"{key}: non-finite decode output")
    rows = []
    for (kind, length), (_, _, cache_bytes, peak) in setups.items():
        ms = 1000 * statistics.median(times[(kind, length)])
        rows.append({"attention": kind, "context": length, "ms/token": f"{ms:.2f}", "tokens/s": f"{1000 / ms:.0f}",
                     "cache MiB": f"{cache_bytes / 2**20:.2f}",
                     "peak MiB": "n/a" if peak is None else f"{peak / 2**20:.1f}"})
    rows.sort(key=lambda r: (r["attention"] != "softmax", r["context"]))
    print(f"device {device_name()}; hidden {args.hidden}, {args.layers} layers, {args.heads} heads, batch {args.batch}, "
          f"{args.dtype}; {args.new_tokens} new tokens after each context; median of {args.repeats} interleaved rounds")
    print_table(rows, ["attention", "context", "ms/token", "tokens/s", "cache MiB", "peak MiB"])


if __name__ == "__main__":
    main()
