"""Instruct-IPT weight modulation: task-specific low-rank biases on shared IPT weights.

Instruct-IPT (Tian et al., arXiv 2407.00676) makes one IPT an all-in-one restorer by adding, for
each task ``t``, a low-rank bias to a set of task-sensitive weight matrices of the shared model,
``W_t = W + Delta_t`` with ``Delta_t = B_t A_t``, trained together with the shared weights. That
much is in the abstract; the method section was not readable, so everything below that is not
that sentence is **our choice**, not the paper's recipe (see ``docs/ipt.md``):

- **Which weights** (``ModulationConfig.targets``): groups ``qkv`` (the q/k/v projections of
  every encoder/decoder attention), ``attn_out``, ``ffn`` (linear1/linear2), ``body_mlp``
  (linear_encoding, mlp_head), ``head`` and ``tail`` (convs). Default: ``qkv``, ``attn_out``,
  ``ffn``. Alternatives: any subset, or one picked by ``task_sensitivity`` (rank weights by how
  far per-task fine-tunes move them, the paper's "search for task-sensitive weights" as we read it).
- **Shape**: a weight ``W`` is viewed as a matrix ``[fan_in, fan_out]`` (a Dense kernel as is, a
  conv kernel ``[kh, kw, in, out]`` as ``[kh*kw*in, out]``) and ``Delta_t = scale * down_t @ up_t``
  with ``down_t [fan_in, r]``, ``up_t [r, fan_out]``. Biases and norms are not modulated.
- **Init** (``init``): ``"lora"`` (default): ``down ~ N(0, 1/fan_in)``, ``up = 0``, so every task
  starts as the shared model. Alternative ``"gaussian"``: both ``N(0, init_std^2)``.
- **Scaling**: ``scale = alpha / rank`` (LoRA's), ``alpha`` defaulting to ``rank`` (scale 1).
- ``rank = 0`` means no modulation (the shared model).
- **Feature adaptation baseline** (``prompt=True``, what the paper argues *against*): a learned
  per-task token map ``prompt_t [L, D]`` (zero init) added to the body input, implemented as a
  per-task bias on ``body/pos_embed`` (which the body adds to its input tokens once). With
  ``rank=0`` this is the "prompt tokens only" model of ``benchmarks/instruct_ipt.py``.

Two ways to run task ``t``, equal by construction and by test:

- at apply time: ``modulate(params, mod, t)`` inside the jitted step (the stored weights stay
  shared + factors; gradients reach both; ``t`` may be traced);
- merged once for deployment: ``merge(params, mod, t)`` returns a plain IPT param tree.
"""

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Target groups -> regular expressions over "/"-joined IPT param paths (kernels only).
TARGET_GROUPS: dict[str, str] = {
    "qkv": r"body/(encoder|decoder)_\d+/(self_attn|multihead_attn)/[qkv]/kernel",
    "attn_out": r"body/(encoder|decoder)_\d+/(self_attn|multihead_attn)/out/kernel",
    "ffn": r"body/(encoder|decoder)_\d+/ffn/linear[12]/kernel",
    "body_mlp": r"body/(linear_encoding|mlp_head_[01])/kernel",
    "head": r"head_\d+/.*kernel",
    "tail": r"tail_\d+/.*kernel",
}


@dataclasses.dataclass(frozen=True)
class ModulationConfig:
    """Which weights get task biases, their rank, init and scale (see the module docstring)."""

    num_tasks: int = 5
    rank: int = 8
    targets: tuple[str, ...] = ("qkv", "attn_out", "ffn")
    init: str = "lora"
    init_std: float = 0.01
    alpha: float | None = None
    prompt: bool = False

    def __post_init__(self):
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        else:
            object.__setattr__(self, "targets", tuple(self.targets))
        if self.num_tasks < 1 or self.rank < 0:
            raise ValueError(f"num_tasks={self.num_tasks} must be >= 1 and rank={self.rank} >= 0")
        if self.init not in ("lora", "gaussian"):
            raise ValueError(f"init={self.init!r} must be 'lora' (up = 0) or 'gaussian'")
        for t in self.targets:
            if t not in TARGET_GROUPS and not t.startswith("re:"):
                raise ValueError(f"unknown target {t!r}; use one of {sorted(TARGET_GROUPS)} or 're:<regex over param paths>'")

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None or self.rank == 0 else self.alpha / self.rank


def _flat(params: Mapping) -> dict[str, jax.Array]:
    return traverse_util.flatten_dict(dict(params), sep="/")


def target_paths(params: Mapping, targets: Sequence[str]) -> list[str]:
    """The ``"/"``-joined paths of the weight matrices ``targets`` select, in param order."""
    patterns = [t[3:] if t.startswith("re:") else TARGET_GROUPS[t] for t in targets]
    paths = [p for p in _flat(params) if any(re.fullmatch(pat, p) for pat in patterns)]
    if not paths:
        raise ValueError(f"targets {list(targets)} select no weight of these params (is this an IPT param tree?)")
    return paths


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    return int(np.prod(shape[:-1])), int(shape[-1])


