"""Exact resume, NaN handling and the workdir outputs of jaxlab.train.loop.train (1 CPU device)."""

import json

import numpy as np
import pytest

from jaxlab.data import records
from jaxlab.train.checkpoint import Checkpointer
from jaxlab.train.loop import NonFiniteLossError, train
from jaxlab.train.metrics import read_metrics
from jaxlab.train.params_io import load_model
from tests.train.helpers import assert_trees_equal, host, tiny_config


def losses(workdir) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(workdir / "metrics.jsonl")}


def test_stop_and_resume_is_bit_identical(tmp_path):
    config = tiny_config()
    straight = train(config, str(tmp_path / "straight"))
    assert straight.step == 6 and not straight.stopped

    first = train(config, str(tmp_path / "resumed"), stop_at_step=3)
    assert first.stopped and first.step == 3
    # The checkpoint holds the data position: 3 batches of 8 examples read.
    data_state = json.loads((tmp_path / "resumed/checkpoints/3/data/process_0-of-1.json").read_text())
    assert data_state == {"next_index": 24}
    second = train(config, str(tmp_path / "resumed"))
    assert second.step == 6 and not second.stopped

    assert_trees_equal(straight.state, second.state)  # step, params, EMA, optimizer state, rng
    # Same data order and randomness: the per-step losses agree bit for bit.
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert sorted(losses(tmp_path / "straight")) == [1, 2, 3, 4, 5, 6]

    # The EMA params differ from the params (decay 0.995) and load as a model for sampling.
    module, ema = load_model(tmp_path / "resumed")
    assert_trees_equal(ema, straight.state.ema_params)
    assert module.config.input_size == 8
    assert not np.array_equal(host(straight.state.params)["final_layer"]["linear"]["kernel"],
                              ema["final_layer"]["linear"]["kernel"])

    # Finished runs are not extended by restarting them.
    again = train(config, str(tmp_path / "resumed"))
    assert again.step == 6 and Checkpointer(tmp_path / "resumed/checkpoints").latest_step() == 6


def test_workdir_outputs(tmp_path):
    config = tiny_config(training=dict(num_steps=2), logging=dict(tensorboard=True, sample_every_steps=2))
    config.sample.update(num_steps=2, classes=(1, 7), num_samples=4, batch_size=4)
    result = train(config, str(tmp_path))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "mse", "vb", "grad_norm", "param_norm", "learning_rate", "steps_per_sec",
                "examples_per_sec", "mfu"):
        assert key in rows[-1], key
    assert rows[-1]["examples_per_sec"] == pytest.approx(rows[-1]["steps_per_sec"] * 8)
    assert 0 < rows[-1]["mfu"] < 1
    assert rows[0]["learning_rate"] == 0.0 and rows[1]["learning_rate"] == pytest.approx(5e-4)  # 2-step warmup to 1e-3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "model.json").read_text())["family"] == "dit"
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden_size"] == 32
    assert result.grids == [str(tmp_path / "samples/step_00000002.png")]
    from PIL import Image

    grid = np.asarray(Image.open(result.grids[0]))
    assert grid.shape == (22 * 8, 22 * 8)  # greyscale 2 x 2 grid of 8x8 images + 2px padding, upscaled 8x


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    images = np.zeros((8, 8, 8, 1), np.float32)
    images[7] = np.nan  # the 4th batch (examples 6, 7) poisons the loss
    records.write_npy(tmp_path / "data", {"image": images, "label": np.arange(8) % 10})
    config = tiny_config(data=dict(source="npy", path=str(tmp_path / "data"), shuffle=False),
                         training=dict(num_steps=10, global_batch_size=2), checkpoint=dict(every_steps=2))
    with pytest.raises(NonFiniteLossError, match=r"loss and grad_norm became nan at step 4; stopping without saving this state. The last good checkpoint is step 2"):
        train(config, str(tmp_path / "run"))
    assert Checkpointer(tmp_path / "run/checkpoints").all_steps() == [2]
