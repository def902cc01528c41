"""facebookresearch/DiT ``state_dict`` -> Flax params for ``jaxlab.models.dit.DiT``."""

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlab.convert.common import StateDict, check_image_backbone, stack_layers
from jaxlab.models.dit import DiT, DiTConfig, pos_embed_table

# Keyword arguments of the official ``DiT.__init__`` (models.py).
TORCH_KWARGS = (
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
)


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> DiTConfig:
    """Official constructor kwargs (+ jaxlab options such as ``dtype``, ``scan_blocks``) -> ``DiTConfig``."""
    unknown = sorted(set(torch_kwargs) - set(TORCH_KWARGS))
    if unknown:
        raise ValueError(f"unknown DiT constructor argument(s) {unknown}; the official DiT takes {list(TORCH_KWARGS)}")
    return DiTConfig.from_dict({**torch_kwargs, **options})


def _block(sd: StateDict, prefix: str, num_heads: int) -> dict:
    qkv = sd.linear(f"{prefix}.attn.qkv")
    proj = sd.linear(f"{prefix}.attn.proj")
    d = proj["kernel"].shape[0]
    head_dim = d // num_heads
    return {
        "adaLN_modulation": {"linear": sd.linear(f"{prefix}.adaLN_modulation.1")},
        "attn": {
            # [D, 3D] with outputs [q|k|v], head-major -> [D, 3, heads, head_dim].
            "qkv": {
                "kernel": qkv["kernel"].reshape(d, 3, num_heads, head_dim),
                "bias": qkv["bias"].reshape(3, num_heads, head_dim),
            },
            "proj": {"kernel": proj["kernel"].reshape(num_heads, head_dim, d), "bias": proj["bias"]},
        },
        "mlp": {"fc1": sd.linear(f"{prefix}.mlp.fc1"), "fc2": sd.linear(f"{prefix}.mlp.fc2")},
    }


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[DiT, dict]:
    """Builds the DiT named by the official kwargs and maps the official weights onto it.

    The fixed ``pos_embed`` buffer is not a parameter in jaxlab; it is checked against the
    table the model computes (a mismatch means the kwargs do not describe the checkpoint).
    """
    config = config_from_torch(torch_kwargs, **options)
    sd = StateDict(state_dict)
    if "pos_embed" in sd:
        expected = pos_embed_table(config.hidden_size, config.input_size // config.patch_size)
        stored = sd["pos_embed"].reshape(-1, config.hidden_size)
        if stored.shape != expected.shape or not np.allclose(stored, expected, atol=1e-2):  # loose enough for bf16 files
            raise ValueError(
                f"the checkpoint's pos_embed {stored.shape} is not the sin-cos table of input_size="
                f"{config.input_size}, patch_size={config.patch_size}; check the kwargs"
            )
    patch = sd.conv("x_embedder.proj")
    blocks = [_block(sd, f"blocks.{i}", config.num_heads) for i in range(config.depth)]
    params = {
        "x_embedder": patch,
        "t_embedder": {"mlp_0": sd.linear("t_embedder.mlp.0"), "mlp_2": sd.linear("t_embedder.mlp.2")},
        "y_embedder": {"embedding_table": sd["y_embedder.embedding_table.weight"]},
        "final_layer": {
            "adaLN_modulation": {"linear": sd.linear("final_layer.adaLN_modulation.1")},
            "linear": sd.linear("final_layer.linear"),
        },
    }
    if config.scan_blocks:
        params["blocks"] = {"block": stack_layers(blocks)}
    else:
        params.update({f"blocks_{i}": b for i, b in enumerate(blocks)})
    sd.finish()
    module = DiT(config)
    return module, check_image_backbone(module, params)
