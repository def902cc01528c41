"""launch.quantize end to end (slow; tests/quant covers the library path) on the converted tiny official DiT, then launch.sample with the result; bad input."""

import subprocess
import sys

import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.train.params_io import save_model
from tests.conftest import GoldenCase

CASE = GoldenCase("dit", "dit_forward_small")
STEPS = ("--config.sample.sampler=ddim", "--config.sample.num_steps=4", "--config.sample.cfg_scale=1.5")


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    module, params = from_torch("dit", CASE.meta["constructor"], CASE.state_dict)
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny", "dit", module.config, params)


@pytest.mark.slow
def test_quantize_then_sample(checkpoint, tmp_path):
    out = tmp_path / "w4a8"
    proc = _run("launch.quantize", "--config=configs/dit.py:tiny", f"--checkpoint={checkpoint}", "--method=htg",
                "--weights=4", "--activations=8", "--calibration_samples=8", f"--output={out}", *STEPS)
    assert "htg W4A8" in proc.stdout and (out / "quant.npz").exists()
    samples = tmp_path / "samples"
    proc = _run("launch.sample", "--config=configs/dit.py:tiny", f"--checkpoint={out}", f"--outdir={samples}", *STEPS)
    assert "integer execution" in proc.stdout
    data = np.load(samples / "samples.npz")
    assert data["samples"].shape == (4, 8, 8, 4) and np.isfinite(data["samples"]).all()
    # another schedule than the calibrated one is refused before sampling
    proc = _run("launch.sample", "--config=configs/dit.py:tiny", f"--checkpoint={out}", f"--outdir={tmp_path / 's2'}",
                "--config.sample.num_steps=5", check=False)
    assert proc.returncode != 0 and "not calibrated for" in proc.stderr


def test_quantize_refuses_a_checkpoint_of_another_variant(checkpoint, tmp_path):
    """(The other bad inputs are refused by jaxlab.quant, tested in tests/quant.)"""
    proc = _run("launch.quantize", f"--checkpoint={checkpoint}", f"--output={tmp_path / 'q'}",
                "--config=configs/dit.py:digits", check=False)
    assert proc.returncode != 0 and "does not match the config (input_size: config 16 vs checkpoint 8" in proc.stderr
    assert not (tmp_path / "q").exists()
