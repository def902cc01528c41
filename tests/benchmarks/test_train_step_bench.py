"""The train-step benchmark runs each image family's real train step and reports consistent numbers."""

import pytest

from benchmarks import train_step


@pytest.mark.parametrize("family", ["dit", "udit", "dic"])
def test_bench_reports_a_real_step(family):
    result = train_step.bench("tiny", batch=2, dtype="float32", steps=1, repeats=1, family=family)
    assert result["family"] == family and result["params"] > 0
    assert result["step_ms"] > 0 and result["gflop_per_step"] > 0
    assert result["examples_per_sec"] == pytest.approx(2 * result["steps_per_sec"])
