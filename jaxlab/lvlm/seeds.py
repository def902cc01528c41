"""Held-out accuracy of several training seeds per position scheme: mean, sample std, and a noise check.

``launch.lvlm_eval`` evaluates one workdir per (scheme, seed) run; ``seed_summary`` groups those
rows by scheme. The std is the sample standard deviation over seeds (``ddof=1``; NaN for one
seed). ``exceeds_seed_noise(a, b)`` is the rule the docs use to call two schemes different: the
gap between their means is larger than twice the standard error of that gap,
``sqrt(std_a^2 / n_a + std_b^2 / n_b)`` (about a 95% two-sided z-test; with 3 seeds it is a
loose screen, not a significance test).
"""

import math

import numpy as np


def seed_summary(runs: list[dict], columns: list[str]) -> dict[str, dict]:
    """``runs``: ``[{"scheme": str, "seed": int, <column>: float, ...}]`` ->
    ``{scheme: {"seeds": [..], "n": k, <column>: (mean, std)}}`` in first-seen scheme order."""
    out: dict[str, dict] = {}
    for run in runs:
        out.setdefault(run["scheme"], {"seeds": [], "values": {c: [] for c in columns}})
        entry = out[run["scheme"]]
        entry["seeds"].append(run["seed"])
        for c in columns:
            entry["values"][c].append(float(run[c]))
    for scheme, entry in out.items():
        if len(set(entry["seeds"])) != len(entry["seeds"]):
            raise ValueError(f"scheme {scheme}: seeds {entry['seeds']} repeat; pass each (scheme, seed) run once")
        values = entry.pop("values")
        entry["n"] = len(entry["seeds"])
        for c, v in values.items():
            entry[c] = (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
    return out


def exceeds_seed_noise(a: tuple[float, float], b: tuple[float, float], n_a: int, n_b: int) -> bool:
    """Whether means ``a[0]``, ``b[0]`` (stds ``a[1]``, ``b[1]`` over ``n_a``, ``n_b`` seeds) differ by > 2 standard errors."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"need >= 2 seeds per scheme to estimate seed noise, got {n_a} and {n_b}")
    se = math.sqrt(a[1] ** 2 / n_a + b[1] ** 2 / n_b)
    return abs(a[0] - b[0]) > 2 * se
