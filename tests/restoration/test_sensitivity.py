"""The task-sensitivity search: per-task fine-tunes of a shared IPT -> ranking -> modulation targets in a budget."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxlab.models.ipt import IPT, IPTConfig
from jaxlab.models.ipt_modulation import ModulationConfig, init_modulation, task_sensitivity
from jaxlab.restoration.data import parse_spec
from jaxlab.restoration.sensitivity import factor_params, finetune_per_task, sensitive_targets

MODEL = IPTConfig.from_dict(dict(n_feats=4, patch_size=12, patch_dim=3, num_heads=2, num_layers=1))


def test_search_finetunes_each_task_ranks_and_picks_targets_in_budget():
    init = jax.jit(lambda key, x: IPT(MODEL).init(key, x, 0))  # the task index is static
    shared = nn.unbox(init(jax.random.key(0), np.zeros((1, 12, 12, 3), np.float32))["params"])
    spec = parse_spec("tasks=denoise+derain,images=generated")
    tuned = finetune_per_task(MODEL, shared, spec, steps=2, batch_size=2, learning_rate=1e-2)
    assert len(tuned) == 2
    flat = [traverse_util.flatten_dict(t, sep="/") for t in tuned]
    path = "body/encoder_0/ffn/linear1/kernel"
    assert not np.allclose(flat[0][path], flat[1][path])  # each task moved the weights its own way

    ranking = task_sensitivity(shared, tuned)
    scores = [s for _, s in ranking]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    shapes = {p: np.shape(w) for p, w in traverse_util.flatten_dict(dict(shared), sep="/").items()}
    budget = factor_params(shapes[ranking[0][0]], 2, 2) + 1000
    targets = sensitive_targets(ranking, shared, rank=2, num_tasks=2, budget=budget)
    mod = init_modulation(jax.random.key(1), shared, ModulationConfig(num_tasks=2, rank=2, targets=targets))
    chosen = [p for p, _ in ranking if p in mod]
    assert chosen[0] == ranking[0][0] and len(mod) == len(targets) >= 2
    assert sum(factor_params(shapes[p], 2, 2) for p in mod) <= budget
    # Whatever was left out and still fits the remaining budget would have been taken.
    left = budget - sum(factor_params(shapes[p], 2, 2) for p in mod)
    assert all(factor_params(shapes[p], 2, 2) > left for p, _ in ranking if p not in mod)


def test_a_weight_over_budget_is_skipped_and_an_empty_pick_is_an_error():
    shared = {"big": {"kernel": np.zeros((100, 100))}, "small": {"kernel": np.zeros((4, 4))}}
    ranking = [("big/kernel", 1.0), ("small/kernel", 0.5)]
    assert sensitive_targets(ranking, shared, rank=1, num_tasks=1, budget=10) == ("re:small/kernel",)
    with pytest.raises(ValueError, match="no ranked weight fits"):
        sensitive_targets(ranking, shared, rank=1, num_tasks=1, budget=5)
    with pytest.raises(ValueError, match="not in these params"):
        sensitive_targets([("other/kernel", 1.0)], shared, rank=1, num_tasks=1, budget=10)
