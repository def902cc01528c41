"""Instruct-IPT configs (issue 17): ``--config=configs/ipt.py:<variant>``.

One IPT with a single shared head/tail (``scale=(1,)``) trained on task groups of synthetic
degradations (``jaxlab.restoration.data``: every task in every batch) by
``jaxlab.restoration.task.InstructIPTTask`` through the shared loop. Variants:

- ``tiny`` (default): a CPU-sized IPT (8 feature channels, 24 px patches, 2 px feature patches (D = 32, 144 tokens),
  1 encoder + 1 decoder layer, 4 heads) with rank-8 task biases on q/k/v, attention out and FFN
  weights, on the five tasks of scikit-image's sample photos; 600 steps of 4 task groups (20 patches).
- ``tiny-shared``: the same without task biases (one model for all tasks, rank 0).
- ``tiny-prompt``: feature adaptation instead: per-task prompt tokens added to the body input.
- ``tiny-r4`` / ``tiny-r16``: rank 4 / 16 biases.
- ``tiny-single``: one task only (``denoise``; pick another with
  ``--config.data.path=tasks=derain``): a per-task model.
- ``tiny-per-task``: five separate IPTs (one per task, five times the parameters) trained in one
  run on the same task groups (``config.ipt.separate_models``).
- ``tiny-per-task-eq-shared`` / ``-eq-r4`` / ``-eq-r8``: the same five per-task IPTs, narrowed
  (3 / 4 / 5 feature channels, D = 12 / 16 / 20) so that the five together have about the total
  parameters of ``tiny-shared`` (50,880 vs 54,811), ``tiny-r4`` (81,675 vs 82,971) or ``tiny``
  (119,390 vs 111,131; the nearest integer width): per-task models at equal total parameters.
- ``tiny-generated``: ``tiny`` on procedural images (no scikit-image needed; tests use it).
- ``base``: the paper's IPT size (64 channels, 48 px patches, 12 + 12 layers) with rank-8 biases, for
  an accelerator; batch, learning rate and steps are our guesses (IPT fine-tunes with Adam 2e-5 on
  batch 32 in ``option.py``), not Instruct-IPT's recipe, which is unknown.

The training recipe of the tiny variants (Adam 1e-3, 50 warmup steps, cosine to 0, EMA 0.99) is a
CPU choice. Override any field, e.g. ``--config.modulation.rank=2 --config.data.path=tasks=denoise+derain``.
"""

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant
from jaxlab.data.degradations import TASKS
from jaxlab.restoration import data as restoration_data

# global_residual (jaxlab's switch, not the official IPT): output = input + tail(...), so a short CPU
# training starts from the identity instead of first learning to reproduce the image.
_TINY = dict(n_feats=8, patch_size=24, patch_dim=2, num_heads=4, num_layers=1, scale=(1,), num_queries=1,
             global_residual=True)
_TINY_C3, _TINY_C4, _TINY_C5 = (dict(_TINY, n_feats=c) for c in (3, 4, 5))  # narrower per-task models
_BASE = dict(n_feats=64, patch_size=48, patch_dim=3, num_heads=12, num_layers=12, scale=(1,), num_queries=1)
_ALL = "tasks=" + "+".join(TASKS)

_VARIANTS = {
    "tiny": dict(model=_TINY, rank=8, prompt=False, data=_ALL + ",images=skimage"),
    "tiny-shared": dict(model=_TINY, rank=0, prompt=False, data=_ALL + ",images=skimage"),
    "tiny-prompt": dict(model=_TINY, rank=0, prompt=True, data=_ALL + ",images=skimage"),
    "tiny-r4": dict(model=_TINY, rank=4, prompt=False, data=_ALL + ",images=skimage"),
    "tiny-r16": dict(model=_TINY, rank=16, prompt=False, data=_ALL + ",images=skimage"),
    "tiny-single": dict(model=_TINY, rank=0, prompt=False, data="tasks=denoise,images=skimage"),
    "tiny-per-task": dict(model=_TINY, rank=0, prompt=False, separate=True, data=_ALL + ",images=skimage"),
    "tiny-per-task-eq-shared": dict(model=_TINY_C3, rank=0, prompt=False, separate=True, data=_ALL + ",images=skimage"),
    "tiny-per-task-eq-r4": dict(model=_TINY_C4, rank=0, prompt=False, separate=True, data=_ALL + ",images=skimage"),
    "tiny-per-task-eq-r8": dict(model=_TINY_C5, rank=0, prompt=False, separate=True, data=_ALL + ",images=skimage"),
    "tiny-generated": dict(model=_TINY, rank=8, prompt=False, data=_ALL + ",images=generated"),
    "base": dict(model=_BASE, rank=8, prompt=False, data=_ALL + ",images=skimage"),
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    fields = pick_variant("ipt", variant, _VARIANTS, default="tiny")
    restoration_data.register()
    config = ml_collections.ConfigDict()
    config.variant = variant or "tiny"
    config.model_family = "ipt"
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(fields["model"], dtype="float32"))
    # ModulationConfig fields (num_tasks comes from the data spec's tasks=); see jaxlab.models.ipt_modulation.
    config.modulation = ml_collections.ConfigDict(
        dict(rank=fields["rank"], targets=("qkv", "attn_out", "ffn"), init="lora", init_std=0.01,
             alpha=0.0,  # 0: alpha = rank (scale 1)
             prompt=fields["prompt"])
    )
    # task_weights: () = equal, else one loss weight per task; separate_models: one whole IPT per task.
    config.ipt = ml_collections.ConfigDict(dict(task_weights=(), separate_models=fields.get("separate", False)))
    training_defaults(config, task="instruct_ipt")
    config.data.update(source="restoration", path=fields["data"], image_size=fields["model"]["patch_size"],
                       random_flip=False, prefetch_buffer_size=16)
    config.logging.update(every_steps=50, sample_every_steps=0)
    if variant == "base":
        config.training.update(num_steps=100_000, global_batch_size=8, ema_decay=0.999)
        config.optimizer.update(learning_rate=1e-4, warmup_steps=1000, schedule="cosine")
        config.checkpoint.update(every_steps=5000, keep_last=2, keep_every=0)
    else:
        config.training.update(num_steps=600, global_batch_size=4, ema_decay=0.99)
        config.optimizer.update(learning_rate=1e-3, warmup_steps=50, schedule="cosine")
        config.checkpoint.update(every_steps=600, keep_last=1, keep_every=0)
    return config
