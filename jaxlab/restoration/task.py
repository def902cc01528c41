"""Synchronous Instruct-IPT training: one shared IPT + per-task low-rank weight biases, one loss.

Every global batch holds every task (the abstract's "synchronous training"; the sampling ratios
are our choice, see ``docs/ipt.md``): a batch is ``{"degraded": [T, n, P, P, 3], "clean": [T, n,
P, P, 3]}`` in ``[0, 255]``, row ``t`` from task ``t``. The loss runs task ``t``'s modulated
weights on row ``t`` (``jax.vmap`` over tasks of ``modulate`` + apply), takes the official
``option.py`` loss (L1, in pixel units / 255) per task and averages the tasks with ``task_weights``
(default equal). Gradients reach the shared weights from every task and each task's factors from
its own row only. ``params = {"shared": <IPT params>, "mod": <factors>}``.

Not yet wired to ``launch/train.py`` (no grain source/config for it yet): the loss and init
follow the ``jaxlab.train.task.Task`` protocol and are tested on their own.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data.degradations import TASKS, degrade, random_patches
from jaxlab.models.ipt import IPT
from jaxlab.models.ipt_modulation import ModulationConfig, init_modulation, modulate


class InstructIPTTask:
    """``init_params`` / ``loss_fn`` for a single-task-head IPT (``scale=(1,)``) + weight modulation."""

    def __init__(self, model_config, modulation: ModulationConfig, task_weights: Sequence[float] | None = None):
        if tuple(model_config.scale) != (1,):
            raise ValueError(
                f"Instruct-IPT here shares one head and tail (scale=(1,)), got scale={list(model_config.scale)}; "
                f"per-task behaviour comes from the weight modulation"
            )
        self.module = IPT(model_config)
        self.modulation = modulation
        weights = np.ones(modulation.num_tasks) if task_weights is None else np.asarray(task_weights, np.float32)
        if weights.shape != (modulation.num_tasks,) or (weights < 0).any() or weights.sum() == 0:
            raise ValueError(f"task_weights={task_weights} must be {modulation.num_tasks} non-negative numbers, not all 0")
        self.task_weights = jnp.asarray(weights / weights.sum(), jnp.float32)

    def init_params(self, rng: jax.Array, batch) -> dict:
        model_rng, mod_rng = jax.random.split(rng)
        x = batch["degraded"][0]
        shared = self.module.init(model_rng, x, 0)["params"]
        return {"shared": shared, "mod": init_modulation(mod_rng, nn.unbox(shared), self.modulation)}

    def restore(self, params, x_NHWC, task):
        """Task ``task``'s output (``task`` may be traced)."""
        return self.module.apply({"params": modulate(params["shared"], params["mod"], task, self.modulation)}, x_NHWC, 0)

    def loss_fn(self, params, batch, rng: jax.Array):
        del rng
        x, y = batch["degraded"], batch["clean"]
        num_tasks = self.modulation.num_tasks
        if x.shape[0] != num_tasks:
            raise ValueError(f"batch has {x.shape[0]} task rows, the modulation has {num_tasks} tasks")
        out = jax.vmap(lambda xt, t: self.restore(params, xt, t))(x, jnp.arange(num_tasks))
        per_task = jnp.mean(jnp.abs(out - y), axis=(1, 2, 3, 4)) / 255.0
        loss = jnp.sum(self.task_weights * per_task)
        return loss, {"loss": loss, **{f"l1_task{t}": per_task[t] for t in range(num_tasks)}}


def task_mixed_batch(
    images, per_task: int, patch: int, rng: np.random.Generator, tasks: Sequence[str] = TASKS, sigma: float = 25.0
) -> dict:
    """``{"degraded", "clean"}`` of shape ``[len(tasks), per_task, patch, patch, 3]`` from clean ``images``."""
    clean = np.stack([random_patches(images, patch, per_task, rng) for _ in tasks])
    degraded = np.stack([[degrade(c, task, rng, sigma=sigma) for c in clean[t]] for t, task in enumerate(tasks)])
    return {"degraded": degraded.astype(np.float32), "clean": clean.astype(np.float32)}
