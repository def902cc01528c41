"""huawei-noah/Pretrained-IPT ``state_dict`` -> Flax params for ``jaxlab.models.ipt.IPT``.

``torch_kwargs`` are the ``option.py`` arguments the official ``ipt(args)`` reads (``scale`` is
the task list, e.g. ``[2]`` for ``IPT_sr2.pt``). The fixed ``sub_mean`` / ``add_mean`` 1x1 convs
are not parameters here: they are checked to be the official mean shift for ``rgb_range``
(identity weight, bias -/+ rgb_range * DIV2K mean), so a checkpoint with other statistics fails
loudly instead of being silently re-centred. ``position_ids`` (an arange buffer) is checked too.
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlab.convert.common import StateDict, check_against_init
from jaxlab.models.ipt import IPT, RGB_MEAN, IPTConfig, upsample_steps

# option.py defaults of the arguments ``ipt(args)`` reads.
TORCH_DEFAULTS: dict[str, Any] = dict(
    n_feats=64,
    n_colors=3,
    rgb_range=255,
    scale=[1],
    patch_size=48,
    patch_dim=3,
    num_heads=12,
    num_layers=12,
    num_queries=1,
    dropout_rate=0.0,
    no_mlp=False,
    pos_every=False,
    no_pos=False,
    no_norm=False,
)


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> IPTConfig:
    """Official ``option.py`` arguments (+ jaxlab option ``dtype``) -> ``IPTConfig``."""
    unknown = sorted(set(torch_kwargs) - set(TORCH_DEFAULTS))
    if unknown:
        raise ValueError(f"unsupported IPT argument(s) {unknown}; the official ipt(args) reads {list(TORCH_DEFAULTS)}")
    fields = {**TORCH_DEFAULTS, **torch_kwargs, **options}
    if isinstance(fields["scale"], str):  # option.py's "2+3+4+1" form
        fields["scale"] = [int(s) for s in fields["scale"].split("+")]
    return IPTConfig.from_dict(fields)


def _check_mean_shift(sd: StateDict, cfg: IPTConfig) -> None:
    mean = np.asarray(RGB_MEAN, np.float32) * cfg.rgb_range
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        if f"{name}.weight" not in sd:
            continue
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        if not np.allclose(w.reshape(cfg.n_colors, cfg.n_colors), np.eye(cfg.n_colors)) or not np.allclose(b, sign * mean, atol=1e-3):
            raise ValueError(
                f"{name} is not the official MeanShift for rgb_range={cfg.rgb_range} (identity weight, bias "
                f"{(sign * mean).round(3).tolist()}), got bias {b.round(3).tolist()}; check --torch_kwargs rgb_range"
            )


def _attention(sd: StateDict, prefix: str, d: int) -> dict:
    w = sd[f"{prefix}.in_proj_weight"]  # [3D, D] = [Wq; Wk; Wv], each [out, in]
    return {
        "q": {"kernel": w[:d].T},
        "k": {"kernel": w[d : 2 * d].T},
        "v": {"kernel": w[2 * d :].T},
        "out": {"kernel": sd[f"{prefix}.out_proj.weight"].T},
    }


def _norm(sd: StateDict, prefix: str) -> dict:
    return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def _layer(sd: StateDict, prefix: str, cfg: IPTConfig, decoder: bool) -> dict:
    d = cfg.embedding_dim
    out = {"self_attn": _attention(sd, f"{prefix}.self_attn", d)}
    out["ffn"] = {"linear1": sd.linear(f"{prefix}.linear1"), "linear2": sd.linear(f"{prefix}.linear2")}
    if decoder:
        out["multihead_attn"] = _attention(sd, f"{prefix}.multihead_attn", d)
    if not cfg.no_norm:
        for k in (1, 2, 3) if decoder else (1, 2):
            out[f"norm{k}"] = _norm(sd, f"{prefix}.norm{k}")
    return out


def _body(sd: StateDict, cfg: IPTConfig) -> dict:
    out: dict[str, Any] = {}
    if not cfg.no_mlp:
        out["linear_encoding"] = sd.linear("body.linear_encoding")
        out["query_embed"] = sd["body.query_embed.weight"]
        out["mlp_head_0"] = sd.linear("body.mlp_head.0")
        out["mlp_head_1"] = sd.linear("body.mlp_head.3")
    if not cfg.no_pos:
        out["pos_embed"] = sd["body.position_encoding.pe.weight"]
        if "body.position_encoding.position_ids" in sd:
            ids = sd["body.position_encoding.position_ids"]
            if not np.array_equal(ids.reshape(-1), np.arange(cfg.num_patches)):
                raise ValueError("body.position_encoding.position_ids is not arange(num_patches); patch_size/patch_dim do not match")
    for i in range(cfg.num_layers):
        out[f"encoder_{i}"] = _layer(sd, f"body.encoder.layers.{i}", cfg, decoder=False)
        out[f"decoder_{i}"] = _layer(sd, f"body.decoder.layers.{i}", cfg, decoder=True)
    return out


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[IPT, dict]:
    """Builds the IPT named by the official arguments and maps the official weights onto it."""
    cfg = config_from_torch(torch_kwargs, **options)
    sd = StateDict(state_dict)
    _check_mean_shift(sd, cfg)
    params: dict[str, Any] = {"body": _body(sd, cfg)}
    for t, s in enumerate(cfg.scale):
        params[f"head_{t}"] = {
            "conv_0": sd.conv(f"head.{t}.0"),
            "res_1": {"conv_0": sd.conv(f"head.{t}.1.body.0"), "conv_1": sd.conv(f"head.{t}.1.body.2")},
            "res_2": {"conv_0": sd.conv(f"head.{t}.2.body.0"), "conv_1": sd.conv(f"head.{t}.2.body.2")},
        }
        # Upsampler's Sequential holds conv, PixelShuffle[, conv, PixelShuffle]: convs at even indices.
        tail = {f"up_{j}": sd.conv(f"tail.{t}.0.{2 * j}") for j in range(len(upsample_steps(s)))}
        tail["conv"] = sd.conv(f"tail.{t}.1")
        params[f"tail_{t}"] = tail
    sd.finish()
    module = IPT(cfg)
    x = jnp.zeros((1, cfg.patch_size, cfg.patch_size, cfg.n_colors))
    return module, check_against_init(module, params, x, 0)
