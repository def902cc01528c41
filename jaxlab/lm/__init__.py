"""Autoregressive LM tools: DiJiang conversion, generation, the training task, tokenizer and packed data."""

from jaxlab.lm.conversion import convert_to_dijiang
from jaxlab.lm.generate import generate, sample_token

__all__ = ["convert_to_dijiang", "generate", "sample_token"]
