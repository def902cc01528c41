"""Masked diffusion LM (LLaDA) configs: ``--config=configs/dlm.py:<variant>``.

  python -m launch.train --config=configs/dlm.py:sudoku --workdir=/tmp/dlm_sudoku
  python -m launch.train --config=configs/dlm.py:llada-8b --workdir=gs://bucket/llada \\
      --config.data.path=gs://bucket/tokens/*.array_record

Variants:

- ``llada-8b``: the released LLaDA-8B architecture, pre-training objective, on pre-tokenised
  sequences (``array_record`` files of ``{"tokens": [4096] int32}`` examples, see
  ``jaxlab.data.records``), bf16 compute, scanned + rematerialised blocks. Optimiser values are the
  LLaDA paper's as we recall them (AdamW, weight decay 0.1, 2000 warmup steps to 4e-4, global
  batch 1280; the paper text is not in this repository, so check them before a large run); its
  Warmup-Stable-Decay schedule is the ``constant`` schedule here, with the decay phases run as
  continuations at a lower ``--config.optimizer.learning_rate``.
- ``llada-8b-sft``: the same network with the SFT objective (prompt never masked) on records that
  also hold ``prompt_lengths``; lr 2.5e-5, batch 256 (same caveat).
- ``sudoku``, ``addition``: small CPU models (4 layers, width 64, ~0.2M parameters) trained with
  the SFT objective on the embedded synthetic tasks of ``jaxlab.data.text_tasks``; they reach a
  useful accuracy on a laptop CPU in minutes (docs/dlm.md has the numbers). ``addition-long``: the
  same with 10-digit operands (longer carry chains, where early digits go wrong). ``permutation``: the
  same model writing 6 given letters in any order (``jaxlab.data.text_tasks.PermutationTask``).
- ``text``: the same small model pre-trained on the Python help topics that ship with the
  standard library (character level).
- ``sudoku-confidence``: a RemeDi-style confidence head (``jaxlab.dlm.confidence``) on the shipped
  Sudoku model, backbone frozen by ``optimizer.trainable_params="^conf_"``; section ``confidence``
  (``checkpoint`` = shipped name or ``.npz``, ``blocks``, ``corrupt``); Adam lr 3e-3, batch 64,
  300 steps. The model comes from the checkpoint (no ``model`` section).

Sections beyond ``configs/common.py``'s: ``model`` (``LLaDAConfig`` fields), ``objective``
(``kind`` "pretrain" | "sft", ``eps`` of ``p_mask = (1 - eps) t + eps``) and ``decode`` (the
``jaxlab.dlm.decoding.DecodeConfig`` used to evaluate the synthetic tasks: matched block / DCD
window sizes). Every field can be overridden on the command line; unknown keys are rejected.
"""

import dataclasses

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant
from jaxlab.data import text_tasks
from jaxlab.models.dlm import PRESETS, LLaDAConfig

text_tasks.register()  # config.data.source="text_task"

TASK = "jaxlab.dlm.task:MaskedDiffusionTask.from_config"

# Small CPU variants: (text task spec for config.data.path, objective, decode window, training steps).
_SMALL = {
    "sudoku": dict(spec="sudoku:num_blanks=10", objective="sft", window=4, num_steps=2000),
    "addition": dict(spec="addition:num_digits=5", objective="sft", window=4, num_steps=1000),
    # longer carry chains: a task where early (left-most) digits are often wrong
    "addition-long": dict(spec="addition:num_digits=10", objective="sft", window=4, num_steps=1500),
    "text": dict(spec="text:corpus=pydoc,seq_length=64", objective="pretrain", window=8, num_steps=2000),
    # many right answers (any order of the prompt's letters): parallel commits clash, remasking can repair
    "permutation": dict(spec="permutation:num_items=6,alphabet=12", objective="sft", window=3, num_steps=1500),
}
_LARGE = {"llada-8b": "pretrain", "llada-8b-sft": "sft"}
_SMALL_MODEL = dict(d_model=64, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=192, rope_theta=10000.0)


def small_model_fields(spec: str) -> dict:
    """``LLaDAConfig`` fields of the small model for a text task spec: vocabulary and ids from the task."""
    task = text_tasks.parse_task_spec(spec)
    vocab = task.vocab
    return dict(
        _SMALL_MODEL, vocab_size=vocab.size, embedding_size=vocab.size, mask_token_id=vocab.mask_id,
        eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id, max_sequence_length=task.seq_length,
    )


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    pick_variant("dlm", variant, {**_SMALL, **_LARGE, _CONFIDENCE: None}, default="llada-8b")
    variant = variant or "llada-8b"
    if variant == _CONFIDENCE:
        return _confidence_config()
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model_family = "llada"
    config.seed = 0
    training_defaults(config, task=TASK)

    config.model = ml_collections.ConfigDict(dataclasses.asdict(LLaDAConfig()))
    config.objective = ml_collections.ConfigDict(dict(kind="pretrain", eps=1e-3))
    if variant in _LARGE:
        _large(config, variant)
    else:
        _small(config, _SMALL[variant])
    return config


