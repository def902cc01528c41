"""Compact tokenizer by frequency pruning (PanGu-pi Pro, section "compact tokenizer"; official ``src/step1..3``).

Steps, as in the released scripts: (1) count how often each token of an existing tokenizer occurs
in a corpus (``count_token_frequencies``: streaming through grain, one shard of the texts per call,
resumable from its saved counts; ``merge_counts`` sums shards, as ``step2`` merges per-file counts);
(2) keep the special tokens, then add tokens in descending frequency until the target size
(``select_tokens``); (3) write the pruned tokenizer and the old->new id map (``prune_tokenizer``);
then ``remap_vocab_params`` moves a trained LM's embedding / head rows to the new ids.

Two input kinds:

- a Hugging Face ``tokenizer.json`` whose model is ``BPE`` (jaxlab's byte-level BPE, GPT-2/NeoX,
  LLaMA-3 style): the output is a ``tokenizer.json`` with the pruned ``vocab`` and ``merges``. No
  SentencePiece proto is written for this kind (there is none to prune; converting a byte-level BPE
  to a SentencePiece model would change how text is split).
- a SentencePiece ``.model`` (``ModelProto``, the paper's input; needs ``pip install sentencepiece``):
  the output is the pruned ``tokenizer.model`` proto, as ``step3`` writes, with pieces deleted.

jaxlab choices where the released code is silent or would break a BPE:

- **Required tokens** are kept first, whatever their frequency: the specials (HF ``added_tokens``
  marked special; SentencePiece control / unknown / user-defined / byte pieces, which covers
  ``step3``'s ``<...>`` and ``[...]`` rule for its tokenizer) and the *base alphabet* (HF: every token
  no merge produces, the 256 byte symbols for a byte-level BPE; SentencePiece: single-character
  pieces). Keeping the alphabet means every text the old tokenizer encodes still encodes with no
  unknown token, so decoding round-trips. ``step3`` keeps only the specials.
- **Merge closure (HF BPE)**: a merged token is only reachable if both its parts exist, so adding a
  token adds its not-yet-kept ancestors too (they count towards the target); a token whose closure
  does not fit is skipped. ``step3`` prunes SentencePiece pieces without this (SentencePiece BPE also
  merges through intermediate pieces; jaxlab follows the released code there and prunes by frequency
  only, noting that a removed intermediate can make a kept longer piece unreachable).
- **New ids** keep the old order (kept old ids sorted ascending get 0, 1, ...), so specials stay in
  front and the id map is monotone. Frequencies count the tokens the *old* tokenizer produces;
  after pruning, text re-tokenises into the kept pieces (BPE merges that lost a part do not fire).

Shapes: counts ``[V_old]`` int64; id map ``[V_old]`` int64 (new id, -1 = removed); ``kept`` ``[V_new]``
(old id of each new id).
"""

import dataclasses
import json
import os
import pathlib
from typing import Callable, Iterable, Sequence

import numpy as np

HF_BPE = "hf_bpe"
SENTENCEPIECE = "sentencepiece"
ID_MAP_FILE = "id_map.npy"
REPORT_FILE = "pruning_report.json"


# ----------------------------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer read from disk: ``kind`` (``hf_bpe`` | ``sentencepiece``) and its parsed contents.

    ``data``: the ``tokenizer.json`` dict (HF) or the ``ModelProto`` (SentencePiece).
    """

    kind: str
    data: object
    path: str

    @property
    def vocab_size(self) -> int:
        if self.kind == HF_BPE:
            ids = list(self.data["model"]["vocab"].values()) + [t["id"] for t in self.data.get("added_tokens", [])]
            return max(ids) + 1
        return len(self.data.pieces)


def read_tokenizer_file(path: str | os.PathLike) -> TokenizerFile:
    """A ``tokenizer.json`` (BPE model) or a SentencePiece ``.model``; anything else is a clear error."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if data is not None:
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or "vocab" not in model:
            raise ValueError(f"{path} is JSON but not a Hugging Face tokenizer.json (no model.vocab); pass the "
                             f"tokenizer.json written by tokenizers.Tokenizer.save or a SentencePiece .model")
        if model.get("type") != "BPE":
            raise ValueError(f"{path} holds a {model.get('type')!r} tokenizer; frequency pruning supports BPE "
                             f"tokenizer.json files and SentencePiece .model protos")
        return TokenizerFile(HF_BPE, data, str(path))
    proto = _parse_sentencepiece(raw, path)
    return TokenizerFile(SENTENCEPIECE, proto, str(path))


