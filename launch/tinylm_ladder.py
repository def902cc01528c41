"""The PanGu-pi Pro ladder on the embedded corpus: ``python -m launch.tinylm_ladder --workdir=DIR``.

  python -m launch.tinylm_ladder --workdir=/tmp/tinylm_ladder                     # CPU defaults
  python -m launch.tinylm_ladder --workdir=/tmp/ladder_big --ladder_teacher=320,8,10,864 \\
      --ladder_shallow=256,2,8,688 --ladder_deep=160,6,5,432 --ladder_steps=1000 \\
      --ladder_teacher_steps=2000                                # 11.2M -> 2.0-2.6M (docs/tinylm.md)

Per seed (``--ladder_seeds``), in ``DIR/seed<k>/``:

0. ``teacher``: the large LM (``--ladder_teacher`` = width,layers,heads,ffn) on the original tokenizer
   (a byte-level BPE of ``--ladder_vocab`` ids trained on the training documents, ``DIR/tokenizer``).
1. ``baseline``: the tiny shallow-wide model (``--ladder_shallow``), original tokenizer, random init.
2. ``compact_tokenizer``: the same model with the compact tokenizer (``DIR/tokenizer/compact``:
   frequency-pruned to ``--ladder_compact_vocab`` ids by ``jaxlab.tinylm.tokenizer_pruning``).
3. ``deeper_narrower``: ``--ladder_deep`` (about the same parameters), compact tokenizer, random init.
4. ``inheritance``: the same shape initialised from the teacher (vocab rows remapped, layer importance
   by removal, depth selection, width by ``--ladder_criterion`` masks, extraction; ``jaxlab.tinylm.inheritance``).
5. ``second_round``: rung 4 continued on ``--ladder_round_ratio`` of its own batches drawn with
   p = softmax(batch loss) (``jaxlab.tinylm.multiround``).

With ``--ladder_teacher_dir`` every seed inherits from that one trained teacher (the paper inherits
from one trained model) instead of training ``seed<k>/teacher``. Rungs 1-3 run first for every seed, so
the shared teacher may still be training (another ladder's seed 0, in another process): the command
stops with an error before rung 4 when it is not finished, and rerunning it then resumes.

Control (a row of the report, not a rung): ``second_round_uniform``, rung 5 with its batches drawn
uniformly (same init, number of batches, schedule and tokens), which separates the loss-based
selection from the extra tokens.

Every rung trains ``--ladder_steps`` steps (rung 5: ratio x steps more) through the shared train loop.
Each stage is skipped when its output exists, so rerunning the command resumes (an interrupted run
resumes from its last checkpoint). Reports per rung: held-out perplexity per byte (the held-out
topics, tokenised by the rung's tokenizer) and greedy decode tokens/s (batch 1, rungs interleaved);
written to ``DIR/ladder.md`` and ``DIR/ladder.json``.
"""

import pathlib
import time

import jax
from absl import flags

from configs import tinylm as tl_configs
from jaxlab import cli
from jaxlab.tinylm import ladder

from .train import _WORKDIR  # the shared --workdir flag (one definition per flag name)

_SEEDS = flags.DEFINE_list("ladder_seeds", ["0"], "seeds; each runs the whole ladder")
_STEPS = flags.DEFINE_integer("ladder_steps", 400, "train steps of every tiny rung")
_TEACHER_STEPS = flags.DEFINE_integer("ladder_teacher_steps", 400, "train steps of the teacher")
_BATCH = flags.DEFINE_integer("ladder_batch", tl_configs.BASE_BATCH, "windows per batch (lr scaled by (b/16)^0.5)")
_SEQ = flags.DEFINE_integer("ladder_seq", tl_configs.SEQ_LENGTH, "tokens per window")
_VOCAB = flags.DEFINE_integer("ladder_vocab", tl_configs.ORIGINAL_VOCAB, "original tokenizer size")
_COMPACT = flags.DEFINE_integer("ladder_compact_vocab", tl_configs.COMPACT_VOCAB, "compact tokenizer size")
_TEACHER = flags.DEFINE_list("ladder_teacher", ["192", "6", "6", "512"], "teacher width,layers,heads,ffn")
_SHALLOW = flags.DEFINE_list("ladder_shallow", ["128", "2", "4", "352"], "tiny baseline width,layers,heads,ffn")
_DEEP = flags.DEFINE_list("ladder_deep", ["96", "4", "3", "256"], "tiny deeper-narrower width,layers,heads,ffn")
_CRITERION = flags.DEFINE_enum("ladder_criterion", "learned", ["learned", "taylor", "l1", "l2", "random"],
                               "width criterion of the inheritance rung")
_MASK_STEPS = flags.DEFINE_integer("ladder_mask_steps", 100, "steps of learned-mask training")
_PROBE = flags.DEFINE_integer("ladder_probe_batches", 8, "training batches for layer importance / Taylor / masks")
_MIDDLE = flags.DEFINE_enum("ladder_middle", "uniform", ["uniform", "importance", "random"], "middle-layer rule")
_RATIO = flags.DEFINE_float("ladder_round_ratio", 0.5, "fraction of batches drawn for the second round")
_TEACHER_DIR = flags.DEFINE_string(
    "ladder_teacher_dir", "", "a teacher training workdir (e.g. another ladder's seed0/teacher) that every seed inherits "
    "from instead of training its own; its shape and steps replace --ladder_teacher(_steps)")
_DECODE = flags.DEFINE_integer("ladder_decode_tokens", 120, "new tokens per decode-speed call")
_REPEATS = flags.DEFINE_integer("ladder_decode_repeats", 9, "interleaved decode-speed rounds")


def _shape(values, vocab: int) -> dict:
    hidden, layers, heads, ffn = (int(v) for v in values)
    return tl_configs.llama(vocab, hidden, layers, heads, ffn, max_positions=max(256, 2 * _SEQ.value))


def spec_from_flags(workdir: str) -> ladder.LadderSpec:
    spec = ladder.LadderSpec(
        workdir=pathlib.Path(workdir).absolute(), seeds=tuple(int(s) for s in _SEEDS.value), steps=_STEPS.value,
        teacher_steps=_TEACHER_STEPS.value, batch_size=_BATCH.value, seq_length=_SEQ.value, vocab=_VOCAB.value,
        compact_vocab=_COMPACT.value, teacher=_shape(_TEACHER.value, _VOCAB.value),
        shallow=_shape(_SHALLOW.value, _VOCAB.value), deep=_shape(_DEEP.value, _COMPACT.value),
        criterion=_CRITERION.value, mask_steps=_MASK_STEPS.value, probe_batches=_PROBE.value, middle=_MIDDLE.value,
        round_ratio=_RATIO.value, decode_tokens=_DECODE.value, decode_repeats=_REPEATS.value)
    return ladder.shared_teacher(spec, _TEACHER_DIR.value) if _TEACHER_DIR.value else spec


def main(argv):
    del argv
    spec = spec_from_flags(_WORKDIR.value)
    start = time.time()
    result = ladder.run_ladder(spec, tl_configs.run_config, log=lambda m: print(f"[{time.time() - start:7.0f}s] {m}",
                                                                                  flush=True))
    print(result["markdown"])
    print(f"wrote {spec.workdir / 'ladder.md'} and ladder.json; {jax.device_count()} device(s)")


if __name__ == "__main__":
    cli.run(main)
