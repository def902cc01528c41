"""The DiT converter and checkpoint readers, as a user runs them on an official file."""

import jax
import numpy as np
import pytest
import torch

from jaxlab.convert import from_torch
from jaxlab.convert.io import load_state_dict
from tests.conftest import GoldenCase, nchw_to_nhwc

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


def official_state_dict_shapes(input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28,
                               num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
    """Names and shapes of the official DiT ``state_dict`` (models.py), written out independently of jaxlab."""
    d, p, c = hidden_size, patch_size, in_channels
    out = 2 * c if learn_sigma else c
    shapes = {
        "pos_embed": (1, (input_size // p) ** 2, d),
        "x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (num_classes + int(class_dropout_prob > 0), d),
        "final_layer.linear.weight": (p * p * out, d), "final_layer.linear.bias": (p * p * out,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    hidden = int(d * mlp_ratio)
    for i in range(depth):
        shapes.update({
            f"blocks.{i}.attn.qkv.weight": (3 * d, d), f"blocks.{i}.attn.qkv.bias": (3 * d,),
            f"blocks.{i}.attn.proj.weight": (d, d), f"blocks.{i}.attn.proj.bias": (d,),
            f"blocks.{i}.mlp.fc1.weight": (hidden, d), f"blocks.{i}.mlp.fc1.bias": (hidden,),
            f"blocks.{i}.mlp.fc2.weight": (d, hidden), f"blocks.{i}.mlp.fc2.bias": (d,),
            f"blocks.{i}.adaLN_modulation.1.weight": (6 * d, d), f"blocks.{i}.adaLN_modulation.1.bias": (6 * d,),
        })
    return shapes


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
