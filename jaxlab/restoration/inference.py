"""One restoration model for one task, from either kind of checkpoint, with the task given as text.

``load_for_task(checkpoint, task)`` accepts

- a converted IPT checkpoint (``launch.convert``): ``task`` is an index, ``sr2``/``sr3``/``sr4``,
  a same-size task name (``jaxlab.models.ipt_ops.resolve_task``) or a free-text instruction;
- an Instruct-IPT training workdir (``launch.train --config=configs/ipt.py:...``): ``task`` is one of
  its task names, an index into them, or a free-text instruction; the task's weight biases are
  merged into a plain IPT param tree once (``InstructIPTTask.merged``).

Instructions go through ``jaxlab.restoration.instructions.resolve_instruction``; an unclear one
raises ``UnclearInstruction`` (a ValueError) before any model is built.
"""

import dataclasses
import json
import pathlib

from jaxlab.restoration.instructions import resolve_instruction


@dataclasses.dataclass
class LoadedTask:
    module: object  # an IPT module
    params: dict  # its (merged) params
    task: int  # the index to call it with
    name: str  # what the request resolved to (for messages)


def is_instruct_ipt_run(path: str | pathlib.Path) -> bool:
    record = pathlib.Path(path) / "config.json"
    return record.is_file() and json.loads(record.read_text()).get("task") == "instruct_ipt"


def _task_name(text: str, names: tuple[str, ...]) -> str:
    cleaned = str(text).strip().lower()
    if cleaned.isdigit():
        if int(cleaned) >= len(names):
            raise ValueError(f"task index {cleaned} is out of range; this model restores {list(names)}")
        return names[int(cleaned)]
    return resolve_instruction(text, names)


def load_for_task(checkpoint: str | pathlib.Path, task: str) -> LoadedTask:
    """The module, params and task index that restore ``task`` (see the module docstring)."""
    if is_instruct_ipt_run(checkpoint):
        from jaxlab.restoration.data import parse_spec
        from jaxlab.restoration.task import load_trained

        record = json.loads((pathlib.Path(checkpoint) / "config.json").read_text())
        name = _task_name(task, parse_spec(record["data"]["path"]).tasks)  # before reading any weights
        trained, params = load_trained(checkpoint)
        return LoadedTask(trained.module, trained.merged(params, name), 0, name)

    from jaxlab.models.ipt_ops import SAME_SIZE_TASKS, resolve_task
    from jaxlab.train.params_io import load_model, read_model_config

    _, cfg = read_model_config(checkpoint)
    if not hasattr(cfg, "patch_size") or not hasattr(cfg, "scale"):
        raise ValueError(f"{checkpoint} is not an IPT checkpoint ({type(cfg).__name__})")
    text = str(task).strip().lower()
    plain = text.isdigit() or text in SAME_SIZE_TASKS or (text.startswith("sr") and text[2:].isdigit())
    name = text if plain else resolve_instruction(task, SAME_SIZE_TASKS)
    index = resolve_task(cfg, name)
    module, params = load_model(checkpoint)
    return LoadedTask(module, params, index, name)