_CONFIDENCE = "sudoku-confidence"


def _confidence_config() -> ml_collections.ConfigDict:
    """The confidence head on the frozen shipped Sudoku model (``jaxlab.dlm.confidence.ConfidenceHeadTask``)."""
    from jaxlab.dlm.confidence import TRAINABLE

    config = ml_collections.ConfigDict()
    config.variant = _CONFIDENCE
    config.model_family = "llada"
    config.seed = 0
    training_defaults(config, task="jaxlab.dlm.confidence:ConfidenceHeadTask.from_config")
    config.confidence = ml_collections.ConfigDict(dict(checkpoint="sudoku", blocks=1, corrupt=0.3))
    config.training.update(num_steps=300, global_batch_size=64, ema_decay=0.0)
    # Adam (AdamW without decay), constant lr, no clipping: the head-only Adam of the earlier dedicated loop.
    config.optimizer.update(learning_rate=3e-3, trainable_params=TRAINABLE)
    config.data.update(source="text_task", path=_SMALL["sudoku"]["spec"], split="train", shuffle=False,
                       prefetch_buffer_size=16)
    config.checkpoint.update(every_steps=300, keep_last=1, keep_every=0, async_save=False)
    config.logging.update(every_steps=100, sample_every_steps=0, tensorboard=False, progress_bar=False)
    return config


def _large(config: ml_collections.ConfigDict, variant: str) -> None:
    config.model.update(PRESETS["LLaDA-8B"])
    config.model.update(dtype="bfloat16", remat="full", scan_blocks=True)
    config.objective.kind = _LARGE[variant]
    config.training.update(num_steps=500_000, global_batch_size=1280, ema_decay=0.0)
    config.optimizer.update(learning_rate=4e-4, weight_decay=0.1, warmup_steps=2000, schedule="constant")
    if variant == "llada-8b-sft":
        config.training.update(num_steps=20_000, global_batch_size=256)
        config.optimizer.update(learning_rate=2.5e-5, warmup_steps=50)
    config.data.update(source="array_record", path="", shuffle=True)
    config.checkpoint.update(every_steps=2000, keep_every=20_000)
    config.logging.update(sample_every_steps=0)
    config.decode = _decode_section(config.model, generate_length=256, window=32)


def _small(config: ml_collections.ConfigDict, spec: dict) -> None:
    config.model.update(small_model_fields(spec["spec"]))
    config.objective.kind = spec["objective"]
    config.training.update(num_steps=spec["num_steps"], global_batch_size=128, ema_decay=0.0)
    config.optimizer.update(learning_rate=2e-3, b2=0.98, weight_decay=0.01, grad_clip_norm=1.0, schedule="cosine",
                            warmup_steps=100, end_learning_rate=1e-4)
    # Synthetic examples are i.i.d. draws already: no shuffle buffer needed.
    config.data.update(source="text_task", path=spec["spec"], split="train", shuffle=False, prefetch_buffer_size=16)
    config.checkpoint.update(every_steps=500, keep_last=2, keep_every=0, async_save=False)
    config.logging.update(every_steps=100, sample_every_steps=0, tensorboard=False)
    task = text_tasks.parse_task_spec(spec["spec"])
    generate_length = getattr(task, "answer_length", task.seq_length // 2)
    config.decode = _decode_section(config.model, generate_length=generate_length, window=spec["window"])


def _decode_section(model: ml_collections.ConfigDict, generate_length: int, window: int) -> ml_collections.ConfigDict:
    """DecodeConfig fields at matched settings: DCD's initial window == the block baseline's block."""
    return ml_collections.ConfigDict(
        dict(
            window_type="sliding",  # "sliding" = DCD, "static" = block baseline
            generate_length=generate_length,
            initial_window_length=window,
            block_size=window,
            decode_algo="threshold",
            decode_param=0.9,
            max_window_length=1_000_000_000,
            cache_type="none",  # none | prefix | dual (| prefix-delayN | dual-delayN)
            refresh_count=max(window // 2, 1),
            mask_id=model.mask_token_id,
            pad_id=model.pad_token_id,
            eos_id=model.eos_token_id,
        )
    )
