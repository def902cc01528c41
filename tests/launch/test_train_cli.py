"""launch/train.py end to end: SIGKILL + restore, SIGTERM -> save + exit 0, sample grid, sampling a workdir."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxlab.train.checkpoint import Checkpointer
from tests.train.helpers import cli_args, compilation_cache_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_compilation_cache"


def _env(cache_dir, devices: int = 1):
    env = dict(os.environ, **compilation_cache_env(cache_dir))
    if devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return env


def _start(workdir, cache_dir, **overrides):
    return subprocess.Popen(
        [sys.executable, "-m", "launch.train", *cli_args(**overrides), f"--workdir={workdir}"],
        cwd=ROOT, env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _run(args, cache_dir, devices=1, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(cache_dir, devices),
                          capture_output=True, text=True, timeout=timeout)


def _complete_steps(workdir) -> list[int]:
    path = workdir / "checkpoints"
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def _wait_for_step_above(proc, workdir, step: int, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = _complete_steps(workdir)
        if steps and steps[-1] > step:
            return steps[-1]
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no checkpoint after step {step} within {timeout}s")


def test_kill_resume_stop_and_sample(tmp_path, cache_dir):
    workdir = tmp_path / "run"
    endless = dict(training__num_steps=100_000, checkpoint__every_steps=2, logging__every_steps=2)

    # 1. SIGKILL mid-training: the previous complete checkpoint survives and restores.
    proc = _start(workdir, cache_dir, **endless)
    _wait_for_step_above(proc, workdir, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = Checkpointer(workdir / "checkpoints").latest_step()
    assert killed_at is not None and killed_at >= 4 and killed_at % 2 == 0

    # 2. Restart: resumes from it; SIGTERM makes it save where it is and exit 0.
    proc = _start(workdir, cache_dir, **endless)
    _wait_for_step_above(proc, workdir, killed_at)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from {workdir / 'checkpoints'}/{killed_at}" in err
    stopped_at = int(err.split("stopping at step ")[1].split(" ")[0])
    assert "(SIGTERM); checkpoint saved" in err
    assert Checkpointer(workdir / "checkpoints").latest_step() == stopped_at > killed_at

    # 3. Continue to a final step, writing a sample grid from the EMA params; the workdir given
    #    relative to the current directory, as in the README (orbax itself refuses relative paths).
    relative = os.path.relpath(workdir, ROOT)
    proc = _run(["launch.train", *cli_args(training__num_steps=stopped_at + 1, logging__sample_every_steps=1000,
                                           sample__num_steps=2), f"--workdir={relative}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = workdir / f"samples/step_{stopped_at + 1:08d}.png"
    assert grid.exists() and f"finished at step {stopped_at + 1}; latest sample grid: {grid}" in proc.stderr

    # 4. launch.sample reads the workdir's latest EMA weights.
    out = tmp_path / "samples"
    proc = _run(["launch.sample", "--config=configs/dit.py:digits", f"--checkpoint={workdir}", f"--outdir={out}",
                 "--config.sample.num_steps=2", "--config.sample.num_samples=4", "--config.sample.batch_size=4"],
                cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.shape == (4, 8, 8, 1) and np.isfinite(samples).all()


def test_cli_rejects_bad_input(tmp_path, cache_dir):
    proc = _run(["launch.train", *cli_args(training__bogus=1), f"--workdir={tmp_path}"], cache_dir)
    assert proc.returncode == 2
    assert "unknown config key 'training.bogus': config.training has no 'bogus'; allowed keys: ['ema_decay'" in proc.stderr

    proc = _run(["launch.train", *cli_args(training__global_batch_size=3), f"--workdir={tmp_path}"], cache_dir, devices=2)
    assert proc.returncode != 0
    assert "global_batch_size=3 is not divisible by the data-parallel size 2" in proc.stderr
