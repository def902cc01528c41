"""Text in, text out for the embedded-task DLMs (character vocabularies).

  python -m launch.generate --checkpoint=sudoku --prompt="1.3...2.3..14..." --decoder=dcd
  python -m launch.generate --checkpoint=/tmp/addition.npz --prompt="04721+38950=" --decoder=remdm --steps=8

``--checkpoint`` is a shipped name or an ``.npz`` written by ``jaxlab.dlm.pretrained`` (the task and
its vocabulary travel with it). The prompt must have the task's prompt length. After decoding,
the committed text is replayed step by step (``?`` = still masked) -- the decoders are single
jitted loops, so this is a replay of the recorded commit steps, not live streaming; remasking
samplers show their final commit of each position. LLaDA-8B text generation with the
LLaDA-Instruct chat template (``--family=llada --tokenizer=...``) is not implemented.
"""

from absl import flags

from jaxlab import cli
from jaxlab.dlm.text_generation import DECODERS, run

_CHECKPOINT = flags.DEFINE_string("checkpoint", "sudoku", "shipped name or .npz (jaxlab.dlm.pretrained)")
_PROMPT = flags.DEFINE_string("prompt", None, "prompt text in the task's character vocabulary", required=True)
_DECODER = flags.DEFINE_enum("decoder", "dcd", DECODERS, "decoding rule")
_CACHE = flags.DEFINE_string("cache", "none", "dcd/block: none|prefix|dual|prefix-delayN|dual-delayN; fastdllm: none|prefix|dual")
_STEPS = flags.DEFINE_integer("steps", 0, "steps for llada/fastdllm/remdm/llada_remask/remedi (0: one per answer token)")
_THRESHOLD = flags.DEFINE_float("threshold", 0.9, "dcd/block confidence threshold")
_WINDOW = flags.DEFINE_integer("window", 4, "dcd initial window / block size")
_SCHEDULE = flags.DEFINE_string("schedule", "loop", "remdm schedule: cap|rescale|conf|loop")
_SEED = flags.DEFINE_integer("seed", 0, "random seed (remdm)")


def main(argv):
    del argv
    answer, frames = run(_CHECKPOINT.value, _PROMPT.value, _DECODER.value, cache=_CACHE.value, steps=_STEPS.value,
                         threshold=_THRESHOLD.value, window=_WINDOW.value, schedule=_SCHEDULE.value, seed=_SEED.value)
    for s, frame in enumerate(frames):
        print(f"step {s:3d}: {frame}", flush=True)
    print(answer)


if __name__ == "__main__":
    cli.run(main)
