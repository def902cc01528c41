"""The DiT converter and checkpoint readers, as a user runs them on an official file."""

import jax
import numpy as np
import pytest
import torch

from jaxlab.convert import from_torch
from jaxlab.convert.io import load_state_dict
from tests.conftest import GoldenCase, nchw_to_nhwc
from tests.convert.dit_shapes import official_state_dict_shapes

CASE = GoldenCase("dit", "dit_forward_small")


def _forward(module, params):
    return np.asarray(module.apply({"params": params}, nchw_to_nhwc(CASE["inputs/x"]), CASE["inputs/t"], CASE["inputs/y"]))


def test_pt_file_read_with_weights_only_converts_to_the_same_model(tmp_path):
    path = tmp_path / "DiT-tiny.pt"
    torch.save({k: torch.from_numpy(v) for k, v in CASE.state_dict.items()}, path)
    module, params = from_torch("dit", CASE.meta["constructor"], load_state_dict(path))
    CASE.assert_close("forward", np.moveaxis(_forward(module, params), -1, 1))


def test_training_checkpoint_prefers_the_ema_weights(tmp_path):
    sd = {k: torch.from_numpy(v) for k, v in CASE.state_dict.items()}
    broken = {k: torch.zeros_like(v) for k, v in sd.items()}
    path = tmp_path / "0400000.pt"
    torch.save({"model": broken, "ema": sd, "opt": {"lr": torch.tensor(1e-4)}}, path)
    np.testing.assert_array_equal(load_state_dict(path)["y_embedder.embedding_table.weight"], CASE.state_dict["y_embedder.embedding_table.weight"])
    assert not load_state_dict(path, key="model")["y_embedder.embedding_table.weight"].any()


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_state_dict(path)


def test_safetensors_bf16_file_converts(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "dit.safetensors"
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in CASE.state_dict.items()}, str(path))
    module, params = from_torch("dit", CASE.meta["constructor"], load_state_dict(path))
    ref = nchw_to_nhwc(CASE["outputs/forward"])
    assert np.abs(_forward(module, params) - ref).max() < 0.05 * np.abs(ref).max()  # bf16 weights: close, not exact


def test_converter_rejects_mismatched_kwargs_and_leftover_weights():
    kwargs = dict(CASE.meta["constructor"])
    with pytest.raises(ValueError, match=r"unknown DiT constructor argument\(s\) \['use_flash'\]"):
        from_torch("dit", {**kwargs, "use_flash": True}, CASE.state_dict)
    with pytest.raises(KeyError, match="blocks.2.attn.qkv.weight"):
        from_torch("dit", {**kwargs, "depth": 3}, CASE.state_dict)
    with pytest.raises(ValueError, match=r"1 state_dict entries were not converted \(blocks.9.extra\)"):
        from_torch("dit", kwargs, {**CASE.state_dict, "blocks.9.extra": np.zeros(3)})
    with pytest.raises(ValueError, match="pos_embed"):
        from_torch("dit", {**kwargs, "input_size": 16}, CASE.state_dict)
    with pytest.raises(ValueError, match="no converter for family 'vit'"):
        from_torch("vit", kwargs, CASE.state_dict)


@pytest.mark.parametrize("preset", ["DiT-S/2", "DiT-B/8"])
def test_official_preset_state_dict_converts(preset):
    """A full-size official state_dict (names and shapes as models.py makes them) converts for a preset's kwargs."""
    from jaxlab.models.dit import PRESETS, pos_embed_table

    kwargs = dict(PRESETS[preset])
    rng = np.random.default_rng(0)
    sd = {k: rng.standard_normal(s).astype(np.float32) * 0.02 for k, s in official_state_dict_shapes(**kwargs).items()}
    sd["pos_embed"] = pos_embed_table(kwargs["hidden_size"], 32 // kwargs["patch_size"])[None]
    module, params = from_torch("dit", kwargs, sd)
    np.testing.assert_array_equal(params["blocks_3"]["mlp"]["fc1"]["kernel"], sd["blocks.3.mlp.fc1.weight"].T)
    assert sum(v.size for k, v in sd.items() if k != "pos_embed") == sum(x.size for x in jax.tree.leaves(params))
