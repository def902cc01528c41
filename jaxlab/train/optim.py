"""Optimizer and learning-rate schedule from ``config.optimizer`` (optax), and the EMA update.

The DiT recipe is the default: AdamW, constant lr 1e-4, betas (0.9, 0.999), eps 1e-8, no weight
decay, no gradient clipping; EMA decay 0.9999 (``config.training.ema_decay``).
"""

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
    """``(optimizer, schedule)``; gradient clipping by global norm when ``grad_clip_norm > 0``."""
    check_choice("optimizer.name", opt_cfg.name, OPTIMIZERS)
    schedule = learning_rate_schedule(opt_cfg, num_steps)
    adamw = optax.adamw(
        schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps),
        weight_decay=float(opt_cfg.weight_decay),
    )
    if float(opt_cfg.grad_clip_norm) > 0:
        return clip_then(float(opt_cfg.grad_clip_norm), adamw), schedule
    return adamw, schedule


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
