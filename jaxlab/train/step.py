"""The jitted, sharded train step: loss + grads, optimizer update, EMA update."""

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxlab.train import sharding as sh
from jaxlab.train.optim import ema_update
from jaxlab.train.state import TrainState
from jaxlab.train.task import Task

StepFn = Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update. Metrics: ``loss``, ``grad_norm``, ``param_norm``, ``learning_rate`` and the task's own.

    Parameters, gradients and optimizer state stay float32; the model computes in its own
    ``dtype`` (bfloat16 for mixed precision).
    """
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, task_metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        ema_params=ema_update(state.ema_params, params, ema_decay),
        opt_state=opt_state,
    )
    metrics = {
        **task_metrics,
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
    }
    return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


def make_train_step(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float,
    mesh: Mesh,
    shardings: TrainState,
    batch_ndims: Mapping[str, int],
    rules=sh.LOGICAL_RULES,
):
    """``step(state, batch) -> (state, metrics)`` jitted over ``mesh`` with explicit shardings.

    The state is donated (updated in place). ``batch_ndims`` gives each batch key's rank (its
    leading dimension is split over ``data x fsdp``). Activation constraints inside the model
    resolve through ``rules``. The returned function has ``.lower(state, batch)`` for cost analysis.
    """
    batch_shardings = {k: sh.batch_sharding(mesh, n) for k, n in batch_ndims.items()}

    def step(state, batch):
        with nn.logical_axis_rules(rules):
            return train_step(state, batch, task=task, optimizer=optimizer, schedule=schedule, ema_decay=ema_decay)

    jitted = jax.jit(
        step,
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, sh.replicated(mesh)),
        donate_argnums=(0,),
    )
    return _InMesh(jitted, mesh)


class _InMesh:
    """Calls (and lowers) a jitted function with ``mesh`` as the ambient mesh."""

    def __init__(self, fn, mesh: Mesh):
        self._fn, self._mesh = fn, mesh

    def __call__(self, *args):
        with jax.set_mesh(self._mesh):
            return self._fn(*args)

    def lower(self, *args):
        with jax.set_mesh(self._mesh):
            return self._fn.lower(*args)
