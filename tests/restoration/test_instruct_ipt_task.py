"""Synchronous Instruct-IPT loss: every task in the batch, per-task factors learn from their own row only."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxlab.models.ipt import IPTConfig
from jaxlab.models.ipt_modulation import ModulationConfig
from jaxlab.restoration.data import RestorationSource, parse_spec
from jaxlab.restoration.task import InstructIPTTask

TASKS = ("denoise", "derain", "dehaze")
MODEL = IPTConfig.from_dict(dict(n_feats=8, patch_size=12, patch_dim=3, num_heads=2, num_layers=1))


@pytest.fixture(scope="module")
def batch():
    return RestorationSource(parse_spec("tasks=" + "+".join(TASKS) + ",images=generated"), 12).batch(2)


def test_batch_holds_every_task(batch):
    assert batch["degraded"].shape == batch["clean"].shape == (2, 3, 12, 12, 3)
    assert not np.allclose(batch["degraded"], batch["clean"])
    task = InstructIPTTask(MODEL, ModulationConfig(num_tasks=3), task_names=TASKS)
    task.check_batch(batch)
    with pytest.raises(ValueError, match=r"must be \[B, 3, 12, 12, 3\]"):
        task.check_batch({k: v[:, :2] for k, v in batch.items()})


def test_gradients_and_a_few_steps(batch):
    mod = ModulationConfig(num_tasks=3, rank=2, targets=("qkv", "ffn"), init="gaussian", init_std=0.02)
    task = InstructIPTTask(MODEL, mod, task_weights=(1.0, 0.0, 1.0), task_names=TASKS)
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
    assert np.abs(up[1]).max() == 0  # task 1 has weight 0: its factors get nothing from the other columns
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


def _grads(task, batch):
    params = nn.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
    return params, jax.jit(jax.grad(lambda p, b: task.loss_fn(p, b, None)[0]))(params, batch)


def test_prompt_tokens_start_as_the_shared_model_and_learn_per_task(batch):
    task = InstructIPTTask(MODEL, ModulationConfig(num_tasks=3, rank=0, prompt=True), task_names=TASKS)
    params, grads = _grads(task, batch)
    prompt = params["mod"]["body/pos_embed"]["prompt"]
    assert prompt.shape == (3, MODEL.num_patches, MODEL.embedding_dim) and not prompt.any()
    x = batch["degraded"][:, 1]
    run = jax.jit(task.restore)  # the task index is traced: one compile for every call below
    shared_out = run({"shared": params["shared"], "mod": {}}, x, 1)
    np.testing.assert_array_equal(run(params, x, 1), shared_out)
    g = grads["mod"]["body/pos_embed"]["prompt"]
    assert all(np.abs(g[t]).max() > 0 for t in range(3))
    bumped = {**params, "mod": {"body/pos_embed": {"prompt": prompt.at[2].set(1.0)}}}
    assert np.abs(run(bumped, x, 2) - shared_out).max() > 0.01
    np.testing.assert_array_equal(run(bumped, x, 1), shared_out)


def test_separate_models_are_one_ipt_per_task(batch):
    task = InstructIPTTask(MODEL, ModulationConfig(num_tasks=3, rank=0), task_weights=(0.0, 1.0, 1.0),
                           task_names=TASKS, separate_models=True)
    params, grads = _grads(task, batch)
    kernel = params["shared"]["tail_0"]["conv"]["kernel"]
    assert kernel.shape[0] == 3 and not np.allclose(kernel[0], kernel[1])  # independent inits
    g = grads["shared"]["tail_0"]["conv"]["kernel"]
    assert np.abs(g[0]).max() == 0 and np.abs(g[1]).max() > 0  # task 0 (weight 0) trains nothing else's model
    one = task.merged(params, "derain")
    np.testing.assert_allclose(jax.jit(task.module.apply, static_argnums=2)({"params": one}, batch["degraded"][:, 1], 0),
                               jax.jit(task.restore)(params, batch["degraded"][:, 1], 1), rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="takes no modulation"):
        InstructIPTTask(MODEL, ModulationConfig(num_tasks=3, rank=2), separate_models=True)
    with pytest.raises(ValueError, match="unknown task 'deblur'"):
        task.merged(params, "deblur")
