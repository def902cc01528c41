"""FID / IS / precision-recall against independent NumPy / SciPy computations on random features."""

import jax
import numpy as np
import pytest
from scipy import stats

from jaxlab.eval import metrics



@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    """Implicit rank promotion is an error in these tests (scoped: other modules keep the default)."""
    with jax.numpy_rank_promotion("raise"):
        yield


def _random_stats(rng, n, d, scale=1.0):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * scale + rng.standard_normal(d)
    return x


def test_statistics_are_float64_numpy_cov_and_stream_equal():
    rng = np.random.default_rng(0)
    x = (_random_stats(rng, 300, 8) + 1000.0).astype(np.float32)  # large mean: float32 sums would lose digits
    mu, sigma = metrics.feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mu, x64.mean(0), rtol=1e-12)
    centred = x64 - x64.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(x) - 1), rtol=1e-10, atol=1e-10)
    acc = metrics.StatsAccumulator(8)
    for part in np.array_split(x, 7):
        acc.update(part)
    mu_s, sigma_s = acc.finalize()
    assert acc.count == 300
    np.testing.assert_allclose(mu_s, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_s, sigma, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update(np.full((2, 8), np.nan))


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(1)
    d = 16
    # Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # General SPD: tr sqrt(S1 S2) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2.
    s1 = np.cov(_random_stats(rng, 400, d), rowvar=False)
    s2 = np.cov(_random_stats(rng, 400, d, 0.7), rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="method='svd'"):
        metrics.frechet_distance(mu1, s1, mu2, s2, method="svd")


def test_frechet_distance_singular_covariances_use_the_eps_offset():
    rng = np.random.default_rng(2)
    x = _random_stats(rng, 5, 32)  # 5 samples in 32 dims: rank-4 covariances
    y = _random_stats(rng, 5, 32)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    value = metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert np.isfinite(value) and value > 0
    assert metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2, method="eigh") == pytest.approx(value, rel=1e-4)
    with pytest.raises(ValueError, match="different feature widths"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_refuses_too_few_samples_unless_forced():
    with pytest.raises(metrics.FIDError, match=r"from 100 samples: at least 2048 .* Generate 1948 more"):
        metrics.check_sample_count(100)
    metrics.check_sample_count(100, force=True)
    metrics.check_sample_count(2048)


def _is_reference(probs, splits):
    scores = []
    for part in splits:
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean([stats.entropy(p, marginal) for p in part])))
    return np.mean(scores)


def test_inception_score_matches_scipy_entropy_per_split():
    rng = np.random.default_rng(3)
    probs = metrics.softmax(rng.standard_normal((1200, 10)) * 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    adm = metrics.inception_score(probs, split_size=500)  # ADM chunks: 500, 500, 200
    assert adm == pytest.approx(_is_reference(probs, [probs[:500], probs[500:1000], probs[1000:]]), rel=1e-10)
    ten = metrics.inception_score(probs, num_splits=10)
    assert ten == pytest.approx(_is_reference(probs, np.array_split(probs, 10)), rel=1e-10)
    # Confident, diverse predictions: IS = number of classes; one class for all: 1.
    assert metrics.inception_score(np.eye(10)[np.arange(1000) % 10]) == pytest.approx(10.0, rel=1e-9)
    assert metrics.inception_score(np.tile(np.eye(10)[3], (100, 1)) * 0.99 + 0.001) == pytest.approx(1.0)


def _pr_reference(ref, sample, k):
    """Brute force in float64: full distance matrices, sorted rows."""
    def sq(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    r_ref = np.sort(sq(ref, ref), axis=1)[:, k]
    r_sample = np.sort(sq(sample, sample), axis=1)[:, k]
    precision = np.mean((sq(sample, ref) <= r_ref[None, :]).any(axis=1))
    recall = np.mean((sq(ref, sample) <= r_sample[None, :]).any(axis=1))
    return precision, recall


def test_precision_recall_match_brute_force():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((300, 16))
    sample = rng.standard_normal((250, 16)) * 0.6 + 0.5  # a shifted, narrower set: precision > recall
    expected = _pr_reference(ref, sample, 3)
    got = metrics.precision_recall(ref, sample, row_batch=64, distance_dtype="float32")
    np.testing.assert_allclose(got, expected, atol=1.5 / 300)  # float32 distances: at most a borderline point
    assert got[0] > got[1]
    half = metrics.precision_recall(ref, sample, row_batch=64)  # ADM's float16 distances
    np.testing.assert_allclose(half, expected, atol=0.03)
    radii = metrics.manifold_radii(ref, 3, row_batch=50, distance_dtype="float32")
    d = ((ref[:, None] - ref[None]) ** 2).sum(-1)
    np.testing.assert_allclose(radii, np.sort(d, axis=1)[:, 3], rtol=1e-4)


def test_precision_recall_identical_sets_are_one():
    x = np.random.default_rng(5).standard_normal((100, 8))
    assert metrics.precision_recall(x, x, distance_dtype="float32") == (1.0, 1.0)


def test_float16_overflow_falls_back_to_float32():
    x = np.random.default_rng(6).standard_normal((50, 8)) * 1000.0  # squared norms ~1e7 > float16 max
    d = np.asarray(metrics.pairwise_distances(x, x, "float16"))
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d, np.asarray(metrics.pairwise_distances(x, x, "float32")))
