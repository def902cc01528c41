"""Text in, text out for the embedded-task DLMs (character vocabularies): the logic behind
``launch.generate``. ``run`` decodes one prompt with any decoder and returns the answer and the
committed text after each step (``?`` = still masked), replayed from the recorded commit steps."""

import jax
import numpy as np

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
