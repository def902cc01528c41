"""Small trained DLM checkpoints that ship inside the package (``jaxlab/assets/*.npz``).

One ``.npz`` file holds the whole model: float32 params flattened as ``params/<a>/<b>/...``, the
model family and config (``meta_json``) and the text task it was trained on (a
``jaxlab.data.text_tasks.parse_task_spec`` string), so the notebook and the benchmark run without
training and without orbax. ``export_workdir`` writes one from a ``launch/train.py`` run.
"""

import dataclasses
import json
import pathlib

import numpy as np
from flax import traverse_util

from jaxlab.data.text_tasks import parse_task_spec
from jaxlab.models.registry import get_family

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
SHIPPED = {"sudoku": "dlm_sudoku.npz"}


def _flatten(tree) -> dict[str, np.ndarray]:
    """``{"params/<a>/<b>/...": float32 array}``."""
    return {f"params/{k}": np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    return traverse_util.unflatten_dict({k.removeprefix("params/"): v for k, v in flat.items()}, sep="/")


def save_checkpoint(path, family: str, model_config, params, task_spec: str, info: dict | None = None) -> pathlib.Path:
    """Writes ``path`` (.npz): params (float32) + family, model config, task spec and free-form ``info``."""
    meta = {"family": family, "config": dataclasses.asdict(model_config), "task": task_spec, "info": info or {}}
    path = pathlib.Path(path)
    np.savez_compressed(path, meta_json=np.array(json.dumps(meta)), **_flatten(params))
    return path


def load_checkpoint(name_or_path: str):
    """``(module, params, task, meta)`` from a shipped name (``"sudoku"``) or an ``.npz`` path."""
    path = pathlib.Path(ASSETS / SHIPPED[name_or_path] if name_or_path in SHIPPED else name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"no DLM checkpoint at {path}; shipped names: {sorted(SHIPPED)}")
    with np.load(path) as data:
        meta = json.loads(str(data["meta_json"]))
        params = _unflatten({k: data[k] for k in data.files if k.startswith("params/")})
    family = get_family(meta["family"])
    module = family.module(family.config.from_dict(meta["config"]))
    return module, params, parse_task_spec(meta["task"]), meta


def export_workdir(workdir, out_path, info: dict | None = None) -> pathlib.Path:
    """Packs the latest EMA params of a ``launch/train.py`` workdir (text-task run) into one ``.npz``."""
    from jaxlab.train.params_io import load_model

    workdir = pathlib.Path(workdir)
    module, params = load_model(workdir)
    run_config = json.loads((workdir / "config.json").read_text())
    if run_config["data"]["source"] != "text_task":
        raise ValueError(f"{workdir} was not trained on a text task (data.source={run_config['data']['source']!r})")
    return save_checkpoint(out_path, run_config["model_family"], module.config, params, run_config["data"]["path"], info)
