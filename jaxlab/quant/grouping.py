"""Timestep grouping: split the K sampling steps into G contiguous intervals.

``agglomerative`` (HTG's Algorithm 1 as the re-implementations read it): every step starts as
its own cluster; the pair of clusters **adjacent in time** whose centroids are closest
(squared L2, centroid linkage, centroid = mean of the members' features) merges, until G
clusters remain. Ties merge the earliest pair. ``optimal`` (an alternative, not the paper's):
the contiguous partition into G intervals with the least within-group sum of squares, by
dynamic programming (exact; O(G K^2) distance look-ups). Both return contiguous intervals.

Features are one vector per step, e.g. a layer's shift vectors ``z_t [K, C]``.
"""

import numpy as np

METHODS = ("agglomerative", "optimal")


def default_num_groups(num_steps: int) -> int:
    """HTG's default G = T // 10 (at least 1)."""
    return max(1, num_steps // 10)


def check_num_groups(num_groups: int, num_steps: int) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or not 1 <= num_groups <= num_steps:
        raise ValueError(f"num_groups={num_groups!r} must be an integer in [1, {num_steps}] (the calibrated sampling steps)")
    return int(num_groups)


def group_steps(features_KC: np.ndarray, num_groups: int, method: str = "agglomerative") -> np.ndarray:
    """``labels [K]`` int32: the group of each step, 0..G-1 in step order (non-decreasing)."""
    x = np.asarray(features_KC, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [steps, channels], got shape {x.shape}")
    num_groups = check_num_groups(num_groups, x.shape[0])
    if method == "agglomerative":
        starts = _agglomerative(x, num_groups)
    elif method == "optimal":
        starts = _optimal(x, num_groups)
    else:
        raise ValueError(f"unknown grouping method {method!r}; allowed values: {list(METHODS)}")
    labels = np.zeros(x.shape[0], np.int32)
    for g, s in enumerate(starts[1:], start=1):
        labels[s:] = g
    return labels


def _agglomerative(x: np.ndarray, num_groups: int) -> list[int]:
    """Start indices of the clusters left after adjacent centroid-linkage merges."""
    starts = list(range(x.shape[0]))
    sums = [row.copy() for row in x]
    counts = [1] * x.shape[0]
    while len(starts) > num_groups:
        centroids = np.stack(sums) / np.asarray(counts, np.float64)[:, None]
        gaps = ((centroids[1:] - centroids[:-1]) ** 2).sum(axis=1)
        i = int(np.argmin(gaps))  # first minimum: ties merge the earliest pair
        sums[i] = sums[i] + sums.pop(i + 1)
        counts[i] += counts.pop(i + 1)
        starts.pop(i + 1)
    return starts


def _optimal(x: np.ndarray, num_groups: int) -> list[int]:
    """Start indices of the least within-group-SSE contiguous partition (dynamic programming)."""
    k = x.shape[0]
    c1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    c2 = np.concatenate([[0.0], np.cumsum((x**2).sum(axis=1))])

    def sse(a, b):  # steps a..b-1
        s = c1[b] - c1[a]
        return c2[b] - c2[a] - (s**2).sum() / (b - a)

    cost = np.full((num_groups + 1, k + 1), np.inf)
    arg = np.zeros((num_groups + 1, k + 1), np.int64)
    cost[0, 0] = 0.0
    for g in range(1, num_groups + 1):
        for b in range(g, k + 1):
            options = [cost[g - 1, a] + sse(a, b) for a in range(g - 1, b)]
            j = int(np.argmin(options))
            cost[g, b], arg[g, b] = options[j], j + g - 1
    starts, b = [], k
    for g in range(num_groups, 0, -1):
        a = int(arg[g, b])
        starts.append(a)
        b = a
    return starts[::-1]


def group_means(values_K: np.ndarray, labels_K: np.ndarray) -> np.ndarray:
    """``[G, ...]``: the mean of ``values [K, ...]`` over each group's steps."""
    labels_K = np.asarray(labels_K)
    return np.stack([np.asarray(values_K)[labels_K == g].mean(axis=0) for g in range(int(labels_K.max()) + 1)])
