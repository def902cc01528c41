"""Averaging the shapes-VQA accuracy of several seeds per scheme (launch.lvlm_eval's second table)."""

import math

import numpy as np
import pytest

from jaxlab.lvlm.seeds import exceeds_seed_noise, seed_summary


def test_seed_summary_groups_by_scheme_with_sample_std():
    runs = [dict(scheme="circle", seed=s, all=a, digit=d) for s, a, d in [(0, 0.40, 0.7), (1, 0.44, 0.8), (2, 0.42, 0.9)]]
    runs.append(dict(scheme="mrope", seed=0, all=0.5, digit=0.6))
    out = seed_summary(runs, ["all", "digit"])
    assert list(out) == ["circle", "mrope"] and out["circle"]["seeds"] == [0, 1, 2] and out["circle"]["n"] == 3
    np.testing.assert_allclose(out["circle"]["all"], (0.42, 0.02), atol=1e-12)  # ddof=1: std of (.40,.44,.42) = .02
    np.testing.assert_allclose(out["circle"]["digit"], (0.8, 0.1), atol=1e-12)
    assert out["mrope"]["all"][0] == 0.5 and math.isnan(out["mrope"]["all"][1])
    with pytest.raises(ValueError, match="seeds \\[0, 0\\] repeat"):
        seed_summary([dict(scheme="1d", seed=0, all=0.1), dict(scheme="1d", seed=0, all=0.2)], ["all"])


def test_seed_noise_rule():
    # gap 0.05 vs 2 * sqrt(0.02^2/3 + 0.02^2/3) = 0.0327 -> different; with std 0.04 (0.065) -> not
    assert exceeds_seed_noise((0.45, 0.02), (0.40, 0.02), 3, 3)
    assert not exceeds_seed_noise((0.45, 0.04), (0.40, 0.04), 3, 3)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        exceeds_seed_noise((0.45, 0.0), (0.40, 0.0), 1, 3)
