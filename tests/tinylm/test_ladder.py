"""The ladder's shared teacher (``--ladder_teacher_dir``): what it reads and what it refuses."""

import json
import pathlib

import pytest

from configs import tinylm as tl_configs
from jaxlab.tinylm import ladder

TEACHER = tl_configs.llama(400, 64, 3, 2, 128)


def _spec(tmp_path: pathlib.Path) -> ladder.LadderSpec:
    return ladder.LadderSpec(workdir=tmp_path / "ladder", seeds=(1, 2), steps=2, teacher_steps=2, batch_size=2,
                             seq_length=16, vocab=400, compact_vocab=300, teacher=tl_configs.llama(400, 64, 4, 2, 128),
                             shallow=tl_configs.llama(400, 64, 1, 2, 128), deep=tl_configs.llama(300, 32, 2, 1, 64))


def _teacher_run(tmp_path: pathlib.Path, tokenizer_text: str, steps: int = 7, family: str = "lm") -> pathlib.Path:
    """A stand-in teacher workdir: the two JSON files a training run writes first, and its tokenizer."""
    run = tmp_path / "teacher"
    run.mkdir()
    (tmp_path / "teacher_tok.json").write_text(tokenizer_text)
    data_path = f"corpus=pydoc,seq_length=16,vocab_size=400,tokenizer={tmp_path / 'teacher_tok.json'}"
    (run / "config.json").write_text(json.dumps({"training": {"num_steps": steps},
                                                 "data": {"source": "lm_text", "path": data_path}}))
    (run / "model.json").write_text(json.dumps({"family": family, "config": TEACHER}))
    return run


def test_shared_teacher_takes_shape_and_steps_from_the_run(tmp_path):
    spec = ladder.shared_teacher(_spec(tmp_path), _teacher_run(tmp_path, "tok"))
    assert spec.teacher == TEACHER and spec.teacher_steps == 7
    assert ladder.run_dir(spec, 1, "teacher") == ladder.run_dir(spec, 2, "teacher") == tmp_path / "teacher"
    assert ladder.run_dir(spec, 2, "baseline") == tmp_path / "ladder" / "seed2" / "baseline"
    own = _spec(tmp_path)
    assert ladder.run_dir(own, 2, "teacher") == tmp_path / "ladder" / "seed2" / "teacher"
    spec.validate()  # the deeper-narrower shape fits inside the shared teacher


def test_shared_teacher_refuses_what_it_cannot_inherit_from(tmp_path):
    with pytest.raises(ValueError, match="not a training workdir"):
        ladder.shared_teacher(_spec(tmp_path), tmp_path)
    with pytest.raises(ValueError, match="must be an 'lm'"):
        ladder.shared_teacher(_spec(tmp_path), _teacher_run(tmp_path, "tok", family="dit"))


def test_shared_teacher_must_use_the_ladder_tokenizer_and_be_finished(tmp_path):
    spec = ladder.shared_teacher(_spec(tmp_path), _teacher_run(tmp_path, "the original tokenizer"))
    (tmp_path / "original.json").write_text("another tokenizer")
    with pytest.raises(ValueError, match="not on this ladder's original tokenizer"):
        ladder.check_shared_teacher(spec, {"original": str(tmp_path / "original.json")}, finished=False)
    (tmp_path / "original.json").write_text("the original tokenizer")
    toks = {"original": str(tmp_path / "original.json")}
    ladder.check_shared_teacher(spec, toks, finished=False)  # still training: fine until rung 4
    with pytest.raises(ValueError, match="no checkpoint at its last step 7"):
        ladder.check_shared_teacher(spec, toks, finished=True)
    (spec.teacher_dir / "checkpoints" / "7").mkdir(parents=True)
    ladder.check_shared_teacher(spec, toks, finished=True)


def test_the_command_reports_a_bad_teacher_dir_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "launch.tinylm_ladder", f"--workdir={tmp_path / 'w'}",
                           f"--ladder_teacher_dir={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: --ladder_teacher_dir={tmp_path} is not a training workdir "
                                                "(no config.json / model.json); give the workdir of a ladder teacher "
                                                "(seed<k>/teacher) or of a `launch.train` LM run"]
    assert not (tmp_path / "w").exists()  # refused before any work
