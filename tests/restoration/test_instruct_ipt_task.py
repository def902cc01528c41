"""Synchronous Instruct-IPT loss: every task in the batch, per-task factors learn from their own row only."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxlab.data.degradations import sample_images
from jaxlab.models.ipt import IPTConfig
from jaxlab.models.ipt_modulation import ModulationConfig
from jaxlab.restoration.task import InstructIPTTask, task_mixed_batch

TASKS = ("denoise", "derain", "dehaze")
MODEL = IPTConfig.from_dict(dict(n_feats=8, patch_size=12, patch_dim=3, num_heads=2, num_layers=1))


@pytest.fixture(scope="module")
def batch():
    return task_mixed_batch(sample_images()[:2], per_task=2, patch=12, rng=np.random.default_rng(0), tasks=TASKS)


def test_batch_holds_every_task(batch):
    assert batch["degraded"].shape == batch["clean"].shape == (3, 2, 12, 12, 3)
    assert not np.allclose(batch["degraded"], batch["clean"])


def test_gradients_and_a_few_steps(batch):
    mod = ModulationConfig(num_tasks=3, rank=2, targets=("qkv", "ffn"), init="gaussian", init_std=0.02)
    task = InstructIPTTask(MODEL, mod, task_weights=(1.0, 0.0, 1.0))
    params = nn.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        (loss, _), g = jax.value_and_grad(task.loss_fn, has_aux=True)(params, batch, None)
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state, loss, g

    params, state, loss, grads = step(params, state)
    up = grads["mod"]["body/encoder_0/ffn/linear1/kernel"]["up"]
    assert np.abs(up[0]).max() > 0 and np.abs(up[2]).max() > 0
    assert np.abs(up[1]).max() == 0  # task 1 has weight 0: its factors get nothing from the other rows
    assert np.abs(grads["shared"]["tail_0"]["conv"]["kernel"]).max() > 0

    losses = [float(loss)]
    for _ in range(15):
        params, state, loss, _ = step(params, state)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses


def test_bad_setups_are_named():
    with pytest.raises(ValueError, match="shares one head and tail"):
        InstructIPTTask(MODEL.replace(scale=(1, 1), num_queries=2), ModulationConfig(num_tasks=2))
    with pytest.raises(ValueError, match="task_weights"):
        InstructIPTTask(MODEL, ModulationConfig(num_tasks=3), task_weights=(1.0, 1.0))
