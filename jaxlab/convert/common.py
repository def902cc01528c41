"""Helpers shared by every family's PyTorch -> Flax converter."""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any dtype, any device) or array-like -> numpy, bfloat16 widened to float32."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


class StateDict:
    """A read-once view of an official ``state_dict`` that remembers which keys were used.

    ``finish()`` raises if any key was never read, so a converter cannot silently drop
    weights (a renamed layer, an unsupported option).
    """

    def __init__(self, state_dict: Mapping[str, Any], ignore: Callable[[str], bool] = lambda k: False):
        self._arrays = {k: v for k, v in state_dict.items() if not ignore(k)}
        self._used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def keys(self):
        return self._arrays.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            raise KeyError(f"the state_dict has no {key!r}; is it a checkpoint of the model named by the kwargs?")
        self._used.add(key)
        return to_numpy(self._arrays[key]).astype(np.float32)

    def linear(self, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
        """``prefix.weight [out, in]`` (+ ``prefix.bias``) -> ``{"kernel": [in, out], "bias": [out]}``."""
        out = {"kernel": self[f"{prefix}.weight"].T}
        if bias:
            out["bias"] = self[f"{prefix}.bias"]
        return out

    def conv(self, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
        """``prefix.weight [out, in, kh, kw]`` -> ``{"kernel": [kh, kw, in, out]}`` (HWIO) (+ bias)."""
        out = {"kernel": self[f"{prefix}.weight"].transpose(2, 3, 1, 0)}
        if bias:
            out["bias"] = self[f"{prefix}.bias"]
        return out

    def finish(self) -> None:
        unused = sorted(set(self._arrays) - self._used)
        if unused:
            shown = ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else "")
            raise ValueError(
                f"{len(unused)} state_dict entries were not converted ({shown}); the checkpoint does not "
                f"match the constructor kwargs, or it holds weights this converter does not support"
            )


def stack_layers(layers: list[dict]) -> dict:
    """Stacks per-layer parameter trees along a new leading axis (the ``nn.scan`` layout)."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *layers)


def check_against_init(module: nn.Module, params: dict, *example_args, **example_kwargs) -> dict:
    """Checks that ``params`` has exactly the structure and shapes ``module.init`` produces.

    Returns ``params`` as float32 numpy leaves. Raises ``ValueError`` naming every mismatch.
    """
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_args, **example_kwargs))
    expected = nn.unbox(shapes["params"])
    want = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    problems += [f"{k}: converted {got[k]}, model expects {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if problems:
        raise ValueError("converted parameters do not fit the model:\n  " + "\n  ".join(problems))
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)


def check_image_backbone(module: nn.Module, params: dict) -> dict:
    """``check_against_init`` for a DiT-like backbone, on a one-example batch of its configured shape."""
    cfg = module.config
    x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
    t = jnp.zeros((1,), jnp.int32)
    return check_against_init(module, params, x, t, t)


def conv_final_layer(sd: StateDict, prefix: str = "final_layer") -> dict:
    """The U-DiT / DiC final layer (``jaxlab.nn.ConvFinalLayer``): adaLN Linear + 3x3 conv."""
    return {
        "adaLN_modulation": {"linear": sd.linear(f"{prefix}.adaLN_modulation.1")},
        "out_proj": sd.conv(f"{prefix}.out_proj"),
    }
