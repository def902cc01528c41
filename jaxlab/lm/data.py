"""Packed next-token-prediction data from the embedded text corpus (``jaxlab.data.text_tasks``).

Documents (the Python help topics, one per topic) are tokenised, each followed by
``<|endoftext|>``, and concatenated; examples are windows of ``seq_length`` tokens with
``segment_ids`` numbering the documents inside the window (0, 1, ...), so the model's document
mask keeps packed documents apart and the loss skips the targets that cross a boundary. Every
5th document (index 4, 9, ...; about 6.7% of the pydoc text) is held out as the ``eval`` split.

``config.data.source = "lm_text"`` with ``config.data.path = "corpus=pydoc,seq_length=128,
vocab_size=512,tokenizer="`` (``tokenizer``: a ``tokenizer.json`` path, or empty for the corpus BPE).
"""

import functools

import numpy as np

from jaxlab.data.text_tasks import SPLIT_SEEDS, ExampleStream, TaskSource, _corpus_text
from jaxlab.lm.tokenizer import EOS_TOKEN, get_tokenizer

HOLDOUT_EVERY = 5


@functools.lru_cache(maxsize=4)
def corpus_documents(corpus: str = "pydoc", split: str = "train") -> tuple[str, ...]:
    """The corpus's documents of ``split`` ("train" / "eval"), whitespace collapsed."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}; use 'train' or 'eval'")
    if corpus == "pydoc":
        from pydoc_data.topics import topics

        docs = [topics[k] for k in sorted(topics)]
    else:
        docs = _corpus_text(corpus).split("\n\n")
    docs = [" ".join(d.split()) for d in docs if d.strip()]
    held = [i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 for i in range(len(docs))]
    out = tuple(d for d, h in zip(docs, held) if h == (split == "eval"))
    if not out:
        raise ValueError(f"corpus {corpus!r} has no {split} documents")
    return out


class PackedCorpus(ExampleStream):
    """``tokens [L]`` int32 + ``segment_ids [L]`` int32 windows of the packed, tokenised documents."""

    def __init__(self, corpus: str = "pydoc", seq_length: int = 128, vocab_size: int = 512, tokenizer: str = "",
                 split: str = "train"):
        self.name = f"{corpus}-{split}"
        self.seq_length = seq_length
        self.tokenizer = get_tokenizer(tokenizer, corpus, vocab_size)
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        ids, docs = [], []
        for i, text in enumerate(corpus_documents(corpus, split)):
            enc = self.tokenizer.encode(text).ids + [self.eos_id]
            ids.append(np.asarray(enc, np.int32))
            docs.append(np.full(len(enc), i, np.int32))
        self.ids, self.doc = np.concatenate(ids), np.concatenate(docs)
        if len(self.ids) < seq_length:
            raise ValueError(f"{self.name} has {len(self.ids)} tokens < seq_length={seq_length}")

    def _window(self, start: int) -> dict[str, np.ndarray]:
        doc = self.doc[start : start + self.seq_length]
        return {"tokens": self.ids[start : start + self.seq_length].copy(), "segment_ids": (doc - doc[0]).astype(np.int32)}

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        start = int(np.random.default_rng((seed, index)).integers(0, len(self.ids) - self.seq_length + 1))
        return self._window(start)

    def windows(self) -> dict[str, np.ndarray]:
        """All non-overlapping windows in order (evaluation): ``tokens``/``segment_ids [N, L]``."""
        rows = [self._window(s) for s in range(0, len(self.ids) - self.seq_length + 1, self.seq_length)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def parse_spec(spec: str) -> dict:
    """``"corpus=pydoc,seq_length=128"`` -> kwargs of ``PackedCorpus`` (ints where they parse)."""
    kwargs = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad lm_text spec {spec!r}: {item!r} is not key=value (e.g. 'corpus=pydoc,seq_length=128')")
        kwargs[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    allowed = {"corpus", "seq_length", "vocab_size", "tokenizer"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown lm_text spec key(s) {unknown}; allowed: {sorted(allowed)}")
    return kwargs


def _lm_text_source(data_cfg):
    from jaxlab.data.sources import SourceSpec

    if data_cfg.split not in SPLIT_SEEDS:
        raise ValueError(f"config.data.split={data_cfg.split!r} is not allowed for lm_text; allowed: {list(SPLIT_SEEDS)}")
    split = "train" if data_cfg.split == "train" else "eval"
    stream = PackedCorpus(**parse_spec(data_cfg.path), split=split)
    return SourceSpec(TaskSource(stream, SPLIT_SEEDS[data_cfg.split]), in_memory=True)


def register() -> None:
    """Makes ``config.data.source="lm_text"`` available (idempotent)."""
    from jaxlab.data.sources import register_source

    register_source("lm_text", _lm_text_source)
