"""Multiple-round training: softmax sampling without replacement, reproducibility, saved selections, exact resume."""

import jax
import numpy as np
import pytest
from scipy import stats

from jaxlab.lm.data import PackedCorpus
from jaxlab.tinylm import multiround as mr

LOSSES = np.array([2.0, 2.5, 3.0, 3.5, 4.5])
SPEC = "corpus=pydoc,seq_length=16,vocab_size=300,tokenizer="


def test_first_draw_follows_softmax_of_the_losses():
    n = 8_000
    first = np.array([mr.sample_batches(LOSSES, ratio=0.2, seed=s)[0] for s in range(n)])
    p = mr.selection_probabilities(LOSSES)
    np.testing.assert_allclose(p, np.exp(LOSSES) / np.exp(LOSSES).sum())
    observed = np.bincount(first, minlength=len(LOSSES))
    assert stats.chisquare(observed, p * n).pvalue > 1e-3
    # a uniform draw would be rejected by the same test: the test can fail
    assert stats.chisquare(observed, np.full(len(LOSSES), n / len(LOSSES))).pvalue < 1e-6


def test_second_draw_is_without_replacement_with_renormalised_probabilities():
    n = 8_000
    pairs = np.array([mr.sample_batches(LOSSES, ratio=0.4, seed=s) for s in range(n)])
    assert np.all(pairs[:, 0] != pairs[:, 1])
    p = mr.selection_probabilities(LOSSES)
    top = int(np.argmax(p))
    given = pairs[pairs[:, 0] == top, 1]
    expected = np.delete(p, top) / (1 - p[top])
    observed = np.bincount(given, minlength=len(LOSSES))
    assert observed[top] == 0
    assert stats.chisquare(np.delete(observed, top), expected * len(given)).pvalue > 1e-3


def test_sampling_is_reproducible_from_the_seed_and_sized_by_the_ratio():
    losses = np.random.default_rng(0).normal(3, 0.5, 100)
    a, b = mr.sample_batches(losses, seed=5), mr.sample_batches(losses, seed=5)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 50 and len(set(a.tolist())) == 50  # default ratio 0.5, no repeats
    assert not np.array_equal(a, mr.sample_batches(losses, seed=6))
    assert len(mr.sample_batches(losses, ratio=0.25)) == 25
    with pytest.raises(ValueError, match="ratio 0.0 must be in"):
        mr.sample_batches(losses, ratio=0.0)
    with pytest.raises(ValueError, match="finite"):
        mr.sample_batches(np.array([1.0, np.nan]))


def test_batch_losses_are_sharded_and_checked():
    get = lambda i: {"x": np.full(3, float(i))}  # noqa: E731
    loss = lambda p, b: p * b["x"].mean()  # noqa: E731
    full = mr.batch_losses(loss, 2.0, get, range(6))
    parts = [mr.batch_losses(loss, 2.0, get, mr.shard_ids(6, k, 2)) for k in range(2)]
    merged = np.empty(6)
    for k in range(2):
        merged[mr.shard_ids(6, k, 2)] = parts[k]
    np.testing.assert_array_equal(merged, full)
    with pytest.raises(FloatingPointError, match="non-finite batch losses at ids \\[0\\]"):
        mr.batch_losses(lambda p, b: p / b["x"].mean() * 0.0 / b["x"].mean(), 1.0, get, [0, 1])


def _selection(tmp_path, name="sel.json"):
    return mr.save_selection(tmp_path / name, batch_ids=np.array([3, 0, 5]), losses=np.arange(6.0), seed=0,
                             ratio=0.5, data_spec=SPEC, batch_size=4)


def test_round_source_reads_the_selected_batches_and_resumes_exactly(tmp_path):
    import ml_collections

    from jaxlab.data import make_train_data

    path = _selection(tmp_path)
    with pytest.raises(FileExistsError, match="never overwritten"):
        _selection(tmp_path)
    stream = PackedCorpus(**{"corpus": "pydoc", "seq_length": 16, "vocab_size": 300}, split="train")
    mr.register()
    data_cfg = ml_collections.ConfigDict(dict(source="lm_rounds", path=f"selection={path}", split="train",
                                              shuffle=False, read_threads=0, prefetch_buffer_size=2, worker_count=0))
    data = make_train_data(data_cfg, global_batch_size=4, seed=0)
    batches = [next(data.iterator) for _ in range(5)]
    for k, b in enumerate([3, 0, 5, 3, 0]):  # the saved order, repeated
        np.testing.assert_array_equal(batches[k]["tokens"], stream.batch(0, b * 4, 4)["tokens"])
    # resume after 2 batches from the iterator state, as a checkpoint restores it
    data = make_train_data(data_cfg, global_batch_size=4, seed=0)
    next(data.iterator), next(data.iterator)
    state = data.iterator.get_state()
    resumed = make_train_data(data_cfg, global_batch_size=4, seed=0)
    resumed.iterator.set_state(state)
    for k in range(2, 5):
        np.testing.assert_array_equal(next(resumed.iterator)["tokens"], batches[k]["tokens"])
    bad = data_cfg.copy_and_resolve_references()
    bad.shuffle = True
    with pytest.raises(ValueError, match="shuffle must be False"):
        make_train_data(bad, global_batch_size=4, seed=0)


@pytest.mark.slow
def test_a_round_interrupted_mid_way_resumes_bit_for_bit(tmp_path):
    """The whole loop: a second round stopped at step 2 and resumed equals the uninterrupted round."""
    from configs.tinylm import llama, run_config
    from jaxlab.train.loop import train

    model = llama(300, 32, 2, 2, 48, max_positions=64)
    train(run_config(model, tokenizer="", steps=2, seq_length=16, batch_size=4), str(tmp_path / "r1"))
    sel = _selection(tmp_path)
    cfg = run_config(model, tokenizer="", steps=4, seq_length=16, batch_size=4, selection=str(sel),
                     init_from=str(tmp_path / "r1"))
    full = train(cfg, str(tmp_path / "full"))
    train(cfg, str(tmp_path / "resumed"), stop_at_step=2)
    resumed = train(cfg, str(tmp_path / "resumed"))
    assert resumed.step == full.step == 4
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
