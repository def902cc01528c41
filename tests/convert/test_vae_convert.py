"""The VAE converter on the files and names users have: old attention names, config.json, the full
sd-vae-ft-ema tree, and the wrong checkpoints users give it."""

import json

import numpy as np
import pytest
import torch

from jaxlab.convert import from_torch
from jaxlab.convert.io import load_state_dict
from jaxlab.models import count_params
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASE = GoldenCase("vae", "vae_tiny")
_OLD = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _old_names(state_dict):
    out = {}
    for k, v in state_dict.items():
        for new, old in _OLD.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        out[k] = v
    return out


def test_old_attention_names_from_a_safetensors_file_with_its_config_json(tmp_path):
    from safetensors.numpy import save_file

    old = _old_names(CASE.state_dict)
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
    save_file(old, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    config = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", **CASE.meta["constructor"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    module, params = from_torch("vae", json.loads((tmp_path / "config.json").read_text()),
                                load_state_dict(tmp_path / "diffusion_pytorch_model.safetensors"))
    mean, _ = module.apply({"params": params}, nchw_to_nhwc(CASE["inputs/x"]), method="encode")
    CASE.assert_close("latent_mean", nhwc_to_nchw(mean))


def test_wrong_checkpoints_are_named(tmp_path):
    kwargs = CASE.meta["constructor"]
    dit_like = {"x_embedder.proj.weight": np.zeros((8, 4, 2, 2)), "blocks.0.attn.qkv.weight": np.zeros((24, 8))}
    with pytest.raises(ValueError, match="not a diffusers AutoencoderKL checkpoint.*looks like a DiT"):
        from_torch("vae", kwargs, dit_like)
    with pytest.raises(ValueError, match=r"decoder.conv_in.weight has 4 channels where the config's latent_channels=16"):
        from_torch("vae", {**kwargs, "latent_channels": 16}, CASE.state_dict)
    with pytest.raises(ValueError, match=r"encoder.conv_in.weight has 3 channels where the config's in_channels=1"):
        from_torch("vae", {**kwargs, "in_channels": 1}, CASE.state_dict)
    with pytest.raises(ValueError, match=r"unknown AutoencoderKL constructor argument\(s\) \['use_tiling'\]"):
        from_torch("vae", {**kwargs, "use_tiling": True}, CASE.state_dict)
    with pytest.raises(KeyError, match="encoder.down_blocks.0.resnets.1.norm1.weight"):
        from_torch("vae", {**kwargs, "layers_per_block": 2}, CASE.state_dict)
    with pytest.raises(ValueError, match=r"1 state_dict entries were not converted \(decoder.extra\)"):
        from_torch("vae", kwargs, {**CASE.state_dict, "decoder.extra": np.zeros(3)})


# ------------------------------------------------------------------ the real sd-vae-ft-ema tree

SD_VAE_FT_EMA_CONFIG = {  # stabilityai/sd-vae-ft-ema config.json
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def sd_vae_state_dict_shapes(old_attention_names: bool = False) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the sd-vae-ft-ema ``state_dict``, written out from diffusers' module tree."""
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.conv_shortcut", cin, cout, 1)

    def mid(name, c):
        resnet(f"{name}.resnets.0", c, c), resnet(f"{name}.resnets.1", c, c)
        norm(f"{name}.attentions.0.group_norm", c)
        names = ("query", "key", "value", "proj_attn") if old_attention_names else ("to_q", "to_k", "to_v", "to_out.0")
        for lin in names:
            shapes[f"{name}.attentions.0.{lin}.weight"], shapes[f"{name}.attentions.0.{lin}.bias"] = (c, c), (c,)

    conv("encoder.conv_in", 3, 128, 3)
    widths = [128, 256, 512, 512]
    for i, w in enumerate(widths):
        cin = widths[max(i - 1, 0)]
        resnet(f"encoder.down_blocks.{i}.resnets.0", cin, w), resnet(f"encoder.down_blocks.{i}.resnets.1", w, w)
        if i < 3:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", w, w, 3)
    mid("encoder.mid_block", 512)
    norm("encoder.conv_norm_out", 512), conv("encoder.conv_out", 512, 8, 3)
    conv("quant_conv", 8, 8, 1), conv("post_quant_conv", 4, 4, 1)
    conv("decoder.conv_in", 4, 512, 3)
    mid("decoder.mid_block", 512)
    rev = widths[::-1]
    for i, w in enumerate(rev):
        cin = rev[max(i - 1, 0)]
        for j in range(3):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else w, w)
        if i < 3:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", w, w, 3)
    norm("decoder.conv_norm_out", 128), conv("decoder.conv_out", 128, 3, 3)
    return shapes


def test_full_sd_vae_ft_ema_tree_converts():
    shapes = sd_vae_state_dict_shapes(old_attention_names=True)
    size = lambda prefix: sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(prefix))  # noqa: E731
    assert (size(""), size("encoder."), size("decoder.")) == (83_653_863, 34_163_592, 49_490_179)
    assert len(shapes) == 248
    # Zero-stride arrays: the converter reads names and shapes without 83M random floats.
    state_dict = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    module, params = from_torch("vae", SD_VAE_FT_EMA_CONFIG, state_dict)
    assert count_params(params) == 83_653_863
    assert count_params(params["encoder"]) == 34_163_592 and count_params(params["decoder"]) == 49_490_179
    assert params["decoder"]["mid_block"]["attentions_0"]["to_out_0"]["kernel"].shape == (512, 512)
    assert params["encoder"]["down_blocks_1_resnets_0"]["conv_shortcut"]["kernel"].shape == (1, 1, 128, 256)
    assert module.config.downsample_factor == 8 and module.config.scaling_factor == 0.18215


def test_pt_bin_file_converts(tmp_path):
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({k: torch.from_numpy(v) for k, v in CASE.state_dict.items()}, path)
    module, params = from_torch("vae", CASE.meta["constructor"], load_state_dict(path))
    out = module.apply({"params": params}, nchw_to_nhwc(CASE["inputs/z"]) / 0.18215, method="decode")
    CASE.assert_close("decode_z", nhwc_to_nchw(out))
