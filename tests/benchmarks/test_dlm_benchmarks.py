"""Smoke tests of the DLM benchmark scripts (slow: each compiles a dozen decoders)."""

import pytest

pytestmark = pytest.mark.slow


def test_throughput_table_counts_generated_tokens_only():
    from benchmarks.dlm_throughput import throughput

    rows = throughput(gen=16, prompt_length=8, block=8, per_step=4, rounds=1,
                      model_kw=dict(d_model=32, n_layers=1, n_heads=2, mlp=64, vocab=64))
    assert len(rows) == 14
    for row in rows:
        tokens_per_s = float(row["generated_tokens_per_s"])  # 16 generated tokens, never the 8 prompt tokens
        assert abs(tokens_per_s * float(row["seconds"]) - 16) < 0.005 * 16
        assert float(row["forwards_per_token"]) == row["forwards"] / 16


def test_selfcorrect_runs_on_the_shipped_sudoku_model():
    from benchmarks.dlm_selfcorrect import selfcorrect
    from jaxlab.dlm.pretrained import load_checkpoint

    module, params, task, _ = load_checkpoint("sudoku")
    rows = selfcorrect(module, params, task, num_examples=4, seeds=1)
    assert any(r["decoder"].startswith("ReMDM-loop") for r in rows)
    assert all(0 <= float(r["accuracy"].split()[0]) <= 1 for r in rows)
