"""Text in, text out for diffusion LMs: the embedded-task models and LLaDA checkpoints.

Embedded-task models (character vocabularies; the task travels with the checkpoint):

  python -m launch.generate --checkpoint=sudoku --prompt="1.3...2.3..14..." --decoder=dcd
  python -m launch.generate --checkpoint=/tmp/addition.npz --prompt="04721+38950=" --decoder=remdm --steps=8

``--checkpoint`` is a shipped name or an ``.npz`` written by ``jaxlab.dlm.pretrained``; the prompt
must have the task's prompt length.

LLaDA (e.g. LLaDA-8B-Instruct) from its Hugging Face directory (``config.json``, safetensors shards,
``tokenizer.json``, ``tokenizer_config.json`` with the ``chat_template``) or from a jaxlab
checkpoint written by ``launch.convert --family=llada`` (then pass ``--tokenizer``):

  python -m launch.generate --checkpoint=LLaDA-8B-Instruct/ --prompt="What is 7 * 8?" --decoder=llada \\
      --gen_length=128 --block_length=32
  python -m launch.generate --checkpoint=/tmp/llada_8b --tokenizer=LLaDA-8B-Instruct/tokenizer.json \\
      --prompt="..." --decoder=dcd --window=16

A directory selects the LLaDA path (the family is read from ``config.json`` / ``model.json``, so
there is no ``--family`` flag; ``launch.convert`` owns that name). The chat template is applied
unless ``--nochat``; mask / EOS ids come from the model config and are checked against the
tokenizer before the weights are read. The text streams live: each decoder reports its tokens after
every forward from inside its jitted loop (``jax.debug.callback``, see ``jaxlab.dlm.streaming``), and
each step's line is printed while decoding continues (remasking samplers show the current state, so a
token can be printed and later go back to ``?``). ``--nostream`` prints only the answer.
"""

import pathlib

from absl import flags

from jaxlab import cli
from jaxlab.dlm.text_generation import DECODERS, run, run_llada

_CHECKPOINT = flags.DEFINE_string("checkpoint", "sudoku", "shipped name or .npz (jaxlab.dlm.pretrained), or a LLaDA "
                                  "directory (Hugging Face layout or launch.convert output)")
_PROMPT = flags.DEFINE_string("prompt", None, "prompt text", required=True)
_DECODER = flags.DEFINE_enum("decoder", "dcd", DECODERS, "decoding rule")
_CACHE = flags.DEFINE_string("cache", "none", "dcd/block: none|prefix|dual|prefix-delayN|dual-delayN; "
                             "fastdllm/llada_remask/remedi: none|prefix|dual")
_STEPS = flags.DEFINE_integer("steps", 0, "steps for llada/fastdllm/remdm/llada_remask/remedi (0: one per answer token)")
_THRESHOLD = flags.DEFINE_float("threshold", 0.9, "dcd/block/fastdllm confidence threshold")
_WINDOW = flags.DEFINE_integer("window", 4, "dcd initial window / block size")
_SCHEDULE = flags.DEFINE_string("schedule", "loop", "remdm schedule: cap|rescale|conf|loop")
_SEED = flags.DEFINE_integer("seed", 0, "random seed (remdm)")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "LLaDA: tokenizer.json (default: the one in --checkpoint); "
                                 "tokenizer_config.json is read from the same directory")
_CHAT = flags.DEFINE_bool("chat", True, "LLaDA: apply the tokenizer_config.json chat template")
_SYSTEM = flags.DEFINE_string("system", None, "LLaDA: optional system message")
_GEN_LENGTH = flags.DEFINE_integer("gen_length", 128, "LLaDA: tokens to generate")
_BLOCK_LENGTH = flags.DEFINE_integer("block_length", 32, "LLaDA: block length of llada/fastdllm/llada_remask/remedi")
_STREAM = flags.DEFINE_bool("stream", True, "print the text after every forward, live while decoding runs")


def _print_frame(step: int, text: str) -> None:
    print(f"step {step:3d}: {text}", flush=True)


def main(argv):
    del argv
    common = dict(cache=_CACHE.value, steps=_STEPS.value, threshold=_THRESHOLD.value, window=_WINDOW.value,
                  schedule=_SCHEDULE.value, seed=_SEED.value, on_frame=_print_frame if _STREAM.value else None)
    if pathlib.Path(_CHECKPOINT.value).is_dir():
        answer, _ = run_llada(_CHECKPOINT.value, _PROMPT.value, _DECODER.value, tokenizer=_TOKENIZER.value,
                                   chat=_CHAT.value, system=_SYSTEM.value, gen_length=_GEN_LENGTH.value,
                                   block_length=_BLOCK_LENGTH.value, **common)
    else:
        answer, _ = run(_CHECKPOINT.value, _PROMPT.value, _DECODER.value, **common)
    print(answer)


if __name__ == "__main__":
    cli.run(main)
