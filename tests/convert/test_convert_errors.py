"""launch/convert.py's failure modes: each gives one line naming the problem and the fix."""

import subprocess
import sys

import numpy as np
import pytest

from jaxlab.convert.checked import convert_checked
from jaxlab.convert.io import load_state_dict
from tests.conftest import GoldenCase

CASE = GoldenCase("dit", "dit_forward_small")
SMALL = {k: CASE.meta["constructor"][k] for k in ("input_size", "hidden_size", "depth", "num_heads", "num_classes")}
PRESETS = {"Small-wide": {**SMALL, "hidden_size": 128}, "Small": SMALL}


def test_wrong_preset_names_the_one_the_checkpoint_looks_like():
    with pytest.raises(ValueError, match=r"tiny.pt does not match --preset=Small-wide \(the checkpoint's pos_embed .*\); "
                                         r"it looks like Small: rerun with --preset=Small$"):
        convert_checked("dit", CASE.state_dict, user_kwargs={}, preset="Small-wide", presets=PRESETS, source="tiny.pt")
    with pytest.raises(ValueError, match=r"does not match the default dit kwargs \(no --preset given\) .*it looks like Small"):
        convert_checked("dit", CASE.state_dict, user_kwargs={}, preset=None, presets=PRESETS, source="tiny.pt")
    with pytest.raises(ValueError, match="no jaxlab preset matches it: give the official constructor kwargs"):
        convert_checked("dit", CASE.state_dict, user_kwargs={}, preset=None, presets={}, source="tiny.pt")
    module, _ = convert_checked("dit", CASE.state_dict, user_kwargs={}, preset="Small", presets=PRESETS, source="x")
    assert module.config.hidden_size == 64


def test_nonfinite_weights_are_refused():
    state_dict = dict(CASE.state_dict)
    state_dict["final_layer.linear.weight"] = np.full_like(state_dict["final_layer.linear.weight"], np.nan)
    with pytest.raises(ValueError, match=r"x.pt holds NaN/Inf in final_layer/linear/kernel \(\d+ values\).*nothing written"):
        convert_checked("dit", state_dict, user_kwargs=SMALL, preset=None, presets={}, source="x.pt")


@pytest.mark.parametrize("content,message", [
    (b"", "is empty \\(0 bytes\\)"),
    (bytes(range(256)) * 8, "is not a readable PyTorch weights file"),
])
def test_unreadable_torch_files(tmp_path, content, message):
    pytest.importorskip("torch")
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_state_dict(path)
    assert "weights_only=False" not in str(info.value)  # never advise running pickled code


def test_corrupt_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": np.ones((4, 4), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-9])  # truncated
    with pytest.raises(ValueError, match="w.safetensors is not a valid .safetensors file .* fetch the file again"):
        load_state_dict(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="is not a valid .safetensors file"):
        load_state_dict(path)


@pytest.mark.slow  # 20 s of imports; tests/launch/test_reliability_cli.py checks the one-line errors of the CLIs
def test_cli_prints_one_line(tmp_path):
    """The CLI turns these errors into one line on stderr and a non-zero exit, no traceback."""
    path = tmp_path / "bad.pt"
    path.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "launch.convert", "--family=dit", f"--checkpoint={path}",
                           f"--output={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {path} is empty (0 bytes); the download or copy did not "
                                                f"finish: fetch the file again"]
    assert not (tmp_path / "out").exists()
