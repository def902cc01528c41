"""Damaged checkpoints, NaN/Inf states and config drift on resume (jaxlab.train, 1 CPU device).

A module-scoped run trains the tiny DiT to step 6 (checkpoints at 3 and 6); each test damages a
copy of it the way a disk, a copy or a kill does and asserts what a user then sees.
"""

import json
import shutil

import jax
import numpy as np
import pytest

from jaxlab.data import make_train_data
from jaxlab.train import integrity
from jaxlab.train import sharding as sh
from jaxlab.train.checkpoint import (
    DAMAGED_DIR, Checkpointer, CheckpointMismatchError, NonFiniteStateError, NoValidCheckpointError,
    restore_params_subtree,
)
from jaxlab.train.loop import train
from jaxlab.train.optim import make_optimizer
from jaxlab.train.params_io import load_model
from jaxlab.train.run_config import ConfigChangeError
from jaxlab.train.state import state_shardings
from jaxlab.train.task import task_from_config
from tests.train.helpers import assert_trees_equal, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A workdir trained to step 6 with checkpoints at steps 3 and 6, and its final state."""
    root = tmp_path_factory.mktemp("finished")
    result = train(tiny_config(), str(root / "run"))
    assert Checkpointer(root / "run/checkpoints").all_steps() == [3, 6]
    return root / "run", result


@pytest.fixture
def workdir(finished_run, tmp_path):
    """A fresh copy of the finished run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run[0], copy)
    return copy


def abstract_state(config):
    mesh = sh.make_mesh(dict(config.mesh))
    task = task_from_config(config)
    data = make_train_data(config.data, global_batch_size=int(config.training.global_batch_size), seed=0)
    optimizer, _ = make_optimizer(config.optimizer, int(config.training.num_steps))
    abstract, _ = state_shardings(task, optimizer, 0, data.example, mesh)
    return abstract, data.iterator


def _largest_state_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_bytes(path, offset_fraction=0.5):
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset_fraction)
    data[at : at + 4] = bytes(b ^ 0xFF for b in data[at : at + 4])
    path.write_bytes(bytes(data))


def _damage(step_dir, how):
    if how == "corrupt_bytes":
        _flip_bytes(_largest_state_file(step_dir))
    elif how == "missing_state":
        shutil.rmtree(step_dir / "state")
    elif how == "missing_data":
        shutil.rmtree(step_dir / "data")
    elif how == "empty_dir":
        shutil.rmtree(step_dir)
        step_dir.mkdir()
    elif how == "truncated_data":
        path = step_dir / "data/process_0-of-1.json"
        path.write_bytes(path.read_bytes()[:5])
    elif how == "corrupt_data_json":
        (step_dir / "data/process_0-of-1.json").write_text("{not json")
    elif how == "corrupt_checksums":
        (step_dir / "integrity/metadata").write_text("{")
    else:
        raise ValueError(how)


