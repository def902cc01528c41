"""The run's record of its config (``<workdir>/config.json``) and the check for config drift on resume.

``config.json`` holds the config of the latest segment of the run at the top level (what readers
such as ``jaxlab.dlm.pretrained`` expect) plus ``run_history``: one entry per segment (each start
that trained), ``{"start_step", "started_utc", "config"}``, so the record says what produced every
part of the run.

On resume, ``check_resume`` compares the requested config with the saved one over the fields that
change what is trained (``model``, ``optimizer``, ``diffusion``, ``objective``, ``data`` except its
speed knobs, ``training.global_batch_size`` / ``ema_decay``, ``seed``, ``task``, ``model_family``);
``training.num_steps``, ``checkpoint``, ``logging``, ``sample``, ``decode`` and ``mesh`` may change
freely. A difference is refused in one message that names the fields and the two ways out: a new
``--workdir``, or ``--config.checkpoint.allow_config_change=<field>,<field>`` (a field or a whole
section) for fields that can change safely. Fields that change the parameters' structure
(``model.*`` apart from ``dtype``/``remat``, ``model_family``, ``task``, ``optimizer.name``) can
never change in a resumed run.
"""

import datetime
import json

from etils import epath

CONFIG_JSON = "config.json"
HISTORY = "run_history"

COMPARED_SECTIONS = ("model", "optimizer", "diffusion", "objective", "data")
COMPARED_KEYS = ("model_family", "task", "seed", "training.global_batch_size", "training.ema_decay")
FREE_KEYS = ("data.read_threads", "data.prefetch_buffer_size", "data.worker_count")
SAFE_MODEL_KEYS = ("model.dtype", "model.remat")
NEVER_SAFE = ("model_family", "task", "optimizer.name")


class ConfigChangeError(ValueError):
    """The requested config differs from the run's saved config in fields that need an explicit decision."""


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _compared(flat: dict) -> dict:
    return {
        k: v for k, v in flat.items()
        if (k in COMPARED_KEYS or k.split(".", 1)[0] in COMPARED_SECTIONS) and k not in FREE_KEYS
    }


def _never_safe(key: str) -> bool:
    return key in NEVER_SAFE or (key.startswith("model.") and key not in SAFE_MODEL_KEYS)


def _allowed(key: str, allow: list[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allow)


def config_dict(config) -> dict:
    """The config as plain JSON data (tuples as lists), as written to ``config.json``."""
    return json.loads(config.to_json_best_effort())


def read(workdir_path: epath.Path) -> dict | None:
    """The saved ``config.json`` (latest segment's config + ``run_history``), or None when there is none."""
    path = epath.Path(workdir_path) / CONFIG_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # unreadable record: the checkpoint structure check still guards the restore


def differences(saved: dict, requested: dict) -> dict[str, tuple]:
    """``{key: (saved, requested)}`` for the compared fields that differ (keys one side lacks are skipped)."""
    old, new = _compared(_flatten({k: v for k, v in saved.items() if k != HISTORY})), _compared(_flatten(requested))
    return {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]}


def check_resume(saved: dict | None, config, workdir: str) -> dict[str, tuple]:
    """Raises ConfigChangeError unless every difference is allowed; returns the (allowed) differences."""
    if saved is None:
        return {}
    diffs = differences(saved, config_dict(config))
    allow = [a.strip() for a in str(config.checkpoint.get("allow_config_change", "")).split(",") if a.strip()]
    fixed = {k: v for k, v in diffs.items() if _never_safe(k)}
    refused = {k: v for k, v in diffs.items() if not _never_safe(k) and not _allowed(k, allow)}
    if fixed:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in fixed.items())
        raise ConfigChangeError(
            f"--workdir {workdir} holds a run of another model: {listed} (saved in its {CONFIG_JSON}). These "
            f"fields cannot change in a resumed run; start a new run with another --workdir, or resume with the "
            f"run's own values"
        )
    if refused:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ConfigChangeError(
            f"the config differs from the run in --workdir {workdir} ({CONFIG_JSON}): {listed}. Either start a new "
            f"run with another --workdir, or continue this run with the change: "
            f"--config.checkpoint.allow_config_change={','.join(refused)}"
        )
    return diffs


def record(saved: dict | None, config, start_step: int) -> dict:
    """The new ``config.json`` payload: this segment's config on top, the history with this segment appended."""
    current = config_dict(config)
    if saved is None:
        history = []
    elif HISTORY in saved:
        history = list(saved[HISTORY])
    else:  # written before jaxlab kept a history
        history = [{"start_step": None, "started_utc": None, "config": saved}]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    history.append({"start_step": int(start_step), "started_utc": started, "config": current})
    return {**current, HISTORY: history}
