"""Batch-size / learning-rate scaling (PanGu-pi Pro, optimisation findings; 3rd-party notes of the paper).

When the batch grows ``k = batch / base_batch`` times, the learning rate is multiplied by ``k ** r``;
``r = 0.5`` (square-root scaling) is the value the paper's notes recommend, ``r = 1`` is linear
scaling. The notes also advise keeping the batch below ~4M tokens; ``scaled_learning_rate`` does
not enforce that (it is a finding about their data, not a rule of the method).
"""


def scaled_learning_rate(base_lr: float, base_batch: int, batch: int, exponent: float = 0.5) -> float:
    """``base_lr * (batch / base_batch) ** exponent``; positive sizes and a finite exponent in [0, 1]."""
    if base_lr <= 0 or base_batch <= 0 or batch <= 0:
        raise ValueError(f"base_lr={base_lr}, base_batch={base_batch} and batch={batch} must all be > 0")
    if not 0.0 <= exponent <= 1.0:
        raise ValueError(f"exponent r={exponent} must be in [0, 1] (0.5 = square-root scaling, 1 = linear)")
    return float(base_lr) * (batch / base_batch) ** exponent


def apply_batch_scaling(config, base_batch: int, exponent: float = 0.5, base_lr: float | None = None):
    """Sets ``config.optimizer.learning_rate`` for ``config.training.global_batch_size`` (in place; returns config).

    ``base_lr`` defaults to the config's current learning rate, taken as the rate for ``base_batch``;
    ``end_learning_rate`` is scaled by the same factor so a cosine schedule keeps its shape.
    """
    base_lr = float(config.optimizer.learning_rate) if base_lr is None else float(base_lr)
    lr = scaled_learning_rate(base_lr, base_batch, int(config.training.global_batch_size), exponent)
    factor = lr / base_lr
    config.optimizer.learning_rate = lr
    config.optimizer.end_learning_rate = float(config.optimizer.end_learning_rate) * factor
    return config