DAMAGE = ["corrupt_bytes", "missing_state", "missing_data", "empty_dir", "truncated_data", "corrupt_data_json",
          "corrupt_checksums"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_latest_step_falls_back_to_the_previous_one(workdir, finished_run, how, capsys):
    _damage(workdir / "checkpoints/6", how)
    abstract, iterator = abstract_state(tiny_config())
    checkpointer = Checkpointer(workdir / "checkpoints")
    step, state = checkpointer.restore_latest(abstract, iterator)
    checkpointer.close()
    assert step == 3 and int(state.step) == 3
    assert iterator.get_state() == {"next_index": 24}
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: skipping damaged checkpoint step 6")]
    assert len(warning) == 1, err
    assert "falling back to the previous step" in warning[0]
    # The damaged step is moved aside (never deleted), so the resumed run can save step 6 again.
    assert not (workdir / "checkpoints/6").exists() and (workdir / DAMAGED_DIR / "6").exists()


def test_corrupt_bytes_are_caught_by_the_checksums(workdir):
    """Flipped bytes that still decode are found by the checksum (not by a read error)."""
    step_dir = workdir / "checkpoints/6"
    meta = json.loads((step_dir / "integrity/metadata").read_text())
    path = "params/final_layer/linear/bias"
    meta["checksums"][path] = (meta["checksums"][path] + 1) % 2**32  # as if that array's bytes had changed
    (step_dir / "integrity/metadata").write_text(json.dumps(meta))
    abstract, iterator = abstract_state(tiny_config())
    with pytest.raises(ValueError, match=f"checksum mismatch in 1 array\\(s\\), e.g. {path}"):
        Checkpointer(workdir / "checkpoints").restore(6, abstract, iterator)


def test_resume_after_damage_continues_bit_identically(workdir, finished_run, capsys):
    _damage(workdir / "checkpoints/6", "corrupt_bytes")
    resumed = train(tiny_config(), str(workdir))
    assert resumed.step == 6
    assert_trees_equal(resumed.state, finished_run[1].state)
    err = capsys.readouterr().err
    assert f"resumed from {workdir / 'checkpoints'}/3" in err and "skipping damaged checkpoint step 6" in err
    assert Checkpointer(workdir / "checkpoints").all_steps() == [3, 6]


def test_every_step_damaged_is_one_clear_error(workdir):
    for step in (3, 6):
        _damage(workdir / f"checkpoints/{step}", "missing_state")
    with pytest.raises(NoValidCheckpointError, match="every checkpoint in .* is damaged \\(steps \\[6, 3\\]"):
        train(tiny_config(), str(workdir))


def test_sampling_reads_the_newest_valid_step(workdir, finished_run, capsys):
    for path in (workdir / "checkpoints/6/state").rglob("*"):
        if path.is_file() and "/d/" in str(path):  # every array file, so the EMA params are hit too
            _flip_bytes(path)
    step, ema = restore_params_subtree(workdir / "checkpoints")
    assert step == 3
    assert "warning: skipping damaged checkpoint step 6" in capsys.readouterr().err
    assert (workdir / "checkpoints/6").exists()  # readers never move files
    module, params = load_model(workdir)
    assert_trees_equal(params, ema)
    with pytest.raises(ValueError, match="checkpoint .*/6 is damaged"):
        restore_params_subtree(workdir / "checkpoints", step=6)


def test_a_nonfinite_state_is_never_saved(tmp_path, finished_run):
    state = finished_run[1].state
    bad = state.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(np.inf), state.params))
    abstract, iterator = abstract_state(tiny_config())
    checkpointer = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(NonFiniteStateError, match="refusing to save step 7: the state holds NaN/Inf in params/"):
        checkpointer.save(7, bad, iterator)
    checkpointer.close()
    assert Checkpointer(tmp_path / "ckpt").all_steps() == []


def test_another_model_is_a_mismatch_not_damage(workdir):
    config = tiny_config(model=dict(hidden_size=16))
    abstract, iterator = abstract_state(config)
    with pytest.raises(CheckpointMismatchError, match="holds a different model or optimizer than the config builds"):
        Checkpointer(workdir / "checkpoints").restore_latest(abstract, iterator)
    assert (workdir / "checkpoints/6").exists()  # not moved: it is not damaged


def test_fingerprint_sees_every_element_and_their_order():
    x = jax.numpy.arange(12, dtype=jax.numpy.float32).reshape(3, 4)
    base = integrity.fingerprint({"x": x})["x"]["checksum"]
    swapped = x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0])
    assert integrity.fingerprint({"x": swapped})["x"]["checksum"] != base
    assert integrity.fingerprint({"x": x.at[2, 3].add(1e-6)})["x"]["checksum"] != base
    # Independent of the layout: a sharded copy gives the same value.
    mesh = sh.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    placed = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    assert integrity.fingerprint({"x": placed})["x"]["checksum"] == base
    assert integrity.fingerprint({"x": x.at[1, 1].set(np.nan)})["x"]["nonfinite"] == 1



# --- config drift on resume -------------------------------------------------------------------------

