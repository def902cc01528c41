"""The contract between the generic training loop and a model family.

The loop (``jaxlab.train``) knows nothing about diffusion or language models: a family
supplies a ``Task`` that builds parameters and computes the loss on a batch. Image diffusion
backbones (DiT, U-DiT, DiC) share ``jaxlab.diffusion.task.DiffusionTask``; masked diffusion
language models supply their own in ``jaxlab.dlm``.

Batches are dicts of arrays with a leading batch axis, e.g. ``{"image": [B, H, W, C] float32,
"label": [B] int32}`` for class-conditional images or ``{"tokens": [B, L] int32, ...}`` for text.
"""

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax

Batch = Mapping[str, jax.Array]
Params = Any  # a pytree; leaves may be boxed with logical partitioning metadata at init


@runtime_checkable
class Task(Protocol):
    """What a family provides to ``launch/train.py``."""

    def init_params(self, rng: jax.Array, batch: Batch) -> Params:
        """Initial parameters for a batch of this shape, boxed with logical axis names."""
        ...

    def loss_fn(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(scalar training loss, dict of scalar metrics) for one batch, in training mode."""
        ...
