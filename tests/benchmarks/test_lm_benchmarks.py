"""Smoke test: the LM decoding benchmark runs and prints its table (tiny sizes)."""

import subprocess
import sys

import pytest


@pytest.mark.slow  # the decode path it times is covered by tests/lm/test_generate.py
def test_lm_decoding_benchmark_runs():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.lm_decoding", "--contexts=16,48", "--new_tokens=2", "--hidden=32",
         "--layers=1", "--heads=2", "--repeats=1"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith(("softmax", "dijiang"))]
    assert len(rows) == 4
    cache = {(r[0].strip(), int(r[1])): float(r[4]) for r in rows}
    assert cache[("dijiang", 16)] == cache[("dijiang", 48)]  # constant-size state
    assert cache[("softmax", 48)] > cache[("softmax", 16)]  # the KV cache grows with the context