def test_resume_with_another_model_is_refused_in_one_message(workdir):
    with pytest.raises(ConfigChangeError, match=r"holds a run of another model: model.hidden_size 32 -> 16 .* cannot "
                                                r"change in a resumed run; start a new run with another --workdir"):
        train(tiny_config(model=dict(hidden_size=16)), str(workdir))


@pytest.mark.parametrize("section,values,key", [
    ("optimizer", dict(grad_clip_norm=1.0), "optimizer.grad_clip_norm"),
    ("training", dict(global_batch_size=4), "training.global_batch_size"),
])
def test_resume_with_changed_training_fields_needs_an_explicit_allow(workdir, section, values, key):
    before = (workdir / "config.json").read_text()
    with pytest.raises(ConfigChangeError, match=f"{key} .* -> .*start a new run with another --workdir, or continue "
                                                f"this run with the change: --config.checkpoint.allow_config_change={key}$"):
        train(tiny_config(**{section: values}), str(workdir))
    assert (workdir / "config.json").read_text() == before


def test_following_the_nan_advice_resumes_and_the_history_records_it(workdir):
    """Turning gradient clipping on (the NaN message's advice) keeps the optimizer state's structure."""
    config = tiny_config(training=dict(num_steps=9), optimizer=dict(grad_clip_norm=1.0),
                         checkpoint=dict(allow_config_change="optimizer.grad_clip_norm"))
    result = train(config, str(workdir))
    assert result.step == 9
    record = json.loads((workdir / "config.json").read_text())
    assert record["optimizer"]["grad_clip_norm"] == 1.0
    history = record["run_history"]
    assert [h["start_step"] for h in history] == [0, 6]
    assert [h["config"]["optimizer"]["grad_clip_norm"] for h in history] == [0.0, 1.0]
    # A finished run restarted with fewer steps trains nothing and leaves the record alone.
    before = (workdir / "config.json").read_text()
    config.training.num_steps = 4
    assert train(config, str(workdir)).step == 9
    assert (workdir / "config.json").read_text() == before


# --- validation before work ---------------------------------------------------------------------------

@pytest.mark.parametrize("section,values,message", [
    ("sample", dict(sampler="bogus"), "config.sample.sampler='bogus' is not allowed"),
    ("sample", dict(classes=(57,)), r"config.sample.classes=\(57,\): class label out of range"),
    ("sample", dict(num_steps=-3), "config.sample.num_steps=-3 must be a positive number"),
    ("sample", dict(cfg_scale=float("inf")), "config.sample.cfg_scale=inf must be >= 1 and finite"),
    ("sample", dict(cfg_scale=float("nan")), "config.sample.cfg_scale=nan must be >= 1 and finite"),
    ("optimizer", dict(learning_rate=float("nan")), "config.optimizer.learning_rate=nan must be a finite number"),
    ("optimizer", dict(weight_decay=float("inf")), "config.optimizer.weight_decay=inf must be a finite number"),
])
def test_bad_values_fail_before_any_work(tmp_path, section, values, message):
    config = tiny_config()
    config[section].update(values)
    with pytest.raises(ValueError, match=message):
        train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_labels_outside_the_model_fail_on_the_first_batch(tmp_path):
    config = tiny_config(model=dict(num_classes=5), sample=dict(classes=(0, 1)))
    with pytest.raises(ValueError, match=r"the first training batch does not fit the model: class label out of range: "
                                         r"got labels in \[\d, [5-9]\], allowed \[0, 4\]; config.model.num_classes=5"):
        train(config, str(tmp_path / "run"))


