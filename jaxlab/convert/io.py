"""Reading official checkpoint files into ``{name: numpy array}`` without executing pickled code."""

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlab.convert.common import to_numpy

# Keys under which training scripts nest the weights; DiT's sample.py prefers "ema".
_NESTED_KEYS = ("ema", "model", "state_dict", "module")


def load_state_dict(path: str | pathlib.Path, key: str | None = None) -> dict[str, np.ndarray]:
    """Loads a ``.pt``/``.pth``/``.bin`` (torch, ``weights_only=True``) or ``.safetensors`` file.

    Args:
      path: checkpoint file.
      key: for a training checkpoint that nests several dicts (``{"model", "ema", "opt"}``),
        which one to take. Default: ``"ema"`` if present, else ``"model"``, ``"state_dict"``,
        ``"module"``; a plain state_dict is used as is.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        raw = _load_safetensors(path)
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raw = _load_torch(path)
    else:
        raise ValueError(f"unsupported checkpoint format {suffix!r} ({path}); use .pt/.pth/.bin or .safetensors")
    return {k: to_numpy(v) for k, v in _select(raw, key, path).items()}


def _select(raw: Mapping[str, Any], key: str | None, path) -> Mapping[str, Any]:
    if key is not None:
        if key not in raw:
            raise KeyError(f"{path} has no entry {key!r}; top-level keys: {sorted(raw)[:10]}")
        return raw[key]
    for candidate in _NESTED_KEYS:
        if isinstance(raw.get(candidate), Mapping):
            return raw[candidate]
    return raw


def _load_torch(path) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch: pip install 'jaxlab[torch]' (or convert the file to .safetensors)"
        ) from None
    # weights_only=True: never execute code stored in the pickle.
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_safetensors(path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (TypeError, ValueError):  # bfloat16 tensors have no numpy dtype: go through torch
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
