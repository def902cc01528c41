"""Official PyTorch checkpoints -> (Flax module, params).

``from_torch(family, torch_kwargs, state_dict)`` is the one entry point: ``torch_kwargs`` are
the official constructor's keyword arguments and ``state_dict`` maps the official parameter
names to arrays (numpy or torch tensors). It returns the module and a float32 numpy param
tree for ``module.apply({"params": params}, ...)``. Torch itself is never needed here;
``jaxlab.convert.io`` reads ``.pt`` (with torch, ``weights_only=True``) and ``.safetensors``.
"""

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from jaxlab.convert import dic, dit, inception, ipt, llada, lm, lvlm, udit, vae

_CONVERTERS: dict[str, Callable[..., tuple[Any, dict]]] = {
    "dit": dit.convert,
    "llada": llada.convert,
    "dic": dic.convert,
    "udit": udit.convert,
    "vae": vae.convert,
    "gpt_neox": partial(lm.convert, "gpt_neox"),
    "llama": partial(lm.convert, "llama"),
    "dijiang": partial(lm.convert, "dijiang"),
    "ipt": ipt.convert,
    "lvlm": lvlm.convert,
    "inception_fid": inception.convert,
}


def from_torch(family: str, torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options):
    """Builds ``family``'s Flax module from official kwargs and converts ``state_dict`` onto it.

    ``options`` are jaxlab-only model fields (``dtype``, ``remat``, ``scan_blocks``, ...).
    """
    if family not in _CONVERTERS:
        raise ValueError(f"no converter for family {family!r}; available: {sorted(_CONVERTERS)}")
    return _CONVERTERS[family](torch_kwargs, state_dict, **options)


__all__ = ["from_torch"]
