"""Masked diffusion language models: decoders (and, from part B, the training objective).

- ``decode(module, params, prompt_ids, DecodeConfig(...))``: DCD sliding-window / block decoding
  with optional prefix / dual KV caches (``jaxlab.dlm.decoding``).
- ``llada_generate``: LLaDA's semi-autoregressive low-confidence remasking sampler;
  ``fastdllm_generate``: Fast-dLLM's block decoding with no / prefix / dual cache, also under the
  official names ``generate_with_prefix_cache`` / ``generate_with_dual_cache`` (``jaxlab.dlm.samplers``).
"""

from jaxlab.dlm.decoding import DecodeConfig, DecodeResult, decode, make_decoder
from jaxlab.dlm.samplers import (
    GenerateResult,
    fastdllm_generate,
    generate_with_dual_cache,
    generate_with_prefix_cache,
    llada_generate,
)

generate = llada_generate

__all__ = [
    "DecodeConfig",
    "DecodeResult",
    "GenerateResult",
    "decode",
    "fastdllm_generate",
    "generate",
    "generate_with_dual_cache",
    "generate_with_prefix_cache",
    "llada_generate",
    "make_decoder",
]
