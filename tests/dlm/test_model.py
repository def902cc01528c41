"""LLaDA model: golden equivalence with the official LLaDAModelLM, caches, GQA, padding, converter, presets."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.convert.io import load_sharded_safetensors
from jaxlab.models.common import count_params
from jaxlab.models.dlm import PRESETS, LLaDA, LLaDAConfig, init_cache
from jaxlab.models.registry import build_model
from tests.conftest import GoldenCase

CASE = GoldenCase("dlm", "llada_forward")
KWARGS = CASE.meta["constructor"]["kwargs"]


class _Jitted:
    """``module`` with a jitted ``apply`` (eager flax applies are slow on CPU)."""

    def __init__(self, module):
        self.module, self.config = module, module.config
        self.apply = jax.jit(module.apply)


@pytest.fixture(scope="module")
def tiny():
    module, params = from_torch("llada", KWARGS, CASE.state_dict)
    return _Jitted(module), params


@pytest.mark.default_xla
@pytest.mark.parametrize("scan_blocks", [False, True])
def test_forward_matches_reference(scan_blocks):
    module, params = from_torch("llada", KWARGS, CASE.state_dict, scan_blocks=scan_blocks)
    stacked = [v for v in jax.tree.leaves(params) if v.ndim and v.shape[0] == KWARGS["n_layers"] and v.ndim >= 3]
    assert bool(stacked) == scan_blocks  # the switch takes effect: per-layer weights stacked on a leading axis
    logits, state = jax.jit(lambda p, x: module.apply({"params": p}, x, mutable=["intermediates"]))(
        params, CASE["inputs/input_ids"]
    )
    CASE.assert_close("logits", logits)
    if not scan_blocks:  # the scanned stack records no per-layer intermediates
        inter = state["intermediates"]
        for name in ("embeddings", "layer0_out", "final_norm_out"):
            CASE.assert_close(name, inter[name][0], CASE[f"intermediates/{name}"])


def test_cached_calls_reproduce_the_full_forward(tiny):
    """A refresh (all rows written) is the full forward; a cached slice with unchanged tokens too."""
    module, params = tiny
    ids = jnp.asarray(CASE["inputs/input_ids"])
    full = module.apply({"params": params}, ids)
    cache = init_cache(module.config, ids.shape[0], ids.shape[1])
    refreshed, cache = module.apply({"params": params}, ids, cache=cache)
    np.testing.assert_allclose(refreshed, full, rtol=1e-4, atol=1e-4)

    lo, w = 5, 8
    window, cache2 = module.apply({"params": params}, ids[:, lo : lo + w], cache=cache, offset=lo)
    np.testing.assert_allclose(window, full[:, lo : lo + w], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cache2.k, cache.k, rtol=1e-4, atol=1e-4)


def test_write_mask_keeps_unselected_cache_rows(tiny):
    module, params = tiny
    ids = jnp.asarray(CASE["inputs/input_ids"])
    cache = init_cache(module.config, ids.shape[0], ids.shape[1])
    _, cache = module.apply({"params": params}, ids, cache=cache)
    changed = ids.at[:, 4:12].set(7)
    write = (jnp.arange(8) >= 3)[None]  # rows 7..11 written, 4..6 kept
    _, new = module.apply({"params": params}, changed[:, 4:12], cache=cache, offset=4, write_mask=write)
    np.testing.assert_array_equal(new.k[:, :, :7], cache.k[:, :, :7])
    np.testing.assert_array_equal(new.v[:, :, 12:], cache.v[:, :, 12:])
    assert not np.allclose(new.k[:, :, 7:12], cache.k[:, :, 7:12])


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
    """Query head n reads kv head n // group, as torch's repeat_interleave does."""
    gqa_kwargs = {**KWARGS, "n_kv_heads": 2}
    rng = np.random.default_rng(0)
    sd = dict(CASE.state_dict)
    for i in range(KWARGS["n_layers"]):
        for name in ("k_proj", "v_proj"):
            sd[f"model.transformer.blocks.{i}.{name}.weight"] = rng.normal(0, 0.3, (32, 64)).astype(np.float32)
    gqa, gqa_params = from_torch("llada", gqa_kwargs, sd)
    mha_sd = dict(sd)
    for key in [k for k in sd if k.endswith(("k_proj.weight", "v_proj.weight"))]:
        mha_sd[key] = np.repeat(sd[key].reshape(2, 16, 64), 2, axis=0).reshape(64, 64)
    mha, mha_params = from_torch("llada", KWARGS, mha_sd)
    ids = CASE["inputs/input_ids"]
    out_gqa = jax.jit(gqa.apply)({"params": gqa_params}, ids)
    out_mha = jax.jit(mha.apply)({"params": mha_params}, ids)
    np.testing.assert_allclose(out_gqa, out_mha, rtol=1e-4, atol=1e-4)


