"""Channel shifts and scales from calibration ranges (host numpy, float64 inside).

Inputs are one layer's per-step ranges ``min_KC, max_KC`` (``K`` sampling steps in denoising
order, step 0 noisiest) and, for scales, the layer's original kernel ``w_IO`` (rows = input
channels). A layer's input is rewritten as ``X^ = (X - z_k) / s`` and its kernel as
``diag(s) W`` (``jaxlab.quant.folding`` does the rewriting exactly).

- ``step_shifts``: HTG's shift ``z_t = (max_t + min_t) / 2`` per channel (Eq. 2 as the
  re-implementation reads it).
- ``grouped_shifts``: ``z_g`` = mean of ``z_t`` over the group's steps, broadcast back to steps.
- ``ema_scale`` (HTG, Eq. 7 as read): ``m = a_0``, ``m <- alpha m + (1 - alpha) a_k`` for
  ``k = 1..K-1`` (denoising order: the last, least noisy step weighs most), with ``a_k`` the
  per-channel absolute max of the **shifted** input (the shift actually applied, ``z_g``; the
  note's formula uses ``z_t``: identical when G = K), then ``s = sqrt(m / max_j |W_ij|)``
  (SmoothQuant migration strength 0.5), one ``s`` for all steps.
- ``max_scale`` (SmoothQuant): ``a`` = absmax over all steps of the unshifted input.
- ``ssc_scale`` (PTQ4DiT's Spearman-guided salience calibration, as its paper describes it):
  ``a = sum_k eta_k a_k`` with ``eta = softmax(-rho)``, ``rho_k`` Spearman's correlation between
  the activation salience ``a_k`` and the weight salience ``max_j |W_ij|``.

Degenerate channels (zero activation or weight salience) get ``s = 1``; scales are clipped to
``[1e-4, 1e4]``.
"""

import numpy as np

SCALES = ("none", "ema", "max", "ssc")
_S_MIN, _S_MAX = 1e-4, 1e4


def step_shifts(min_KC, max_KC) -> np.ndarray:
    return (np.asarray(min_KC, np.float64) + np.asarray(max_KC, np.float64)) / 2


def grouped_shifts(z_KC, labels_K) -> np.ndarray:
    """``[K, C]``: each step's group mean of ``z``."""
    z_KC, labels_K = np.asarray(z_KC, np.float64), np.asarray(labels_K)
    out = np.empty_like(z_KC)
    for g in np.unique(labels_K):
        out[labels_K == g] = z_KC[labels_K == g].mean(axis=0)
    return out


def shifted_absmax(min_KC, max_KC, z_KC) -> np.ndarray:
    """``[K, C]``: max |X - z| per step and channel."""
    return np.maximum(np.asarray(max_KC, np.float64) - z_KC, z_KC - np.asarray(min_KC, np.float64))


def weight_salience(w_IO) -> np.ndarray:
    """``[I]``: max |W| over the outputs of each input channel."""
    return np.abs(np.asarray(w_IO, np.float64)).max(axis=1)


def _balance(act_C, w_C) -> np.ndarray:
    ok = (act_C > 0) & (w_C > 0)
    s = np.where(ok, np.sqrt(np.where(ok, act_C, 1.0) / np.where(ok, w_C, 1.0)), 1.0)
    return np.clip(s, _S_MIN, _S_MAX)


def ema_aggregate(a_KC, alpha: float) -> np.ndarray:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"EMA alpha={alpha} must be in [0, 1) (HTG: 0.99)")
    m = np.asarray(a_KC[0], np.float64)
    for a in a_KC[1:]:
        m = alpha * m + (1 - alpha) * a
    return m


def ema_scale(min_KC, max_KC, z_KC, w_IO, alpha: float = 0.99) -> np.ndarray:
    return _balance(ema_aggregate(shifted_absmax(min_KC, max_KC, z_KC), alpha), weight_salience(w_IO))


def max_scale(min_KC, max_KC, w_IO) -> np.ndarray:
    a = np.maximum(np.abs(min_KC), np.abs(max_KC)).max(axis=0)
    return _balance(a, weight_salience(w_IO))


def _ranks(x):
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def spearman(a, b) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def ssc_scale(min_KC, max_KC, w_IO) -> np.ndarray:
    a_KC = np.maximum(np.abs(min_KC), np.abs(max_KC)).astype(np.float64)
    w = weight_salience(w_IO)
    rho = np.array([spearman(a, w) for a in a_KC])
    eta = np.exp(-rho - (-rho).max())
    eta /= eta.sum()
    return _balance((eta[:, None] * a_KC).sum(axis=0), w)
