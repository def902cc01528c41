"""RemeDi confidence head: the head is additive, remedi_generate ranks by it, training learns, AUROC."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dlm import get_config
from jaxlab.dlm import remedi_generate
from jaxlab.dlm.confidence import (
    ConfidenceHeadTask,
    add_confidence_head,
    auroc,
    evaluate_head,
    split_head,
    train_confidence_head,
)
from jaxlab.dlm.pretrained import load_checkpoint
from jaxlab.models import build_model


@pytest.fixture(scope="module")
def tiny():
    module = build_model("llada", "tiny")
    params = jax.tree_util.tree_map(np.asarray, module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree_util.tree_map(lambda p: p * 20 if p.ndim == 2 else p, params)  # peaked, position-dependent logits
    return module, params


def test_head_is_additive_and_zero_initialised(tiny):
    module, params = tiny
    ids = jax.random.randint(jax.random.key(1), (2, 12), 0, 60)
    hm, hp = add_confidence_head(module, params, blocks=1)
    backbone, head = split_head(hp)
    assert sorted(head) == ["conf_blocks_0", "conf_norm", "conf_out"]
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, backbone, params))
    logits, conf = hm.apply({"params": hp}, ids, method=type(hm).with_confidence)
    np.testing.assert_allclose(logits, module.apply({"params": params}, ids), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(conf, 0.0)
    with pytest.raises(ValueError, match="no confidence head"):
        module.apply({"params": params}, ids, method=type(module).with_confidence)
    with pytest.raises(ValueError, match="score='head' needs a model with a confidence head"):
        remedi_generate(module, params, ids, steps=2, gen_length=4, block_length=4, mask_id=62, score="head")


def test_remedi_ranks_by_the_head(tiny):
    """A zero head ties every position, so keep-top-K keeps the lowest positions: left-to-right commits.
    The probability ranking on the same model commits in another order (so the test can fail)."""
    module, params = tiny
    prompt = np.arange(1, 7, dtype=np.int32)[None]
    hm, hp = add_confidence_head(module, params)
    by_head = remedi_generate(hm, hp, prompt, steps=4, gen_length=8, block_length=8, mask_id=62, score="head")
    np.testing.assert_array_equal(by_head.commit_step[0, 6:], np.arange(8) // 2)
    by_prob = remedi_generate(module, params, prompt, steps=4, gen_length=8, block_length=8, mask_id=62)
    assert not np.array_equal(by_prob.commit_step[0, 6:], np.arange(8) // 2)


def test_auroc_equals_the_pair_count():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
    pairs = [(1.0 if s > t else 0.5 if s == t else 0.0) for s, t in
             itertools.product(scores[labels], scores[~labels])]
    assert auroc(scores, labels) == pytest.approx(np.mean(pairs))
    assert np.isnan(auroc(scores, np.ones(60, bool)))


def test_head_task_starts_from_the_checkpoint_and_trains_only_the_head():
    """The shared loop's Task: backbone = the checkpoint, fresh zero head; gradients reach only the head; a config
    that would train the backbone is refused."""
    config = get_config("sudoku-confidence")
    config.confidence.blocks = 0
    task = ConfidenceHeadTask.from_config(config)
    module, params, text_task, _ = load_checkpoint("sudoku")
    batch = text_task.batch(0, 0, 8)
    init = nn.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
    backbone, head = split_head(init)
    assert sorted(head) == ["conf_norm", "conf_out"] and not np.any(head["conf_out"]["kernel"])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, backbone, params))
    grads = jax.jit(jax.grad(lambda p: task.loss_fn(p, batch, jax.random.key(1))[0]))(init)
    g_backbone, g_head = split_head(grads)
    assert not any(np.any(g) for g in jax.tree_util.tree_leaves(g_backbone))
    assert np.any(g_head["conf_out"]["kernel"])
    config.optimizer.trainable_params = ""
    with pytest.raises(ValueError, match="trainable_params='\\^conf_'"):
        ConfidenceHeadTask.from_config(config)


@pytest.mark.slow  # ~30 s idle; the Task test above and test_trainable_params cover the pieces
def test_training_learns_to_flag_corrupted_tokens():
    """A few dozen steps of the shared loop on the shipped Sudoku model: the backbone stays bit-identical and the
    head separates correct from corrupted committed tokens."""
    module, params, task, meta = load_checkpoint("sudoku")
    hm, hp, history = train_confidence_head(get_config("sudoku-confidence"), module, params, meta["task"], steps=30,
                                            batch_size=32, blocks=0, corrupt=0.6, learning_rate=1e-2, log_every=10,
                                            log=lambda _: None)
    assert np.mean([r["loss"] for r in history[-5:]]) < np.mean([r["loss"] for r in history[:5]])
    backbone, _ = split_head(hp)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, backbone, params))
    ev = evaluate_head(hm, hp, task, num_examples=64, corrupt=0.6)
    assert ev["committed"]["wrong"] > 0.1 and ev["committed"]["auroc_head"] > 0.7  # chance: 0.5
