"""pytorch-fid ``pt_inception-2015-12-05-*.pth`` ``state_dict`` -> Flax params for ``InceptionV3FID``.

Flax names are the torch module paths (``Mixed_6d.branch1x1`` -> ``Mixed_6d/branch1x1``). Every
``BasicConv2d`` (``<p>.conv.weight`` + ``<p>.bn.{weight,bias,running_mean,running_var}``) becomes
one convolution with a bias, the inference BatchNorm (eps 1e-3) folded in, in float64:
``kernel = W * g / sqrt(v + eps)``, ``bias = b - m * g / sqrt(v + eps)``. ``fc`` is the 1008-way
classifier. ``*.num_batches_tracked`` is ignored.
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlab.convert.common import StateDict, check_against_init
from jaxlab.models.inception_fid import INPUT_SIZE, InceptionConfig, InceptionV3FID

BN_EPS = 1e-3  # torchvision's BasicConv2d BatchNorm2d(eps=0.001), TF's variance_epsilon


def fold_basic_conv(sd: StateDict, prefix: str) -> dict[str, np.ndarray]:
    """``prefix.conv`` + ``prefix.bn`` -> ``{"kernel": [kh, kw, in, out], "bias": [out]}`` (float32)."""
    weight = sd[f"{prefix}.conv.weight"].astype(np.float64)  # [out, in, kh, kw]
    gamma, beta = sd[f"{prefix}.bn.weight"].astype(np.float64), sd[f"{prefix}.bn.bias"].astype(np.float64)
    mean, var = sd[f"{prefix}.bn.running_mean"].astype(np.float64), sd[f"{prefix}.bn.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    kernel = (weight * scale[:, None, None, None]).transpose(2, 3, 1, 0)
    return {"kernel": kernel.astype(np.float32), "bias": (beta - mean * scale).astype(np.float32)}


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options):
    """``({}, pytorch-fid state_dict)`` -> ``(InceptionV3FID, params)``; ``options``: ``dtype``."""
    if torch_kwargs:
        raise ValueError(
            f"the FID Inception takes no constructor kwargs (got {sorted(torch_kwargs)}); pass {{}}: the network "
            f"is fixed by the pt_inception-2015-12-05 weights"
        )
    sd = StateDict(state_dict, ignore=lambda k: k.endswith("num_batches_tracked"))
    if "fc.weight" not in sd:
        raise KeyError(
            "the state_dict has no 'fc.weight': it is not pytorch-fid's pt_inception-2015-12-05-*.pth "
            "(torchvision's ImageNet Inception-v3 is a different network and gives different FIDs)"
        )
    fc = sd.linear("fc")
    config = InceptionConfig.from_dict({"num_classes": fc["bias"].shape[0], **options})
    params: dict[str, Any] = {"fc": fc}
    for key in sorted(sd.keys()):
        if key.endswith(".conv.weight"):
            prefix = key[: -len(".conv.weight")]
            node = params
            for part in prefix.split("."):
                node = node.setdefault(part, {})
            node["conv"] = fold_basic_conv(sd, prefix)
    sd.finish()
    module = InceptionV3FID(config)
    return module, check_against_init(module, params, jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
