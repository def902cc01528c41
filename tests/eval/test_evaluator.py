"""The evaluation report over image sets, with a small stand-in feature function (the Inception is tested apart)."""

import numpy as np
import pytest
from PIL import Image

from jaxlab.eval import evaluator, metrics

_PROJ = np.random.default_rng(0).standard_normal((3 * 16, 24))


def fake_features(images):
    """Deterministic features of uint8 [N, 16, 16, 3]: 4x4-block means projected to 24 dims."""
    x = images.astype(np.float64).reshape(len(images), 4, 4, 4, 4, 3).mean(axis=(2, 4)).reshape(len(images), -1) / 255
    pool3 = x @ _PROJ
    return {"pool3": pool3, "spatial": x[:, :20], "probs": metrics.softmax(pool3[:, :10])}


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, size=(60, 16, 16, 3)).astype(np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    samples = np.clip(ref[:50].astype(np.int32) + rng.integers(-40, 40, size=(50, 16, 16, 3)), 0, 255).astype(np.uint8)
    return tmp_path, ref, samples


def test_report_from_images_equals_report_from_written_stats(data):
    tmp, ref, samples = data
    from_images = evaluator.evaluate(samples, evaluator.Reference(tmp / "ref.npz"), fake_features, min_samples=24)
    evaluator.write_reference_stats(tmp / "stats.npz", ref, fake_features)
    with pytest.raises(FileExistsError, match="already exists"):
        evaluator.write_reference_stats(tmp / "stats.npz", ref, fake_features)
    stats_ref = evaluator.Reference(tmp / "stats.npz")
    assert stats_ref.images is None and stats_ref.resolution == (16, 16) and stats_ref.num_images == 60
    from_stats = evaluator.evaluate(samples, stats_ref, fake_features, min_samples=24)
    for key in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert from_images[key] == pytest.approx(from_stats[key], rel=1e-9), key

    # The numbers are the metric functions' on the features.
    fs, fr = fake_features(samples), fake_features(ref)
    expected_fid = metrics.frechet_distance(*metrics.feature_statistics(fs["pool3"]), *metrics.feature_statistics(fr["pool3"]))
    assert from_images["fid"] == pytest.approx(expected_fid, rel=1e-9)
    assert from_images["inception_score"] == pytest.approx(metrics.inception_score(fs["probs"]))
    assert (from_images["precision"], from_images["recall"]) == pytest.approx(metrics.precision_recall(fr["pool3"], fs["pool3"]))
    assert from_images["num_samples"] == 50 and from_images["num_reference"] == 60 and from_images["resolution"] == [16, 16]
    assert from_stats["reference_statistics"] == "stored mu/sigma (as ADM)"
    assert not from_images["forced_below_min_samples"]


def test_better_samples_score_better(data):
    tmp, ref, samples = data
    reference = evaluator.Reference(tmp / "ref.npz")
    noisy = np.clip(samples.astype(np.int32) + np.random.default_rng(2).integers(-120, 120, samples.shape), 0, 255).astype(np.uint8)
    good = evaluator.evaluate(samples, reference, fake_features, min_samples=24)
    bad = evaluator.evaluate(noisy, reference, fake_features, min_samples=24)
    assert good["fid"] < bad["fid"] and good["precision"] >= bad["precision"]


def test_checks_run_before_any_features(data):
    tmp, ref, samples = data

    def never(images):
        raise AssertionError("features computed before the input was checked")

    reference = evaluator.Reference(tmp / "ref.npz")
    with pytest.raises(metrics.FIDError, match="from 50 samples: at least 2048"):
        evaluator.evaluate(samples, reference, never)
    with pytest.raises(ValueError, match="is 16x16 but the samples are 32x32.*VIRTUAL_imagenet32"):
        evaluator.evaluate(np.zeros((50, 32, 32, 3), np.uint8), reference, never, force=True)
    forced = evaluator.evaluate(samples, reference, fake_features, force=True)
    assert forced["forced_below_min_samples"]


def test_adm_reference_with_stats_only_reports_no_precision_recall(tmp_path, data):
    _, ref, samples = data
    stats = {k: v for k, v in zip(("mu", "sigma"), metrics.feature_statistics(fake_features(ref)["pool3"]))}
    stats.update(zip(("mu_s", "sigma_s"), metrics.feature_statistics(fake_features(ref)["spatial"])))
    np.savez(tmp_path / "adm_stats.npz", **stats)
    report = evaluator.evaluate(samples, evaluator.Reference(tmp_path / "adm_stats.npz"), fake_features, min_samples=24)
    assert report["precision"] is None and "no images" in report["precision_recall_note"]
    np.savez(tmp_path / "partial.npz", mu=stats["mu"])
    with pytest.raises(ValueError, match="not an ADM reference batch"):
        evaluator.Reference(tmp_path / "partial.npz")


def test_load_images_from_npz_and_folder(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "a.npz", arr_0=images)
    np.testing.assert_array_equal(evaluator.load_images(tmp_path / "a.npz"), images)
    (tmp_path / "imgs").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "imgs" / f"{i:03d}.png")
    np.testing.assert_array_equal(evaluator.load_images(tmp_path / "imgs"), images)
    np.savez(tmp_path / "b.npz", other=images)
    with pytest.raises(ValueError, match=r"no image array: expected one of \('arr_0', 'samples'\)"):
        evaluator.load_images(tmp_path / "b.npz")
