"""Model families and their presets.

``build_model(family, variant_or_config)`` is the one way to build a model from a name.
"""

from jaxlab.models.common import ModelConfig, count_params
from jaxlab.models.dit import DiT, DiTConfig
from jaxlab.models.registry import FAMILIES, build_model, get_family

__all__ = ["DiT", "DiTConfig", "FAMILIES", "ModelConfig", "build_model", "count_params", "get_family"]
