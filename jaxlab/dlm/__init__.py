"""Masked diffusion language models: decoders (and, from part B, the training objective).

- ``decode(module, params, prompt_ids, DecodeConfig(...))``: DCD sliding-window / block decoding
  with optional prefix / dual KV caches (``jaxlab.dlm.decoding``).
- ``llada_generate``: LLaDA's semi-autoregressive low-confidence remasking sampler;
  ``fastdllm_generate``: Fast-dLLM's block decoding with no / prefix / dual cache, also under the
  official names ``generate_with_prefix_cache`` / ``generate_with_dual_cache`` (``jaxlab.dlm.samplers``).
- active remasking (committed tokens can be re-masked): ``remdm_generate`` (ReMDM cap / rescale / conf /
  loop), ``llada_remask_generate`` (ReMDM's LLaDA variant), ``remedi_generate`` (RemeDi keep-top-K)
  (``jaxlab.dlm.remasking``).
"""

from jaxlab.dlm.decoding import DecodeConfig, DecodeResult, decode, make_decoder
from jaxlab.dlm.remasking import (
    ReMDMSchedule,
    RemaskResult,
    llada_remask_generate,
    remdm_generate,
    remedi_generate,
)
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
    "ReMDMSchedule",
    "RemaskResult",
    "decode",
    "fastdllm_generate",
    "generate",
    "generate_with_dual_cache",
    "generate_with_prefix_cache",
    "llada_generate",
    "llada_remask_generate",
    "make_decoder",
    "remdm_generate",
    "remedi_generate",
]
