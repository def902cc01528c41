"""The digits jobs, end to end (slow: 4-15 minutes each on 2 CPU cores; run with `pytest -m slow`).

The README's main job (DiT) and the same job for U-DiT and DiC.

Cheaper tests cover the same code: tests/launch/test_train_cli.py (CLI, resume, grid, sampling)
and tests/train (the loop). This one checks the outcome: the requested digits are recognisable,
measured by a 1-nearest-neighbour classifier over the real digits.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlab.data import load_digits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def nearest_digit_accuracy(samples_npz, image_size: int) -> float:
    """Fraction of samples whose nearest real digit (L2 in pixels) has the requested class."""
    data = np.load(samples_npz)
    samples, requested = data["samples"].reshape(len(data["labels"]), -1), data["labels"]
    images, labels = load_digits(image_size)
    distances = ((samples[:, None] - images.reshape(len(images), -1)[None]) ** 2).sum(-1)
    return float((labels[distances.argmin(1)] == requested).mean())


@pytest.mark.slow
@pytest.mark.parametrize("config,last_step,image_size", [("dit", 4000, 16), ("udit", 2000, 8), ("dic", 3000, 16)])
def test_digits_job_draws_the_requested_digits(tmp_path, config, last_step, image_size):
    workdir = tmp_path / "digits"
    train = subprocess.run([sys.executable, "-m", "launch.train", f"--config=configs/{config}.py:digits", f"--workdir={workdir}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (workdir / f"samples/step_{last_step:08d}.png").exists()

    out = tmp_path / "eval"
    sample = subprocess.run(
        [sys.executable, "-m", "launch.sample", f"--config=configs/{config}.py:digits", f"--checkpoint={workdir}",
         f"--outdir={out}", "--config.sample.num_samples=100", "--config.sample.batch_size=100"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert nearest_digit_accuracy(out / "samples.npz", image_size) >= 0.9
