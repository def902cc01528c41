"""A tiny EDM/QAC training config shared by the EDM-task and QAC tests (8x8 digits, 3 steps)."""

from configs.qac import get_config


def tiny_edm_config(variant: str = "digits-baseline", **edm):
    """``configs/qac.py:<variant>`` shrunk to a one-block DiT on 8x8 images, 3 steps of batch 8."""
    config = get_config(variant)
    config.model.update(input_size=8, patch_size=2, hidden_size=32, depth=1, num_heads=2)
    config.data.update(image_size=8)
    config.training.update(num_steps=3, global_batch_size=8)
    config.optimizer.update(warmup_steps=1)
    config.checkpoint.update(every_steps=3, keep_last=1)
    config.logging.update(every_steps=1, sample_every_steps=0, tensorboard=False, progress_bar=False)
    config.edm.update({"nfe": 3, "num_samples": 4, **edm})
    return config
