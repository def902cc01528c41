"""LM training pieces: packed corpus + BPE, next-token loss with document masks, the conversion-init task."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.lm import get_config
from jaxlab.lm.data import PackedCorpus, corpus_documents
from jaxlab.lm.task import CausalLMTask, next_token_loss, perplexity
from jaxlab.lm.tokenizer import EOS_TOKEN, load_tokenizer
from jaxlab.models.lm import CausalLM, LMConfig
from jaxlab.train.params_io import save_model


@pytest.fixture(scope="module")
def corpus():
    return PackedCorpus(seq_length=32, vocab_size=300, split="eval")


def test_packed_corpus_windows_and_segments(corpus):
    assert set(corpus_documents("pydoc", "eval")).isdisjoint(corpus_documents("pydoc", "train"))
    ex = corpus.example(0, 5)
    assert ex["tokens"].shape == ex["segment_ids"].shape == (32,)
    assert ex["tokens"].max() < 300 and ex["segment_ids"][0] == 0 and (np.diff(ex["segment_ids"]) >= 0).all()
    # A new document starts right after each <|endoftext|>.
    eos = corpus.eos_id
    assert corpus.tokenizer.token_to_id(EOS_TOKEN) == eos == 0
    w = corpus.windows()
    seg = w["segment_ids"]
    for row_t, row_s in zip(w["tokens"], seg):
        for i in np.flatnonzero(np.diff(row_s)):
            assert row_t[i] == eos
    text = corpus_documents("pydoc", "eval")[0]
    assert corpus.tokenizer.decode(corpus.tokenizer.encode(text).ids) == text


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="launch.lm_tokenizer"):
        load_tokenizer(tmp_path / "missing.json")


def test_next_token_loss_skips_cross_document_targets():
    logits = jax.random.normal(jax.random.key(0), (1, 5, 7))
    tokens = jnp.asarray([[1, 2, 3, 4, 5]])
    seg = jnp.asarray([[0, 0, 1, 1, 1]])
    loss, (total, count, _) = next_token_loss(logits, tokens, seg)
    logp = jax.nn.log_softmax(logits[0])
    manual = -(logp[0, 2] + logp[2, 4] + logp[3, 5])  # targets 2, 4, 5; target 3 crosses the boundary
    assert int(count) == 3
    np.testing.assert_allclose(total, manual, rtol=1e-6)
    np.testing.assert_allclose(loss, manual / 3, rtol=1e-6)


def test_conversion_task_starts_from_the_softmax_run(tmp_path, corpus):
    config = get_config("tiny-dijiang")
    small = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64, vocab_size=300)
    config.model.update(small)
    src_cfg = LMConfig.from_dict({**config.model.to_dict(), "attention": "softmax"})
    src = CausalLM(src_cfg)
    src_params = jax.tree.map(np.asarray, nn.unbox(jax.jit(src.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]))
    save_model(tmp_path / "softmax", "lm", src_cfg, src_params)
    config.init.from_workdir = str(tmp_path / "softmax")
    task = CausalLMTask.from_config(config)
    assert task.module.config.attention == "dijiang" and len(task.module.config.dijiang_weights) == 2
    batch = corpus.batch(0, 0, 2)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, jax.jit(task.init_params)(jax.random.key(9), batch),
                          is_leaf=lambda x: hasattr(x, "value"))
    np.testing.assert_array_equal(params["layers_1"]["mlp"]["up"]["kernel"], src_params["layers_1"]["mlp"]["up"]["kernel"])
    loss, metrics = jax.jit(task.loss_fn)(params, batch, jax.random.key(0))
    assert np.isfinite(loss) and 0 <= metrics["accuracy"] <= 1
    ppl = perplexity(task.module, params, corpus.windows(), batch_size=32)
    assert np.isfinite(ppl) and ppl > 1
    config.model.hidden_size = 64
    with pytest.raises(ValueError, match="differs from the model"):
        CausalLMTask.from_config(config)
