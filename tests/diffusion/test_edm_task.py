"""EDMTask through the shared training loop, on ``configs/qac.py:digits-baseline`` shrunk for CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.diffusion.edm_task import EDMTask
from jaxlab.train.loop import train
from tests.diffusion.edm_configs import tiny_edm_config


def small_config(**edm):
    return tiny_edm_config("digits-baseline", **edm)


def test_digits_baseline_trains_a_few_steps_and_samples(tmp_path):
    config = small_config()
    config.logging.sample_every_steps = 100  # > num_steps: one grid, at the end of the run
    result = train(config, str(tmp_path))
    assert result.step == 3
    loss = result.last_metrics["loss"]
    # EDM's weighting makes the loss O(1) at init (the unit-variance target of F).
    assert np.isfinite(loss) and 0.05 < loss < 10.0, result.last_metrics
    assert len(result.grids) == 1  # the end-of-run grid, sampled with Heun at 3 NFE from the EMA params
    task = EDMTask.from_config(config)
    images = jax.jit(task.sample)(result.state.ema_params, jax.random.PRNGKey(0))
    assert images.shape == (4, 8, 8, 1) and bool(jnp.all(jnp.isfinite(images)))


def test_bad_configs_fail_before_training():
    config = small_config()
    config.model.learn_sigma = True
    with pytest.raises(ValueError, match="learn_sigma=False"):
        EDMTask.from_config(config)
    config = small_config()
    config.model.num_classes = 10
    with pytest.raises(ValueError, match="num_classes=1"):
        EDMTask.from_config(config)
    with pytest.raises(ValueError, match="use 3 or 5"):
        EDMTask.from_config(small_config(nfe=4))
    config = small_config()
    config.edm.foo = 1
    with pytest.raises(ValueError, match="unknown key"):
        EDMTask.from_config(config)
    with pytest.raises(ValueError, match="unknown schedule"):
        EDMTask.from_config(small_config(schedule="cosine"))
    with pytest.raises(ValueError, match="NFE = 2N, which is even"):
        EDMTask.from_config(small_config(final_denoise=False))  # Heun at 3 NFE needs afs without it


def test_config_edm_few_nfe_switches_reach_the_sampler():
    task = EDMTask.from_config(small_config(nfe=4, final_denoise=False, sigma_min=0.1, schedule="logsnr"))
    assert (task.sampling.final_denoise, task.sampling.afs, task.sampling.schedule) == (False, False, "logsnr")
    assert task.edm.sigma_min == 0.1
    assert EDMTask.from_config(small_config(nfe=3, final_denoise=False, afs=True)).sampling.afs
