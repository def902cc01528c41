"""YuchuanTian/U-DiT ``state_dict`` -> Flax params for ``jaxlab.models.udit.UDiT``.

Checkpoints hold the *un-fused* rep-FFN branches (``mlp*.project_in.0/1``, ``mlp*.dwconv.0/1/2``,
``mlp*.project_out.0/1``); they convert one to one, and ``jaxlab.models.udit.reparameterize``
fuses them for inference as the reference's ``eval()`` does. A ``state_dict`` read from the
reference *after* ``model.eval()`` is not a valid checkpoint (that call adds the 3x3/1x1
branches into ``dwconv.0.weight`` in place); nothing here can detect it.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlab.convert.common import StateDict, check_image_backbone, conv_final_layer, stack_layers
from jaxlab.models.udit import STAGE_WIDTH, STAGES, UDiT, UDiTConfig

# Keyword arguments of the official ``U_DiT.__init__`` and the ``DownSample_Attn`` options it
# forwards through ``**kwargs``, with the official defaults (``downsampler`` has none that works).
TORCH_DEFAULTS: dict[str, Any] = dict(
    input_size=32,
    down_factor=2,
    in_channels=4,
    hidden_size=1152,
    depth=[2, 5, 8, 5, 2],
    num_heads=16,
    mlp_ratio=4,
    class_dropout_prob=0.1,
    num_classes=1000,
    learn_sigma=True,
    rep=1,
    ffn_type="rep",
    attn_type=None,
    posemb_type=None,
    down_shortcut=False,
)
TORCH_KWARGS = (*TORCH_DEFAULTS, "downsampler")


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> UDiTConfig:
    """Official ``U_DiT`` kwargs (+ jaxlab options ``dtype``, ``remat``, ``scan_blocks``) -> ``UDiTConfig``."""
    unknown = sorted(set(torch_kwargs) - set(TORCH_KWARGS))
    if unknown:
        raise ValueError(
            f"unsupported U-DiT constructor argument(s) {unknown}; the official U_DiT (with the "
            f"DownSample_Attn options it forwards) takes {list(TORCH_KWARGS)}"
        )
    if torch_kwargs.get("downsampler") is None:
        raise ValueError(
            "the official U_DiT needs downsampler='dwconv<k>' (e.g. 'dwconv5', as in U-DiT-S/B/L); "
            "with downsampler=None the reference cannot be built"
        )
    fields = {**TORCH_DEFAULTS, **torch_kwargs, **options}
    return UDiTConfig.from_dict(fields)


def _conv1x1(sd: StateDict, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
    """A ``[out, in, 1, 1]`` conv -> Dense ``{"kernel": [in, out], "bias": [out]}``."""
    out = sd.conv(prefix, bias=bias)
    out["kernel"] = out["kernel"][0, 0]
    return out


def _ffn(sd: StateDict, prefix: str, cfg: UDiTConfig) -> dict:
    if cfg.ffn_type == "basic":
        return {"fc1": _conv1x1(sd, f"{prefix}.fc1"), "fc2": _conv1x1(sd, f"{prefix}.fc2")}
    if not cfg.rep:
        return {
            "project_in": _conv1x1(sd, f"{prefix}.project_in"),
            "dwconv": sd.conv(f"{prefix}.dwconv"),
            "project_out": _conv1x1(sd, f"{prefix}.project_out"),
        }
    out = {f"dwconv_{i}": sd.conv(f"{prefix}.dwconv.{i}") for i in range(3)}
    for part in ("project_in", "project_out"):
        for i in range(2):
            out[f"{part}_{i}"] = _conv1x1(sd, f"{prefix}.{part}.{i}")
    return out


def _attention(sd: StateDict, prefix: str, cfg: UDiTConfig, width: int) -> dict:
    heads = cfg.num_heads
    head_dim = width // heads
    qkv = sd.linear(f"{prefix}.to_qkv")
    to_out = _conv1x1(sd, f"{prefix}.to_out")
    out = {
        "downsampler": sd.conv(f"{prefix}.downsampler.layer"),
        # [D, 3D] with outputs [q|k|v], each head-major -> [D, 3, heads, head_dim].
        "to_qkv": {
            "kernel": qkv["kernel"].reshape(width, 3, heads, head_dim),
            "bias": qkv["bias"].reshape(3, heads, head_dim),
        },
        # Input channel h*head_dim + e of the 1x1 conv -> [heads, head_dim, D].
        "to_out": {"kernel": to_out["kernel"].reshape(heads, head_dim, width), "bias": to_out["bias"]},
    }
    if cfg.attn_type == "v2":
        out["logit_scale"] = sd[f"{prefix}.logit_scale"].reshape(heads)
    return out


def _block(sd: StateDict, prefix: str, cfg: UDiTConfig, width: int) -> dict:
    return {
        f"sub{s}": {
            "adaLN_modulation": {"linear": sd.linear(f"{prefix}.adaLN_modulation{s}.1")},
            "attn": _attention(sd, f"{prefix}.attn{s}", cfg, width),
            "mlp": _ffn(sd, f"{prefix}.mlp{s}", cfg),
        }
        for s in (1, 2)
    }


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[UDiT, dict]:
    """Builds the U-DiT named by the official kwargs and maps the official weights onto it."""
    cfg = config_from_torch(torch_kwargs, **options)
    sd = StateDict(state_dict)
    params: dict[str, Any] = {"x_embedder": sd.conv("x_embedder.proj")}
    for k in (1, 2, 3):
        params[f"t_embedder_{k}"] = {"mlp_0": sd.linear(f"t_embedder_{k}.mlp.0"), "mlp_2": sd.linear(f"t_embedder_{k}.mlp.2")}
        params[f"y_embedder_{k}"] = {"embedding_table": sd[f"y_embedder_{k}.embedding_table.weight"]}
    for stage, depth, mult in zip(STAGES, cfg.depth, STAGE_WIDTH):
        blocks = [_block(sd, f"{stage}.{i}", cfg, mult * cfg.hidden_size) for i in range(depth)]
        if cfg.scan_blocks and blocks:
            params[stage] = {"block": stack_layers(blocks)}  # the nn.scan layout
        else:
            params.update({f"{stage}_{i}": b for i, b in enumerate(blocks)})
    for name in ("down1_2", "down2_3", "up3_2", "up2_1"):
        params[name] = sd.conv(f"{name}.body.0", bias=False)
    for name in ("reduce_chan_level2", "reduce_chan_level1"):
        params[name] = _conv1x1(sd, name)
    params["output"] = sd.conv("output")
    params["final_layer"] = conv_final_layer(sd)
    sd.finish()
    module = UDiT(cfg)
    return module, check_image_backbone(module, params)
