"""Sample-quality metrics on feature vectors, computed as the ADM evaluator computes them.

Reference: ``openai/guided-diffusion`` ``evaluations/evaluator.py`` (``FIDStatistics``,
``Evaluator.compute_inception_score``, ``ManifoldEstimator``). The feature network is separate
(``jaxlab.eval.inception`` for Inception features, ``jaxlab.eval.digits_features`` for the digits);
everything here takes plain ``[N, D]`` feature arrays.

- Statistics (``mu`` [D], ``sigma`` [D, D]) are float64 (``np.cov`` with ``rowvar=False``, i.e.
  the unbiased N - 1 normaliser); ``StatsAccumulator`` streams them in float64 batch by batch.
- ``frechet_distance``: ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr(sqrtm(s1 s2))`` with
  ``scipy.linalg.sqrtm``; when the square root is not finite, ``eps`` (1e-6) is added to both
  diagonals and it is recomputed; an imaginary part whose diagonal exceeds 1e-3 is an error, a
  smaller one is dropped. With fewer samples than feature dimensions the covariances are singular
  and the number is biased and unstable: ``check_sample_count`` refuses FID below 2048 samples
  (the pool3 width) unless forced.
- ``inception_score``: ``exp(E_x KL(p(y|x) || p(y)))`` averaged over consecutive splits of
  ``split_size`` (5000) predictions, ADM's chunking: 10 splits for 50,000 samples, fewer splits
  (the last one shorter) for other counts. The original improved-GAN code uses 10 equal splits;
  ``num_splits`` selects that instead.
- ``precision_recall``: improved precision/recall (Kynkaenniemi et al. 2019) with k = 3 manifolds:
  each reference (sample) point's radius is its squared distance to its 3rd nearest neighbour in
  its own set (itself excluded); precision is the fraction of samples inside some reference ball,
  recall the fraction of references inside some sample ball. Pairwise squared distances are
  ``max(|u|^2 - 2 u.v + |v|^2, 0)``; ADM computes them in float16 first and in float32 only if a
  float16 distance overflows. ``distance_dtype="float16"`` (the default) mirrors that;
  ``"float32"`` is the exact alternative (it differs from ADM's only on borderline points).
"""

import warnings
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg, special

FID_MIN_SAMPLES = 2048  # pool3's width: below it the sample covariance is singular
IS_SPLIT_SIZE = 5000


class FIDError(ValueError):
    """A Fréchet distance that cannot be trusted (too few samples, complex square root)."""


