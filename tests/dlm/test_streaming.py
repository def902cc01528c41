"""Live streaming (jaxlab.dlm.streaming): every decoder reports each step from inside its jitted loop, and the
decoded result is the one the non-streaming program returns."""

import threading

import jax
import numpy as np
import pytest

from jaxlab.convert import from_torch
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
from jaxlab.dlm.text_generation import committed_frames
from tests.conftest import GoldenCase

CASE = GoldenCase("dlm", "dcd_sliding_threshold")
MASK = 62
PROMPT = np.random.default_rng(1).integers(0, 56, (2, 5))
G = 8

DECODERS = {
    "dcd_dual": lambda m, p, **kw: decode(*m, p, DecodeConfig(generate_length=G, initial_window_length=4,
                                                              cache_type="dual", refresh_count=4, mask_id=MASK,
                                                              pad_id=58, eos_id=18), **kw),
    "llada": lambda m, p, **kw: llada_generate(*m, p, steps=4, gen_length=G, block_length=4, mask_id=MASK, **kw),
    "fastdllm_prefix": lambda m, p, **kw: fastdllm_generate(*m, p, steps=4, gen_length=G, block_length=4,
                                                            threshold=0.5, cache="prefix", mask_id=MASK, **kw),
    "remdm": lambda m, p, **kw: remdm_generate(*m, p, steps=4, gen_length=G, schedule=ReMDMSchedule("rescale", eta=0.5),
                                               mask_id=MASK, rng=jax.random.key(3), **kw),
    "llada_remask": lambda m, p, **kw: llada_remask_generate(*m, p, steps=4, gen_length=G, block_length=4,
                                                             remask_start=0.5, mask_id=MASK, **kw),
    "remedi_dual": lambda m, p, **kw: remedi_generate(*m, p, steps=4, gen_length=G, block_length=4, cache="dual",
                                                      mask_id=MASK, **kw),
}


@pytest.fixture(scope="module")
def model():
    return from_torch("llada", CASE.meta["constructor"]["kwargs"], CASE.state_dict)


# The default suite streams one commit-only and one remasking+cached sampler; the rest are slow (same code path).
@pytest.mark.parametrize("name", [n if n in ("llada", "remedi_dual") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in DECODERS])
def test_streamed_decoding_is_token_identical_and_reports_every_step(model, name):
    plain = DECODERS[name](model, PROMPT)
    seen = []
    streamed = DECODERS[name](model, PROMPT, on_step=lambda step, tokens: seen.append((step, tokens.copy())))
    np.testing.assert_array_equal(streamed.tokens, plain.tokens)
    np.testing.assert_array_equal(streamed.commit_step, plain.commit_step)
    assert [s for s, _ in seen] == list(range(plain.num_forward))  # one frame per forward, in order
    assert all(t.shape == plain.tokens.shape for _, t in seen)
    np.testing.assert_array_equal(seen[-1][1], plain.tokens)  # the last frame is the answer
    masks = [int((t[:, PROMPT.shape[1]:] == MASK).sum()) for _, t in seen]
    if hasattr(plain, "num_masked"):  # remasking samplers: each frame is the state after that forward
        np.testing.assert_array_equal(masks, plain.num_masked.sum(1))
        if name == "remdm":
            assert plain.num_remasked.sum() > 0  # tokens really went back to [MASK] between frames
    elif name != "dcd_dual":  # commit-only samplers: each frame is the recorded commits up to that step
        for row in range(PROMPT.shape[0]):
            one = type(plain)(**{**plain.__dict__, "tokens": plain.tokens[row:row + 1],
                                 "commit_step": plain.commit_step[row:row + 1]})
            replay = committed_frames(one, PROMPT.shape[1], MASK, lambda ids: ids.tolist())
            assert replay == [t[row, PROMPT.shape[1]:].tolist() for _, t in seen]
    else:
        assert masks == sorted(masks, reverse=True) and masks[-1] == 0


def test_frames_arrive_while_the_decoder_runs(model):
    """The listener blocks at step 0; the decoder call has not returned and has delivered one frame, and it
    finishes once the listener lets go. A listener error is raised after decoding."""
    seen, release, waiting = [], threading.Event(), threading.Event()

    def on_step(step, tokens):
        seen.append(step)
        if step == 0:
            waiting.set()
            assert release.wait(60)

    result = {}
    worker = threading.Thread(target=lambda: result.update(r=DECODERS["llada"](model, PROMPT, on_step=on_step)))
    worker.start()
    assert waiting.wait(120)
    assert worker.is_alive() and seen == [0] and "r" not in result
    release.set()
    worker.join(120)
    assert seen == list(range(result["r"].num_forward))

    def broken(step, tokens):
        raise BrokenPipeError("stdout closed")

    with pytest.raises(BrokenPipeError, match="stdout closed"):
        DECODERS["llada"](model, PROMPT, on_step=broken)
    with pytest.raises(TypeError, match="on_step must be a function"):
        DECODERS["llada"](model, PROMPT, on_step=3)