def test_padding_mask_hides_right_padding(tiny):
    module, params = tiny
    ids = jnp.asarray(CASE["inputs/input_ids"])
    padded = jnp.concatenate([ids, jnp.full((2, 6), 58)], axis=1)
    mask = jnp.arange(30)[None] < 24
    out = module.apply({"params": params}, padded, jnp.broadcast_to(mask, (2, 30)))
    np.testing.assert_allclose(out[:, :24], module.apply({"params": params}, ids), rtol=1e-4, atol=1e-4)


def test_every_parameter_has_logical_axes():
    module = build_model("llada", "tiny")
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    names = {n for x in leaves for n in x.names}
    assert {"vocab", "embed", "heads", "kv", "mlp"} <= names


def test_llada_8b_preset_parameter_count():
    config = LLaDAConfig.from_dict(PRESETS["LLaDA-8B"])
    assert (config.d_model, config.n_layers, config.n_heads, config.mlp_hidden_size) == (4096, 32, 32, 12288)
    assert (config.vocab_size, config.rope_theta, config.mask_token_id) == (126464, 500000.0, 126336)
    shapes = jax.eval_shape(lambda: LLaDA(config).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32)))
    # The released shards' index reports total_size 16,031,162,368 bytes of bfloat16.
    assert count_params(nn.unbox(shapes["params"])) == 16_031_162_368 // 2 == 8_015_581_184


@pytest.mark.parametrize(
    "change,message",
    [
        ({"block_type": "sequential"}, "block_type='sequential' is not supported"),
        ({"alibi": True}, "alibi=True is not supported"),
        ({"residual_dropout": 0.1}, "residual_dropout=0.1 is not supported"),
        ({"n_headz": 4}, "unknown LLaDAConfig argument(s) ['n_headz']"),
        ({"multi_query_attention": True}, "contradicts n_kv_heads=4"),
    ],
)
def test_converter_rejects_other_architectures(change, message):
    with pytest.raises(ValueError) as err:
        from_torch("llada", {**KWARGS, **change}, CASE.state_dict)
    assert message in str(err.value)


def test_converter_rejects_unconverted_weights_and_accepts_bare_model_names():
    with pytest.raises(ValueError, match="1 state_dict entries were not converted"):
        from_torch("llada", KWARGS, {**CASE.state_dict, "model.transformer.wpe.weight": np.zeros((4, 64))})
    bare = {k[len("model.") :]: v for k, v in CASE.state_dict.items()}
    module, params = from_torch("llada", KWARGS, bare)
    CASE.assert_close("logits", jax.jit(module.apply)({"params": params}, CASE["inputs/input_ids"]))


def _write_shards(directory, state_dict):
    from safetensors.numpy import save_file

    names = sorted(state_dict)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: np.ascontiguousarray(state_dict[k]) for k in keys}, str(directory / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_safetensors_reader(tmp_path):
    _write_shards(tmp_path, CASE.state_dict)
    loaded = load_sharded_safetensors(tmp_path)
    assert sorted(loaded) == sorted(CASE.state_dict)
    for k, v in CASE.state_dict.items():
        np.testing.assert_array_equal(loaded[k], v)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_sharded_safetensors(tmp_path / "model.safetensors.index.json")


def test_convert_cli_reads_sharded_checkpoint(tmp_path):
    from jaxlab.train.params_io import load_model

    src = tmp_path / "hf"
    src.mkdir()
    _write_shards(src, CASE.state_dict)
    (src / "config.json").write_text(json.dumps({**KWARGS, "architectures": ["LLaDAModelLM"], "model_type": "llada"}))
    out = tmp_path / "jax"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.convert", "--family=llada", f"--checkpoint={src}",
         f"--torch_config={src / 'config.json'}", f"--output={out}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    module, params = load_model(out)
    CASE.assert_close("logits", jax.jit(module.apply)({"params": params}, CASE["inputs/input_ids"]))


@pytest.mark.parametrize("weight_tying", [False, True])
def test_bf16_model_head_returns_float32_logits_of_an_unrounded_product(tiny, weight_tying):
    """bf16 matmul, float32 accumulation and output: the logits are not bf16 values cast up."""
    _, params = tiny
    module = LLaDA(LLaDAConfig(**{**PRESETS["tiny"], "dtype": "bfloat16", "weight_tying": weight_tying}))
    tokens = jnp.arange(16, dtype=jnp.int32)[None] % 50
    if weight_tying:
        params = {k: v for k, v in params.items() if k != "ff_out"}
    logits = jax.jit(module.apply)({"params": params}, tokens)
    assert logits.dtype == jnp.float32
    as_bf16 = logits.astype(jnp.bfloat16).astype(jnp.float32)
    assert float(jnp.mean(logits != as_bf16)) > 0.5
    f32 = LLaDA(LLaDAConfig(**{**PRESETS["tiny"], "weight_tying": weight_tying})).apply({"params": params}, tokens)
    np.testing.assert_allclose(logits, f32, atol=0.15 * float(jnp.abs(f32).max()))
