"""diffusers ``AutoencoderKL`` ``state_dict`` -> Flax params for ``jaxlab.models.vae.AutoencoderKL``.

Flax names are the diffusers module paths with ``_`` for ``.``, blocks flattened one level:
``encoder.down_blocks.1.resnets.0.conv1`` -> ``encoder/down_blocks_1_resnets_0/conv1``,
``decoder.up_blocks.0.upsamplers.0.conv`` -> ``decoder/up_blocks_0_upsamplers_0/conv``,
``decoder.mid_block.attentions.0.to_out.0`` -> ``decoder/mid_block/attentions_0/to_out_0``.
Checkpoints saved before diffusers renamed the attention (``query``/``key``/``value``/
``proj_attn``, e.g. the original sd-vae-ft-ema upload) are read as well, as diffusers' own
``_convert_deprecated_attention_blocks`` does; 1x1-conv attention weights are squeezed.
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlab.convert.common import StateDict, check_against_init
from jaxlab.models.vae import AutoencoderKL, VAEConfig

# The AutoencoderKL constructor arguments (all of them, diffusers 0.42.1); each is a VAEConfig field.
TORCH_KWARGS = (
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor",
    "shift_factor", "latents_mean", "latents_std", "force_upcast", "use_quant_conv", "use_post_quant_conv",
    "mid_block_add_attention",
)
# Old attention names -> the current ones (diffusers renames them the same way at load time).
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> VAEConfig:
    """diffusers ``AutoencoderKL`` kwargs or a ``config.json`` dict (+ jaxlab's ``dtype``) -> ``VAEConfig``.

    Private ``config.json`` entries (``_class_name``, ``_diffusers_version``, ...) are ignored.
    Kwargs left out take the sd-vae-ft-ema ``config.json`` values (``VAEConfig``'s defaults),
    not the bare class defaults (a 1-level toy that no checkpoint uses).
    """
    public = {k: v for k, v in torch_kwargs.items() if not k.startswith("_")}
    unknown = sorted(set(public) - set(TORCH_KWARGS))
    if unknown:
        raise ValueError(f"unknown AutoencoderKL constructor argument(s) {unknown}; diffusers' AutoencoderKL "
                         f"takes {sorted(TORCH_KWARGS)}")
    return VAEConfig.from_dict({**public, **options})


def _rename_deprecated(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in _DEPRECATED_ATTENTION:
            key = ".".join(parts[:-2] + [_DEPRECATED_ATTENTION[parts[-2]], parts[-1]])
            if parts[-1] == "weight" and np.ndim(value) == 4:  # [C, C, 1, 1] 1x1-conv form
                value = np.asarray(value).reshape(np.shape(value)[:2])
        out[key] = value
    return out


def _check_checkpoint(state_dict: Mapping[str, Any], config: VAEConfig) -> None:
    """Names the problem when the weights are not an AutoencoderKL's, or not this config's."""
    if "encoder.conv_in.weight" not in state_dict or "decoder.conv_in.weight" not in state_dict:
        hint = ""
        if any(k.startswith(("x_embedder.", "blocks.", "t_embedder.")) for k in state_dict):
            hint = " It looks like a DiT/U-DiT/DiC checkpoint: convert it with --family=dit (or udit/dic)."
        if any(k.startswith("encoder.down.") for k in state_dict):
            hint = " It is in the original CompVis/ldm layout: use the diffusers release (diffusion_pytorch_model.*)."
        raise ValueError(
            f"not a diffusers AutoencoderKL checkpoint (no encoder.conv_in.weight / decoder.conv_in.weight; "
            f"first keys: {sorted(state_dict)[:4]}).{hint} The SD VAE weights are "
            f"stabilityai/sd-vae-ft-ema (or -mse) diffusion_pytorch_model.safetensors or .bin."
        )
    checks = (
        ("encoder.conv_in.weight", 1, config.in_channels, "in_channels"),
        ("encoder.conv_in.weight", 0, config.block_out_channels[0], "block_out_channels[0]"),
        ("decoder.conv_in.weight", 1, config.latent_channels, "latent_channels"),
        ("decoder.conv_in.weight", 0, config.block_out_channels[-1], "block_out_channels[-1]"),
        ("decoder.conv_out.weight", 0, config.out_channels, "out_channels"),
    )
    for key, axis, want, field in checks:
        got = np.shape(state_dict[key])[axis]
        if got != want:
            raise ValueError(
                f"{key} has {got} channels where the config's {field}={want} needs {want}: the weights belong "
                f"to a different AutoencoderKL; pass its config.json (or set {field}={got})"
            )


def _group_norm(sd: StateDict, prefix: str) -> dict:
    return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def _resnet(sd: StateDict, prefix: str) -> dict:
    out = {
        "norm1": _group_norm(sd, f"{prefix}.norm1"),
        "conv1": sd.conv(f"{prefix}.conv1"),
        "norm2": _group_norm(sd, f"{prefix}.norm2"),
        "conv2": sd.conv(f"{prefix}.conv2"),
    }
    if f"{prefix}.conv_shortcut.weight" in sd:
        out["conv_shortcut"] = sd.conv(f"{prefix}.conv_shortcut")
    return out


def _mid_block(sd: StateDict, prefix: str, attention: bool) -> dict:
    out = {"resnets_0": _resnet(sd, f"{prefix}.resnets.0"), "resnets_1": _resnet(sd, f"{prefix}.resnets.1")}
    if attention:
        a = f"{prefix}.attentions.0"
        out["attentions_0"] = {
            "group_norm": _group_norm(sd, f"{a}.group_norm"),
            "to_q": sd.linear(f"{a}.to_q"),
            "to_k": sd.linear(f"{a}.to_k"),
            "to_v": sd.linear(f"{a}.to_v"),
            "to_out_0": sd.linear(f"{a}.to_out.0"),
        }
    return out


def _encoder(sd: StateDict, config: VAEConfig) -> dict:
    out = {"conv_in": sd.conv("encoder.conv_in")}
    for i in range(len(config.block_out_channels)):
        for j in range(config.layers_per_block):
            out[f"down_blocks_{i}_resnets_{j}"] = _resnet(sd, f"encoder.down_blocks.{i}.resnets.{j}")
        if i < len(config.block_out_channels) - 1:
            out[f"down_blocks_{i}_downsamplers_0"] = {"conv": sd.conv(f"encoder.down_blocks.{i}.downsamplers.0.conv")}
    out["mid_block"] = _mid_block(sd, "encoder.mid_block", config.mid_block_add_attention)
    out["conv_norm_out"] = _group_norm(sd, "encoder.conv_norm_out")
    out["conv_out"] = sd.conv("encoder.conv_out")
    return out


def _decoder(sd: StateDict, config: VAEConfig) -> dict:
    out = {"conv_in": sd.conv("decoder.conv_in")}
    out["mid_block"] = _mid_block(sd, "decoder.mid_block", config.mid_block_add_attention)
    for i in range(len(config.block_out_channels)):
        for j in range(config.layers_per_block + 1):
            out[f"up_blocks_{i}_resnets_{j}"] = _resnet(sd, f"decoder.up_blocks.{i}.resnets.{j}")
        if i < len(config.block_out_channels) - 1:
            out[f"up_blocks_{i}_upsamplers_0"] = {"conv": sd.conv(f"decoder.up_blocks.{i}.upsamplers.0.conv")}
    out["conv_norm_out"] = _group_norm(sd, "decoder.conv_norm_out")
    out["conv_out"] = sd.conv("decoder.conv_out")
    return out


def convert_params(config: VAEConfig, state_dict: Mapping[str, Any]) -> dict:
    """The Flax parameter tree (float32 numpy) of ``state_dict``; every entry must be used."""
    _check_checkpoint(state_dict, config)
    sd = StateDict(_rename_deprecated(state_dict))
    params = {"encoder": _encoder(sd, config), "decoder": _decoder(sd, config)}
    if config.use_quant_conv:
        params["quant_conv"] = sd.conv("quant_conv")
    if config.use_post_quant_conv:
        params["post_quant_conv"] = sd.conv("post_quant_conv")
    sd.finish()
    return params


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[AutoencoderKL, dict]:
    """Builds the AutoencoderKL named by the diffusers kwargs and maps the diffusers weights onto it."""
    config = config_from_torch(torch_kwargs, **options)
    module = AutoencoderKL(config)
    params = convert_params(config, state_dict)
    f = config.downsample_factor
    return module, check_against_init(module, params, jnp.zeros((1, f, f, config.in_channels)))


def config_next_to(checkpoint) -> dict:
    """The diffusers ``config.json`` beside a checkpoint file, or ``{}`` (= the sd-vae-ft-ema config).

    Raises if that ``config.json`` belongs to another class than ``AutoencoderKL``.
    """
    import json
    import pathlib

    path = pathlib.Path(checkpoint)
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        print(f"no config.json next to {path}: using the sd-vae-ft-ema config (block_out_channels 128-512, 4 latents)")
        return {}
    kwargs = json.loads(config.read_text())
    if kwargs.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise ValueError(f"{config} describes a {kwargs['_class_name']}, not an AutoencoderKL; pass the VAE's own "
                         f"config with --torch_config (or remove the file to use the sd-vae-ft-ema config)")
    print(f"read the VAE config from {config}")
    return kwargs
