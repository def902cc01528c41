"""Architecture sweep helpers and the tinylm launchers' flags."""

import numpy as np
import pytest

from jaxlab.tinylm import sweep
from jaxlab.tinylm.sizes import lm_param_count


def test_sampled_architectures_sit_at_the_budget():
    archs = sweep.sample_architectures(6, 300_000, 512, head_dim=16, depth_range=(2, 8), seed=1)
    assert len(set(archs)) == 6
    for a in archs:
        assert a.width % 16 == 0 and a.heads * 16 == a.width and 2 <= a.depth <= 8 and 1.8 <= a.ffn_ratio <= 4.2
        assert abs(sweep.llama_param_count(a, 512) - 300_000) <= 30_000
    for a in archs[:2]:
        assert sweep.llama_param_count(a, 512) == lm_param_count(sweep.llama_config(a, 512))
    assert archs == sweep.sample_architectures(6, 300_000, 512, head_dim=16, depth_range=(2, 8), seed=1)
    with pytest.raises(ValueError, match="found only"):
        sweep.sample_architectures(3, 300_000, 512, head_dim=16, depth_range=(2, 2), ffn_ratio_range=(3.0, 3.0))


def test_spearman_table():
    rows = [{"depth": d, "width": 100 - d, "ffn_ratio": 2.5, "loss": 5 - 0.1 * d + (0.3 if d == 4 else 0),
             "decode_tok_s": 1000 / d} for d in range(2, 8)]
    corr = sweep.spearman_table(rows)
    assert corr["depth"]["decode_tok_s"] == pytest.approx(-1.0)
    assert corr["width"]["decode_tok_s"] == pytest.approx(1.0)
    assert -1 < corr["depth"]["loss"] < 0
    assert np.isnan(corr["ffn_ratio"]["loss"])
    with pytest.raises(ValueError, match="at least 3"):
        sweep.spearman_table(rows[:2])


_FLAG_CHECK = """
import pytest
from absl import flags

import launch.tinylm_ladder as ladder
import launch.tinylm_sweep  # importing both must not redefine a flag
import launch.train

assert {"ladder_steps", "sweep_configs", "workdir"} <= set(flags.FLAGS)
flags.FLAGS(["prog", "--workdir=/tmp/x", "--ladder_teacher=64,3,2,128", "--ladder_deep=64,4,2,128"])
with pytest.raises(ValueError, match="inheritance can only remove layers"):
    ladder.spec_from_flags("/tmp/x").validate()
"""


def test_launchers_share_the_workdir_flag_and_define_distinct_flags():
    # A fresh interpreter: other launch modules imported by this pytest session (launch.encode)
    # define flags of launch.train's names, which says nothing about the tiny-LM launchers.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _FLAG_CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow  # every stage's code has a default test (tokenizer pruning, inheritance, multiround, configs)
def test_ladder_command_runs_and_resumes(tmp_path):
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "launch.tinylm_ladder", f"--workdir={tmp_path}", "--ladder_steps=2",
           "--ladder_teacher_steps=2", "--ladder_mask_steps=2", "--ladder_probe_batches=1", "--ladder_decode_tokens=4",
           "--ladder_decode_repeats=1", "--ladder_teacher=64,3,2,128", "--ladder_shallow=64,1,2,128",
           "--ladder_deep=32,2,1,64", "--ladder_vocab=400", "--ladder_compact_vocab=300", "--ladder_seq=16"]
    subprocess.run(cmd, check=True, capture_output=True)
    result = json.loads((tmp_path / "ladder.json").read_text())
    assert [r["rung"] for r in result["rows"]] == ["teacher", "baseline", "compact_tokenizer", "deeper_narrower",
                                                  "inheritance", "second_round", "second_round_uniform"]
    picked = [json.loads((tmp_path / "seed0" / f).read_text())["batch_ids"]
              for f in ("round2_selection.json", "round2_uniform_selection.json")]
    assert len(picked[0]) == len(picked[1])  # the control trains on as many batches (tokens) as rung 5
    assert all(np.isfinite(r["ppl_per_byte"]).all() for r in result["rows"])
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)  # everything exists: nothing retrains
    assert "trained" not in again.stdout

    shared = tmp_path / "shared"  # another seed inheriting from seed 0's teacher instead of training its own
    cmd_shared = [c.replace(f"--workdir={tmp_path}", f"--workdir={shared}") for c in cmd]
    subprocess.run(cmd_shared + ["--ladder_seeds=1", f"--ladder_teacher_dir={tmp_path / 'seed0' / 'teacher'}"],
                   check=True, capture_output=True)
    assert not (shared / "seed1" / "teacher").exists()
    rows = {r["rung"]: r["ppl_per_byte"] for r in json.loads((shared / "ladder.json").read_text())["rows"]}
    assert rows["teacher"] == [r["ppl_per_byte"] for r in result["rows"] if r["rung"] == "teacher"][0]
