"""Command lines: converting an official DiJiang checkpoint (safetensors) and writing the corpus BPE."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxlab.train.params_io import load_model
from tests.conftest import GoldenCase


@pytest.mark.slow  # from_torch('dijiang') on the same golden is a default test (tests/models/test_lm.py)
def test_convert_dijiang_checkpoint_cli(tmp_path):
    case = GoldenCase("dijiang", "dijiang_lm_forward")
    save_file({k: np.ascontiguousarray(v) for k, v in case.state_dict.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(case.meta["constructor"]["kwargs"]))
    subprocess.run([sys.executable, "-m", "launch.convert", "--family=dijiang", f"--checkpoint={tmp_path / 'model.safetensors'}",
                    f"--torch_config={tmp_path / 'config.json'}", f"--output={tmp_path / 'out'}"], check=True,
                   capture_output=True)
    module, params = load_model(tmp_path / "out")
    logits, _ = jax.jit(module.apply)({"params": params}, case["inputs/input_ids"])
    case.assert_close("logits", logits)


@pytest.mark.slow  # train_bpe is covered by tests/lm/test_task.py
def test_tokenizer_cli_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "bpe.json"
    cmd = [sys.executable, "-m", "launch.lm_tokenizer", f"--output={out}", "--vocab_size=300"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert json.loads(out.read_text())["model"]["type"] == "BPE"
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
