"""launch/train.py and launch/sample.py under interruption and damage (subprocesses, 1 CPU device).

Ctrl-C saves like SIGTERM and a second Ctrl-C aborts without hanging; a damaged workdir gives
one-line messages. The kill-at-random-moments test (marked slow) repeats SIGKILL/SIGINT/SIGTERM
at random times, many during a save, and checks every restart resumes the newest valid step.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jaxlab.train.checkpoint import Checkpointer
from tests.launch.test_train_cli import _complete_steps, _env, _run, _start, _wait_for_step_above

ENDLESS = dict(training__num_steps=100_000, checkpoint__every_steps=2, logging__every_steps=2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_compilation_cache"


def _tmp_dirs(workdir):
    return [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def test_ctrl_c_saves_like_sigterm_and_a_second_one_aborts(tmp_path, cache_dir):
    workdir = tmp_path / "run"
    proc = _start(workdir, cache_dir, **ENDLESS)
    _wait_for_step_above(proc, workdir, 0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Ctrl-C: saving a checkpoint after this step" in err
    stopped_at = int(err.split("stopping at step ")[1].split(" ")[0])
    assert f"stopping at step {stopped_at} (SIGINT); checkpoint saved" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert Checkpointer(workdir / "checkpoints").latest_step() == stopped_at and not _tmp_dirs(workdir)

    # Continue to a final step from the Ctrl-C checkpoint.
    proc = _run(["launch.train", *_cli(training__num_steps=stopped_at + 2), f"--workdir={workdir}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"finished at step {stopped_at + 2}" in proc.stderr and not _tmp_dirs(workdir)


def test_a_second_ctrl_c_aborts_at_once(monkeypatch, capsys):
    """The second Ctrl-C exits 130 through os._exit: no Python cleanup that could wait on orbax threads."""
    from jaxlab.train import preemption

    exits = []
    monkeypatch.setattr(preemption.os, "_exit", exits.append)
    watcher = preemption.StopWatcher()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert watcher.should_stop(1) and watcher.signal_name == "SIGINT" and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert exits == [130]
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "second Ctrl-C: aborting without saving" in capsys.readouterr().err


def _cli(**overrides):
    from tests.train.helpers import cli_args

    return cli_args(**overrides)


@pytest.mark.slow
def test_kill_at_random_moments_always_resumes_a_valid_step(tmp_path, cache_dir):
    """18 interruptions at random times (a third during a save): each restart resumes the newest valid step."""
    workdir, rng = tmp_path / "run", random.Random(0)
    signals = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM] * 6
    rng.shuffle(signals)
    last = 0
    for sig in signals:
        proc = _start(workdir, cache_dir, **{**ENDLESS, "checkpoint__every_steps": 1})
        _wait_for_step_above(proc, workdir, last)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err[-3000:]
        assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 0), err[-3000:]
        steps = _complete_steps(workdir)
        assert steps and steps[-1] >= last
        last = steps[-1]
    proc = _run(["launch.train", *_cli(training__num_steps=last + 1), f"--workdir={workdir}"], cache_dir)
    assert proc.returncode == 0 and f"resumed from {workdir / 'checkpoints'}/{last}" in proc.stderr, proc.stderr[-3000:]
    del os, sys, subprocess, _env
