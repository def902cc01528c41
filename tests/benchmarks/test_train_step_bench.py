"""The train-step benchmark runs each image family's real train step and reports consistent numbers."""

import pytest

from benchmarks import train_step


# U-DiT and DiC run the same benchmark code as DiT (the family is a config string); their compiles take
# 15-100 s on 2 cores, so they are in the slow run only.
@pytest.mark.parametrize("family", ["dit", pytest.param("udit", marks=pytest.mark.slow),
                                    pytest.param("dic", marks=pytest.mark.slow)])
def test_bench_reports_a_real_step(family):
    result = train_step.bench("tiny", batch=2, dtype="float32", steps=1, repeats=1, family=family)
    assert result["family"] == family and result["params"] > 0
    assert result["step_ms"] > 0 and result["gflop_per_step"] > 0
    assert result["examples_per_sec"] == pytest.approx(2 * result["steps_per_sec"])
