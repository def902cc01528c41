"""Causal LMs: DiJiang goldens through from_torch, GPT-NeoX / LLaMA against transformers, caches, presets, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models import build_model, count_params
from jaxlab.models.lm import PRESETS, CausalLM, LMConfig, init_cache
from jaxlab.models.lm_attention import CausalSelfAttention, dijiang_projection
from tests.conftest import GoldenCase

LM_CASE = GoldenCase("dijiang", "dijiang_lm_forward")
ATTN_CASE = GoldenCase("dijiang", "dijiang_attention")


def _apply(module, params, ids, **kw):
    (logits, cache), state = jax.jit(lambda p, x: module.apply({"params": p}, x, mutable=["intermediates"], **kw))(params, ids)
    return logits, cache, state.get("intermediates", {})


@pytest.mark.parametrize("form,scan", [("parallel", False), ("chunked", False), ("chunked", True), ("factorised", False)])
def test_dijiang_lm_logits_match_reference(form, scan):
    module, params = from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], LM_CASE.state_dict,
                                dijiang_form=form, dijiang_chunk=5, scan_blocks=scan)
    logits, _, inter = _apply(module, params, LM_CASE["inputs/input_ids"])
    LM_CASE.assert_close("logits", logits)
    if not scan:
        tol = LM_CASE.tolerance("logits")
        np.testing.assert_allclose(inter["embeddings"][0], LM_CASE["intermediates/embed"], **tol)
        np.testing.assert_allclose(inter["layer0_out"][0], LM_CASE["intermediates/layer0_out"], **tol)
        np.testing.assert_allclose(inter["final_hidden"][0], LM_CASE["intermediates/final_hidden"], **tol)
        qf = inter["layers_0"]["attn"]["q_feature"][0]
        np.testing.assert_allclose(qf.transpose(0, 2, 1, 3), LM_CASE["intermediates/layer0_q_feature"], **tol)


def test_dijiang_attention_module_matches_reference():
    """The reference's GPTNeoXAttention alone, loaded through from_torch as layer 0 of a one-layer LM."""
    kwargs = ATTN_CASE.meta["constructor"]["kwargs"]
    d, inter = kwargs["hidden_size"], kwargs["intermediate_size"]
    rng = np.random.default_rng(0)
    sd = {f"gpt_neox.layers.0.attention.{k}": v for k, v in ATTN_CASE.state_dict.items()}
    for name, shape in (("input_layernorm", (d,)), ("post_attention_layernorm", (d,))):
        sd[f"gpt_neox.layers.0.{name}.weight"], sd[f"gpt_neox.layers.0.{name}.bias"] = np.ones(shape), np.zeros(shape)
    sd["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"], sd["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"] = rng.normal(size=(inter, d)), np.zeros(inter)
    sd["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"], sd["gpt_neox.layers.0.mlp.dense_4h_to_h.bias"] = rng.normal(size=(d, inter)), np.zeros(d)
    sd["gpt_neox.embed_in.weight"] = sd["embed_out.weight"] = rng.normal(size=(kwargs["vocab_size"], d))
    sd["gpt_neox.final_layer_norm.weight"], sd["gpt_neox.final_layer_norm.bias"] = np.ones(d), np.zeros(d)
    module, params = from_torch("dijiang", kwargs, sd, dijiang_form="chunked", dijiang_chunk=4)
    cfg = module.config
    np.testing.assert_allclose(dijiang_projection(cfg, 0), ATTN_CASE["params/proj_matrix"], rtol=1e-5, atol=1e-6)
    x = ATTN_CASE["inputs/hidden_states"]
    positions = jnp.asarray(ATTN_CASE["inputs/position_ids"], jnp.int32)
    fn = jax.jit(lambda p, x: CausalSelfAttention(cfg).apply({"params": p}, x, positions, proj=dijiang_projection(cfg, 0),
                                                            mutable=["intermediates"]))
    (out, _), state = fn(params["layers_0"]["attn"], x)
    ATTN_CASE.assert_close("attn_output", out)
    tol = ATTN_CASE.tolerance("attn_output")
    inter = state["intermediates"]
    np.testing.assert_allclose(inter["k_feature"][0].transpose(0, 2, 1, 3), ATTN_CASE["intermediates/k_feature"], **tol)
    for name in ("attn_core_merged", "group_norm_out", "gate"):
        np.testing.assert_allclose(inter[name][0], ATTN_CASE[f"intermediates/{name}"], err_msg=name, **tol)


