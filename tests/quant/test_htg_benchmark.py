"""benchmarks/htg_quant.py end to end on a tiny random DiC checkpoint (the family is read from it)."""

import json
import math
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from benchmarks import htg_quant
from jaxlab.models.dic import DiC, DiCConfig
from jaxlab.train.params_io import save_model


@pytest.fixture(scope="module")
def tiny_dic(tmp_path_factory):
    """An 8x8x4 DiC (``configs/dic.py:tiny``'s shape, widths 8/16/32, one block per stage) with
    random weights drawn on the host (no initialiser to compile; the official init would zero
    the output layer and make all samples equal)."""
    cfg = DiCConfig(input_size=8, in_channels=4, hidden_size=8, depth=(1, 1, 1, 1, 1), num_classes=10)
    shapes = jax.eval_shape(DiC(cfg).init, jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,), jnp.int32),
                            jnp.zeros((1,), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    params = {path: (1.0 if path[-1] == "scale" else 0.0) + 0.2 * rng.standard_normal(leaf.shape).astype(np.float32)
              for path, leaf in flatten_dict(nn.unbox(shapes)).items()}
    return save_model(tmp_path_factory.mktemp("htg_bench") / "dic", "dic", cfg, unflatten_dict(params))


def test_benchmark_writes_dic_tables_and_json(tiny_dic, tmp_path, monkeypatch, capsys):
    """The main path (calibration, per-layer errors, size, float/fake/integer timing) on DiC,
    two DDIM steps; the results JSON and the printed tables carry DiC's layer kinds."""
    out = tmp_path / "htg.json"
    argv = ["htg_quant", f"--checkpoint={tiny_dic}", "--variant=tiny", "--num_steps=2", "--calibration_samples=8",
            "--probe_samples=2", "--fid=none", "--recipes=+ scaling (= HTG)", "--bits=8", "--timing_rounds=1",
            f"--json={out}"]
    monkeypatch.setattr(sys, "argv", argv)
    htg_quant.main()
    res = json.loads(out.read_text())
    assert res["setup"]["family"] == "dic" and res["setup"]["sampler"] == "ddim-2"
    assert [k for k, _ in res["setup"]["layer_kinds"]] == ["conv0", "conv1", "skip"]
    row = res["W8A8 + scaling (= HTG)"]
    assert sorted(row["errors"]) == ["conv0", "conv1", "skip"]
    assert all(0 < e["act"] < 0.05 and 0 < e["both"] < 0.05 for e in row["errors"].values()), row["errors"]
    assert 0 < row["bytes"] < res["float"]["bytes"] and row["groups"] == 1  # G = T // 10, at least 1
    t = res["timing"]
    assert all(t[m]["median_s"] > 0 for m in ("float", "fake", "integer"))
    assert t["fake_vs_float_max_abs_diff"] > 0 and math.isfinite(t["integer_vs_fake_max_abs_diff"])
    printed = capsys.readouterr().out
    assert "dic, ddim-2" in printed and "| recipe | conv0 | conv1 | skip 1x1 | act-only" in printed
    assert "| + scaling (= HTG) |" in printed and "| integer |" in printed
    # an existing results file is never overwritten
    with pytest.raises(SystemExit, match="exists; choose a new --json path"):
        htg_quant.main()
