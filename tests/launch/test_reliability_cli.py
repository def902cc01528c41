"""launch/train.py and launch/sample.py under interruption and damage (subprocesses, 1 CPU device).

Ctrl-C saves like SIGTERM and a second Ctrl-C aborts without hanging; a damaged workdir gives
one-line messages. The kill-at-random-moments test (marked slow) repeats SIGKILL/SIGINT/SIGTERM
at random times, many during a save, and checks every restart resumes the newest valid step.
"""

import os
import random
import signal
import time

import pytest

from jaxlab.train.checkpoint import Checkpointer
from tests.launch.test_train_cli import _complete_steps, _run, _start, _wait_for_step_above

ENDLESS = dict(training__num_steps=100_000, checkpoint__every_steps=2, logging__every_steps=2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "jax_compilation_cache"


def _tmp_dirs(workdir):
    return [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


@pytest.mark.slow  # test_ctrl_c_in_process_saves_and_stops covers the loop's handling by default
def test_ctrl_c_saves_like_sigterm(tmp_path, cache_dir):
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

    # Continue from the Ctrl-C checkpoint to a final step.
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


# --- the terminal --------------------------------------------------------------------------------------

def test_a_run_prints_one_readable_line_per_window(tmp_path, cache_dir):
    proc = _run(["launch.train", *_cli(training__num_steps=4, logging__every_steps=2, checkpoint__every_steps=4,
                                       logging__sample_every_steps=4, logging__tensorboard=True,
                                       sample__num_steps=2, sample__num_samples=4, sample__classes="(0, 1)"),
                 f"--workdir={tmp_path / 'run'}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert not [line for line in lines if line[:1] in "IW" and line[1:5].isdigit()], lines  # no absl INFO/WARNING
    assert len(lines) == len(set(lines)) and len(lines) <= 6, lines  # each message once, no library noise
    window = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in window] == ["step 2/4 (50%)", "step 4/4 (100%)"]
    assert "(mean of 2 steps)" in window[0] and " steps/s, ETA " in window[1], window
    assert "MFU" not in window[1]  # the CPU peak is measured, too noisy to print
    assert _tensorboard_tags(tmp_path / "run/tensorboard", "image") == {"samples"}


def _tensorboard_tags(directory, kind: str) -> set[str]:
    """Tags of the ``kind`` ("image" / "simple_value") summaries in a TensorBoard event file."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 16 + length
            tags |= {v.tag for v in event.summary.value if v.HasField(kind)}
    return tags


def test_user_errors_are_one_line_and_traceback_is_optional(tmp_path, cache_dir):
    args = ["launch.train", *_cli(training__ema_decay=1.5), f"--workdir={tmp_path / 'run'}"]
    proc = _run(args, cache_dir)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: config.training.ema_decay=1.5 must be in [0, 1)"]
    proc = _run(args + ["--traceback"], cache_dir)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


@pytest.mark.slow  # the in-process test_sampling_reads_the_newest_valid_step covers the fallback itself
def test_sampling_a_damaged_workdir_is_one_line(tmp_path, cache_dir):
    workdir = tmp_path / "run"
    proc = _run(["launch.train", *_cli(training__num_steps=2, checkpoint__every_steps=2), f"--workdir={workdir}"],
                cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import shutil

    shutil.rmtree(workdir / "checkpoints/2/state")
    proc = _run(["launch.sample", "--config=configs/dit.py:digits", f"--checkpoint={workdir}",
                 f"--outdir={tmp_path / 's'}", "--config.sample.num_steps=2"], cache_dir)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("warning: skipping damaged checkpoint step 2 (")
    assert lines[-1] == f"error: every checkpoint in {workdir / 'checkpoints'} is damaged (steps [2])"
    assert len(lines) == 2, lines
