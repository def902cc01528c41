"""Generators and checkers of the embedded text tasks (jaxlab/data/text_tasks.py)."""

import jax
import numpy as np
import pytest

from jaxlab.data.text_tasks import (
    AdditionTask,
    CharVocab,
    PermutationTask,
    SudokuTask,
    TextCorpus,
    make_task,
    sudoku4_grids,
    sudoku4_is_valid,
    sudoku4_num_solutions,
)


def test_vocab_round_trip_and_special_ids():
    vocab = CharVocab("ab+")
    assert (vocab.eos_id, vocab.pad_id, vocab.mask_id, vocab.size) == (3, 4, 5, 6)
    ids = vocab.encode("ba+")
    np.testing.assert_array_equal(ids, [1, 0, 2])
    assert vocab.decode(np.r_[ids, vocab.eos_id, 0]) == "ba+"
    assert vocab.decode(np.r_[ids, vocab.eos_id, vocab.pad_id, vocab.mask_id], stop_at_eos=False) == "ba+$_?"
    with pytest.raises(ValueError, match="'c' is not in the vocabulary"):
        vocab.encode("abc")
    with pytest.raises(ValueError, match="unique"):
        CharVocab("aa")


def test_addition_examples_are_correct_sums_and_deterministic():
    task = AdditionTask(num_digits=4)
    assert (task.prompt_length, task.answer_length, task.seq_length) == (10, 7, 17)
    batch = task.batch(seed=3, start=0, size=64)
    assert batch["tokens"].shape == (64, 17) and batch["tokens"].dtype == np.int32
    np.testing.assert_array_equal(batch["prompt_lengths"], 10)
    for row in batch["tokens"]:
        text = task.vocab.decode(row, stop_at_eos=False)
        a, b = int(text[:4]), int(text[5:9])
        assert text[4] == "+" and text[9] == "="
        assert text[10:] == f"{a + b:05d}$$"
    np.testing.assert_array_equal(task.batch(seed=3, start=5, size=2)["tokens"], batch["tokens"][5:7])
    assert not np.array_equal(task.batch(seed=4, start=0, size=64)["tokens"], batch["tokens"])
    assert task.check(batch["tokens"]).all()


def test_addition_checker_rejects_wrong_answers():
    task = AdditionTask(num_digits=3)
    good = task.batch(0, 0, 1)["tokens"][0]
    digits = good[task.prompt_length : task.prompt_length + 4]
    wrong_digit = good.copy()
    wrong_digit[task.prompt_length] = (digits[0] + 1) % 10
    early_eos = good.copy()
    early_eos[task.prompt_length + 3] = task.vocab.eos_id
    leftover_mask = good.copy()
    leftover_mask[-1] = task.vocab.mask_id
    extra_digit = good.copy()
    extra_digit[task.prompt_length + 4] = 0
    padded = good.copy()
    padded[task.prompt_length + 4 :] = task.vocab.pad_id
    checks = task.check(np.stack([good, wrong_digit, early_eos, leftover_mask, extra_digit, padded]))
    np.testing.assert_array_equal(checks, [True, False, False, False, False, True])
    with pytest.raises(ValueError, match=r"expected tokens \[N, 14\]"):
        task.check(good[None, :-1])
    with pytest.raises(ValueError, match="answer_length=3"):
        AdditionTask(num_digits=3, answer_length=3)


def test_sudoku_grids_are_all_288_valid_4x4_grids():
    grids = sudoku4_grids().reshape(-1, 4, 4)
    assert grids.shape == (288, 4, 4) and len({g.tobytes() for g in grids}) == 288
    for g in grids:
        groups = list(g) + list(g.T) + [g[r : r + 2, c : c + 2].reshape(-1) for r in (0, 2) for c in (0, 2)]
        assert all(sorted(group) == [1, 2, 3, 4] for group in groups)
    assert not sudoku4_is_valid(np.r_[grids[0].reshape(-1)[:15], 9])


def test_sudoku_puzzles_have_unique_solutions_and_checker_accepts_only_them():
    task = SudokuTask(num_blanks=10)
    batch = task.batch(seed=0, start=0, size=32)
    assert batch["tokens"].shape == (32, 32)
    for row in batch["tokens"]:
        text = task.vocab.decode(row)
        puzzle, solution = text[:16], text[16:]
        assert puzzle.count(".") == 10
        clues = [0 if c == "." else int(c) for c in puzzle]
        assert sudoku4_num_solutions(clues) == 1
        assert sudoku4_is_valid([int(c) for c in solution])
        assert all(p in (".", s) for p, s in zip(puzzle, solution))
    assert task.check(batch["tokens"]).all()
    broken = batch["tokens"].copy()
    blank = int(np.flatnonzero(broken[0, :16] == task.vocab.encode(".")[0])[0])
    broken[0, 16 + blank] = (broken[0, 16 + blank] + 1) % 4  # another digit in a blank cell
    broken[1, 16] = task.vocab.eos_id
    np.testing.assert_array_equal(task.check(broken[:3]), [False, False, True])


