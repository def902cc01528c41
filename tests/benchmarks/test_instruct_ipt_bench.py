"""benchmarks/instruct_ipt.py: the equal-parameter per-task baselines and the comparison table."""

import functools
import json

import jax
import numpy as np
import pytest

from benchmarks import instruct_ipt
from configs.ipt import get_config
from jaxlab.models import count_params
from jaxlab.train.task import task_from_config


@functools.lru_cache(maxsize=None)
def _num_params(variant: str) -> int:
    task = task_from_config(get_config(variant))
    batch = {"degraded": jax.ShapeDtypeStruct((1, 5, 24, 24, 3), np.float32)}
    return count_params(jax.eval_shape(task.init_params, jax.random.PRNGKey(0), batch))


def test_per_task_baselines_match_the_all_in_one_models_total_params():
    for per_task, all_in_one in [("tiny-per-task-eq-shared", "tiny-shared"), ("tiny-per-task-eq-r4", "tiny-r4"),
                                 ("tiny-per-task-eq-r8", "tiny")]:
        ratio = _num_params(per_task) / _num_params(all_in_one)
        assert 0.9 < ratio < 1.1, (per_task, all_in_one, ratio)


def test_table_prints_params_and_the_seed_spread():
    def run(variant, params, psnr):
        metrics = {t: {"psnr": psnr + j, "ssim": 0.5, "psnr_input": 20.0 + j, "ssim_input": 0.4}
                   for j, t in enumerate(("denoise", "derain"))}
        return {"params": params, "metrics": metrics}

    results = {"tiny-shared/seed0": run("tiny-shared", 54811, 21.0), "tiny-shared/seed1": run("tiny-shared", 54811, 23.0),
               "tiny-per-task-eq-shared/seed0": run("tiny-per-task-eq-shared", 50880, 22.0)}
    rows = instruct_ipt.table(results)
    assert [r["model"] for r in rows] == ["degraded input", "shared (no task info)", "per-task C=3 (~shared params)"]
    assert rows[0]["mean psnr"] == "20.50"
    assert rows[1]["params"] == "54,811" and rows[1]["seeds"] == 2
    assert rows[1]["denoise psnr"] == "22.00+-1.00" and rows[1]["mean psnr"] == "22.50+-1.00"
    assert rows[2]["params"] == "50,880" and rows[2]["mean psnr"] == "22.50+-0.00"


def test_the_searched_row_trains_on_the_recorded_targets(tmp_path):
    with pytest.raises(SystemExit, match="benchmarks.ipt_sensitivity"):
        instruct_ipt.run_config("tiny-sensitive", 0, 10, tmp_path)
    targets = ["re:body/encoder_0/ffn/linear1/kernel", "re:tail_0/conv/kernel"]
    (tmp_path / "sensitivity.json").write_text(json.dumps({"rank": 3, "targets": targets}))
    config = instruct_ipt.run_config("tiny-sensitive", 1, 10, tmp_path)
    assert config.seed == 1 and config.training.num_steps == 10 and config.variant == "tiny-sensitive"
    task = task_from_config(config)
    assert task.modulation.rank == 3 and task.modulation.targets == tuple(targets)
