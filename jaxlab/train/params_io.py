"""Model checkpoints for inference: a directory with ``model.json`` and orbax ``params/``.

``model.json`` records the family and the full model config, so a checkpoint rebuilds its
own module: ``module, params = load_model(path)``. Written by ``launch/convert.py``.

A training workdir (``launch/train.py``) has the same ``model.json`` next to ``checkpoints/``;
``load_model(workdir)`` returns the EMA params of its latest complete checkpoint.
"""

import dataclasses
import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp

from jaxlab.models.registry import get_family

MODEL_JSON = "model.json"
CHECKPOINTS = "checkpoints"  # in a training workdir


def save_model(path: str | pathlib.Path, family: str, config, params, *, overwrite: bool = False) -> pathlib.Path:
    """Writes ``params`` and the model's config to ``path`` (refuses to replace an existing one)."""
    path = pathlib.Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output path or pass overwrite=True (--overwrite)")
    path.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / "params", params, force=overwrite)
    checkpointer.wait_until_finished()
    (path / MODEL_JSON).write_text(json.dumps({"family": family, "config": dataclasses.asdict(config)}, indent=2))
    return path


def read_model_config(path: str | pathlib.Path):
    """``(family, model_config)`` from a checkpoint's ``model.json``, without reading any parameters."""
    meta_file = pathlib.Path(path).absolute() / MODEL_JSON
    if not meta_file.exists():
        raise FileNotFoundError(
            f"{meta_file.parent} is not a jaxlab model checkpoint or training workdir (no {MODEL_JSON}); create one "
            f"with `python -m launch.convert` or `python -m launch.train`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); it was damaged or edited by hand") from None
    family = get_family(meta["family"])
    return family, family.config.from_dict(meta["config"])


def load_model(path: str | pathlib.Path, step: int | None = None):
    """``(module, params)`` (float32 numpy leaves) from a ``save_model`` directory or a training workdir.

    For a workdir, ``params`` are the EMA params of checkpoint ``step`` (default: the latest).
    """
    path = pathlib.Path(path).absolute()
    family, config = read_model_config(path)
    if (path / "params").exists():
        params = ocp.StandardCheckpointer().restore(path / "params")
    elif (path / CHECKPOINTS).exists():
        from jaxlab.train.checkpoint import restore_params_subtree

        _, params = restore_params_subtree(path / CHECKPOINTS, "ema_params", step=step)
    else:
        raise FileNotFoundError(f"{path} has {MODEL_JSON} but neither params/ nor a {CHECKPOINTS}/ directory")
    return family.module(config), _as_numpy(params)


def _as_numpy(tree):
    if isinstance(tree, dict):
        return {k: _as_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