def test_text_corpus_windows_and_split():
    train = TextCorpus("pydoc", seq_length=48)
    held_out = TextCorpus("pydoc", seq_length=48, split="eval")
    assert len(train.text) > 300_000 and held_out.text not in train.text
    batch = train.batch(seed=0, start=0, size=8)
    assert batch["tokens"].shape == (8, 48) and batch["tokens"].max() < len(TextCorpus.CHARS)
    for row in batch["tokens"]:
        assert train.vocab.decode(row) in train.text
    zen = TextCorpus("zen", seq_length=16)
    assert "Beautiful is better than ugly." in zen.text
    with pytest.raises(ValueError, match="known corpora"):
        TextCorpus("wiki")


def test_permutation_examples_and_checker():
    task = PermutationTask(num_items=5, alphabet=7)
    batch = task.batch(seed=0, start=0, size=64)
    assert batch["tokens"].shape == (64, 10) and task.check(batch["tokens"]).all()
    texts = [task.vocab.decode(row) for row in batch["tokens"]]
    assert all(t[:5] == "".join(sorted(set(t[:5]))) and sorted(t[5:]) == list(t[:5]) for t in texts)
    assert sum(t[5:] != t[:5] for t in texts) > 48  # random orders, not the sorted prompt
    wrong = batch["tokens"].copy()
    wrong[:, 5] = wrong[:, 6]  # a letter written twice
    assert not task.check(wrong).any()
    with pytest.raises(ValueError, match="num_items=9 must be an int in \\[2, alphabet=7\\]"):
        PermutationTask(num_items=9, alphabet=7)


def test_make_task_names():
    assert isinstance(make_task("addition", num_digits=2), AdditionTask)
    with pytest.raises(ValueError, match="known tasks: \\['addition', 'permutation', 'sudoku', 'text'\\]"):
        make_task("chess")


def test_task_specs_and_the_text_task_data_source():
    from jaxlab.data.sources import build_source
    from jaxlab.data.text_tasks import TaskSource, parse_task_spec, register

    register()

    assert parse_task_spec("addition:num_digits=3, answer_length=6").seq_length == 14
    with pytest.raises(ValueError, match="is not key=value"):
        parse_task_spec("addition:3")
    with pytest.raises(ValueError, match="unexpected keyword"):
        parse_task_spec("sudoku:digits=3")

    class DataCfg(dict):
        __getattr__ = dict.__getitem__

    spec = build_source(DataCfg(source="text_task", path="sudoku:num_blanks=8", split="eval"))
    assert isinstance(spec.source, TaskSource) and spec.in_memory
    np.testing.assert_array_equal(spec.source[3]["tokens"], SudokuTask(8).example(1, 3)["tokens"])
    text = build_source(DataCfg(source="text_task", path="text:corpus=zen,seq_length=16", split="eval"))
    assert text.source.task.name == "zen-eval"
    with pytest.raises(ValueError, match="allowed values: \\['train', 'eval', 'test'\\]"):
        build_source(DataCfg(source="text_task", path="sudoku", split="validation"))
    with pytest.raises(ValueError, match="names the task"):
        build_source(DataCfg(source="text_task", path="", split="train"))


def test_dlm_configs_train_through_the_shared_loop(tmp_path):
    """configs/dlm.py:addition (shrunk) trains with jaxlab.train.loop (what launch/train.py runs),
    and the run exports to a single-file checkpoint that rebuilds the model and its task."""
    from configs.dlm import get_config
    from jaxlab.dlm.pretrained import export_workdir, load_checkpoint
    from jaxlab.train.config import validate
    from jaxlab.train.loop import train

    for variant in ("llada-8b", "llada-8b-sft", "sudoku", "text", "sudoku-confidence"):
        validate(get_config(variant))
    with pytest.raises(ValueError, match="unknown dlm config variant 'gpt'"):
        get_config("gpt")
    config = get_config("addition")
    assert config.model.vocab_size == 15 and config.model.mask_token_id == 14 and config.objective.kind == "sft"
    config.model.update(d_model=32, n_layers=1, mlp_hidden_size=64)
    config.training.update(num_steps=3, global_batch_size=8)
    config.logging.update(every_steps=1, progress_bar=False)
    result = train(config, str(tmp_path / "run"))
    assert result.step == 3 and np.isfinite(result.last_metrics["loss"])
    assert {"masked_accuracy", "masked_ce", "masked_fraction"} <= set(result.last_metrics)
    module, params, task, meta = load_checkpoint(str(export_workdir(tmp_path / "run", tmp_path / "m.npz")))
    assert isinstance(task, AdditionTask) and module.config.n_layers == 1 and meta["family"] == "llada"
    trained = jax.tree.leaves(jax.device_get(result.state.ema_params))
    assert len(jax.tree.leaves(params)) == len(trained)
    for exported, ema in zip(jax.tree.leaves(params), trained):  # the run's EMA weights, not a fresh init
        np.testing.assert_array_equal(exported, ema)
    logits = module.apply({"params": params}, task.batch(0, 0, 2)["tokens"])
    assert logits.shape == (2, task.seq_length, 15)
