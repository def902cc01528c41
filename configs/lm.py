"""Causal LM configs (GPT-NeoX / Pythia, LLaMA, DiJiang): ``--config=configs/lm.py:<variant>``.

  python -m launch.train --config=configs/lm.py:tiny-softmax --workdir=/tmp/lm_softmax
  python -m launch.train --config=configs/lm.py:tiny-dijiang --workdir=/tmp/lm_dijiang \\
      --config.init.from_workdir=/tmp/lm_softmax
  python -m launch.train --config=configs/lm.py:pythia-410m --workdir=gs://bucket/p410m \\
      --config.data.source=array_record --config.data.path=gs://bucket/pile_tokens/*.array_record

Variants:

- ``tiny-softmax``: a 3-layer, width-96 GPT-NeoX (Pythia layout, 0.43M parameters) on the
  embedded corpus (the Python help topics, byte-level BPE of 512 ids trained on the fly, 64-token
  packed windows with document masks), 1,200 steps of 16 windows on CPU.
- ``tiny-dijiang``: DiJiang's conversion fine-tune: ``config.init.from_workdir`` must name the
  ``tiny-softmax`` run; its weights are converted (``jaxlab.lm.convert_to_dijiang``) and trained for
  75 steps, 1/16 of the softmax run's tokens, as the paper's ~1/16 training cost.
- ``tiny-dijiang-scratch``: the same DiJiang model and the same 75 steps from a random init with
  the softmax run's recipe (peak lr 3e-3, 10% warmup; the control of docs/lm.md).
- ``pythia-70m`` ... ``pythia-2.8b``, ``llama-1b``: the presets, bf16 compute, scanned and
  rematerialised blocks, on pre-tokenised ``array_record`` files of ``{"tokens": [2048] int32}``
  (``segment_ids`` optional); ``dijiang-70m`` ... ``dijiang-2.8b``: the conversion fine-tune of the
  released run_dijiang.sh (AdamW 3e-4, betas 0.9/0.95, wd 0.1, cosine, 1000 warmup, seq 2048,
  batch 8 per device), initialised from ``config.init.from_workdir`` (a converted Pythia checkpoint:
  ``python -m launch.convert --family=gpt_neox ...``). Step counts are placeholders to set per run.
"""

import dataclasses

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant
from jaxlab.lm import data as lm_data
from jaxlab.models.lm import PRESETS, LMConfig

lm_data.register()  # config.data.source="lm_text"

TASK = "jaxlab.lm.task:CausalLMTask.from_config"
TINY_MODEL = dict(layout="gpt_neox", vocab_size=512, hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=4,
                  intermediate_size=384, max_position_embeddings=512, rotary_pct=0.25, dijiang_chunk=32)
TINY_DATA = "corpus=pydoc,seq_length=64,vocab_size=512,tokenizer="
TINY_SOFTMAX_STEPS = 1200
_TINY = {"tiny-softmax": "softmax", "tiny-dijiang": "dijiang", "tiny-dijiang-scratch": "dijiang"}
_LARGE = {k: k for k in PRESETS if k.startswith(("pythia-", "dijiang-", "llama-"))}


def base_config(variant: str) -> ml_collections.ConfigDict:
    """The causal-LM skeleton every LM config starts from: training defaults, ``LMConfig()`` fields
    and the ``init`` section (conversion source + its rng seed); callers set the model, data and schedule."""
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model_family = "lm"
    config.seed = 0
    training_defaults(config, task=TASK)
    config.model = ml_collections.ConfigDict(dataclasses.asdict(LMConfig()))
    config.init = ml_collections.ConfigDict(dict(from_workdir="", seed=0))
    return config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    pick_variant("lm", variant, {**_TINY, **_LARGE}, default="tiny-softmax")
    variant = variant or "tiny-softmax"
    config = base_config(variant)
    if variant in _TINY:
        _tiny(config, variant)
    else:
        _large(config, variant)
    return config


def _tiny(config, variant: str) -> None:
    config.model.update(TINY_MODEL, attention=_TINY[variant])
    steps = TINY_SOFTMAX_STEPS if variant == "tiny-softmax" else TINY_SOFTMAX_STEPS // 16
    config.training.update(num_steps=steps, global_batch_size=16, ema_decay=0.0)
    config.optimizer.update(learning_rate=3e-3, b2=0.95, weight_decay=0.1, grad_clip_norm=1.0, schedule="cosine",
                            warmup_steps=min(100, steps // 10), end_learning_rate=1e-4)
    if variant == "tiny-dijiang":  # fine-tuning a converted model: a lower peak rate
        config.optimizer.update(learning_rate=1e-3, warmup_steps=10)
    config.data.update(source="lm_text", path=TINY_DATA, split="train", shuffle=False, prefetch_buffer_size=16)
    config.checkpoint.update(every_steps=steps, keep_last=1, keep_every=0, async_save=False)
    config.logging.update(every_steps=100, sample_every_steps=0, tensorboard=False)


def _large(config, variant: str) -> None:
    config.model.update(PRESETS[variant], dtype="bfloat16", remat="full", scan_blocks=True, dijiang_chunk=128)
    # run_dijiang.sh (also Pythia's own optimiser family): AdamW, betas 0.9/0.95, wd 0.1, cosine, 1000 warmup.
    config.training.update(num_steps=10_000, global_batch_size=256, ema_decay=0.0)
    config.optimizer.update(learning_rate=3e-4, b2=0.95, weight_decay=0.1, grad_clip_norm=1.0, schedule="cosine",
                            warmup_steps=1000, end_learning_rate=3e-5)
    config.data.update(source="array_record", path="", shuffle=True)
    config.checkpoint.update(every_steps=1000, keep_every=10_000)
    config.logging.update(sample_every_steps=0)
