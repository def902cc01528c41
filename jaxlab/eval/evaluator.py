"""The ADM evaluation suite over image sets: reading samples/reference batches, the report.

``evaluate(samples, reference, features)`` returns FID, sFID, IS, precision and recall as
``openai/guided-diffusion`` ``evaluations/evaluator.py`` computes them, plus the fields that make
the number comparable (sample counts, resolution, where the reference statistics came from, the
input path, quantisation, guidance scale). Reference batches are ADM's ``.npz`` files
(``arr_0`` uint8 images and, for the published ones, ``mu``/``sigma``/``mu_s``/``sigma_s``): the
stored statistics are used for FID/sFID as ADM does, the images (or stored ``pool3`` features,
written by ``write_reference_stats``) for precision/recall.
"""

import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from jaxlab.eval import metrics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SAMPLE_KEYS = ("arr_0", "samples")  # ADM's sample/reference batches, jaxlab's launch.sample
STATS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
POOL3_KEY = "pool3_features"  # jaxlab's addition to a reference file: pool3 features for precision/recall

FeatureFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def load_images(path: str | pathlib.Path) -> np.ndarray:
    """``[N, H, W, C]`` images from an ``.npz`` (``arr_0`` or ``samples``) or a folder of image files."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a samples .npz (arr_0 or samples) or a folder of images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        sizes = sorted({im.shape for im in images})
        if len(sizes) > 1:
            raise ValueError(f"the images in {path} have different sizes {sizes[:4]}; resize them to one size first")
        return np.stack(images)
    with np.load(path) as data:
        for key in SAMPLE_KEYS:
            if key in data.files:
                return data[key]
        raise ValueError(f"{path} has no image array: expected one of {SAMPLE_KEYS}, found {data.files}")


class Reference:
    """An ADM reference batch: optional ``images`` (uint8), optional stored statistics and features."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"reference batch {self.path} does not exist; use ADM's reference .npz (e.g. VIRTUAL_imagenet256_labeled.npz) "
                f"or write one for your data with `python -m launch.evaluate --write_stats`"
            )
        with np.load(self.path) as data:
            self.images = data["arr_0"] if "arr_0" in data.files else None
            present = [k for k in STATS_KEYS if k in data.files]
            if present and len(present) != len(STATS_KEYS):
                raise ValueError(f"{self.path} has {present} but not all of {STATS_KEYS}; it is not an ADM reference batch")
            self.stats = {k: np.asarray(data[k], np.float64) for k in present}
            self.pool3 = data[POOL3_KEY] if POOL3_KEY in data.files else None
            self.resolution = tuple(int(v) for v in data["resolution"]) if "resolution" in data.files else None
            self.num_images = int(data["num_images"]) if "num_images" in data.files else None
        if self.images is not None:
            self.resolution = tuple(self.images.shape[1:3])
            self.num_images = len(self.images)
        if self.images is None and not self.stats:
            raise ValueError(f"{self.path} has neither images (arr_0) nor statistics ({STATS_KEYS}); not a reference batch")

    def check_resolution(self, sample_shape: tuple[int, ...]) -> None:
        if self.resolution is not None and tuple(sample_shape[1:3]) != self.resolution:
            raise ValueError(
                f"the reference batch {self.path.name} is {self.resolution[0]}x{self.resolution[1]} but the samples are "
                f"{sample_shape[1]}x{sample_shape[2]}: FID is only comparable at one resolution; use the reference batch "
                f"of the samples' resolution (e.g. VIRTUAL_imagenet{sample_shape[1]}_labeled.npz)"
            )


