"""Optimizer and learning-rate schedule from ``config.optimizer`` (optax), and the EMA update.

The DiT recipe is the default: AdamW, constant lr 1e-4, betas (0.9, 0.999), eps 1e-8, no weight
decay, no gradient clipping; EMA decay 0.9999 (``config.training.ema_decay``).

``config.optimizer.trainable_params`` (optional; empty or absent = every parameter) is a regular
expression searched in each parameter's ``/``-joined path (e.g. ``"^conf_"``): only matching
parameters are updated; the others are frozen (zero update, no weight decay, no optimizer state,
and gradient clipping sees only the trainable gradients). ``restrict_to`` implements it.
"""

import re

import flax
import jax
import jax.numpy as jnp
import optax

from jaxlab.config_utils import check_choice

OPTIMIZERS = ("adamw",)
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(opt_cfg, num_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup_steps``, then constant or cosine decay to ``end_learning_rate``."""
    check_choice("optimizer.schedule", opt_cfg.schedule, SCHEDULES)
    peak, warmup = float(opt_cfg.learning_rate), int(opt_cfg.warmup_steps)
    if opt_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, max(num_steps, warmup + 1), end_value=float(opt_cfg.end_learning_rate)
        )
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    return optax.constant_schedule(peak)


def make_optimizer(opt_cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, schedule)``; gradient clipping by global norm when ``grad_clip_norm > 0``; only the
    parameters matching ``trainable_params`` (when set) are trained."""
    trainable = str(opt_cfg.get("trainable_params", "") or "")
    tx, schedule = _make_optimizer(opt_cfg, num_steps)
    return restrict_to(trainable, tx), schedule


def _make_optimizer(opt_cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    check_choice("optimizer.name", opt_cfg.name, OPTIMIZERS)
    schedule = learning_rate_schedule(opt_cfg, num_steps)
    adamw = optax.adamw(
        schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps),
        weight_decay=float(opt_cfg.weight_decay),
    )
    if float(opt_cfg.grad_clip_norm) > 0:
        return clip_then(float(opt_cfg.grad_clip_norm), adamw), schedule
    return adamw, schedule


def param_path(path) -> str:
    """A key path of a params tree -> ``"block_0/attn/kernel"`` (dict keys only; box attributes skipped)."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def restrict_to(pattern: str, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` on the parameters whose path (``param_path``) matches the regex ``pattern`` (``re.search``); the
    rest are frozen (``optax.set_to_zero``, no state). ``""`` returns ``inner`` unchanged. A pattern that matches
    no parameter, or every one, is an error at ``init`` (it would silently train nothing / everything)."""
    if not pattern:
        return inner
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"config.optimizer.trainable_params={pattern!r} is not a regular expression ({e})") from None

    def labels(params):
        # Unboxed labels: a frozen leaf's state is then a bare MaskedNode, not a box around one.
        params = flax.core.meta.unbox(params)
        paths = jax.tree_util.tree_flatten_with_path(params)[0]
        chosen = [bool(regex.search(param_path(path))) for path, _ in paths]
        if not any(chosen) or all(chosen):
            names = sorted({param_path(path).split("/")[0] for path, _ in paths})
            which = "no" if not any(chosen) else "every"
            raise ValueError(
                f"config.optimizer.trainable_params={pattern!r} matches {which} parameter; it is searched in paths like "
                f"{param_path(paths[0][0])!r} (top-level names: {names[:12]}); leave it empty to train everything"
            )
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                            ["trainable" if c else "frozen" for c in chosen])

    return optax.multi_transform({"trainable": inner, "frozen": optax.set_to_zero()}, labels)


def clip_then(max_norm: float, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` applied to the gradients clipped to global norm ``max_norm``, with ``inner``'s state unchanged.

    ``optax.chain(clip, inner)`` would nest the state in a tuple, so turning clipping on or off in
    a resumed run would no longer match the checkpoint; clipping is stateless, so it is applied
    inside ``inner``'s update instead.
    """
    clip = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        clipped, _ = clip.update(updates, clip.init(params), params)
        return inner.update(clipped, state, params)

    return optax.GradientTransformation(inner.init, update)


def ema_update(ema_params, params, decay: float):
    """``decay * ema + (1 - decay) * params`` leafwise (float32), as DiT's ``update_ema``."""
    return jax.tree.map(lambda e, p: e * jnp.asarray(decay, e.dtype) + p * jnp.asarray(1.0 - decay, e.dtype),
                        ema_params, params)
