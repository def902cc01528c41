"""Tiny-LM ladder configs (PanGu-pi Pro recipes, docs/tinylm.md): ``--config=configs/tinylm.py:<variant>``.

  python -m launch.train --config=configs/tinylm.py:tiny-deep --workdir=/tmp/tiny_deep \\
      --config.data.path=corpus=pydoc,seq_length=64,vocab_size=768,tokenizer=/tmp/compact/tokenizer.json

Variants (LLaMA layout: RMSNorm, SwiGLU, RoPE; CPU sizes on the embedded pydoc corpus, 64-token windows,
batch 16; ``python -m launch.tinylm_ladder`` builds the same configs with its own size flags):

- ``teacher``: the "large" model the tiny ones inherit from: width 192, 6 layers, 6 heads, FFN 512,
  the original 2,048-id byte-level BPE (3.42M parameters).
- ``tiny-shallow``: the tiny baseline, shallow and wide: width 128, 2 layers, 4 heads, FFN 352, 2,048 ids.
- ``tiny-deep``: deeper and narrower at about the same parameters with the compact 768-id tokenizer:
  width 96, 4 layers, 3 heads (head_dim 32, the teacher's), FFN 256.
- ``round``: ``tiny-deep`` trained on a multi-round selection (``config.data.source="lm_rounds"``,
  ``config.data.path="selection=<json>"``, ``config.init.from_workdir`` = the previous round).

The optimiser is the lm configs' (AdamW 3e-3, betas 0.9/0.95, wd 0.1, cosine, clip 1.0) at
``BASE_BATCH`` = 16 windows; ``jaxlab.tinylm.scaling.apply_batch_scaling(config, BASE_BATCH)`` rescales
the rate by ``(batch / 16) ** 0.5`` after the batch size is changed.
"""


import ml_collections

from configs import lm as lm_configs
from jaxlab.config_utils import pick_variant
from jaxlab.lm import data as lm_data
from jaxlab.tinylm import multiround

lm_data.register()  # "lm_text"
multiround.register()  # "lm_rounds"

BASE_BATCH = 16
SEQ_LENGTH = 64
ORIGINAL_VOCAB, COMPACT_VOCAB = 2048, 768


def llama(vocab: int, hidden: int, layers: int, heads: int, ffn: int, max_positions: int = 256) -> dict:
    """``LMConfig`` fields of a LLaMA-layout MHA model (untied head, full RoPE)."""
    return dict(layout="llama", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                num_kv_heads=heads, intermediate_size=ffn, max_position_embeddings=max_positions, rotary_pct=1.0,
                parallel_residual=False, use_bias=False, tie_word_embeddings=False)


MODELS = {
    "teacher": llama(ORIGINAL_VOCAB, 192, 6, 6, 512),
    "tiny-shallow": llama(ORIGINAL_VOCAB, 128, 2, 4, 352),
    "tiny-deep": llama(COMPACT_VOCAB, 96, 4, 3, 256),
}
VARIANTS = {**{k: k for k in MODELS}, "round": "tiny-deep"}


def data_spec(vocab: int, tokenizer: str = "", seq_length: int = SEQ_LENGTH) -> str:
    return f"corpus=pydoc,seq_length={seq_length},vocab_size={vocab},tokenizer={tokenizer}"


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    pick_variant("tinylm", variant, VARIANTS, default="tiny-deep")
    variant = variant or "tiny-deep"
    config = lm_configs.base_config(variant)
    config.model.update(MODELS[VARIANTS[variant]])
    steps = 600
    config.training.update(num_steps=steps, global_batch_size=BASE_BATCH, ema_decay=0.0)
    config.optimizer.update(learning_rate=3e-3, b2=0.95, weight_decay=0.1, grad_clip_norm=1.0, schedule="cosine",
                            warmup_steps=steps // 10, end_learning_rate=1e-4)
    vocab = config.model.vocab_size
    if variant == "round":
        config.data.update(source="lm_rounds", path="selection=", split="train", shuffle=False)
    else:
        config.data.update(source="lm_text", path=data_spec(vocab), split="train", shuffle=False)
    config.data.prefetch_buffer_size = 16
    config.checkpoint.update(every_steps=100, keep_last=1, keep_every=0, async_save=False)
    config.logging.update(every_steps=100, sample_every_steps=0, tensorboard=False)
    return config


def run_config(model: dict, *, tokenizer: str, steps: int, seed: int = 0, batch_size: int = BASE_BATCH,
               seq_length: int = SEQ_LENGTH, init_from: str = "", selection: str = "") -> ml_collections.ConfigDict:
    """A ladder / sweep run: ``model`` (``llama()`` fields) on the pydoc corpus tokenised by ``tokenizer``.

    ``selection`` (a multi-round selection JSON) switches the data to ``lm_rounds``; ``init_from`` starts
    from another run's params. The learning rate follows ``apply_batch_scaling`` from ``BASE_BATCH``.
    """
    from jaxlab.tinylm.scaling import apply_batch_scaling

    config = get_config("round" if selection else "tiny-deep")
    config.model.update(model)
    config.seed = seed
    config.init.from_workdir = init_from
    config.training.update(num_steps=steps, global_batch_size=batch_size)
    config.optimizer.warmup_steps = max(1, steps // 10)
    apply_batch_scaling(config, BASE_BATCH)
    config.data.path = f"selection={selection}" if selection else data_spec(model["vocab_size"], tokenizer, seq_length)
    config.model.max_position_embeddings = max(config.model.max_position_embeddings, 2 * seq_length)
    config.checkpoint.every_steps = min(100, steps)
    config.logging.every_steps = min(100, steps)
    return config
