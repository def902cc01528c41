"""Checks the training sections of a config (``configs/common.py:training_defaults``) up front.

Everything here runs before any device, dataset or model work, so a bad value fails in well
under a second with a message that names the key and the fix.
"""

import math
from typing import Any

from jaxlab.config_utils import check_choice, check_positive
from jaxlab.train.optim import OPTIMIZERS, SCHEDULES
from jaxlab.train.sharding import MESH_AXES

# section -> key -> type the value must have (bool is not accepted where int/float is).
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "training": {"num_steps": int, "global_batch_size": int, "ema_decay": (int, float)},
    "optimizer": {
        "name": str, "learning_rate": (int, float), "b1": (int, float), "b2": (int, float), "eps": (int, float),
        "weight_decay": (int, float), "grad_clip_norm": (int, float), "schedule": str, "warmup_steps": int,
        "end_learning_rate": (int, float),
    },
    "data": {
        "source": str, "path": str, "tfds_name": str, "tfds_data_dir": str, "split": str, "image_key": str,
        "label_key": str, "image_size": int, "random_flip": bool, "scale": (int, float), "shuffle": bool,
        "read_threads": int, "prefetch_buffer_size": int, "worker_count": int,
    },
    "checkpoint": {
        "every_steps": int, "keep_last": int, "keep_every": int, "async_save": bool, "allow_config_change": str,
    },
    "logging": {
        "every_steps": int, "sample_every_steps": int, "tensorboard": bool, "progress_bar": bool,
        "peak_flops_per_device": (int, float),
    },
    "mesh": {axis: int for axis in MESH_AXES},
}


# section -> key -> type of keys a config may leave out (read with .get and a default).
OPTIONAL: dict[str, dict[str, type | tuple[type, ...]]] = {
    "optimizer": {"trainable_params": str},  # regex over parameter paths; "" = train everything (optim.restrict_to)
}


def _check_type(key: str, value: Any, expected) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        raise ValueError(f"config.{key}={value!r} must be {' or '.join(t.__name__ for t in types)}, not a bool")
    if not isinstance(value, types):
        raise ValueError(f"config.{key}={value!r} must be {' or '.join(t.__name__ for t in types)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config.{key}={value!r} must be a finite number")


def validate(config) -> None:
    """Raises ValueError naming the first bad key; unknown keys are rejected with the allowed ones."""
    if not config.get("task"):
        raise ValueError("config.task is not set; call configs.common.training_defaults(config) in the config file")
    for section, keys in SCHEMA.items():
        if section not in config:
            raise ValueError(f"config.{section} is missing; call configs.common.training_defaults(config)")
        values = config[section]
        optional = OPTIONAL.get(section, {})
        unknown = sorted(set(values) - set(keys) - set(optional))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in config.{section}; allowed keys: {sorted(set(keys) | set(optional))}")
        missing = sorted(set(keys) - set(values))
        if missing:
            raise ValueError(f"config.{section} lacks {missing}; start from configs.common.training_defaults")
        for key, expected in keys.items():
            _check_type(f"{section}.{key}", values[key], expected)
        for key, expected in optional.items():
            if key in values:
                _check_type(f"{section}.{key}", values[key], expected)

    training, opt, data, ckpt, logging_ = (config[s] for s in ("training", "optimizer", "data", "checkpoint", "logging"))
    check_positive("training.num_steps", training.num_steps)
    check_positive("training.global_batch_size", training.global_batch_size)
    if not 0.0 <= training.ema_decay < 1.0:
        raise ValueError(f"config.training.ema_decay={training.ema_decay} must be in [0, 1)")
    check_choice("optimizer.name", opt.name, OPTIMIZERS)
    check_choice("optimizer.schedule", opt.schedule, SCHEDULES)
    check_positive("optimizer.learning_rate", opt.learning_rate)
    for key in ("b1", "b2"):
        if not 0.0 <= opt[key] < 1.0:
            raise ValueError(f"config.optimizer.{key}={opt[key]} must be in [0, 1)")
    for key in ("weight_decay", "grad_clip_norm", "warmup_steps", "end_learning_rate"):
        if opt[key] < 0:
            raise ValueError(f"config.optimizer.{key}={opt[key]} must be >= 0")
    check_positive("checkpoint.every_steps", ckpt.every_steps)
    check_positive("checkpoint.keep_last", ckpt.keep_last)
    check_positive("logging.every_steps", logging_.every_steps)
    for key in ("keep_every",):
        if ckpt[key] < 0:
            raise ValueError(f"config.checkpoint.{key}={ckpt[key]} must be >= 0 (0 disables)")
    if logging_.sample_every_steps < 0 or logging_.peak_flops_per_device < 0:
        raise ValueError("config.logging.sample_every_steps and peak_flops_per_device must be >= 0 (0 = off / detect)")
    for key in ("image_size", "prefetch_buffer_size", "worker_count"):
        if data[key] < 0:
            raise ValueError(f"config.data.{key}={data[key]} must be >= 0")
    if data.read_threads < -1:
        raise ValueError(f"config.data.read_threads={data.read_threads} must be >= 0, or -1 for automatic")
    from jaxlab.data.sources import source_names

    check_choice("data.source", data.source, source_names())
    if "sample" in config:  # the image-diffusion sampling section (training writes grids with it)
        from jaxlab.diffusion.sample_config import validate_sample_config

        model = config.get("model")
        validate_sample_config(config.sample, model.get("num_classes") if model is not None else None)
