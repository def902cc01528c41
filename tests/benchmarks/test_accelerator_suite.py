"""The accelerator suite runs at tiny sizes on CPU: DiT and LLaDA rows by default, every row (slow)."""

import pytest

from benchmarks import accelerator_suite as suite


def _check_train_row(row):
    model, hw = (float(row[k].rstrip("%")) for k in ("mfu_model", "mfu_hw"))
    assert 0 < model <= hw  # hardware FLOPs add the optimizer (and any remat recompute) to the model's


def test_dit_and_llada_rows_at_tiny_sizes():
    _check_train_row(suite.largest_batch_row(2, "bfloat16", suite.TINY["image"], 1e9, None, steps=1))
    assert suite.sampling_row("bfloat16", suite.TINY["image"], steps=2)["result"].endswith(" s")
    rows = suite.decoding_rows("bfloat16", suite.TINY["llada"], 8, 8, 4)
    assert [r["program"].rsplit(", ", 1)[1] for r in rows] == ["none cache", "prefix cache", "dual cache"]
    assert all("tokens/s" in r["result"] for r in rows)


@pytest.mark.slow
def test_tiny_suite_reports_every_program():
    rows = suite.run(tiny=True, max_batch=2, batch=2)
    programs = [row["program"] for row in rows]
    assert programs[0].startswith("dit XL-2 train step") and programs[1].startswith("DiT-XL/2 DDIM")
    assert programs[2].startswith("udit B train step") and programs[3].startswith("dic B train step")
    for row in rows[:1] + rows[2:4]:
        _check_train_row(row)
