"""Text in, text out: the logic behind ``launch.generate``.

``run`` decodes one prompt of an embedded-task DLM (character vocabularies) and ``run_llada`` one
prompt of a LLaDA checkpoint with its ``tokenizers`` tokenizer and chat template
(``jaxlab.dlm.llada_text``), both through ``decode_ids`` (any decoder). Both stream live: the
decoder reports its tokens after every forward from inside its jitted loop
(``jaxlab.dlm.streaming``), each state is rendered to text at once and passed to ``on_frame(step,
text)`` while decoding continues (``?`` = [MASK], ``_`` = pad for the character models; the
committed left-to-right prefix for LLaDA). For the remasking samplers a frame is the current state,
so a token can appear and later go back to [MASK]. Both return the answer and the list of frames."""

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
from jaxlab.dlm.decoding import check_prompt
from jaxlab.dlm.llada_text import (check_special_ids, decode_answer, encode_chat, load_llada, load_text_side,
                                    read_llada_config)
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


def decode_ids(module, params, prompt, decoder: str, *, gen_length: int, block_length: int = 0, steps: int = 0,
               cache="none", threshold=0.9, window=4, schedule="loop", seed=0, on_step=None):
    """Decodes ``prompt [1, P]`` with any of ``DECODERS``; ``block_length`` 0 = one block, ``steps`` 0 = one per
    token. Special ids come from the model config. ``on_step(step, tokens [1, P+G])`` is called live after every
    forward. Returns the decoder's result (tokens, num_forward, commit_step)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; use one of {list(DECODERS)}")
    cfg, g = module.config, gen_length
    block = block_length or g
    steps = steps or g
    common = dict(gen_length=g, mask_id=cfg.mask_token_id, on_step=on_step)
    if decoder in ("dcd", "block"):
        config = DecodeConfig(window_type="sliding" if decoder == "dcd" else "static", generate_length=g,
                              initial_window_length=window, block_size=window, decode_param=threshold,
                              cache_type=cache, refresh_count=window, mask_id=cfg.mask_token_id,
                              pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id)
        return decode(module, params, prompt, config, on_step=on_step)
    if cache != "none" and decoder not in ("fastdllm", "llada_remask", "remedi"):
        raise ValueError(f"--cache={cache!r} is not available for --decoder={decoder} (use dcd, block, fastdllm, "
                         f"llada_remask or remedi)")
    if decoder == "llada":
        return llada_generate(module, params, prompt, steps=steps, block_length=block, **common)
    if decoder == "fastdllm":
        return fastdllm_generate(module, params, prompt, steps=steps, block_length=block, threshold=threshold,
                                 cache=cache, **common)
    if decoder == "remdm":
        return remdm_generate(module, params, prompt, steps=steps, schedule=ReMDMSchedule(schedule), temperature=0.0,
                              rng=jax.random.key(seed), **common)
    if decoder == "llada_remask":
        return llada_remask_generate(module, params, prompt, steps=steps, block_length=block, cache=cache, **common)
    return remedi_generate(module, params, prompt, steps=steps, block_length=block, cache=cache, **common)


def committed_frames(result, prompt_length: int, mask_id: int, render) -> list[str]:
    """The generated span as committed after each forward, replayed from ``commit_step`` after decoding, rendered
    by ``render(ids [G] with mask_id where not yet committed)`` (for decoders that never re-mask, the live frames
    equal this replay except where DCD pads after an EOS)."""
    tokens, commit = np.asarray(result.tokens[0]), np.asarray(result.commit_step[0])
    return [render(np.where((commit >= 0) & (commit <= s), tokens, mask_id)[prompt_length:])
            for s in range(result.num_forward)]


def _live(render, prompt_length: int, on_frame):
    """``(on_step for the decoder, frames list)``: each step's row 0 is rendered and handed to ``on_frame``."""
    frames = []

    def on_step(step, tokens):
        frames.append(render(tokens[0, prompt_length:]))
        if on_frame is not None:
            on_frame(step, frames[-1])

    return on_step, frames


def run(checkpoint: str, prompt_text: str, decoder: str, *, cache="none", steps=0, threshold=0.9, window=4,
        schedule="loop", seed=0, on_frame=None):
    """Embedded-task model: -> ``(answer text, [text after each step])``; ``on_frame(step, text)`` is called live."""
    module, params, task, _ = load_checkpoint(checkpoint)
    prompt = encode_prompt(task, module, prompt_text)
    on_step, frames = _live(lambda ids: task.vocab.decode(ids, stop_at_eos=False), task.prompt_length, on_frame)
    r = decode_ids(module, params, prompt, decoder, gen_length=task.answer_length, steps=steps, cache=cache,
                   threshold=threshold, window=window, schedule=schedule, seed=seed, on_step=on_step)
    answer = task.vocab.decode(np.asarray(r.tokens[0])[task.prompt_length:])
    return answer, frames


def run_llada(checkpoint: str, prompt_text: str, decoder: str, *, tokenizer: str | None = None, chat: bool = True,
              system: str | None = None, gen_length: int = 128, block_length: int = 32, steps: int = 0, cache="none",
              threshold=0.9, window=16, schedule="loop", seed=0, on_frame=None):
    """LLaDA checkpoint + ``tokenizers`` tokenizer (``jaxlab.dlm.llada_text``): -> ``(answer, [committed text
    after each step])``; ``on_frame(step, text)`` is called live. The tokenizer, template and special ids are
    checked before the weights are read."""
    tok, tok_config = load_text_side(tokenizer or checkpoint, chat=chat)
    prompt = encode_chat(tok, tok_config, prompt_text, system=system, chat=chat)
    config = read_llada_config(checkpoint)
    stop_ids = check_special_ids(tok, config)
    check_prompt(prompt, config, gen_length, config.mask_token_id)
    module, params = load_llada(checkpoint)
    mask_id = module.config.mask_token_id

    def render(ids):  # the committed left-to-right prefix, as a streaming client would show it
        first_mask = np.flatnonzero(ids == mask_id)
        prefix = ids[: first_mask[0]] if first_mask.size else ids
        return decode_answer(tok, prefix, stop_ids)

    on_step, frames = _live(render, prompt.shape[1], on_frame)
    r = decode_ids(module, params, prompt, decoder, gen_length=gen_length, block_length=block_length, steps=steps,
                   cache=cache, threshold=threshold, window=window, schedule=schedule, seed=seed, on_step=on_step)
    return decode_answer(tok, np.asarray(r.tokens[0])[prompt.shape[1]:], stop_ids), frames
