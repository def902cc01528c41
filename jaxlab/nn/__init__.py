"""Shared, pure Flax building blocks used by several model families.

Conventions (every family follows them):

- Images are NHWC; token sequences are ``[batch, length, embed]``.
- Parameters are float32 (``param_dtype``); ``dtype`` is the compute dtype.
- Every parameter carries logical axis names (``nn.with_logical_partitioning``).
  The names used across jaxlab are listed in ``LOGICAL_AXES``; the mapping from
  them to mesh axes lives in one place, ``jaxlab.train.sharding``.
"""

from jaxlab.nn.attention import MultiHeadSelfAttention, dot_product_attention
from jaxlab.nn.cosine_attention import cosine_attention
from jaxlab.nn.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    sincos_2d_table,
    timestep_features,
)
from jaxlab.nn.gated_mlp import GatedMlp
from jaxlab.nn.kv_cache import KVCache, init_kv_cache
from jaxlab.nn.linear import dense, dense_general, logical_init
from jaxlab.nn.mlp import Mlp
from jaxlab.nn.modulation import AdaLNModulation, ConvFinalLayer, group_count, group_norm, layer_norm_no_affine, modulate
from jaxlab.nn.rmsnorm import RMSNorm
from jaxlab.nn.rope2d import apply_rope_interleaved, rope_2d_angles, rope_2d_table
from jaxlab.nn.rotary_attention import RotaryAttention

# Logical axis names that parameters and activations carry.
LOGICAL_AXES = (
    "batch",  # examples
    "length",  # tokens / sequence positions
    "embed",  # model width (residual stream)
    "mlp",  # MLP hidden and adaLN modulation outputs
    "heads",  # attention heads
    "kv",  # per-head feature dim
    "vocab",  # token vocabulary
    "classes",  # class-label table rows
    "patch",  # flattened patch features (p * p * C)
    "freq",  # sinusoidal frequency features
    "layers",  # stacked (scanned) blocks
)

__all__ = [
    "AdaLNModulation",
    "ConvFinalLayer",
    "GatedMlp",
    "KVCache",
    "LabelEmbedder",
    "LOGICAL_AXES",
    "Mlp",
    "MultiHeadSelfAttention",
    "PatchEmbed",
    "RMSNorm",
    "RotaryAttention",
    "TimestepEmbedder",
    "apply_rope_interleaved",
    "cosine_attention",
    "dense",
    "dense_general",
    "dot_product_attention",
    "group_count",
    "group_norm",
    "init_kv_cache",
    "layer_norm_no_affine",
    "logical_init",
    "modulate",
    "rope_2d_angles",
    "rope_2d_table",
    "sincos_2d_table",
    "timestep_features",
]
