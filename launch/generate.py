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


import jax
import numpy as np
from absl import app, flags

from jaxlab.dlm import (
    DecodeConfig,
    ReMDMSchedule,
    decode,
    fastdllm_generate,
    llada_generate,
    llada_remask_generate,
    remdm_generate,
    remedi_generate,
)
from jaxlab.dlm.pretrained import load_checkpoint

DECODERS = ("dcd", "block", "llada", "fastdllm", "remdm", "llada_remask", "remedi")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "sudoku", "shipped name or .npz (jaxlab.dlm.pretrained)")
_PROMPT = flags.DEFINE_string("prompt", None, "prompt text in the task's character vocabulary", required=True)
_DECODER = flags.DEFINE_enum("decoder", "dcd", DECODERS, "decoding rule")
_CACHE = flags.DEFINE_string("cache", "none", "dcd/block: none|prefix|dual|prefix-delayN|dual-delayN; fastdllm: none|prefix|dual")
_STEPS = flags.DEFINE_integer("steps", 0, "steps for llada/fastdllm/remdm/llada_remask/remedi (0: one per answer token)")
_THRESHOLD = flags.DEFINE_float("threshold", 0.9, "dcd/block confidence threshold")
_WINDOW = flags.DEFINE_integer("window", 4, "dcd initial window / block size")
_SCHEDULE = flags.DEFINE_string("schedule", "loop", "remdm schedule: cap|rescale|conf|loop")
_SEED = flags.DEFINE_integer("seed", 0, "random seed (remdm)")


def encode_prompt(task, module, text: str) -> np.ndarray:
    """Prompt text -> ids ``[1, P]``; clear errors for a wrong length or a vocabulary/model mismatch."""
    vocab = task.vocab
    if vocab.size != module.config.embedding_size:
        raise ValueError(f"the task vocabulary has {vocab.size} ids but the model's embedding has "
                         f"{module.config.embedding_size}: this checkpoint's tokenizer and model do not match")
    ids = vocab.encode(text)
    if len(ids) != task.prompt_length:
        raise ValueError(f"the {task.name} model takes prompts of exactly {task.prompt_length} characters, got "
                         f"{len(ids)} ({text!r})")
    return ids[None]


def run(checkpoint: str, prompt_text: str, decoder: str, *, cache="none", steps=0, threshold=0.9, window=4,
        schedule="loop", seed=0):
    """-> ``(answer text, [text after each step])``."""
    module, params, task, _ = load_checkpoint(checkpoint)
    prompt = encode_prompt(task, module, prompt_text)
    cfg, g = module.config, task.answer_length
    steps = steps or g
    common = dict(gen_length=g, mask_id=cfg.mask_token_id)
    if decoder in ("dcd", "block"):
        config = DecodeConfig(window_type="sliding" if decoder == "dcd" else "static", generate_length=g,
                              initial_window_length=window, block_size=window, decode_param=threshold,
                              cache_type=cache, refresh_count=window, mask_id=cfg.mask_token_id,
                              pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id)
        r = decode(module, params, prompt, config)
    elif cache != "none" and decoder != "fastdllm":
        raise ValueError(f"--cache={cache!r} is not available for --decoder={decoder} (use dcd, block or fastdllm)")
    elif decoder == "llada":
        r = llada_generate(module, params, prompt, steps=steps, block_length=g, **common)
    elif decoder == "fastdllm":
        r = fastdllm_generate(module, params, prompt, steps=steps, block_length=g, threshold=threshold, cache=cache, **common)
    elif decoder == "remdm":
        r = remdm_generate(module, params, prompt, steps=steps, schedule=ReMDMSchedule(schedule), temperature=0.0,
                           rng=jax.random.key(seed), **common)
    elif decoder == "llada_remask":
        r = llada_remask_generate(module, params, prompt, steps=steps, block_length=g, **common)
    else:
        r = remedi_generate(module, params, prompt, steps=steps, block_length=g, **common)
    tokens, p = np.asarray(r.tokens[0]), task.prompt_length
    frames = []
    for s in range(r.num_forward):
        shown = np.where((r.commit_step[0] >= 0) & (r.commit_step[0] <= s), tokens, cfg.mask_token_id)[p:]
        frames.append(task.vocab.decode(shown, stop_at_eos=False))
    answer = task.vocab.decode(tokens[p:])
    return answer, frames


def main(argv):
    del argv
    answer, frames = run(_CHECKPOINT.value, _PROMPT.value, _DECODER.value, cache=_CACHE.value, steps=_STEPS.value,
                         threshold=_THRESHOLD.value, window=_WINDOW.value, schedule=_SCHEDULE.value, seed=_SEED.value)
    for s, frame in enumerate(frames):
        print(f"step {s:3d}: {frame}", flush=True)
    print(answer)


if __name__ == "__main__":
    app.run(main)
