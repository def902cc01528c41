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
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); the download or copy did not finish: fetch the file again")
    # weights_only=True: never execute code stored in the pickle. torch's own message suggests
    # weights_only=False, which would run arbitrary code from the file: it is not passed on.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        unsupported = [line.strip() for line in str(e).splitlines() if "Unsupported global" in line]
        detail = f" ({unsupported[0]})" if unsupported else f" ({type(e).__name__})"
        raise ValueError(
            f"{path} is not a readable PyTorch weights file{detail}: it is truncated, corrupt or not a checkpoint "
            f"(jaxlab only reads tensors, never pickled code); fetch the file again or convert it to .safetensors"
        ) from None


def _load_safetensors(path) -> dict[str, Any]:
    try:
        return _read_safetensors(path)
    except Exception as e:
        if isinstance(e, (ImportError, FileNotFoundError)):
            raise
        text = " ".join(str(e).split())[:160]
        raise ValueError(
            f"{path} is not a valid .safetensors file ({type(e).__name__}: {text}); it is truncated or corrupt: "
            f"fetch the file again"
        ) from None


def _read_safetensors(path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (TypeError, ValueError):  # bfloat16 tensors have no numpy dtype: go through torch
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}


def load_sharded_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads a Hugging Face sharded checkpoint: ``model.safetensors.index.json`` + its shards.

    ``path`` is the index file or the directory holding it. Every tensor named in the index's
    ``weight_map`` is read from its shard (bfloat16 is widened to float32); a missing shard or
    tensor raises before anything is converted.
    """
    import json

    path = pathlib.Path(path)
    index = path / "model.safetensors.index.json" if path.is_dir() else path
    if not index.is_file():
        raise FileNotFoundError(
            f"no sharded-checkpoint index at {index}; pass the model.safetensors.index.json file or its directory"
        )
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no 'weight_map' (expected {{tensor name: shard file}})")
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    missing = sorted(s for s in by_shard if not (index.parent / s).is_file())
    if missing:
        raise FileNotFoundError(f"{index} names shard(s) that are not in {index.parent}: {missing}")
    out: dict[str, np.ndarray] = {}
    for shard, names in sorted(by_shard.items()):
        tensors = _load_safetensors(index.parent / shard)
        absent = sorted(set(names) - set(tensors))
        if absent:
            raise KeyError(f"shard {shard} lacks tensor(s) {absent[:5]} that {index.name} assigns to it")
        out.update({name: to_numpy(tensors[name]) for name in names})
    return out
