"""Training config checks and the shared sections every family config gets."""

import ml_collections
import pytest

from configs.dit import get_config
from jaxlab.train.config import validate
from jaxlab.train.optim import learning_rate_schedule
from tests.train.helpers import tiny_config


@pytest.mark.parametrize("variant", ["XL-2", "S-2", "tiny", "digits"])
def test_dit_configs_validate(variant):
    config = get_config(variant)
    validate(config)
    assert config.task == "diffusion"


def test_dit_recipe_defaults():
    config = get_config("XL-2")
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.weight_decay) == ("adamw", 1e-4, 0.0)
    assert config.training.ema_decay == 0.9999 and config.training.global_batch_size == 256
    assert config.optimizer.grad_clip_norm == 0.0 and config.optimizer.schedule == "constant"


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("training", "num_steps", 0, "training.num_steps=0 must be a positive number"),
        ("training", "ema_decay", 1.0, r"ema_decay=1.0 must be in \[0, 1\)"),
        ("training", "global_batch_size", 2.5, "global_batch_size=2.5 must be int"),
        ("optimizer", "name", "sgd", "optimizer.name='sgd' is not allowed; allowed values: \\['adamw'\\]"),
        ("optimizer", "schedule", "linear", "allowed values: \\['constant', 'cosine'\\]"),
        ("data", "source", "mnist", "data.source='mnist' is not allowed"),
        ("data", "random_flip", 1, "random_flip=1 must be bool"),
        ("checkpoint", "keep_last", 0, "checkpoint.keep_last=0 must be a positive number"),
        ("mesh", "fsdp", True, "mesh.fsdp=True must be int, not a bool"),
    ],
)
def test_bad_values_name_the_key(section, key, value, message):
    # As a config file could write them (the command line already rejects mistyped overrides).
    config = ml_collections.ConfigDict(tiny_config().to_dict(), type_safe=False)
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        validate(config)


def test_unknown_and_missing_keys():
    config = tiny_config()
    config.training.unlock()
    config.training.num_stpes = 5
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_stpes'\] in config.training; allowed keys"):
        validate(config)
    config = tiny_config()
    del config["checkpoint"]
    with pytest.raises(ValueError, match="config.checkpoint is missing"):
        validate(config)


def test_learning_rate_schedules():
    config = tiny_config(optimizer=dict(learning_rate=1e-3, warmup_steps=10))
    schedule = learning_rate_schedule(config.optimizer, 100)
    assert schedule(0) == 0.0 and schedule(5) == pytest.approx(5e-4) and schedule(10) == pytest.approx(1e-3)
    assert schedule(99) == pytest.approx(1e-3)
    config.optimizer.update(schedule="cosine", end_learning_rate=1e-5)
    cosine = learning_rate_schedule(config.optimizer, 100)
    assert cosine(10) == pytest.approx(1e-3) and cosine(100) == pytest.approx(1e-5) and cosine(55) < 1e-3
