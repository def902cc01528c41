"""The digits metric: the shipped classifier, its features, and that digits FID ranks image sets."""

import jax
import numpy as np
import pytest

from jaxlab.data.digits import load_digits
from jaxlab.eval import digits_features as df



@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    """Implicit rank promotion is an error in these tests (scoped: other modules keep the default)."""
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def features():
    return df.DigitsFeatures()


def test_shipped_classifier_has_the_recorded_test_accuracy(features):
    images, labels = load_digits(df.IMAGE_SIZE)
    train_idx, test_idx = df.split_indices()
    assert len(set(train_idx) & set(test_idx)) == 0 and len(train_idx) + len(test_idx) == 1797
    probs = features(images[test_idx])["probs"]
    accuracy = float((probs.argmax(-1) == labels[test_idx]).mean())
    assert accuracy == pytest.approx(features.metadata["test_accuracy"], abs=1 / 500)
    assert accuracy >= 0.97


def test_digits_fid_ranks_real_above_corrupted(features):
    images, _ = load_digits(16)
    train_idx, test_idx = df.split_indices()
    ref = features(images[train_idx])
    real = df.digits_scores(features(images[test_idx]), ref)
    rng = np.random.default_rng(0)
    noisy = np.clip(images[test_idx] + rng.normal(0, 0.3, images[test_idx].shape), -1, 1).astype(np.float32)
    worse = df.digits_scores(features(noisy), ref)
    blank = df.digits_scores(features(np.clip(noisy, -1, -0.5)), ref)
    assert real["digits_fid"] < worse["digits_fid"] / 3 < blank["digits_fid"] / 3
    assert real["digits_is"] > 9.0 and blank["digits_is"] < real["digits_is"]
    assert real["digits_precision"] > 0.85 and real["digits_recall"] > 0.85


def test_evaluate_digits_takes_uint8_and_8px_samples(features):
    x8, _ = load_digits(8)
    subset = df.split_indices()[1][:300]  # a random subset (the file's order is not random)
    u8 = np.round((x8[subset] + 1) * 127.5).astype(np.uint8)
    report = df.evaluate_digits(u8, features=features)
    assert report["resolution"] == [8, 8] and report["num_samples"] == 300 and report["num_reference"] == 1797
    assert report["digits_fid"] < 10 and report["digits_precision"] > 0.9


@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((100, 16, 16, 1), np.float32) + 3.0, r"must be in \[-1, 1\]"),
        (np.zeros((100, 1, 16, 16), np.float32), r"square \[N, S, S, 1\]"),
        (np.full((100, 16, 16, 1), np.nan, np.float32), "NaN"),
        (np.zeros((10, 16, 16, 1), np.float32), "at least 64 are needed"),
    ],
)
def test_bad_samples_are_refused(images, match):
    with pytest.raises(ValueError, match=match):
        df.evaluate_digits(images, features=df.DigitsFeatures(params=df.load_classifier()[0]))


@pytest.mark.slow  # ~1 min of training; the shipped network's test above covers the architecture and loading
def test_training_learns(tmp_path):
    params, meta = df.train(epochs=2)
    assert meta["test_accuracy"] > 0.5  # chance is 0.1; the shipped 40-epoch net reaches 0.99
    path = df.save_classifier(tmp_path / "c.npz", params, meta)
    loaded, meta2 = df.load_classifier(path)
    assert meta2 == meta
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(jax.tree_util.tree_map(np.asarray, params))