def _stats_pair(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    mu, sigma = metrics.feature_statistics(features["pool3"])
    mu_s, sigma_s = metrics.feature_statistics(features["spatial"])
    return {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}


def evaluate(
    samples_uint8: np.ndarray,
    reference: Reference,
    features: FeatureFn,
    *,
    force: bool = False,
    min_samples: int = metrics.FID_MIN_SAMPLES,
    pr_distance_dtype: str = "float16",
    precision_recall: bool = True,
    fid_method: str = "sqrtm",
    progress: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """FID, sFID, IS, precision, recall of ``samples_uint8 [N, H, W, 3]`` against ``reference``.

    Checks the sample count (``min_samples`` unless ``force``) and the resolution before any
    network runs. ``features`` maps uint8 images to ``{"pool3", "spatial", "probs"}``.
    ``fid_method``: ``metrics.frechet_distance``'s ("sqrtm" is ADM's). ``precision_recall=False``
    skips precision/recall (they need the reference images' features).
    """
    n = len(samples_uint8)
    reference.check_resolution(samples_uint8.shape)
    metrics.check_sample_count(n, min_samples, force=force)
    if reference.num_images is not None:
        metrics.check_sample_count(reference.num_images, min_samples, force=force, what="FID against a reference")
    progress(f"computing Inception features of {n} samples")
    sample_feats = features(samples_uint8)
    ref_feats = None
    if not reference.stats or (precision_recall and reference.pool3 is None):
        if reference.images is not None:
            progress(f"computing Inception features of {len(reference.images)} reference images")
            ref_feats = features(reference.images)
    ref_stats = reference.stats or _stats_pair(ref_feats)
    sample_stats = _stats_pair(sample_feats)
    report: dict[str, Any] = {
        "fid": metrics.frechet_distance(
            sample_stats["mu"], sample_stats["sigma"], ref_stats["mu"], ref_stats["sigma"], method=fid_method
        ),
        "sfid": metrics.frechet_distance(
            sample_stats["mu_s"], sample_stats["sigma_s"], ref_stats["mu_s"], ref_stats["sigma_s"], method=fid_method
        ),
        "inception_score": metrics.inception_score(sample_feats["probs"]),
    }
    ref_pool3 = reference.pool3 if reference.pool3 is not None else (ref_feats or {}).get("pool3")
    if not precision_recall:
        report.update(precision=None, recall=None, precision_recall_note="skipped (precision_recall=False)")
    elif ref_pool3 is not None:
        precision, recall = metrics.precision_recall(ref_pool3, sample_feats["pool3"], distance_dtype=pr_distance_dtype)
        report.update(precision=precision, recall=recall)
    else:
        report.update(precision=None, recall=None, precision_recall_note="the reference file holds no images or pool3 features")
    report.update(
        num_samples=n,
        num_reference=reference.num_images,
        resolution=list(samples_uint8.shape[1:3]),
        reference_statistics="stored mu/sigma (as ADM)" if reference.stats else "computed from the reference images",
        forced_below_min_samples=bool(n < min_samples),
        is_splits=f"consecutive chunks of {metrics.IS_SPLIT_SIZE} (ADM): {-(-n // metrics.IS_SPLIT_SIZE)} split(s)",
        fid_method=fid_method,
        pr_k=3,
        pr_distance_dtype=pr_distance_dtype,
    )
    bad = [k for k in ("fid", "sfid", "inception_score") if not np.isfinite(report[k])]
    if bad:
        raise FloatingPointError(f"non-finite {bad}: {report}")
    return report


def write_reference_stats(path: str | pathlib.Path, images_uint8: np.ndarray, features: FeatureFn, *, overwrite: bool = False) -> pathlib.Path:
    """Writes ADM-style statistics (``mu``, ``sigma``, ``mu_s``, ``sigma_s``) + pool3 features of a dataset.

    Also stores ``resolution`` and ``num_images`` so a later evaluation can check them, and
    ``pool3_features`` for precision/recall (the images themselves are not copied).
    """
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --output or pass --overwrite")
    feats = features(images_uint8)
    stats = _stats_pair(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(
            f, **stats, **{POOL3_KEY: feats["pool3"].astype(np.float32)},
            resolution=np.array(images_uint8.shape[1:3]), num_images=np.array(len(images_uint8)),
        )
    return path
