"""launch.evaluate end to end with pytorch-fid-format weights (the golden recipe's, not the real ones)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import GoldenCase
from tests.models.test_inception_fid import recipe_state_dict


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "launch.evaluate", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    weights = tmp / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: torch.from_numpy(v) for k, v in recipe_state_dict(GoldenCase("fid", "inception_fid_forward").meta).items()}, weights)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, size=(10, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp / "ref.npz", arr_0=ref)
    samples = np.clip(ref[:8].astype(np.float32) / 127.5 - 1 + rng.normal(0, 0.3, (8, 32, 32, 3)), -1, 1)
    np.savez(tmp / "samples.npz", samples=samples.astype(np.float32), labels=np.zeros(8, np.int32))
    return tmp, weights


@pytest.mark.slow  # three CLI runs of the 299px Inception (tests/eval/test_evaluator.py covers the logic)
def test_stats_file_and_reference_images_give_the_same_numbers(files):
    tmp, weights = files
    _run(f"--samples={tmp / 'ref.npz'}", f"--write_stats={tmp / 'ref_stats.npz'}", f"--inception={weights}", "--batch_size=8")
    stats = np.load(tmp / "ref_stats.npz")
    assert stats["mu"].shape == (2048,) and stats["sigma"].dtype == np.float64 and stats["mu_s"].shape == (2023,)
    assert stats["pool3_features"].shape == (10, 2048) and list(stats["resolution"]) == [32, 32]

    for ref in ("ref.npz", "ref_stats.npz"):
        proc = _run(f"--samples={tmp / 'samples.npz'}", f"--reference={tmp / ref}", f"--inception={weights}", "--force",
                    "--batch_size=8", "--cfg_scale=1.5", "--fid_method=eigh", f"--output={tmp / (ref + '.json')}")
        assert "fid=" in proc.stdout
    a, b = (json.loads((tmp / f"{r}.json").read_text()) for r in ("ref.npz", "ref_stats.npz"))
    for key in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert np.isfinite(a[key]) and a[key] == pytest.approx(b[key], rel=1e-6), key
    assert a["fid"] > 0 and a["sfid"] > 0 and 1.0 <= a["inception_score"] <= 1008
    assert a["num_samples"] == 8 and a["num_reference"] == 10 and a["resolution"] == [32, 32]
    assert a["cfg_scale"] == 1.5 and a["forced_below_min_samples"] is True
    assert a["reference_statistics"] == "computed from the reference images"
    assert b["reference_statistics"] == "stored mu/sigma (as ADM)"


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "at least 2048 are needed"),
        (["--force", "--inception="], "no Inception weights given"),
        (["--force", "--reference=REF64"], "is 64x64 but the samples are 32x32"),
    ],
)
def test_bad_input_fails_before_the_network(files, extra, message):
    tmp, weights = files
    np.savez(tmp / "ref64.npz", arr_0=np.zeros((4, 64, 64, 3), np.uint8))
    np.savez(tmp / "float255.npz", arr_0=np.full((4, 32, 32, 3), 200.0, np.float32))
    args = {"--samples": str(tmp / "samples.npz"), "--reference": str(tmp / "ref.npz"), "--inception": str(weights)}
    for item in extra:
        key, _, value = item.partition("=")
        if key in args:
            args[key] = {"REF64": str(tmp / "ref64.npz"), "FLOAT255": str(tmp / "float255.npz")}.get(value, value)
    flags = [f"{k}={v}" for k, v in args.items()] + [e for e in extra if e == "--force"] + [f"--output={tmp / 'bad.json'}"]
    proc = _run(*flags, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp / "bad.json").exists()


def test_digits_metric_of_real_digits(tmp_path):
    from jaxlab.data.digits import load_digits
    from jaxlab.eval.digits_features import split_indices

    images = load_digits(16)[0][split_indices()[1][:200]]
    np.savez(tmp_path / "samples.npz", samples=images, labels=np.zeros(len(images), np.int32))
    proc = _run("--digits", f"--samples={tmp_path / 'samples.npz'}", "--cfg_scale=4")
    report = json.loads((tmp_path / "samples.eval.json").read_text())
    assert "digits_fid=" in proc.stdout and 0 < report["digits_fid"] < 15
    assert report["num_samples"] == 200 and report["cfg_scale"] == 4.0 and report["resolution"] == [16, 16]
