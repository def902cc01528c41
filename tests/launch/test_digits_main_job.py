"""The README's main job, end to end (slow: 4-7 minutes on 2 CPU cores; run with `pytest -m slow`).

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


@pytest.mark.slow
def test_digits_main_job_draws_the_requested_digits(tmp_path):
    workdir = tmp_path / "digits"
    train = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/dit.py:digits", f"--workdir={workdir}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (workdir / "samples/step_00004000.png").exists()

    out = tmp_path / "eval"
    sample = subprocess.run(
        [sys.executable, "-m", "launch.sample", "--config=configs/dit.py:digits", f"--checkpoint={workdir}",
         f"--outdir={out}", "--config.sample.num_samples=100", "--config.sample.batch_size=100"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    data = np.load(out / "samples.npz")
    samples, requested = data["samples"].reshape(100, -1), data["labels"]
    images, labels = load_digits(16)
    distances = ((samples[:, None] - images.reshape(len(images), -1)[None]) ** 2).sum(-1)
    accuracy = float((labels[distances.argmin(1)] == requested).mean())
    assert accuracy >= 0.9, accuracy
