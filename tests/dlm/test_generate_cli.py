"""launch/generate.py: text in, text out for the shipped Sudoku model; bad input."""

import types

import numpy as np
import pytest

from jaxlab.data.text_tasks import SPLIT_SEEDS
from jaxlab.dlm.pretrained import load_checkpoint
from jaxlab.dlm.text_generation import encode_prompt, run


def test_sudoku_text_in_text_out_streams_the_commits():
    module, params, task, _ = load_checkpoint("sudoku")
    prompt_ids = task.prompts(SPLIT_SEEDS["test"], 0, 1)[0]
    text = task.vocab.decode(prompt_ids)
    answer, frames = run("sudoku", text, "dcd")
    assert len(answer) == 16 and answer.isdigit()
    assert frames[0].count("?") > frames[-1].count("?") or len(frames) == 1
    assert frames[-1].startswith(answer) and "?" not in frames[-1]
    ids = np.full(task.prompt_length + task.answer_length, task.vocab.eos_id, np.int32)
    ids[: task.prompt_length + 16] = np.concatenate([prompt_ids, task.vocab.encode(answer)])
    assert task.check(ids[None])[0]  # the shipped model solves this held-out puzzle


def test_bad_prompts_fail_clearly():
    module, _, task, _ = load_checkpoint("sudoku")
    with pytest.raises(ValueError, match="prompts of exactly 16 characters"):
        encode_prompt(task, module, "1.3")
    with pytest.raises(ValueError, match="is not in the vocabulary"):
        encode_prompt(task, module, "x" * 16)
    other = types.SimpleNamespace(config=types.SimpleNamespace(embedding_size=99))
    with pytest.raises(ValueError, match="tokenizer and model do not match"):
        encode_prompt(task, other, "1" * 16)
    with pytest.raises(ValueError, match="not available for --decoder=remdm"):
        run("sudoku", task.vocab.decode(task.prompts(SPLIT_SEEDS["test"], 0, 1)[0]), "remdm", cache="dual")