PROMPT_PATH = "body/pos_embed"


def init_modulation(key: jax.Array, params: Mapping, cfg: ModulationConfig) -> dict[str, dict[str, jax.Array]]:
    """``{path: {"down": [T, fan_in, r], "up": [T, r, fan_out]}}`` for every targeted weight (one compile).

    With ``cfg.prompt`` also ``{"body/pos_embed": {"prompt": [T, L, D]}}`` (zeros); with
    ``rank == 0`` no low-rank factors.
    """
    shapes = {path: tuple(np.shape(w)) for path, w in _flat(params).items()}
    mod = _init_modulation(key, tuple(sorted(shapes.items())), cfg) if cfg.rank > 0 else {}
    if cfg.prompt:
        if PROMPT_PATH not in shapes:
            raise ValueError(f"prompt=True adds task tokens to {PROMPT_PATH}, which these params lack (no_pos=True?)")
        mod[PROMPT_PATH] = {"prompt": jnp.zeros((cfg.num_tasks, *shapes[PROMPT_PATH]), jnp.float32)}
    return mod


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_modulation(key, shapes, cfg):
    flat = dict(shapes)
    paths = target_paths(traverse_util.unflatten_dict(flat, sep="/"), cfg.targets)
    t, r = cfg.num_tasks, cfg.rank
    fans = [_matrix_shape(flat[path]) for path in paths]
    # One normal draw for every factor (a single RNG kernel compiles much faster than one per weight).
    sizes = [t * r * (fan_in + fan_out) for fan_in, fan_out in fans]
    noise = jax.random.normal(key, (sum(sizes),), jnp.float32)
    mod, offset = {}, 0
    for path, (fan_in, fan_out), size in zip(paths, fans, sizes):
        chunk = noise[offset : offset + size]
        offset += size
        down = chunk[: t * fan_in * r].reshape(t, fan_in, r)
        up = chunk[t * fan_in * r :].reshape(t, r, fan_out)
        if cfg.init == "lora":
            down, up = down / np.sqrt(fan_in), jnp.zeros_like(up)
        else:
            down, up = cfg.init_std * down, cfg.init_std * up
        mod[path] = {"down": down, "up": up}
    return mod


def task_delta(factors: Mapping[str, jax.Array], task, shape: tuple[int, ...], scale: float) -> jax.Array:
    """``scale * down[task] @ up[task]`` reshaped to the weight's ``shape``; ``task`` may be traced."""
    down, up = factors["down"][task], factors["up"][task]
    return (scale * (down @ up)).reshape(shape)


def modulate(params: Mapping, mod: Mapping[str, Mapping[str, jax.Array]], task, cfg: ModulationConfig) -> dict:
    """Task ``task``'s weights ``W + Delta_task`` for every modulated ``W``; other leaves unchanged.

    Pure and traceable (use it inside the jitted apply/train step; gradients reach ``params``
    and ``mod``). With ``rank == 0`` and no prompt it returns ``params``.
    """
    if not mod:
        return dict(params)
    flat = _flat(params)
    unknown = sorted(set(mod) - set(flat))
    if unknown:
        raise ValueError(f"modulation factors for weights these params do not have: {unknown[:4]}")
    for path, factors in mod.items():
        w = flat[path]
        if "prompt" in factors:
            flat[path] = w + factors["prompt"][task].astype(w.dtype)
        elif cfg.rank > 0:
            flat[path] = w + task_delta(factors, task, w.shape, cfg.scale).astype(w.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


def merge(params: Mapping, mod: Mapping, task: int, cfg: ModulationConfig) -> dict:
    """Task ``task``'s deployable IPT params (``W + Delta_task`` folded in once), as float32 numpy."""
    if not 0 <= task < cfg.num_tasks:
        raise ValueError(f"task={task} is not one of the {cfg.num_tasks} modulated tasks")
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.jit(modulate, static_argnums=3)(params, mod, task, cfg))


def task_sensitivity(
    shared: Mapping, finetuned: Sequence[Mapping], targets: Sequence[str] = tuple(TARGET_GROUPS)
) -> list[tuple[str, float]]:
    """Ranks weights by mean relative change ``||W_t - W|| / ||W||`` over per-task fine-tunes, largest first.

    ``finetuned[t]`` is the shared params fine-tuned on task ``t`` alone; the top entries are the
    candidates for modulation (our reading of the paper's task-sensitivity search).
    """
    if not finetuned:
        raise ValueError("task_sensitivity needs at least one fine-tuned param tree")
    base = _flat(shared)
    scores = []
    for path in target_paths(shared, targets):
        w = np.asarray(base[path], np.float64)
        norm = np.linalg.norm(w) or 1.0
        change = [np.linalg.norm(np.asarray(_flat(ft)[path], np.float64) - w) / norm for ft in finetuned]
        scores.append((path, float(np.mean(change))))
    return sorted(scores, key=lambda s: -s[1])


def count_modulation_params(mod: Mapping) -> int:
    """Number of scalars in the task factors (all tasks)."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(mod)))
