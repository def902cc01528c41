"""In-training digits FID: the config switch, its checks, and the values logged by the shared loop."""

import json

import pytest

from jaxlab.eval.train_eval import check_config
from jaxlab.train.loop import train
from tests.train.helpers import tiny_config


def test_loop_logs_digits_fid_every_n_steps(tmp_path):
    config = tiny_config()
    config.sample.update(num_steps=4, cfg_scale=1.0)
    config.evals.fid.update(every_steps=3, num_samples=64, batch_size=32)
    train(config, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/digits_fid" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        assert r["eval/digits_fid"] > 0 and 1.0 <= r["eval/digits_is"] <= 10.0
        assert 0.0 <= r["eval/digits_precision"] <= 1.0 and 0.0 <= r["eval/label_accuracy"] <= 1.0
    assert evals[0]["eval/digits_fid"] != evals[1]["eval/digits_fid"]  # the model changed, the noise did not


def test_off_by_default_and_bad_values_fail_before_training(tmp_path):
    assert check_config(tiny_config().evals)["every_steps"] == 0
    assert check_config(None)["every_steps"] == 0
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['every'\] in config.evals.fid"):
        check_config({"fid": {"every": 3}})
    with pytest.raises(ValueError, match="kind='clip' is not supported"):
        check_config({"fid": {"every_steps": 3, "kind": "clip"}})
    with pytest.raises(ValueError, match="num_samples=10 is below the feature width 64"):
        check_config({"fid": {"every_steps": 3, "num_samples": 10}})
    config = tiny_config()
    config.evals.fid.update(every_steps=3, num_samples=100, batch_size=32)
    with pytest.raises(ValueError, match="must be a multiple of batch_size=32"):
        train(config, str(tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists() or "eval/" not in (tmp_path / "metrics.jsonl").read_text()


# ----------------------------------------------------------------------------- kind="inception"


def _inception_files(tmp_path, dim=2048):
    """Recipe-weight FID Inception as pytorch-fid's .pth, and reference mu/sigma of width ``dim``."""
    import numpy as np
    import torch

    from tests.conftest import GoldenCase
    from tests.models.test_inception_fid import recipe_state_dict

    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    state_dict = recipe_state_dict(GoldenCase("fid", "inception_fid_forward").meta)
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, weights)
    reference = tmp_path / "ref_stats.npz"
    np.savez(reference, mu=np.zeros(dim), sigma=np.eye(dim))
    return weights, reference


def test_loop_logs_inception_fid_against_reference_stats(tmp_path):
    """Random-weight Inception (the golden recipe) on 4 forced samples: eval/fid and eval/inception_score logged."""
    weights, reference = _inception_files(tmp_path)
    config = tiny_config()
    config.training.num_steps = 2
    config.sample.update(num_steps=2, cfg_scale=1.0)
    config.evals.fid.update(every_steps=2, num_samples=4, batch_size=4, kind="inception", inception=str(weights),
                            reference=str(reference), force=True)
    train(config, str(tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid" in r]
    assert [r["step"] for r in evals] == [2]
    # The reference is N(0, I) (trace 2048); 4 samples' pool3 covariance has rank 3: the FID is large.
    assert evals[0]["eval/fid"] > 100.0 and 1.0 <= evals[0]["eval/inception_score"] <= 4.0  # IS <= N for N samples
    assert not any("eval/digits_fid" in r for r in rows)


def test_inception_scorer_is_the_frechet_distance_of_the_features():
    import numpy as np

    from jaxlab.eval import metrics
    from jaxlab.eval.train_eval import InceptionScorer

    rng = np.random.default_rng(1)
    pool3, logits = rng.normal(size=(40, 8)), rng.normal(size=(40, 5))
    seen = []

    def features(images_uint8):
        seen.append(images_uint8)
        return {"pool3": pool3, "probs": metrics.softmax(logits)}

    mu, sigma = rng.normal(size=8), np.eye(8) * 2.0
    images = np.linspace(-1, 1, 40 * 4 * 4).reshape(40, 4, 4, 1)
    out = InceptionScorer(features, mu, sigma, fid_method="sqrtm")(images, np.zeros(40, np.int32))
    assert seen[0].dtype == np.uint8 and seen[0].shape == (40, 4, 4, 3)  # grey -> RGB uint8, as ADM's batches
    assert seen[0][0, 0, 0, 0] == 0 and seen[0][-1, -1, -1, 0] == 255
    np.testing.assert_allclose(out["eval/fid"], metrics.frechet_distance(*metrics.feature_statistics(pool3), mu, sigma))
    np.testing.assert_allclose(out["eval/inception_score"], metrics.inception_score(metrics.softmax(logits)))


def test_inception_kind_bad_input_fails_before_training(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from jaxlab.eval.metrics import FIDError
    from jaxlab.eval.train_eval import _inception_scorer, load_reference_stats

    with pytest.raises(FIDError, match="from 500 samples: at least 2048.*config.evals.fid.force=True"):
        check_config({"fid": {"every_steps": 3, "kind": "inception"}})
    assert check_config({"fid": {"every_steps": 3, "kind": "inception", "num_samples": 8, "batch_size": 8,
                                 "force": True}})["force"]
    with pytest.raises(ValueError, match="fid_method='exact'"):
        check_config({"fid": {"every_steps": 3, "fid_method": "exact"}})
    narrow, no_sigma, good = tmp_path / "ref64.npz", tmp_path / "ref_mu.npz", tmp_path / "ref.npz"
    np.savez(narrow, mu=np.zeros(64), sigma=np.eye(64))
    np.savez(no_sigma, mu=np.zeros(2048))
    np.savez(good, mu=np.zeros(2048), sigma=np.eye(2048))
    for reference, error, message in [
        ("", ValueError, "needs config.evals.fid.reference"),
        (tmp_path / "missing.npz", FileNotFoundError, "missing.npz' does not exist"),
        (no_sigma, ValueError, r"has no \['sigma'\]"),
    ]:
        with pytest.raises(error, match=message):
            load_reference_stats(reference, 2048)
    assert load_reference_stats(good, 2048)[1].dtype == np.float64
    section = dict(check_config(None), inception="", reference=str(good))
    pixels, latents = SimpleNamespace(latent=False), SimpleNamespace(latent=True)
    model = SimpleNamespace(in_channels=1)
    with pytest.raises(ValueError, match="samples VAE latents"):
        _inception_scorer(section, model, latents)
    with pytest.raises(FileNotFoundError, match="needs config.evals.fid.inception"):
        _inception_scorer(section, model, pixels)
    with pytest.raises(FileNotFoundError, match="no_weights.pth do not exist"):
        _inception_scorer(dict(section, inception=str(tmp_path / "no_weights.pth")), model, pixels)
    # Through the loop: a 64-d reference (digits features) fails before the weights load and before training.
    config = tiny_config()
    config.evals.fid.update(every_steps=3, num_samples=8, batch_size=8, kind="inception", force=True,
                            reference=str(narrow), inception=str(tmp_path / "no_weights.pth"))
    with pytest.raises(ValueError, match=r"mu \(64,\) and sigma \(64, 64\), but the FID Inception's pool3 features are 2048-d"):
        train(config, str(tmp_path / "run"))
    metrics_file = tmp_path / "run" / "metrics.jsonl"
    assert not metrics_file.exists() or not metrics_file.read_text().strip()  # no step was trained
