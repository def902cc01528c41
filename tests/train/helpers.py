"""Small configs shared by the training tests: a 1-block DiT on the embedded digits at 8x8."""

import numpy as np

from configs.dit import get_config


def tiny_config(**sections):
    """``configs/dit.py:digits`` shrunk to run a step in milliseconds; ``sections`` update config sections."""
    config = get_config("digits")
    config.model.update(input_size=8, patch_size=2, hidden_size=32, depth=1, num_heads=2)
    config.data.update(image_size=8)
    config.training.update(num_steps=6, global_batch_size=8)
    config.optimizer.update(warmup_steps=2)
    config.checkpoint.update(every_steps=3, keep_last=5)
    config.logging.update(every_steps=1, sample_every_steps=0, tensorboard=False)
    for name, values in sections.items():
        config[name].update(values)
    return config


def host(tree):
    """A pytree as numpy arrays (gathered from whatever devices hold it)."""
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
    import jax

    flat_a, tree_a = jax.tree.flatten(host(a))
    flat_b, tree_b = jax.tree.flatten(host(b))
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_array_equal(x, y)


# The same model as tiny_config, as command-line overrides of configs/dit.py:digits.
TINY_OVERRIDES = {
    "model.input_size": 8, "model.patch_size": 2, "model.hidden_size": 32, "model.depth": 1, "model.num_heads": 2,
    "data.image_size": 8, "training.num_steps": 6, "training.global_batch_size": 8, "optimizer.warmup_steps": 2,
    "checkpoint.every_steps": 3, "checkpoint.keep_last": 5, "logging.every_steps": 1,
    "logging.sample_every_steps": 0, "logging.tensorboard": False,
}


def cli_args(**overrides) -> list[str]:
    """``--config=configs/dit.py:digits`` plus ``--config.<key>=<value>`` for TINY_OVERRIDES and ``overrides``
    (keys with ``__`` for dots: ``training__num_steps=9``)."""
    values = {**TINY_OVERRIDES, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return ["--config=configs/dit.py:digits"] + [f"--config.{k}={v}" for k, v in values.items()]


def compilation_cache_env(cache_dir) -> dict[str, str]:
    """Environment for subprocesses sharing the tests' persistent compilation cache."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
