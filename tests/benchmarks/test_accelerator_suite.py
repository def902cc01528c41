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


def test_unknown_sections_are_refused_before_any_measurement():
    with pytest.raises(ValueError, match="unknown sections \\['dit'\\]"):
        suite.run(tiny=True, max_batch=2, batch=2, sections=["dit"])


def test_a_failing_section_becomes_a_row_and_the_next_one_runs(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\n while compiling")

    monkeypatch.setattr(suite, "sampling_row", broken)
    rows = suite.run(tiny=True, max_batch=2, batch=2, sections=["dit_sampling", "llada"])
    assert rows[0]["program"] == "dit_sampling: failed: RuntimeError: RESOURCE_EXHAUSTED: out of memory while compiling"
    assert [r["program"].rsplit(", ", 1)[1] for r in rows[1:]] == ["none cache", "prefix cache", "dual cache"]
    assert "dit_sampling: failed" in capsys.readouterr().out  # printed as it happened


def test_attention_benchmark_reports_the_compiled_path_and_errors():
    from benchmarks import attention_kernels

    row = attention_kernels.measure(attention_kernels.TINY_CASES[1], repeats=1)
    assert row["path"] == "xla"  # CPU: dot_product_attention compiles to the XLA arrangement
    assert float(row["err_out"]) < 1e-2 and float(row["err_grad"]) < 3e-2  # bf16 against exact float32
    assert row["err_out"] == row["xla_err_out"]
