"""benchmarks/qac_seed_table.py: mean ± std over training seeds and the non-overlap flag."""

import json
import sys

import pytest

from benchmarks import qac_seed_table


def _report(path, fids, seed=0, curvature=None):
    runs = {run: {"cells": [{"solver": "euler", "nfe": 3, "digits_fid": fid}]} for run, fid in fids.items()}
    for run, value in (curvature or {}).items():
        runs[run]["curvature_mean"] = value
    path.write_text(json.dumps({"num": 500, "seed": seed, "runs": runs}))
    return str(path)


def test_seed_table_means_spread_and_flag(tmp_path, monkeypatch, capsys):
    files = [_report(tmp_path / "s0.json", {"baseline": 100.0, "qac": 50.0}, curvature={"qac": 0.04}),
             _report(tmp_path / "s1.json", {"baseline": 110.0, "qac": 60.0}, curvature={"qac": 0.06})]
    monkeypatch.setattr(sys, "argv", ["x", "--json", *files])
    qac_seed_table.main()
    out = capsys.readouterr().out
    assert "| baseline | euler | 105.0 ± 7.1 |" in out and "| qac | euler | 55.0 ± 7.1 |" in out
    assert "| euler | -50.0 * |" in out  # ranges [100, 110] and [50, 60] do not overlap
    assert "- qac: 0.0500 ± 0.0141 (per file: 0.0400, 0.0600)" in out and "\n- baseline:" not in out
    files.append(_report(tmp_path / "s2.json", {"baseline": 40.0, "qac": 60.0}))
    monkeypatch.setattr(sys, "argv", ["x", "--json", *files])
    qac_seed_table.main()
    assert "| euler | -26.7 |" in capsys.readouterr().out  # overlapping ranges: no flag


def test_seed_table_refuses_mixed_sampling_settings(tmp_path, monkeypatch):
    files = [_report(tmp_path / "a.json", {"baseline": 1.0}), _report(tmp_path / "b.json", {"baseline": 1.0}, seed=1)]
    monkeypatch.setattr(sys, "argv", ["x", "--json", *files])
    with pytest.raises(SystemExit, match="compare like with like"):
        qac_seed_table.main()


def test_seed_table_reads_heun_grid_files(tmp_path, monkeypatch, capsys):
    files = []
    for i, (a, b) in enumerate([(700.0, 90.0), (720.0, 100.0)]):
        runs = {run: {"cells": [{"variant": "afs,no_final", "nfe": 3, "digits_fid": fid}]}
                for run, fid in (("baseline", a), ("qac", b))}
        (tmp_path / f"g{i}.json").write_text(json.dumps({"num": 500, "seed": 0, "runs": runs}))
        files.append(str(tmp_path / f"g{i}.json"))
    monkeypatch.setattr(sys, "argv", ["x", "--json", *files])
    qac_seed_table.main()
    out = capsys.readouterr().out
    assert "| qac | afs,no_final | 95.0 ± 7.1 |" in out and "| afs,no_final | -615.0 * |" in out


def test_comparison_meets_even_heun_budgets_with_a_heun_last_step():
    from benchmarks.qac_comparison import heun_options_for
    from jaxlab.diffusion.edm import SamplingOptions, steps_for_nfe

    edm = SamplingOptions()
    assert heun_options_for(edm, "heun", 7) == edm  # odd: EDM's sampler (2N - 1)
    even = heun_options_for(edm, "heun", 6)
    assert even.final_denoise is False and steps_for_nfe("heun", 6, even) == 3  # 2N, Heun to sigma_min
    assert heun_options_for(edm, "euler", 6) == edm  # other solvers meet every budget as they are
    assert heun_options_for(SamplingOptions(afs=True), "heun", 5).final_denoise is False  # afs, no final: 2N - 1
