"""LVLM (Qwen2.5-VL-shaped, Circle-RoPE) configs: ``--config=configs/lvlm.py:<variant>``.

  python -m launch.train --config=configs/lvlm.py:shapes-circle --workdir=/tmp/lvlm_circle

Variants ``shapes-<scheme>``, scheme in ``1d``, ``mrope``, ``circle``, ``age-strategy_4`` (also
``age-strategy_2``, ``age-strategy_3``): the ``small`` preset of ``jaxlab.models.lvlm`` (4-layer
width-64 Qwen2 decoder, 2-block width-32 ViT on 4-pixel patches, 214k parameters) trained on the
generated grounded-VQA scenes of ``jaxlab.data.shapes_vqa``; only the position scheme differs.
``tiny`` is ``shapes-mrope`` for a few steps (tests). Evaluate held-out accuracy per question type
and PTD with ``python -m launch.lvlm_eval --workdir=...`` (docs/lvlm.md).
"""

import dataclasses

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant
from jaxlab.data import shapes_vqa
from jaxlab.models.lvlm import PRESETS, LVLMConfig

shapes_vqa.register()  # config.data.source="shapes_vqa"

TASK = "jaxlab.lvlm.task:VQATask.from_config"
_SCHEMES = {"1d": "1d", "mrope": "mrope", "circle": "circle", "age-strategy_4": "strategy_4",
            "age-strategy_2": "strategy_2", "age-strategy_3": "strategy_3"}
VARIANTS = {f"shapes-{k}": v for k, v in _SCHEMES.items()} | {"tiny": "mrope"}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    scheme = pick_variant("lvlm", variant, VARIANTS, default="shapes-circle")
    variant = variant or "shapes-circle"
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model_family = "lvlm"
    config.seed = 0
    training_defaults(config, task=TASK)
    model = dataclasses.asdict(LVLMConfig(**PRESETS["small"], position_scheme=scheme))
    model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.items()}
    config.model = ml_collections.ConfigDict(model)
    config.training.update(num_steps=3000, global_batch_size=64, ema_decay=0.0)
    config.optimizer.update(learning_rate=2e-3, b2=0.98, weight_decay=0.01, grad_clip_norm=1.0, schedule="cosine",
                            warmup_steps=100, end_learning_rate=1e-4)
    config.data.update(source="shapes_vqa", split="train", shuffle=False, prefetch_buffer_size=256)
    config.checkpoint.update(every_steps=1000, keep_last=2, keep_every=0, async_save=False)
    config.logging.update(every_steps=100, sample_every_steps=0, tensorboard=False)
    if variant == "tiny":
        config.training.update(num_steps=4, global_batch_size=8)
        config.optimizer.update(warmup_steps=0)
        config.checkpoint.update(every_steps=2)
        config.logging.update(every_steps=2)
    return config
