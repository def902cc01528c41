"""Bad input fails before any compilation, with a message that names the problem and the fix."""

import pytest

from jaxlab.train.loop import train
from tests.train.helpers import tiny_config


def test_mesh_that_does_not_match_the_devices(tmp_path):
    with pytest.raises(ValueError, match=r"config.mesh=.* needs 2 devices but 1 are available"):
        train(tiny_config(mesh=dict(data=2, fsdp=1, tensor=1)), str(tmp_path))


def test_missing_dataset(tmp_path):
    config = tiny_config(data=dict(source="npy", path=str(tmp_path / "latents")))
    with pytest.raises(FileNotFoundError, match="latents' does not exist"):
        train(config, str(tmp_path / "run"))
    config = tiny_config(data=dict(source="tfds", tfds_name="imagenet2012", tfds_data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
        train(config, str(tmp_path / "run"))


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="cannot write to --workdir .*a_file/run"):
        train(tiny_config(), str(blocker / "run"))


def test_bad_config_value(tmp_path):
    with pytest.raises(ValueError, match="config.training.ema_decay=1.5"):
        train(tiny_config(training=dict(ema_decay=1.5)), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_task(tmp_path):
    config = tiny_config()
    config.task = "autoregressive"
    with pytest.raises(ValueError, match="config.task='autoregressive' is unknown; allowed values: \\['diffusion', 'instruct_ipt'\\]"):
        train(config, str(tmp_path))
