"""Vocabulary-independent held-out perplexity and decode speed of the ladder's models.

``per_byte_perplexity``: ``exp(sum NLL / sum bytes)`` over the counted targets of held-out windows
(targets in the same document as their context, as ``jaxlab.lm.task.next_token_loss`` counts them),
where each target token contributes the number of UTF-8 bytes it stands for. For a byte-level BPE a
token's string has one character per byte, so ``token_bytes(tokenizer)[i] = len(token string)``; the
``<|endoftext|>`` separator counts as 1 byte (jaxlab's choice: it stands for the document break). The
embedded corpus is ASCII up to a handful of characters, so per byte ~= per character.

``decode_tokens_per_second``: greedy ``jaxlab.lm.generate`` of ``new_tokens`` after a ``prompt_length``
prompt at batch 1, compiled first, the best of ``repeats`` timed calls (interleave models across calls
to compare them on a shared machine).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.lm.generate import generate
from jaxlab.lm.task import next_token_loss
from jaxlab.lm.tokenizer import EOS_TOKEN


def token_bytes(tokenizer) -> np.ndarray:
    """``[V]`` bytes per token id of a byte-level BPE ``tokenizers.Tokenizer`` (specials: 1)."""
    vocab = tokenizer.get_vocab()
    out = np.zeros(max(vocab.values()) + 1, np.int64)
    for tok, i in vocab.items():
        out[i] = 1 if tok == EOS_TOKEN else len(tok)
    return out


def nll_and_bytes(module, params, windows: dict, bytes_per_token: np.ndarray, batch_size: int = 32) -> tuple[float, int]:
    """``(sum NLL in nats, sum bytes)`` over the counted targets of ``windows`` (``PackedCorpus.windows()``)."""

    @jax.jit
    def total(p, tokens, segments):
        logits, _ = module.apply({"params": p}, tokens, segments)
        return next_token_loss(logits, tokens, segments)[1][0]

    tokens, segments = windows["tokens"], windows["segment_ids"]
    nll, nbytes = 0.0, 0
    for s in range(0, len(tokens), batch_size):
        t, g = tokens[s : s + batch_size], segments[s : s + batch_size]
        nll += float(total(params, jnp.asarray(t), jnp.asarray(g)))
        valid = g[:, 1:] == g[:, :-1]
        nbytes += int(bytes_per_token[t[:, 1:]][valid].sum())
    return nll, nbytes


def per_byte_perplexity(module, params, windows: dict, bytes_per_token: np.ndarray) -> float:
    nll, nbytes = nll_and_bytes(module, params, windows, bytes_per_token)
    value = float(np.exp(nll / max(nbytes, 1)))
    if not np.isfinite(value):
        raise FloatingPointError(f"per-byte perplexity is {value}: the model's outputs are not finite")
    return value


def decode_seconds(module, params, prompt: np.ndarray, new_tokens: int) -> float:
    """Wall seconds of one greedy ``generate`` call (compile it first with a call of the same shapes)."""
    start = time.perf_counter()
    generate(module, params, prompt, max_new_tokens=new_tokens)
    return time.perf_counter() - start