def _sentencepiece_pb2():
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as err:
        raise ImportError("reading a SentencePiece .model needs the `sentencepiece` package: "
                          "pip install sentencepiece (or jaxlab[tinylm])") from err
    return sentencepiece_model_pb2


def _parse_sentencepiece(raw: bytes, path) -> object:
    pb2 = _sentencepiece_pb2()
    proto = pb2.ModelProto()
    try:
        proto.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
        proto = None
    if proto is None or not len(proto.pieces):
        raise ValueError(f"{path} is neither a Hugging Face tokenizer.json nor a SentencePiece .model proto; "
                         f"pass one of those (a vocab.txt / merges.txt pair is not supported)")
    return proto


def encoder(tok: TokenizerFile) -> Callable[[str], list[int]]:
    """``text -> old token ids`` for ``tok`` (no special tokens added)."""
    if tok.kind == HF_BPE:
        import tokenizers

        t = tokenizers.Tokenizer.from_str(json.dumps(tok.data))
        return lambda text: t.encode(text, add_special_tokens=False).ids
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=tok.data.SerializeToString())
    return lambda text: sp.encode(text)


# ----------------------------------------------------------------------------------------------- counting


def count_token_frequencies(tok: TokenizerFile, texts: Sequence[str], *, shard_index: int = 0, num_shards: int = 1,
                            counts_path: str | os.PathLike | None = None, save_every: int = 256) -> np.ndarray:
    """Token counts ``[V_old]`` int64 of shard ``shard_index`` of ``num_shards`` (texts ``i % num_shards == shard``).

    Texts stream through a grain ``MapDataset`` (tokenised lazily). With ``counts_path`` the counts and
    the position are saved every ``save_every`` texts and at the end (``.npz``, written atomically); a
    call with an existing file resumes after the last saved text, and one that finished returns the
    saved counts without reading anything. The file records the shard, shard count, corpus size and
    vocabulary size; a mismatch is an error (delete the file to start over).
    """
    import grain

    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
    vocab = tok.vocab_size
    meta = np.array([shard_index, num_shards, len(texts), vocab], np.int64)
    counts, start = np.zeros(vocab, np.int64), 0
    path = None if counts_path is None else pathlib.Path(counts_path)
    if path is not None and path.exists():
        saved = np.load(path)
        if not np.array_equal(saved["meta"], meta):
            raise ValueError(f"{path} was saved for (shard, num_shards, texts, vocab) = {saved['meta'].tolist()}, "
                             f"not {meta.tolist()}; pass another counts_path or delete it to recount")
        counts, start = saved["counts"].astype(np.int64), int(saved["position"])
    encode = encoder(tok)
    shard = grain.MapDataset.source(list(texts))[shard_index::num_shards]
    ds = shard[start:].map(encode)
    position = start
    for ids in ds:
        counts += np.bincount(np.asarray(ids, np.int64), minlength=vocab)[:vocab]
        position += 1
        if path is not None and (position - start) % save_every == 0:
            _save_counts(path, counts, position, meta)
    if path is not None:
        _save_counts(path, counts, position, meta)
    return counts


def _save_counts(path: pathlib.Path, counts, position: int, meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, counts=counts, position=np.int64(position), meta=meta)
    os.replace(tmp, path)


def merge_counts(paths: Iterable[str | os.PathLike]) -> np.ndarray:
    """Sums the saved counts of several shards (``step2``); all must cover the same corpus and vocab."""
    total, metas = None, set()
    for p in paths:
        saved = np.load(p)
        shard, shards, n, vocab = saved["meta"].tolist()
        if int(saved["position"]) < len(range(shard, n, shards)):
            raise ValueError(f"{p} is unfinished ({int(saved['position'])} texts counted); rerun its shard first")
        metas.add((shards, n, vocab))
        total = saved["counts"].copy() if total is None else total + saved["counts"]
    if total is None or len(metas) != 1:
        raise ValueError(f"need count files of one corpus and vocabulary, got {sorted(metas)}")
    return total


# ----------------------------------------------------------------------------------------------- selection


