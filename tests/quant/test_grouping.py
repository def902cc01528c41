"""Timestep grouping: contiguous intervals, and brute-force references on small T."""

import itertools

import numpy as np
import pytest

from jaxlab.quant.grouping import default_num_groups, group_means, group_steps


def _naive_agglomerative(x, g):
    """Reference: clusters as member lists; every round recomputes all adjacent centroid gaps."""
    clusters = [[i] for i in range(len(x))]
    while len(clusters) > g:
        gaps = [((x[a].mean(0) - x[b].mean(0)) ** 2).sum() for a, b in zip(clusters, clusters[1:])]
        i = int(np.argmin(gaps))
        clusters[i : i + 2] = [clusters[i] + clusters[i + 1]]
    labels = np.zeros(len(x), int)
    for c, members in enumerate(clusters):
        labels[members] = c
    return labels


def _sse(x, labels):
    return sum(((x[labels == g] - x[labels == g].mean(0)) ** 2).sum() for g in np.unique(labels))


def _best_partition_sse(x, g):
    best = np.inf
    for cuts in itertools.combinations(range(1, len(x)), g - 1):
        labels = np.zeros(len(x), int)
        for c in cuts:
            labels[c:] += 1
        best = min(best, _sse(x, labels))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["agglomerative", "optimal"])
def test_groups_are_contiguous_intervals(seed, method):
    x = np.random.default_rng(seed).standard_normal((23, 5)).cumsum(axis=0)
    labels = group_steps(x, 4, method)
    assert labels[0] == 0 and set(np.diff(labels)) <= {0, 1} and labels.max() == 3


@pytest.mark.parametrize("seed", range(6))
def test_agglomerative_matches_naive_reference(seed):
    x = np.random.default_rng(seed).standard_normal((9, 3)).cumsum(axis=0)
    for g in (1, 2, 3, 5, 9):
        np.testing.assert_array_equal(group_steps(x, g, "agglomerative"), _naive_agglomerative(x, g))


@pytest.mark.parametrize("seed", range(4))
def test_optimal_matches_exhaustive_search(seed):
    x = np.random.default_rng(seed).standard_normal((9, 3)).cumsum(axis=0)
    for g in (2, 3, 4):
        labels = group_steps(x, g, "optimal")
        assert _sse(x, labels) == pytest.approx(_best_partition_sse(x, g))
        assert _sse(x, group_steps(x, g, "agglomerative")) >= _sse(x, labels) - 1e-9


def test_separated_regimes_are_found_and_group_means():
    x = np.concatenate([np.zeros((5, 2)), np.full((7, 2), 10.0), np.full((3, 2), -4.0)])
    labels = group_steps(x + np.random.default_rng(0).normal(0, 0.01, x.shape), 3)
    np.testing.assert_array_equal(labels, [0] * 5 + [1] * 7 + [2] * 3)
    np.testing.assert_allclose(group_means(x, labels), [[0, 0], [10, 10], [-4, -4]])


def test_defaults_and_bad_group_counts():
    assert default_num_groups(50) == 5 and default_num_groups(100) == 10 and default_num_groups(7) == 1
    with pytest.raises(ValueError, match=r"num_groups=6 must be an integer in \[1, 5\]"):
        group_steps(np.zeros((5, 2)), 6)
    with pytest.raises(ValueError, match="unknown grouping method"):
        group_steps(np.zeros((5, 2)), 2, "kmeans")
