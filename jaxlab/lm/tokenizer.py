"""Tokenizers for the causal LMs, through the Hugging Face ``tokenizers`` library.

- ``load_tokenizer(path)``: a ``tokenizer.json`` (e.g. Pythia's ``EleutherAI/gpt-neox-20b`` one,
  when the user has it; nothing is downloaded).
- ``train_bpe(texts, vocab_size)``: a byte-level BPE (GPT-2 / GPT-NeoX style pre-tokenisation, no
  unknown tokens) with ``<|endoftext|>`` as id 0, trained on the given texts. ``launch/lm_tokenizer.py``
  writes one trained on the embedded corpus; ``corpus_tokenizer`` builds the same in memory.
"""

import functools
import pathlib

EOS_TOKEN = "<|endoftext|>"


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - an install problem, named for the user
        raise ImportError("the LM tools need the `tokenizers` package: pip install tokenizers") from err
    return tokenizers


def train_bpe(texts, vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` of ``vocab_size`` ids (id 0 = ``<|endoftext|>``)."""
    tk = _require_tokenizers()
    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size={vocab_size} must be > 257 (256 byte symbols + <|endoftext|>)")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(texts), trainer)
    return tokenizer


def load_tokenizer(path: str | pathlib.Path):
    """A ``tokenizer.json`` file -> ``tokenizers.Tokenizer``; it must define ``<|endoftext|>``."""
    tk = _require_tokenizers()
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; write one with `python -m launch.lm_tokenizer "
                                f"--output={path}` or leave the path empty to train one on the embedded corpus")
    tokenizer = tk.Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(EOS_TOKEN) is None:
        raise ValueError(f"{path} has no {EOS_TOKEN!r} token, which separates packed documents")
    return tokenizer


@functools.lru_cache(maxsize=8)
def corpus_tokenizer(corpus: str, vocab_size: int):
    """The byte-level BPE of ``vocab_size`` trained on ``corpus``'s training documents (deterministic)."""
    from jaxlab.lm.data import corpus_documents

    return train_bpe(corpus_documents(corpus, "train"), vocab_size)


def get_tokenizer(path: str, corpus: str, vocab_size: int):
    """``path`` ("" = ``corpus_tokenizer(corpus, vocab_size)``) -> tokenizer, checked against ``vocab_size``."""
    tokenizer = load_tokenizer(path) if path else corpus_tokenizer(corpus, vocab_size)
    if tokenizer.get_vocab_size() > vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} ids but the model's vocab_size is "
                         f"{vocab_size}; set --config.model.vocab_size >= {tokenizer.get_vocab_size()}")
    return tokenizer
