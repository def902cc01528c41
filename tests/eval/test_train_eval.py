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
    with pytest.raises(ValueError, match="kind='inception' is not supported"):
        check_config({"fid": {"every_steps": 3, "kind": "inception"}})
    with pytest.raises(ValueError, match="num_samples=10 is below the feature width 64"):
        check_config({"fid": {"every_steps": 3, "num_samples": 10}})
    config = tiny_config()
    config.evals.fid.update(every_steps=3, num_samples=100, batch_size=32)
    with pytest.raises(ValueError, match="must be a multiple of batch_size=32"):
        train(config, str(tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists() or "eval/" not in (tmp_path / "metrics.jsonl").read_text()
