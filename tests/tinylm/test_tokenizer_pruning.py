"""Compact tokenizer by frequency pruning: round trip, specials, resumable counts, exact row remap, bad input."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from jaxlab.lm.data import corpus_documents
from jaxlab.lm.tokenizer import EOS_TOKEN, train_bpe
from jaxlab.models.lm import CausalLM, LMConfig
from jaxlab.tinylm import tokenizer_pruning as tp

TEXTS = corpus_documents("pydoc", "train")[:12]
ODD_TEXT = "naïve café ✓ — 𝛑 <|endoftext|> tabs\tand\nnewlines {x: 1}"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "original.json"
    train_bpe(TEXTS, 400).save(str(path))
    tok = tp.read_tokenizer_file(path)
    counts = tp.count_token_frequencies(tok, TEXTS)
    return path, tok, counts


@pytest.fixture(scope="module")
def pruned(original, tmp_path_factory):
    _, tok, counts = original
    out = tmp_path_factory.mktemp("pruned")
    report = tp.prune_tokenizer(tok, counts, 300, out)
    return out, report


def test_pruned_tokenizer_round_trips_text_and_keeps_specials(original, pruned):
    _, tok, counts = original
    out, report = pruned
    new = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    old = tokenizers.Tokenizer.from_str(json.dumps(tok.data))
    assert new.get_vocab_size() == 300 == report["new_vocab"]
    assert new.token_to_id(EOS_TOKEN) == 0  # the special keeps its (front) id
    for text in (corpus_documents("pydoc", "eval")[0][:2000], ODD_TEXT):
        ids = new.encode(text).ids
        assert max(ids) < 300
        assert new.decode(ids, skip_special_tokens=False) == text
        assert old.decode(old.encode(text).ids, skip_special_tokens=False) == text
    # the most frequent original tokens are kept, and the report's coverage is theirs
    id_map = np.load(out / tp.ID_MAP_FILE)
    assert id_map[np.argmax(counts)] >= 0
    assert report["coverage"] == pytest.approx(counts[id_map >= 0].sum() / counts.sum())
    assert 0.5 < report["coverage"] < 1.0


def test_pruning_keeps_merge_closure_and_monotone_ids(original, pruned):
    _, tok, _ = original
    out, _ = pruned
    data = json.loads((out / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    produced = {a + b for a, b in data["model"]["merges"]}
    assert all(a in vocab and b in vocab for a, b in data["model"]["merges"])
    assert all(t in produced or len(t) == 1 or t == EOS_TOKEN for t in vocab)  # every merged token reachable
    id_map = np.load(out / tp.ID_MAP_FILE)
    kept = np.flatnonzero(id_map >= 0)
    np.testing.assert_array_equal(id_map[kept], np.arange(len(kept)))  # old order preserved
    old_vocab = tok.data["model"]["vocab"]
    assert all(id_map[old_vocab[t]] == i for t, i in vocab.items())


def test_counts_are_sharded_and_resume_from_the_saved_position(original, tmp_path):
    _, tok, counts = original
    paths = [tmp_path / f"c{i}.npz" for i in range(3)]
    for i, p in enumerate(paths):
        tp.count_token_frequencies(tok, TEXTS, shard_index=i, num_shards=3, counts_path=p, save_every=1)
    np.testing.assert_array_equal(tp.merge_counts(paths), counts)
    # an interrupted shard: the file says 2 texts of shard 0 were counted; a rerun counts only the rest
    encode = tp.encoder(tok)
    partial = sum(np.bincount(encode(t), minlength=tok.vocab_size) for t in TEXTS[0:6:3])
    resumed = tmp_path / "resumed.npz"
    tp._save_counts(resumed, partial, 2, np.array([0, 3, len(TEXTS), tok.vocab_size]))
    with pytest.raises(ValueError, match="unfinished"):
        tp.merge_counts([resumed, paths[1], paths[2]])
    again = tp.count_token_frequencies(tok, TEXTS, shard_index=0, num_shards=3, counts_path=resumed)
    np.testing.assert_array_equal(again, np.load(paths[0])["counts"])
    with pytest.raises(ValueError, match="was saved for"):
        tp.count_token_frequencies(tok, TEXTS, shard_index=1, num_shards=3, counts_path=resumed)


def test_remap_of_embedding_and_head_is_exact_for_kept_tokens(original, pruned):
    _, tok, _ = original
    out, _ = pruned
    id_map = np.load(out / tp.ID_MAP_FILE)
    cfg = LMConfig(layout="llama", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                   num_kv_heads=2, intermediate_size=48, max_position_embeddings=32, rotary_pct=1.0,
                   parallel_residual=False, use_bias=False)
    params = nn.unbox(CausalLM(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    new_params = tp.remap_vocab_params(params, id_map)
    kept = np.flatnonzero(id_map >= 0)
    old_ids = np.random.default_rng(0).choice(kept, size=(2, 8))
    old_logits, _ = CausalLM(cfg).apply({"params": params}, jnp.asarray(old_ids))
    new_cfg = cfg.replace(vocab_size=len(kept))
    new_logits, _ = CausalLM(new_cfg).apply({"params": new_params}, jnp.asarray(id_map[old_ids]))
    np.testing.assert_array_equal(np.asarray(new_logits), np.asarray(old_logits)[..., kept])
    with pytest.raises(ValueError, match="id map covers"):
        tp.remap_vocab_params(params, id_map[:-1])


def test_vocab_size_report(original):
    _, tok, counts = original
    cfg = LMConfig(layout="llama", vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                   intermediate_size=64, rotary_pct=1.0, parallel_residual=False, use_bias=False)
    rows = tp.vocab_size_report(tok, counts, [260, 300, 400], cfg)
    assert [r["vocab"] for r in rows] == [260, 300, 400]
    assert rows[-1]["coverage"] == 1.0
    assert rows[0]["coverage"] < rows[1]["coverage"] < rows[2]["coverage"]
    assert rows[0]["embedding_share"] < rows[1]["embedding_share"] < rows[2]["embedding_share"] < 1


def test_bad_inputs_are_clear_errors(original, pruned, tmp_path):
    path, tok, counts = original
    out, _ = pruned
    with pytest.raises(ValueError, match=r"smaller than the 257 tokens that must be kept"):
        tp.select_tokens(tok, counts, 100)
    with pytest.raises(FileExistsError, match="already exists"):
        tp.prune_tokenizer(tok, counts, 300, out)
    with pytest.raises(ValueError, match="counts has shape"):
        tp.select_tokens(tok, counts[:10], 300)
    wordpiece = json.loads(path.read_text())
    wordpiece["model"]["type"] = "WordPiece"
    (tmp_path / "wp.json").write_text(json.dumps(wordpiece))
    with pytest.raises(ValueError, match="'WordPiece' tokenizer"):
        tp.read_tokenizer_file(tmp_path / "wp.json")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        tp.read_tokenizer_file(tmp_path / "config.json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\n")
    with pytest.raises(ValueError, match="neither a Hugging Face tokenizer.json nor a SentencePiece"):
        tp.read_tokenizer_file(tmp_path / "merges.txt")


def test_sentencepiece_model_is_pruned_to_a_loadable_proto(tmp_path):
    import io

    import sentencepiece as spm  # jaxlab[test] / jaxlab[tinylm]

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=300, model_type="bpe",
                                   character_coverage=1.0, user_defined_symbols=["<sep>"], minloglevel=2)
    (tmp_path / "sp.model").write_bytes(buf.getvalue())
    tok = tp.read_tokenizer_file(tmp_path / "sp.model")
    assert tok.kind == tp.SENTENCEPIECE and tok.vocab_size == 300
    counts = tp.count_token_frequencies(tok, TEXTS)
    required = tp.required_ids(tok)
    report = tp.prune_tokenizer(tok, counts, len(required) + 40, tmp_path / "out")
    assert report["written"] == "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "out" / "tokenizer.model"))
    assert sp.get_piece_size() == len(required) + 40
    for piece in ("<unk>", "<s>", "</s>", "<sep>"):
        assert sp.piece_to_id(piece) != sp.unk_id() or piece == "<unk>"
    text = TEXTS[3][:500]
    assert sp.decode(sp.encode(text)) == text
