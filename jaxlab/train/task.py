"""The contract between the generic training loop and a model family.

The loop (``jaxlab.train``) knows nothing about diffusion or language models: a family
supplies a ``Task`` that builds parameters and computes the loss on a batch. Image diffusion
backbones (DiT, U-DiT, DiC) share ``jaxlab.diffusion.task.DiffusionTask``; masked diffusion
language models supply their own in ``jaxlab.dlm``.

Batches are dicts of arrays with a leading batch axis, e.g. ``{"image": [B, H, W, C] float32,
"label": [B] int32}`` for class-conditional images or ``{"tokens": [B, L] int32, ...}`` for text.

A config names its task with ``config.task``: a key of ``TASKS`` or a ``"module:factory"``
import path; ``factory(config)`` returns the Task. Optional hooks the loop uses when present:

- ``sample(params, rng) -> [N, H, W, C]`` float images in [-1, 1] (traceable; the loop jits it
  and writes PNG grids from the EMA params), with ``grid_columns: int`` for the grid layout;
- ``check_batch(host_batch)``: raises ValueError when a batch does not fit the model (labels or
  token ids out of range, which ``jnp.take`` would silently turn into NaN under jit); the loop
  calls it on the first host batch;
- ``model_spec() -> (family, model_config)`` (a registry family and its frozen config): the loop
  writes it to ``<workdir>/model.json`` so ``params_io.load_model(workdir)`` rebuilds the model.
"""

import importlib
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


# config.task -> "module:factory"; factory(config) -> Task. Imported lazily (no import cycles).
TASKS: dict[str, str] = {
    "diffusion": "jaxlab.diffusion.task:DiffusionTask.from_config",
    "instruct_ipt": "jaxlab.restoration.task:InstructIPTTask.from_config",
}


def task_from_config(config) -> Task:
    """Builds the Task that ``config.task`` names (a ``TASKS`` key or ``"module:factory"``)."""
    name = config.get("task") if hasattr(config, "get") else getattr(config, "task", None)
    if not name:
        raise ValueError(f"config.task is not set; name a task: one of {sorted(TASKS)} or 'package.module:factory'")
    target = TASKS.get(name, name)
    if ":" not in target:
        raise ValueError(f"config.task={name!r} is unknown; allowed values: {sorted(TASKS)} or 'package.module:factory'")
    module_name, attr = target.split(":", 1)
    factory: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    task = factory(config)
    if not isinstance(task, Task):
        raise TypeError(f"config.task={name!r} built {type(task).__name__}, which lacks init_params/loss_fn")
    return task
