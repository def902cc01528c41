"""The task-sensitivity search on a trained IPT: per-task fine-tunes -> ranked weights -> modulation targets.

Instruct-IPT's abstract says the task biases go on "task-sensitive" weights found by a search; the
method section was not readable, so this is **our reading** (``docs/ipt.md``):

1. ``finetune_per_task``: start every task from the same trained shared IPT and fine-tune it on that
   task alone (Adam, constant learning rate, ``steps`` batches of ``batch_size`` patches from the
   same synthetic-degradation source as training, ``split="train"``);
2. ``jaxlab.models.ipt_modulation.task_sensitivity``: rank weight matrices by the mean relative
   change ``||W_t - W|| / ||W||`` over the tasks, largest first;
3. ``sensitive_targets``: take weights from the top of the ranking until the low-rank factors
   would exceed a parameter budget, as ``"re:<exact path>"`` targets for ``ModulationConfig``.

Caveat of the choice: Adam moves every element by about the learning rate per step whatever the
gradient's size, so weights with a small norm show large relative changes. Alternatives not taken
here: plain SGD fine-tunes (gradient-magnitude driven), the spread of the task deltas instead of
their mean (task-*specific* rather than task-*moved*), gradient-based scores without fine-tuning.
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import traverse_util

from jaxlab.models.ipt_modulation import ModulationConfig
from jaxlab.restoration.data import RestorationSource, RestorationSpec
from jaxlab.restoration.task import InstructIPTTask


def finetune_per_task(model_config, shared: Mapping, spec: RestorationSpec, *, steps: int, batch_size: int = 4,
                      learning_rate: float = 5e-4, start: int = 0) -> list[dict]:
    """``shared`` (a plain IPT param tree) fine-tuned on each of ``spec.tasks`` alone, in that order.

    Every task runs the same jitted Adam step (one compile) on ``[batch_size, 1, P, P, 3]`` batches
    ``start, start + batch_size, ...`` of its single-task source. Returns one param tree per task
    (float32 numpy). A non-finite loss is an error.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1")
    single = InstructIPTTask(model_config, ModulationConfig(num_tasks=1, rank=0), task_names=("task",))
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(params, state, batch):
        (loss, _), grads = jax.value_and_grad(single.loss_fn, has_aux=True)(params, batch, None)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    start_params = {"shared": jax.tree_util.tree_map(np.asarray, nn.unbox(dict(shared))), "mod": {}}
    tuned = []
    for name in spec.tasks:
        source = RestorationSource(dataclasses.replace(spec, tasks=(name,)), model_config.patch_size, split="train")
        params, state = start_params, opt.init(start_params)
        for i in range(steps):
            batch = source.batch(batch_size, start=start + i * batch_size)
            params, state, loss = step(params, state, {"degraded": batch["degraded"], "clean": batch["clean"]})
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"the {name} fine-tune diverged (loss {float(loss)}); lower learning_rate")
        tuned.append(jax.tree_util.tree_map(np.asarray, params["shared"]))
    return tuned


def factor_params(shape: Sequence[int], rank: int, num_tasks: int) -> int:
    """Scalars of one weight's low-rank factors: ``num_tasks * rank * (fan_in + fan_out)``."""
    return num_tasks * rank * (int(np.prod(shape[:-1])) + int(shape[-1]))


def sensitive_targets(ranking: Sequence[tuple[str, float]], params: Mapping, *, rank: int, num_tasks: int,
                      budget: int) -> tuple[str, ...]:
    """``"re:<path>"`` targets for the most sensitive weights whose factors fit in ``budget`` scalars.

    Walks ``ranking`` (``task_sensitivity``'s, largest first) and keeps every weight that still fits,
    so a large weight over the budget is skipped and smaller, less sensitive ones may follow.
    """
    shapes = {p: tuple(np.shape(w)) for p, w in traverse_util.flatten_dict(dict(nn.unbox(params)), sep="/").items()}
    chosen, used = [], 0
    for path, _ in ranking:
        if path not in shapes:
            raise ValueError(f"ranked weight {path!r} is not in these params")
        cost = factor_params(shapes[path], rank, num_tasks)
        if used + cost <= budget:
            chosen.append(path)
            used += cost
    if not chosen:
        raise ValueError(f"no ranked weight fits a budget of {budget} factor params at rank {rank}")
    return tuple("re:" + re.escape(p) for p in chosen)
