"""The instruction encoder: held-out paraphrase accuracy, exact names, unclear and multi-task instructions."""

import numpy as np
import pytest

from jaxlab.restoration.instructions import (
    HELD_OUT,
    OUT_OF_SCOPE,
    UnclearInstruction,
    default_encoder,
    fit_encoder,
    heldout_accuracy,
    parse_instruction,
    resolve_instruction,
    training_set,
)


def test_heldout_paraphrases_are_mostly_placed():
    acc = heldout_accuracy()
    assert acc["overall"] >= 0.8, acc  # 39 of 46 (0.85) when written; chance is 1/6
    assert acc[OUT_OF_SCOPE] >= 0.8 and min(acc[t] for t in HELD_OUT if t != OUT_OF_SCOPE) >= 0.5, acc
    sentences, _ = training_set()
    assert not set(sentences) & {t for texts in HELD_OUT.values() for t in texts}  # really held out


def test_resolution_of_clear_instructions():
    assert resolve_instruction("Please remove the rain streaks from this photo") == "derain"
    assert resolve_instruction("the image is so foggy, can you clear it") == "dehaze"
    assert resolve_instruction("DENOISE") == "denoise"  # exact names pass through
    probs = parse_instruction("get rid of the snowflakes")
    assert max(probs, key=probs.get) == "desnow" and abs(sum(probs.values()) - 1) < 1e-5


def test_unclear_instructions_ask_which_task():
    with pytest.raises(UnclearInstruction, match="several tasks"):
        resolve_instruction("remove the rain and the noise")
    with pytest.raises(UnclearInstruction, match="no word"):
        resolve_instruction("xyzzy qwerty")
    with pytest.raises(UnclearInstruction, match="does not ask for a restoration"):
        resolve_instruction("make it black and white please")
    with pytest.raises(UnclearInstruction, match="empty"):
        resolve_instruction("  ")
    with pytest.raises(UnclearInstruction, match="does not restore"):
        resolve_instruction("remove the fog", tasks=("denoise", "derain"))


def test_the_accuracy_comes_from_the_labels():
    sentences, labels = training_set()
    shuffled = fit_encoder(sentences, list(np.random.default_rng(0).permutation(labels)))
    assert heldout_accuracy(shuffled)["overall"] < 0.4 < heldout_accuracy(default_encoder())["overall"]
