"""End to end: convert an official-format checkpoint with the CLI, then sample from it with the CLI."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import GoldenCase

CASE = GoldenCase("dit", "dit_forward_small")


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_convert_then_sample(tmp_path):
    pt = tmp_path / "tiny.pt"
    torch.save({k: torch.from_numpy(v) for k, v in CASE.state_dict.items()}, pt)
    ckpt = tmp_path / "ckpt"
    kwargs = '{"input_size": 8, "hidden_size": 64, "depth": 2, "num_heads": 4, "num_classes": 10}'
    _run("launch.convert", "--family=dit", f"--checkpoint={pt}", f"--output={ckpt}", f"--torch_kwargs={kwargs}")
    assert (ckpt / "model.json").exists()

    # Refuses to overwrite what is already written.
    proc = _run("launch.convert", "--family=dit", f"--checkpoint={pt}", f"--output={ckpt}", f"--torch_kwargs={kwargs}", check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr

    out = tmp_path / "samples"
    _run("launch.sample", "--config=configs/dit.py:tiny", f"--checkpoint={ckpt}", f"--outdir={out}",
         "--config.sample.sampler=ddpm", "--config.sample.num_steps=4", "--config.sample.classes=(3, 7)")
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (4, 8, 8, 4) and np.isfinite(data["samples"]).all()
    np.testing.assert_array_equal(data["labels"], [3, 7, 3, 7])
    assert (out / "latents_grid.png").exists()


# Through the CLI (a process each): a flag typo, and a value launch.sample's check rejects before any model
# work (the class range needs the model's num_classes). test_bad_sample_values_are_named checks the other
# values with the same function, validate_sample_config, in this process.
@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.sample.classes=(3, 12)", "class label out of range"),
        ("--config.sample.num_step=3", 'Did you mean "num_steps"'),
    ],
)
def test_sample_rejects_bad_config_before_work(tmp_path, override, message):
    proc = _run("launch.sample", "--config=configs/dit.py:tiny", f"--outdir={tmp_path / 'o'}", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "o" / "samples.npz").exists()


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("sampler", "euler", "config.sample.sampler='euler' is not allowed"),
        ("cfg_scale", 0.5, "config.sample.cfg_scale=0.5 must be >= 1"),
        ("classes", (3, 12), "class label out of range"),
    ],
)
def test_bad_sample_values_are_named(key, value, message):
    """What launch.sample checks before work (validate_sample_config), called as it calls it."""
    from configs.dit import get_config
    from jaxlab.diffusion.sample_config import validate_sample_config

    config = get_config("tiny")
    validate_sample_config(config.sample, config.model.num_classes)  # the shipped values pass
    config.sample[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_sample_config(config.sample, config.model.num_classes)


def test_unknown_config_variant_lists_the_known_ones(tmp_path):
    proc = _run("launch.sample", "--config=configs/dit.py:XXL-2", f"--outdir={tmp_path}", check=False)
    assert proc.returncode != 0 and "unknown dit config variant 'XXL-2'" in proc.stderr and "'XL-2'" in proc.stderr