def required_ids(tok: TokenizerFile) -> np.ndarray:
    """Old ids always kept (specials + base alphabet, see the module docstring), ascending."""
    if tok.kind == HF_BPE:
        model = tok.data["model"]
        produced = {a + b for a, b in _merge_pairs(model["merges"])}
        ids = {i for t, i in model["vocab"].items() if t not in produced}
        ids |= {t["id"] for t in tok.data.get("added_tokens", []) if t.get("special", False)}
        if model.get("unk_token") in model["vocab"]:
            ids.add(model["vocab"][model["unk_token"]])
        return np.array(sorted(ids), np.int64)
    normal = _sentencepiece_pb2().ModelProto.SentencePiece.NORMAL
    return np.array([i for i, p in enumerate(tok.data.pieces) if p.type != normal or len(p.piece) == 1], np.int64)


def _merge_pairs(merges) -> list[tuple[str, str]]:
    """``tokenizer.json`` merges are ``"a b"`` strings (older files) or ``[a, b]`` lists (newer)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _parents(tok: TokenizerFile) -> dict[int, tuple[int, int]]:
    if tok.kind != HF_BPE:
        return {}
    vocab = tok.data["model"]["vocab"]
    out = {}
    for a, b in _merge_pairs(tok.data["model"]["merges"]):
        if a + b in vocab and a in vocab and b in vocab:
            out.setdefault(vocab[a + b], (vocab[a], vocab[b]))
    return out


def select_tokens(tok: TokenizerFile, counts: np.ndarray, target_size: int) -> np.ndarray:
    """Old ids to keep (ascending, ``target_size`` of them unless the vocabulary runs out).

    Required ids first, then by descending count (ties: lower old id first), each with its merge
    ancestors (HF BPE) when they fit.
    """
    vocab = tok.vocab_size
    counts = np.asarray(counts)
    if counts.shape != (vocab,):
        raise ValueError(f"counts has shape {counts.shape}, the tokenizer has {vocab} ids; count with this tokenizer")
    required = required_ids(tok)
    if target_size < len(required):
        raise ValueError(f"target vocabulary size {target_size} is smaller than the {len(required)} tokens that must "
                         f"be kept (special tokens + base alphabet); choose target_size >= {len(required)}")
    if target_size > vocab:
        raise ValueError(f"target vocabulary size {target_size} exceeds the tokenizer's {vocab} ids")
    parents = _parents(tok)
    keep = set(required.tolist())
    for i in np.lexsort((np.arange(vocab), -counts)):  # descending count, then ascending id
        if len(keep) >= target_size:
            break
        i = int(i)
        if i in keep:
            continue
        closure, stack = [], [i]
        while stack:
            t = stack.pop()
            if t in keep or t in closure:
                continue
            closure.append(t)
            stack.extend(parents.get(t, ()))
        if len(keep) + len(closure) <= target_size:
            keep.update(closure)
    return np.array(sorted(keep), np.int64)


def id_map_from_kept(kept: np.ndarray, old_vocab: int) -> np.ndarray:
    """``[V_old]`` new id of each old id, -1 where removed."""
    id_map = np.full(old_vocab, -1, np.int64)
    id_map[np.asarray(kept)] = np.arange(len(kept))
    return id_map


# ----------------------------------------------------------------------------------------------- writing


def pruned_tokenizer(tok: TokenizerFile, kept: np.ndarray):
    """The pruned tokenizer (``tokenizer.json`` dict or ``ModelProto``) with new ids ``0..len(kept)-1``."""
    id_map = id_map_from_kept(kept, tok.vocab_size)
    if tok.kind == HF_BPE:
        data = json.loads(json.dumps(tok.data))
        model = data["model"]
        vocab = {t: int(id_map[i]) for t, i in model["vocab"].items() if id_map[i] >= 0}
        string_merges = bool(model["merges"]) and isinstance(model["merges"][0], str)
        merges = [(a, b) for a, b in _merge_pairs(model["merges"]) if a in vocab and b in vocab and a + b in vocab]
        model["vocab"] = vocab
        model["merges"] = [f"{a} {b}" for a, b in merges] if string_merges else [[a, b] for a, b in merges]
        added = []
        for t in data.get("added_tokens", []):
            if id_map[t["id"]] >= 0:
                added.append({**t, "id": int(id_map[t["id"]])})
        data["added_tokens"] = added
        post = data.get("post_processor") or {}
        for spec in (post.get("special_tokens") or {}).values():
            spec["ids"] = [int(id_map[i]) for i in spec["ids"]]
        return data
    pb2 = _sentencepiece_pb2()
    proto = pb2.ModelProto()
    proto.CopyFrom(tok.data)
    del proto.pieces[:]
    for i in np.asarray(kept):
        proto.pieces.append(tok.data.pieces[int(i)])
    return proto


def prune_tokenizer(tok: TokenizerFile, counts: np.ndarray, target_size: int, out_dir: str | os.PathLike) -> dict:
    """Writes ``out_dir/tokenizer.json`` (HF BPE) or ``out_dir/tokenizer.model`` (SentencePiece), ``id_map.npy``
    and ``pruning_report.json``; returns the report. Refuses an ``out_dir`` that already holds them."""
    kept = select_tokens(tok, counts, target_size)
    out = pathlib.Path(out_dir)
    name = "tokenizer.json" if tok.kind == HF_BPE else "tokenizer.model"
    existing = [p for p in (out / name, out / ID_MAP_FILE, out / REPORT_FILE) if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} already exists; choose another output directory (jaxlab never "
                              f"overwrites user files)")
    new = pruned_tokenizer(tok, kept)
    out.mkdir(parents=True, exist_ok=True)
    if tok.kind == HF_BPE:
        import tokenizers

        text = json.dumps(new, ensure_ascii=False)
        tokenizers.Tokenizer.from_str(text)  # must load before it is written
        (out / name).write_text(text, encoding="utf-8")
    else:
        (out / name).write_bytes(new.SerializeToString())
    id_map = id_map_from_kept(kept, tok.vocab_size)
    np.save(out / ID_MAP_FILE, id_map)
    report = {"input": tok.path, "kind": tok.kind, "old_vocab": tok.vocab_size, "new_vocab": int(len(kept)),
              "required": int(len(required_ids(tok))), "coverage": coverage(counts, kept), "written": name}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


# ----------------------------------------------------------------------------------------------- params


def remap_vocab_params(params: dict, id_map: np.ndarray) -> dict:
    """A CausalLM param tree with ``embed/embedding [V_old, D]`` and ``lm_head/kernel [D, V_old]`` (when untied)
    reduced to the kept rows / columns, in new-id order. Other leaves are returned as they are."""
    id_map = np.asarray(id_map)
    kept = np.flatnonzero(id_map >= 0)
    kept = kept[np.argsort(id_map[kept])]
    if not np.array_equal(id_map[kept], np.arange(len(kept))):
        raise ValueError("id_map must assign new ids 0..N-1 to the kept tokens exactly once")
    emb = np.asarray(params["embed"]["embedding"])
    if emb.shape[0] != len(id_map):
        raise ValueError(f"the embedding has {emb.shape[0]} rows but the id map covers {len(id_map)} old ids; "
                         f"use the id map of the tokenizer this model was trained with")
    out = dict(params)
    out["embed"] = {**params["embed"], "embedding": emb[kept]}
    if "lm_head" in params:
        out["lm_head"] = {**params["lm_head"], "kernel": np.asarray(params["lm_head"]["kernel"])[:, kept]}
    return out


# ----------------------------------------------------------------------------------------------- report


def coverage(counts: np.ndarray, kept: np.ndarray) -> float:
    """Fraction of the counted (old-tokenizer) corpus tokens whose token is kept."""
    counts = np.asarray(counts)
    return float(counts[np.asarray(kept)].sum() / max(counts.sum(), 1))


def embedding_share(model_config, vocab_size: int) -> float:
    """(embedding + untied head) parameters / all parameters of ``model_config`` with ``vocab_size``."""
    from jaxlab.tinylm.sizes import lm_param_count

    cfg = model_config.replace(vocab_size=vocab_size)
    emb = vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    return emb / lm_param_count(cfg)


def vocab_size_report(tok: TokenizerFile, counts: np.ndarray, sizes: Sequence[int], model_config) -> list[dict]:
    """Per target size: coverage of corpus tokens and embedding share of ``model_config``'s parameters."""
    rows = []
    for size in sizes:
        kept = select_tokens(tok, counts, size)
        rows.append({"vocab": int(len(kept)), "coverage": coverage(counts, kept),
                     "embedding_share": embedding_share(model_config, int(len(kept)))})
    return rows


__all__ = ["TokenizerFile", "count_token_frequencies", "coverage", "embedding_share", "encoder", "id_map_from_kept",
           "merge_counts", "prune_tokenizer", "pruned_tokenizer", "read_tokenizer_file", "remap_vocab_params",
           "required_ids", "select_tokens", "vocab_size_report"]
