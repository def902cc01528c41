"""Generated tokens/s and forwards per generated token of every DLM decoder x cache (``--mode=throughput``).

Used by ``benchmarks/dlm_decoding.py --mode=throughput``. The model is a LLaDA with **random
weights** (speed does not depend on the weights when every decoder uses a fixed number of commits
per step, which is what this table does: 4 tokens per forward where the rule has a count), default
d_model 512, 8 layers, 8 heads, MLP 1408, vocab 8192 (~34M parameters), prompt 64, 256 generated
tokens, batch 1. Accounting: tokens/s = generated tokens (batch x generate length, **never prompt
tokens**) / wall seconds of the whole decode call (compiled beforehand); forwards/token = model
calls / generated tokens per row (a cached call counts as one). Decoders are timed in interleaved
rounds in one process, the best of ``rounds`` kept.
"""

import dataclasses
import time

import jax
import numpy as np

from jaxlab.dlm import (
    DecodeConfig,
    ReMDMSchedule,
    fastdllm_generate,
    llada_generate,
    llada_remask_generate,
    make_decoder,
    remdm_generate,
    remedi_generate,
)
from jaxlab.models.dlm import LLaDA, LLaDAConfig

def build(d_model=512, n_layers=8, n_heads=8, mlp=1408, vocab=8192, seed=0):
    config = LLaDAConfig(d_model=d_model, n_heads=n_heads, n_kv_heads=n_heads, n_layers=n_layers,
                         mlp_hidden_size=mlp, vocab_size=vocab, embedding_size=vocab, max_sequence_length=1024,
                         rope_theta=10000.0, mask_token_id=vocab - 2, eos_token_id=vocab - 3, pad_token_id=vocab - 3)
    module = LLaDA(config)
    params = module.init(jax.random.key(seed), np.zeros((1, 8), np.int32))["params"]
    return module, params


def decoders(module, gen: int, block: int, per_step: int):
    MASK, EOS = module.config.mask_token_id, module.config.eos_token_id
    """``[(name, cache, fn(params, prompt) -> (tokens, num_forward))]``; every rule commits ``per_step`` per call."""
    steps = gen // per_step
    base = DecodeConfig(generate_length=gen, initial_window_length=block, block_size=block, decode_algo="fixed",
                        decode_param=per_step, refresh_count=block, mask_id=MASK, eos_id=EOS, pad_id=EOS)
    rows = []

    def dcd(window, cache):
        config = dataclasses.replace(base, window_type=window, cache_type=cache)

        def run(params, prompt):
            out = make_decoder(module, config, *prompt.shape)(params, prompt, jax.random.key(0))
            return out["tokens"], out["num_forward"]

        return run

    for cache in ("none", "prefix", "dual"):
        rows.append(("block (DCD static)", cache, dcd("static", cache)))
    for cache in ("none", "prefix", "dual", "dual-delay2"):
        rows.append(("DCD sliding", cache, dcd("sliding", cache)))

    def wrap(fn, **kw):
        def run(params, prompt):
            r = fn(module, params, prompt, mask_id=MASK, gen_length=gen, **kw)
            return r.tokens, r.num_forward

        return run

    rows.append(("LLaDA generate", "none", wrap(llada_generate, steps=steps, block_length=block)))
    for cache in ("none", "prefix", "dual"):
        rows.append(("Fast-dLLM", cache, wrap(fastdllm_generate, steps=steps, block_length=block, cache=cache)))
    rows.append(("ReMDM-cap", "none", wrap(remdm_generate, steps=steps, temperature=0.0, rng=jax.random.key(0),
                                           schedule=ReMDMSchedule("cap"))))
    for cache in ("none", "prefix", "dual"):
        rows.append(("LLaDA-ReMDM (remask 1)", cache, wrap(llada_remask_generate, steps=steps, block_length=block,
                                                           cache=cache)))
    for cache in ("none", "prefix", "dual"):
        rows.append(("RemeDi keep-top-K", cache, wrap(remedi_generate, steps=steps, block_length=block, cache=cache)))
    return rows


def throughput(*, gen=256, prompt_length=64, block=32, per_step=4, rounds=2, model_kw=None, only=()) -> list[dict]:
    """``only``: keep the decoders whose name contains one of these substrings (all when empty)."""
    module, params = build(**(model_kw or {}))
    n_params = sum(p.size for p in jax.tree.leaves(params))
    prompt = np.random.default_rng(0).integers(0, module.config.vocab_size - 3, (1, prompt_length)).astype(np.int32)
    rows = [r for r in decoders(module, gen, block, per_step) if not only or any(o in r[0] for o in only)]
    best = {i: float("inf") for i in range(len(rows))}
    forwards = {}
    for i, (_, _, fn) in enumerate(rows):  # compile (and check) outside the clock
        tokens, nf = jax.block_until_ready(fn(params, prompt))
        forwards[i] = int(nf)
        if (np.asarray(tokens) == module.config.mask_token_id).any():
            raise RuntimeError(f"{rows[i][0]} left masks")
    for _ in range(rounds):
        for i, (_, _, fn) in enumerate(rows):
            start = time.perf_counter()
            jax.block_until_ready(fn(params, prompt))
            best[i] = min(best[i], time.perf_counter() - start)
    out = []
    for i, (name, cache, _) in enumerate(rows):
        out.append(dict(decoder=name, cache=cache, forwards=forwards[i], forwards_per_token=f"{forwards[i] / gen:.3f}",
                        seconds=f"{best[i]:.4g}", generated_tokens_per_s=f"{gen / best[i]:.1f}"))
    print(f"LLaDA with random weights, {n_params / 1e6:.1f}M params; prompt {prompt_length}, {gen} generated tokens, "
          f"batch 1, block/window {block}, {per_step} commits per forward; best of {rounds} interleaved rounds")
    return out
