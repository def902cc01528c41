"""Synchronous Instruct-IPT training: one shared IPT + per-task low-rank weight biases, one loss.

Every global batch holds every task (the abstract's "synchronous training"; the sampling ratios
are our choice, see ``docs/ipt.md``): a batch is ``{"degraded": [B, T, P, P, 3], "clean": [B, T,
P, P, 3], "task": [B, T]}`` in ``[0, 255]``, column ``t`` from task ``t`` (the grain source
``jaxlab.restoration.data``, one task group per example). The loss runs task ``t``'s modulated
weights on column ``t`` (``jax.vmap`` over tasks of ``modulate`` + apply), takes the official
``option.py`` loss (L1, in pixel units / 255) per task and averages the tasks with ``task_weights``
(default equal). Gradients reach the shared weights from every task and each task's factors from
its own column only. ``params = {"shared": <IPT params>, "mod": <factors>}``.

Through the shared loop: ``config.task = "instruct_ipt"`` (``configs/ipt.py``); the task names come
from ``config.data.path`` (the restoration spec), the modulation from ``config.modulation``
(``ModulationConfig`` fields but ``num_tasks``), the loss weights from ``config.ipt.task_weights``.
``load_trained(workdir)`` gives the task and EMA params of a finished run back.

``separate_models=True`` (``config.ipt.separate_models``) is the per-task baseline: one whole IPT
per task (params with a leading task axis, ``T`` times the parameters), trained in the same run on
the same batches, each model on its own task's column only.
"""

import json
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config_utils import to_dict
from jaxlab.data.degradations import TASKS
from jaxlab.eval.restoration import psnr, ssim
from jaxlab.models.ipt import IPT, IPTConfig
from jaxlab.models.ipt_modulation import ModulationConfig, init_modulation, merge, modulate


class InstructIPTTask:
    """``init_params`` / ``loss_fn`` for a single-task-head IPT (``scale=(1,)``) + weight modulation."""

    def __init__(self, model_config, modulation: ModulationConfig, task_weights: Sequence[float] | None = None,
                 task_names: Sequence[str] | None = None, separate_models: bool = False):
        if tuple(model_config.scale) != (1,):
            raise ValueError(
                f"Instruct-IPT here shares one head and tail (scale=(1,)), got scale={list(model_config.scale)}; "
                f"per-task behaviour comes from the weight modulation"
            )
        model_config.validate()
        self.model_config = model_config
        self.module = IPT(model_config)
        self.modulation = modulation
        names = tuple(task_names) if task_names is not None else TASKS[: modulation.num_tasks]
        if len(names) != modulation.num_tasks:
            raise ValueError(f"{len(names)} task names {list(names)} for a modulation of {modulation.num_tasks} tasks")
        self.task_names = names
        weights = np.ones(modulation.num_tasks) if not task_weights else np.asarray(task_weights, np.float32)
        if weights.shape != (modulation.num_tasks,) or (weights < 0).any() or weights.sum() == 0:
            raise ValueError(f"task_weights={task_weights} must be {modulation.num_tasks} non-negative numbers, not all 0")
        self.task_weights = jnp.asarray(weights / weights.sum(), jnp.float32)
        if separate_models and (modulation.rank or modulation.prompt):
            raise ValueError("separate_models=True trains one whole IPT per task; it takes no modulation (rank=0, prompt=False)")
        self.separate_models = separate_models

    @classmethod
    def from_config(cls, config) -> "InstructIPTTask":
        from jaxlab.restoration.data import parse_spec

        if config.data.source != "restoration":
            raise ValueError(f"config.task='instruct_ipt' reads task groups from config.data.source='restoration', "
                             f"got {config.data.source!r}")
        spec = parse_spec(config.data.path)
        model_config = IPTConfig.from_dict(to_dict(config.model))
        if int(config.data.image_size) != model_config.patch_size:
            raise ValueError(f"config.data.image_size={config.data.image_size} must equal config.model.patch_size="
                             f"{model_config.patch_size} (the body's fixed input size)")
        section = to_dict(config.modulation)
        if "num_tasks" in section:
            raise ValueError("config.modulation.num_tasks is not set by hand: the task list is config.data.path's tasks=")
        if not section.get("alpha"):
            section["alpha"] = None  # config 0 = LoRA scale 1
        section["targets"] = tuple(section.get("targets", ()))
        modulation = ModulationConfig(num_tasks=len(spec.tasks), **section)
        return cls(model_config, modulation, tuple(config.ipt.task_weights), spec.tasks,
                   separate_models=bool(config.ipt.separate_models))

    def init_params(self, rng: jax.Array, batch) -> dict:
        model_rng, mod_rng = jax.random.split(rng)
        x = batch["degraded"][:, 0]
        if self.separate_models:  # one IPT per task: every leaf gets a leading [T] axis (logical name None)
            keys = jax.random.split(model_rng, self.modulation.num_tasks)
            stacked = jax.vmap(lambda k: self.module.init(k, x, 0)["params"])(keys)
            is_box = lambda b: isinstance(b, nn.Partitioned)  # noqa: E731
            shared = jax.tree_util.tree_map(lambda b: b.replace(names=(None, *b.names)) if is_box(b) else b, stacked,
                                            is_leaf=is_box)
            return {"shared": shared, "mod": {}}
        shared = self.module.init(model_rng, x, 0)["params"]
        return {"shared": shared, "mod": init_modulation(mod_rng, nn.unbox(shared), self.modulation)}

    def restore(self, params, x_NHWC, task):
        """Task ``task``'s output (``task`` may be traced)."""
        if self.separate_models:
            own = jax.tree_util.tree_map(lambda w: w[task], params["shared"])
            return self.module.apply({"params": own}, x_NHWC, 0)
        return self.module.apply({"params": modulate(params["shared"], params["mod"], task, self.modulation)}, x_NHWC, 0)

    def restore_all(self, params, degraded_BTHWC):
        """``[B, T, P, P, 3]`` -> each column through its own task's weights (same shape)."""
        num_tasks = self.modulation.num_tasks
        if degraded_BTHWC.shape[1] != num_tasks:
            raise ValueError(f"batch has {degraded_BTHWC.shape[1]} task columns, the modulation has {num_tasks} tasks")
        if self.separate_models:  # one plain model per column (vmapped kernels would make XLA's convs ~10x slower)
            return jnp.stack([self.restore(params, degraded_BTHWC[:, t], t) for t in range(num_tasks)], axis=1)
        return jax.vmap(lambda xt, t: self.restore(params, xt, t), in_axes=(1, 0), out_axes=1)(
            degraded_BTHWC, jnp.arange(num_tasks))

    def loss_fn(self, params, batch, rng: jax.Array):
        del rng
        out = self.restore_all(params, batch["degraded"])
        per_task = jnp.mean(jnp.abs(out - batch["clean"]), axis=(0, 2, 3, 4)) / 255.0
        loss = jnp.sum(self.task_weights * per_task)
        return loss, {"loss": loss, **{f"l1_{name}": per_task[t] for t, name in enumerate(self.task_names)}}

    def check_batch(self, batch) -> None:
        """The batch's task columns and patch size must be this model's (before any jitted work)."""
        p, t = self.model_config.patch_size, self.modulation.num_tasks
        shape = tuple(np.shape(batch["degraded"]))
        if len(shape) != 5 or shape[1:] != (t, p, p, 3) or np.shape(batch["clean"]) != shape:
            raise ValueError(f"degraded/clean must be [B, {t}, {p}, {p}, 3] (task groups of {p}px patches), got "
                             f"{shape} and {tuple(np.shape(batch['clean']))}")
        if "task" in batch and not (np.asarray(batch["task"]) == np.arange(t)).all():
            raise ValueError(f"task columns {np.asarray(batch['task'])[0].tolist()} are not 0..{t - 1} in order")

    def merged(self, params, task: int | str) -> dict:
        """A plain IPT param tree for one task (deployment; ``task`` an index or a name)."""
        if isinstance(task, str):
            if task not in self.task_names:
                raise ValueError(f"unknown task {task!r}; this model restores {list(self.task_names)}")
            task = self.task_names.index(task)
        if self.separate_models:
            return jax.tree_util.tree_map(lambda w: np.asarray(w[task], np.float32), nn.unbox(params["shared"]))
        return merge(nn.unbox(params["shared"]), params["mod"], task, self.modulation)