# ----------------------------------------------------------------------------- statistics


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` features -> ``(mu [D], sigma [D, D])`` in float64 (``np.cov``, N - 1 normaliser)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"statistics need features of shape [N >= 2, D], got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


class StatsAccumulator:
    """Streams ``mu``/``sigma`` over batches in float64 (sum and shifted sum of outer products).

    Equal to ``feature_statistics`` of the concatenated batches. The first batch's mean is the
    shift, which keeps the float64 sums well conditioned for features with a large mean.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum = np.zeros(dim, np.float64)
        self._outer = np.zeros((dim, dim), np.float64)

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or inf: the feature network received invalid images")
        if self._shift is None:
            self._shift = features.mean(axis=0)
        centred = features - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += features.shape[0]

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 feature vectors, got {self.count}")
        mean_c = self._sum / self.count
        sigma = (self._outer - self.count * np.outer(mean_c, mean_c)) / (self.count - 1)
        return self._shift + mean_c, sigma


def check_sample_count(num_samples: int, dim: int = FID_MIN_SAMPLES, *, force: bool = False, what: str = "FID") -> None:
    """Refuses a Fréchet distance from fewer than ``dim`` samples unless ``force``.

    With N < D the D x D covariance has rank N - 1: ``sqrtm`` of the product is ill conditioned
    (often complex), and the estimate is strongly biased upwards (FID falls with N). Papers report
    FID-50K; compare only numbers with the same N.
    """
    if num_samples < dim and not force:
        raise FIDError(
            f"{what} from {num_samples} samples: at least {dim} are needed (the feature width; below it the "
            f"covariance is singular and the value is biased and unstable; papers use 50,000). Generate "
            f"{dim - num_samples} more samples, or force it (--force / force=True) and compare only with numbers "
            f"computed from {num_samples} samples"
        )


# ----------------------------------------------------------------------------- Fréchet distance


FID_METHODS = ("sqrtm", "eigh")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """ADM's ``FIDStatistics.frechet_distance`` (float64; see the module docstring).

    ``method="sqrtm"`` is ADM's (``scipy.linalg.sqrtm`` of ``sigma1 @ sigma2``, eps offset,
    complex-part check). ``"eigh"`` computes the same trace from symmetric eigendecompositions:
    ``tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))`` (exact for covariance matrices, whose
    product has real non-negative eigenvalues); it is several times faster at 2048 dimensions
    on CPU and never complex, and agrees with ``sqrtm`` to float64 round-off on well-conditioned
    statistics. Report which one was used.
    """
    if method not in FID_METHODS:
        raise ValueError(f"method={method!r}; use one of {FID_METHODS}")
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics of different feature widths: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; both sides must come from the same feature network and layer"
        )
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all() and np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise FIDError("the statistics contain NaN or inf; the features were not finite")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2) if method == "eigh" else _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    if not np.isfinite(value):
        raise FIDError(f"the Fréchet distance is not finite ({value}); the statistics contain NaN or inf")
    return value


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FIDError(
                f"the matrix square root has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}: the "
                f"covariances are (nearly) singular; use more samples"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


# ----------------------------------------------------------------------------- Inception Score


def inception_score(probs: np.ndarray, split_size: int = IS_SPLIT_SIZE, num_splits: int | None = None) -> float:
    """``exp(mean KL(p(y|x) || p(y)))`` averaged over splits of ``probs [N, classes]`` (float64).

    Default: ADM's consecutive chunks of ``split_size``; ``num_splits`` instead cuts N into that
    many near-equal parts (``np.array_split``, improved-GAN's 10 splits). Zero probabilities
    contribute 0 (``0 log 0 = 0``); ADM's formula would give NaN there.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"inception_score takes class probabilities [N, classes], got {probs.shape}")
    if num_splits is not None:
        parts = np.array_split(probs, num_splits)
    else:
        parts = [probs[i : i + split_size] for i in range(0, len(probs), split_size)]
    scores = []
    for part in parts:
        # rel_entr: p log(p / q), 0 where p == 0 (ADM's p (log p - log q) is NaN there).
        kl = special.rel_entr(part, part.mean(axis=0, keepdims=True))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- precision / recall

_DISTANCE_DTYPES = ("float16", "float32")


@jax.jit
def _squared_distances(u: jax.Array, v: jax.Array) -> jax.Array:
    """``max(|u|^2 - 2 u v^T + |v|^2, 0)`` [Nu, Nv] in the dtype of ``u`` and ``v``."""
    norm_u = jnp.sum(jnp.square(u), axis=1)[:, None]
    norm_v = jnp.sum(jnp.square(v), axis=1)[None, :]
    dots = jnp.matmul(u, v.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(norm_u - 2 * dots + norm_v, jnp.zeros((), u.dtype))


def pairwise_distances(u: np.ndarray, v: np.ndarray, distance_dtype: str = "float16") -> jax.Array:
    """Squared distances [Nu, Nv] as float32; ``"float16"`` falls back to float32 on overflow (ADM)."""
    if distance_dtype not in _DISTANCE_DTYPES:
        raise ValueError(f"distance_dtype={distance_dtype!r}; use one of {_DISTANCE_DTYPES}")
    if distance_dtype == "float16":
        d16 = _squared_distances(jnp.asarray(u, jnp.float16), jnp.asarray(v, jnp.float16))
        if bool(jnp.isfinite(d16).all()):
            return d16.astype(jnp.float32)
    return _squared_distances(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32))


def _row_blocks(n: int, size: int) -> Iterable[slice]:
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def manifold_radii(features: np.ndarray, k: int = 3, row_batch: int = 1024, distance_dtype: str = "float16") -> np.ndarray:
    """Squared distance from each point to its ``k``-th nearest other point ``[N]`` (float32)."""
    features = np.asarray(features, np.float32)
    if features.shape[0] <= k:
        raise ValueError(f"a k={k} manifold needs more than {k} points, got {features.shape[0]}")
    radii = []
    for rows in _row_blocks(features.shape[0], row_batch):
        d = pairwise_distances(features[rows], features, distance_dtype)
        # k + 1 smallest in each row: the point itself (distance 0) and its k nearest neighbours.
        smallest = -jax.lax.top_k(-d, k + 1)[0]
        radii.append(np.asarray(smallest[:, k]))
    return np.concatenate(radii)


def _inside_any_ball(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, row_batch: int, distance_dtype: str) -> np.ndarray:
    inside = []
    for rows in _row_blocks(points.shape[0], row_batch):
        d = pairwise_distances(points[rows], centres, distance_dtype)
        inside.append(np.asarray(jnp.any(d <= jnp.asarray(radii)[None, :], axis=1)))
    return np.concatenate(inside)


def precision_recall(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    k: int = 3,
    row_batch: int = 1024,
    distance_dtype: str = "float16",
) -> tuple[float, float]:
    """Improved precision and recall of samples against references (ADM's ``compute_prec_recall``)."""
    ref = np.asarray(ref_features, np.float32)
    sample = np.asarray(sample_features, np.float32)
    if ref.ndim != 2 or sample.ndim != 2 or ref.shape[1] != sample.shape[1]:
        raise ValueError(f"precision/recall need [N, D] features of one width, got {ref.shape} and {sample.shape}")
    ref_radii = manifold_radii(ref, k, row_batch, distance_dtype)
    sample_radii = manifold_radii(sample, k, row_batch, distance_dtype)
    precision = _inside_any_ball(sample, ref, ref_radii, row_batch, distance_dtype).mean()
    recall = _inside_any_ball(ref, sample, sample_radii, row_batch, distance_dtype).mean()
    return float(precision), float(recall)