def _randomise(model, seed=0):
    """N(0, 1/fan_in) weights, N(0, 0.05^2) biases, norms 1 + N(0, 0.1^2) (as the goldens do)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen) if name.endswith("weight") else 0.05 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    return model.eval()


def _hf_pair(kind):
    transformers = pytest.importorskip("transformers")
    import torch

    if kind == "gpt_neox":
        hf_config = transformers.GPTNeoXConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=256, rotary_pct=0.25, max_position_embeddings=64)
        model = transformers.GPTNeoXForCausalLM(hf_config)
    else:
        hf_config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=160, max_position_embeddings=64,
                                             rms_norm_eps=1e-5)
        model = transformers.LlamaForCausalLM(hf_config)
    model = _randomise(model)
    ids = np.random.default_rng(1).integers(0, 96, size=(2, 20))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    return hf_config.to_dict(), model.state_dict(), ids, ref


@pytest.mark.parametrize("kind", ["gpt_neox", "llama"])
def test_softmax_lm_matches_transformers(kind):
    kwargs, sd, ids, ref = _hf_pair(kind)
    module, params = from_torch(kind, kwargs, sd)
    logits, _, _ = _apply(module, params, ids)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
    # A prefill + one-token decode through the KV cache reproduces the full forward.
    cache = init_cache(module.config, 2, 32)
    step = jax.jit(lambda p, x, c, o: module.apply({"params": p}, x, cache=c, offset=o))
    pre, cache = step(params, ids[:, :12], cache, 0)
    outs = [pre]
    for n in range(12, ids.shape[1]):
        out, cache = step(params, ids[:, n : n + 1], cache, n)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), ref, rtol=1e-4, atol=1e-4)


def test_dijiang_decoding_state_reproduces_the_full_forward():
    module, params = from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], LM_CASE.state_dict)
    ids = LM_CASE["inputs/input_ids"]
    cache = init_cache(module.config, 2, 16)
    assert cache.s.shape == (2, 2, 4, 16, 16)  # [layers, B, heads, F, hd]: independent of the context
    step = jax.jit(lambda p, x, c, o: module.apply({"params": p}, x, cache=c, offset=o))
    pre, cache = step(params, ids[:, :7], cache, 0)
    outs = [pre]
    for n in range(7, 16):
        out, cache = step(params, ids[:, n : n + 1], cache, n)
        outs.append(out)
    LM_CASE.assert_close("logits", np.concatenate(outs, axis=1))


def test_bf16_and_remat_run_and_stay_close():
    module, params = from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], LM_CASE.state_dict,
                                dtype="bfloat16", remat="full", scan_blocks=True)
    logits, _, _ = _apply(module, params, LM_CASE["inputs/input_ids"])
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, LM_CASE["outputs/logits"], atol=0.15 * LM_CASE.meta["output_std"] * 4)


EXPECTED_PARAMS = {  # Hugging Face EleutherAI/pythia-* parameter counts (embeddings included)
    "pythia-70m": 70_426_624, "pythia-160m": 162_322_944, "pythia-410m": 405_334_016,
    "pythia-1b": 1_011_781_632, "pythia-1.4b": 1_414_647_808, "pythia-2.8b": 2_775_208_960,
    "llama-1b": 1_100_048_384,  # TinyLlama-1.1B
}


@pytest.mark.parametrize("preset", sorted(EXPECTED_PARAMS))
def test_preset_parameter_counts(preset):
    module = build_model("lm", preset, scan_blocks=True)  # one traced layer: cheap, same count
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32)))
    assert count_params(shapes["params"]) == EXPECTED_PARAMS[preset]


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="attention='flash' is not supported"):
        LMConfig(attention="flash").validate()
    with pytest.raises(ValueError, match="num_kv_heads == num_heads"):
        LMConfig(num_kv_heads=2, attention="dijiang").validate()
    with pytest.raises(ValueError, match="unknown LMConfig field"):
        LMConfig.from_dict({"n_layers": 3})


def test_too_long_input_is_rejected():
    module = CausalLM(LMConfig.from_dict(PRESETS["tiny"] | {"max_position_embeddings": 16}))
    with pytest.raises(ValueError, match="exceed the 16 this model supports"):
        jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 17), jnp.int32)))


def test_out_of_vocabulary_ids_are_rejected():
    module, params = from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], LM_CASE.state_dict)
    with pytest.raises(ValueError, match=r"token ids in \[0, 128\] fall outside the vocabulary \[0, 128\)"):
        module.apply({"params": params}, np.array([[0, 128]]))


def test_dijiang_checkpoint_without_projection_is_rejected():
    sd = {k: v for k, v in LM_CASE.state_dict.items() if not k.endswith("proj_matrix")}
    with pytest.raises(ValueError, match="no attention.proj_matrix for layer"):
        from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], sd)
    sd = dict(LM_CASE.state_dict)
    sd["gpt_neox.layers.1.attention.proj_matrix"] = np.random.default_rng(0).normal(size=(16, 16))
    with pytest.raises(ValueError, match="not DCT @ diag"):
        from_torch("dijiang", LM_CASE.meta["constructor"]["kwargs"], sd)


def test_dijiang_projection_is_frozen_config_not_a_parameter():
    cfg = LMConfig.from_dict(PRESETS["tiny"] | {"attention": "dijiang"})
    params = jax.eval_shape(lambda: CausalLM(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))["params"]
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert not any("proj" in n for n in names)
    assert not np.allclose(dijiang_projection(cfg, 0), dijiang_projection(cfg, 1))
    other = dataclasses.replace(cfg, dijiang_seed=1)
    assert not np.allclose(dijiang_projection(cfg, 0), dijiang_projection(other, 0))


@pytest.mark.parametrize("attention", ["softmax", "dijiang"])
def test_document_mask_isolates_packed_documents(attention):
    cfg = LMConfig.from_dict(PRESETS["tiny"] | {"attention": attention, "dijiang_chunk": 4})
    module = CausalLM(cfg)
    ids = np.random.default_rng(0).integers(0, 128, size=(1, 12))
    params = jax.jit(module.init)(jax.random.key(0), ids)["params"]
    seg = np.repeat([0, 1], [5, 7])[None]
    fwd = jax.jit(lambda p, x, s: module.apply({"params": p}, x, s)[0])
    packed = fwd(params, ids, seg)
    other = ids.copy()
    other[:, :5] = (other[:, :5] + 1) % 128  # change the first document only
    moved = fwd(params, other, seg)
    np.testing.assert_allclose(moved[:, 5:], packed[:, 5:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(fwd(params, other, np.zeros_like(seg))[:, 5:], packed[:, 5:], atol=1e-3)


@pytest.mark.parametrize("preset,attention", [("tiny", "dijiang"), ("llama-1b", "softmax")])
def test_every_parameter_has_logical_axes(preset, attention):
    import flax.linen as nn

    from jaxlab.nn import LOGICAL_AXES

    module = build_model("lm", preset, attention=attention, scan_blocks=True)
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    assert all(name in LOGICAL_AXES for x in leaves for name in x.names if name is not None)