def evaluate_groups(task: InstructIPTTask, params, batch: dict, chunk: int = 16) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM (RGB, outputs rounded and clipped to 8 bits) per task on held-out task groups.

    ``batch`` as the source's (``[N, T, P, P, 3]``); returns ``{task name: {"psnr", "ssim",
    "psnr_input", "ssim_input"}}`` (``*_input``: the degraded input against the clean patch).
    """
    run = jax.jit(task.restore_all)
    degraded, clean = np.asarray(batch["degraded"]), np.asarray(batch["clean"])
    outs = np.concatenate([np.asarray(run(params, degraded[i : i + chunk])) for i in range(0, len(degraded), chunk)])
    if not np.isfinite(outs).all():
        raise FloatingPointError("the model produced non-finite outputs on the held-out patches")
    outs = np.clip(np.round(outs), 0, 255)
    result = {}
    for t, name in enumerate(task.task_names):
        pairs = [(clean[i, t], outs[i, t], degraded[i, t]) for i in range(len(clean))]
        result[name] = {
            "psnr": float(np.mean([psnr(c, o) for c, o, _ in pairs])),
            "ssim": float(np.mean([ssim(c, o) for c, o, _ in pairs])),
            "psnr_input": float(np.mean([psnr(c, d) for c, _, d in pairs])),
            "ssim_input": float(np.mean([ssim(c, d) for c, _, d in pairs])),
        }
    return result


def load_trained(workdir: str | pathlib.Path, step: int | None = None) -> tuple[InstructIPTTask, dict]:
    """``(task, EMA params)`` of an ``instruct_ipt`` training run (its ``config.json`` + checkpoints)."""
    import ml_collections

    from jaxlab.train.checkpoint import restore_params_subtree

    workdir = pathlib.Path(workdir)
    record = workdir / "config.json"
    if not record.is_file():
        raise FileNotFoundError(f"{workdir} is not a training workdir of launch.train (no config.json)")
    config = ml_collections.ConfigDict(json.loads(record.read_text()))
    if config.get("task") != "instruct_ipt":
        raise ValueError(f"{workdir} is a {config.get('task')!r} run, not an instruct_ipt one")
    task = InstructIPTTask.from_config(config)
    _, params = restore_params_subtree(workdir / "checkpoints", "ema_params", step=step)
    return task, jax.tree_util.tree_map(np.asarray, params)

