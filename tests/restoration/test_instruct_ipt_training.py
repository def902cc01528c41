"""configs/ipt.py through the shared training loop, then restoring by instruction from the workdir."""

import numpy as np
import pytest

from configs.ipt import get_config
from jaxlab.models.ipt_ops import make_restorer
from jaxlab.restoration.inference import load_for_task
from jaxlab.restoration.instructions import UnclearInstruction
from jaxlab.train.loop import train
from jaxlab.train.task import task_from_config


def _tiny_config():
    config = get_config("tiny-generated")
    config.model.update(n_feats=4, patch_size=12, patch_dim=2, num_heads=2)
    config.modulation.rank = 2
    config.data.update(image_size=12, path="tasks=denoise+derain,images=generated")
    config.training.update(num_steps=2, global_batch_size=2)
    config.optimizer.warmup_steps = 0
    config.checkpoint.update(every_steps=2, async_save=False)
    config.logging.update(every_steps=1, progress_bar=False, tensorboard=False, peak_flops_per_device=1e12)
    return config


def test_train_through_the_loop_then_restore_by_instruction(tmp_path):
    result = train(_tiny_config(), str(tmp_path / "run"))
    assert result.step == 2 and np.isfinite(result.last_metrics["loss"])
    assert {"l1_denoise", "l1_derain"} <= set(result.last_metrics)

    loaded = load_for_task(tmp_path / "run", "please remove the rain streaks")
    assert loaded.name == "derain" and loaded.task == 0
    image = np.random.default_rng(0).uniform(0, 255, (1, 17, 20, 3)).astype(np.float32)
    out = np.asarray(make_restorer(loaded.module, 0, batch=4)(loaded.params, image))
    assert out.shape == image.shape and np.isfinite(out).all()
    with pytest.raises(UnclearInstruction, match="several tasks"):
        load_for_task(tmp_path / "run", "remove the rain and the noise")
    with pytest.raises(UnclearInstruction, match="does not restore"):
        load_for_task(tmp_path / "run", "remove the fog")  # a task this run was not trained on


def test_config_mistakes_are_named_before_any_work():
    config = _tiny_config()
    config.data.image_size = 16
    with pytest.raises(ValueError, match="must equal config.model.patch_size=12"):
        task_from_config(config)
    config = _tiny_config()
    config.ipt.separate_models = True
    with pytest.raises(ValueError, match="takes no modulation"):
        task_from_config(config)
    config = _tiny_config()
    config.data.path = "tasks=denoise+sharpen"
    with pytest.raises(ValueError, match="must be one of"):
        task_from_config(config)