@pytest.mark.parametrize("family,change,message", [
    ("dit", dict(num_heads=0), "num_heads=0 must be a positive number"),
    ("dit", dict(patch_size=0), "patch_size=0 must be a positive number"),
    ("dit", dict(class_dropout_prob=1.5), r"class_dropout_prob=1.5 must be a probability in \[0, 1\)"),
    ("dit", dict(depth=-3), "depth=-3 must be a positive number"),
    ("dit", dict(num_classes=0), "num_classes=0 must be a positive number"),
    ("udit", dict(num_heads=0), "num_heads=0 must be a positive number"),
    ("udit", dict(class_dropout_prob=1.5), r"class_dropout_prob=1.5 must be a probability"),
    ("dic", dict(num_classes=0), "num_classes=0 must be a positive number"),
    ("dic", dict(hidden_size=0), "hidden_size=0 must be a positive number"),
    ("llada", dict(n_heads=0), "n_heads=0 must be a positive number"),
    ("llada", dict(n_layers=0), "n_layers=0 must be a positive number"),
    ("llada", dict(rope_theta=float("nan")), "rope_theta=nan must be a positive number"),
])
def test_model_config_ranges(family, change, message):
    import dataclasses

    from jaxlab.models.registry import get_family

    config_cls = get_family(family).config
    with pytest.raises(ValueError, match=message):
        config_cls.from_dict({**dataclasses.asdict(config_cls()), **change})


@pytest.mark.parametrize("change,message", [
    (dict(decode_param=-1), r"decode_param, so it must be in \[0, 1\]; got -1"),
    (dict(decode_param=1.5), r"must be in \[0, 1\]; got 1.5"),
    (dict(decode_param=float("nan")), "decode_param=nan must be finite"),
    (dict(eos_id=7, mask_id=7), "mask_id=7 equals eos_id=7"),
])
def test_dcd_decode_config_ranges(change, message):
    from jaxlab.dlm.decoding import DecodeConfig

    with pytest.raises(ValueError, match=message):
        DecodeConfig(**{"generate_length": 8, "initial_window_length": 4, "block_size": 4, **change}).validate()


# --- remote workdirs (a fake gs:// backed by fsspec's memory filesystem) --------------------------------

@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    """``gs://`` served by fsspec's in-memory filesystem (etils.epath reaches gs:// through fsspec);
    checkpoints go to a local directory, as orbax writes gs:// through TensorStore's own GCS driver."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from jaxlab.train import workdir as workdir_lib

    class FakeGCS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store: dict = {}
        pseudo_dirs = [""]

    for name in ("gs", "gcs"):  # etils.epath asks fsspec for "gcs"
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    FakeGCS.store.clear()
    monkeypatch.setattr(workdir_lib.Workdir, "checkpoints", property(lambda self: tmp_path / "checkpoints"))
    yield FakeGCS
    FakeGCS.store.clear()


def test_remote_workdir_appends_metrics_across_a_resume(fake_gcs, monkeypatch):
    from etils import epath

    from jaxlab.train import workdir as workdir_lib

    staging = []
    original = workdir_lib.Workdir.cleanup
    monkeypatch.setattr(workdir_lib.Workdir, "cleanup", lambda self: (staging.append(self.local), original(self)))
    first = train(tiny_config(), "gs://bucket/run", stop_at_step=3)
    assert first.stopped and first.step == 3
    second = train(tiny_config(training=dict(num_steps=5)), "gs://bucket/run")
    assert second.step == 5
    remote = epath.Path("gs://bucket/run")
    rows = [json.loads(line) for line in (remote / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # the first segment's rows survive the restart
    record = json.loads((remote / "config.json").read_text())
    assert [h["start_step"] for h in record["run_history"]] == [0, 3]
    assert json.loads((remote / "model.json").read_text())["family"] == "dit"
    # Each segment staged its files locally and removed the staging directory at the end.
    assert len(staging) == 2 and not any(path.exists() for path in staging)


# --- Ctrl-C --------------------------------------------------------------------------------------------

def test_ctrl_c_in_process_saves_and_stops(workdir, capsys):
    """A SIGINT during training (sent from another thread) ends the run at the next step with a checkpoint."""
    import os
    import signal
    import threading

    config = tiny_config(training=dict(num_steps=100_000), checkpoint=dict(every_steps=1000))
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = train(config, str(workdir))
    finally:
        timer.cancel()
    assert result.stopped and 6 < result.step < 100_000
    assert Checkpointer(workdir / "checkpoints").latest_step() == result.step
    err = capsys.readouterr().err
    assert "Ctrl-C: saving a checkpoint after this step" in err
    assert f"stopping at step {result.step} (SIGINT); checkpoint saved" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the run
