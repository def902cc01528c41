"""Batch-size / learning-rate scaling and the tinylm configs."""

import pytest

from configs import tinylm
from jaxlab.models.lm import LMConfig
from jaxlab.tinylm.scaling import apply_batch_scaling, scaled_learning_rate
from jaxlab.tinylm.sizes import lm_param_count


def test_learning_rate_scales_with_the_batch_to_the_power_r():
    assert scaled_learning_rate(1e-3, 16, 64) == pytest.approx(2e-3)  # 4x batch, r = 0.5
    assert scaled_learning_rate(1e-3, 16, 64, exponent=1.0) == pytest.approx(4e-3)
    assert scaled_learning_rate(1e-3, 64, 16) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="exponent r=1.5"):
        scaled_learning_rate(1e-3, 16, 64, exponent=1.5)
    with pytest.raises(ValueError, match="must all be > 0"):
        scaled_learning_rate(1e-3, 0, 64)


def test_apply_batch_scaling_rescales_peak_and_end_rates():
    config = tinylm.get_config("tiny-deep")
    config.training.global_batch_size = 64
    apply_batch_scaling(config, tinylm.BASE_BATCH)
    assert config.optimizer.learning_rate == pytest.approx(6e-3)
    assert config.optimizer.end_learning_rate == pytest.approx(2e-4)


def test_variants_and_run_configs():
    sizes = {v: lm_param_count(LMConfig.from_dict(tinylm.get_config(v).model.to_dict())) for v in tinylm.MODELS}
    assert sizes["teacher"] > 3 * sizes["tiny-deep"]
    assert abs(sizes["tiny-deep"] - lm_param_count(LMConfig.from_dict({**tinylm.MODELS["tiny-shallow"],
                                                                       "vocab_size": tinylm.COMPACT_VOCAB}))) < 0.05 * sizes["tiny-deep"]
    run = tinylm.run_config(tinylm.MODELS["tiny-deep"], tokenizer="/x/tok.json", steps=50, batch_size=32,
                            selection="/x/sel.json")
    assert run.data.source == "lm_rounds" and run.data.path == "selection=/x/sel.json" and not run.data.shuffle
    assert run.optimizer.learning_rate == pytest.approx(3e-3 * 2 ** 0.5)
    with pytest.raises(ValueError, match="unknown tinylm config variant"):
        tinylm.get_config("huge")
