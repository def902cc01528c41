"""LLaDA-8B-shaped decoding rows for the accelerator suite (``accelerator_suite.py --llada_8b``).

On a GPU/TPU with room for the weights (bf16 compute, float32 params: ~32 GB, random weights):
block decoding (Fast-dLLM threshold 0.9, block 32) and DCD (window 32, threshold 0.9), each with
no / prefix / dual cache, 256 generated tokens after a 256-token prompt, batch 1, reported as
generated tokens/s (prompt tokens never counted). Blocks are scanned (``scan_blocks``) so the
program compiles in reasonable time.

On CPU nothing is materialised: ``lower_llada_8b`` traces and lowers the same decoder with
abstract parameters (``jax.eval_shape``), so the 8B program is checked to build without 32 GB of
host memory (``tests/dlm/test_accelerator_rows.py`` runs it at a reduced depth).
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.dlm.decoding import DecodeConfig, make_decoder
from jaxlab.models import build_model

DECODERS = (("block", "static"), ("DCD", "sliding"))
CACHES = ("none", "prefix", "dual")


def llada_8b(dtype: str = "bfloat16", prompt_length: int = 256, generate_length: int = 256, **overrides):
    """The LLaDA-8B preset (scanned blocks) with a context of prompt + generation."""
    return build_model("llada", "LLaDA-8B", dtype=dtype, scan_blocks=True,
                       max_sequence_length=prompt_length + generate_length, **overrides)


def configs(module, generate_length: int, block: int):
    cfg = module.config
    base = DecodeConfig(generate_length=generate_length, block_size=block, initial_window_length=block,
                        decode_algo="threshold", decode_param=0.9, mask_id=cfg.mask_token_id,
                        pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id, refresh_count=block)
    return [(name, cache, dataclasses.replace(base, window_type=window, cache_type=cache))
            for name, window in DECODERS for cache in CACHES]


def _abstract_params(module):
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return jax.tree.map(lambda b: getattr(b, "value", b), shapes, is_leaf=lambda b: hasattr(b, "value"))


def lower_llada_8b(dtype: str = "bfloat16", prompt_length: int = 256, generate_length: int = 256, block: int = 32,
                   only=None, **overrides) -> list[dict]:
    """Lowers every decoder x cache (or the ``(name, cache)`` pairs in ``only``) for the 8B shape with abstract
    params (no weights); -> rows with the parameter count and the lowered program's size."""
    module = llada_8b(dtype, prompt_length, generate_length, **overrides)
    params = _abstract_params(module)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    prompt = jax.ShapeDtypeStruct((1, prompt_length), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    rows = []
    for name, cache, config in configs(module, generate_length, block):
        if only is not None and (name, cache) not in only:
            continue
        lowered = make_decoder(module, config, 1, prompt_length).lower(params, prompt, key)
        rows.append(dict(program=f"LLaDA {n_params / 1e9:.2f}B {name} decoding, {cache} cache (lowered only)",
                         dtype=dtype, batch=1, result=f"{len(lowered.as_text()) / 1e3:.0f} kB StableHLO",
                         mfu_model="-", mfu_hw="-", mfu_model_datasheet="-"))
    return rows


def llada_8b_rows(dtype: str = "bfloat16", prompt_length: int = 256, generate_length: int = 256,
                  block: int = 32) -> list[dict]:
    """Runs every decoder x cache on the 8B shape (random weights): generated tokens/s, batch 1."""
    module = llada_8b(dtype, prompt_length, generate_length)
    cfg = module.config
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    params = jax.tree.map(lambda b: getattr(b, "value", b), params, is_leaf=lambda b: hasattr(b, "value"))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (1, prompt_length), 0, cfg.vocab_size - 512), np.int32)
    rows = []
    for name, cache, config in configs(module, generate_length, block):
        run = make_decoder(module, config, 1, prompt_length)
        jax.block_until_ready(run(params, prompt, jax.random.key(0)))  # compile outside the clock
        start = time.perf_counter()
        out = jax.block_until_ready(run(params, prompt, jax.random.key(0)))
        seconds = time.perf_counter() - start
        rows.append(dict(
            program=f"LLaDA {n_params / 1e9:.2f}B {name} decoding, {cache} cache", dtype=dtype, batch=1,
            result=f"{generate_length / seconds:.1f} generated tokens/s ({int(out['num_forward'])} forwards)",
            mfu_model="-", mfu_hw="-", mfu_model_datasheet="-",
        ))
    return rows
