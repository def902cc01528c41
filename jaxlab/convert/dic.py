"""YuchuanTian/DiC ``state_dict`` -> Flax params for ``jaxlab.models.dic.DiC``.

Flax names mirror the official module paths with ``_`` for ``.`` (the ``U_Block.conv``
wrapper level dropped): ``enc_blocks.0.2.conv.conv0`` -> ``enc_blocks_0_2/conv0``,
``downs.1.body.0`` -> ``downs_1``, ``t_embedder_ls.2.mlp.0`` -> ``t_embedder_2/mlp_0``.
Pixel (un)shuffle keeps PyTorch's channel order, so convolutions need only OIHW -> HWIO.
"""

from collections.abc import Mapping
from typing import Any

from jaxlab.convert.common import StateDict, check_image_backbone, conv_final_layer, stack_layers
from jaxlab.models.dic import DiC, DiCConfig, stage_plan

# Keyword arguments of the official ``DiC.__init__`` (and the ``UNetBlock`` kwargs it forwards)
# that change the network, with their jaxlab field of the same name.
TORCH_KWARGS = (
    "input_size",
    "in_channels",
    "hidden_size",
    "depth",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
    "mult_channels",
    "skip_stride",
    "blockconfig",
    "affinef",
    "actfunc",
    "actf",
    "actinada",
    "num_groups",
    "min_channels",
    "dropout",
    "skip_scale",
    "eps",
    "init_zero",
)
# Accepted and ignored: the official code takes them but never uses them ("affine" only
# matters for the LayerNorm block norms, which are not supported here).
UNUSED_TORCH_KWARGS = ("num_heads", "mlp_ratio", "rep", "ffn_type", "block_type", "affine")
# The only block norm this converter supports (the one every named config uses).
_NORM_KWARGS = ("norm_type", "norm_type1")


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> DiCConfig:
    """Official ``DiC`` kwargs (+ jaxlab options ``dtype``, ``remat``, ``scan_blocks``) -> ``DiCConfig``.

    Kwargs left out take ``DiC_default``'s values (the named configs' ``mult_channels``,
    ``skip_stride``, block options) and ``DiC.__init__``'s (``in_channels=4``,
    ``class_dropout_prob=0.1``, ``learn_sigma=True``). Flags are read as the reference reads
    them: ``actfunc`` other than ``"gelu"`` is SiLU; ``actf``/``actinada``/``init_zero`` by truth.
    """
    known = TORCH_KWARGS + UNUSED_TORCH_KWARGS + _NORM_KWARGS
    unknown = sorted(set(torch_kwargs) - set(known))
    if unknown:
        raise ValueError(f"unknown DiC constructor argument(s) {unknown}; the official DiC takes {sorted(known)}")
    for key in _NORM_KWARGS:
        if torch_kwargs.get(key, "gnorm") != "gnorm":
            raise ValueError(
                f"{key}={torch_kwargs[key]!r} is not supported: jaxlab's DiC implements the GroupNorm "
                f"blocks ('gnorm') that every official DiC config uses"
            )
    fields = {k: v for k, v in torch_kwargs.items() if k in TORCH_KWARGS}
    if "actfunc" in fields:
        fields["actfunc"] = "gelu" if fields["actfunc"] == "gelu" else "silu"
    if "actf" in fields:
        fields["actf"] = tuple(int(bool(a)) for a in fields["actf"])
    for key in ("actinada", "init_zero"):
        if key in fields:
            fields[key] = int(bool(fields[key]))
    if "learn_sigma" in fields:
        fields["learn_sigma"] = bool(fields["learn_sigma"])
    return DiCConfig.from_dict({**fields, **options})


def _group_norm(sd: StateDict, prefix: str) -> dict:
    return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def _block(sd: StateDict, prefix: str, has_skip: bool) -> dict:
    out = {
        "norm0": _group_norm(sd, f"{prefix}.norm0"),
        "conv0": sd.conv(f"{prefix}.conv0"),
        "affine": sd.linear(f"{prefix}.affine.1"),
        "norm1": _group_norm(sd, f"{prefix}.norm1"),
        "conv1": sd.conv(f"{prefix}.conv1"),
    }
    if has_skip:
        out["skip"] = sd.conv(f"{prefix}.skip")
    return out


def _torch_stage_prefix(name: str) -> str:
    """``enc_blocks_1`` -> ``enc_blocks.1``."""
    kind, index = name.rsplit("_", 1)
    return f"{kind}.{index}"


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[DiC, dict]:
    """Builds the DiC named by the official kwargs and maps the official weights onto it."""
    config = config_from_torch(torch_kwargs, **options)
    sd = StateDict(state_dict)
    params = {"x_embedder": sd.conv("x_embedder.proj")}
    for i in range(config.levels):
        params[f"t_embedder_{i}"] = {
            "mlp_0": sd.linear(f"t_embedder_ls.{i}.mlp.0"),
            "mlp_2": sd.linear(f"t_embedder_ls.{i}.mlp.2"),
        }
        params[f"y_embedder_{i}"] = {"embedding_table": sd[f"y_embedder_ls.{i}.embedding_table.weight"]}
    for stage in stage_plan(config):
        torch_stage = _torch_stage_prefix(stage.name)
        blocks = [_block(sd, f"{torch_stage}.{b}.conv", stage.block_in_channels(b) != stage.width)
                  for b in range(stage.depth)]
        if stage.scanned(config):
            params[stage.name] = {"block": stack_layers(blocks)}  # the nn.scan layout
        else:
            params.update({f"{stage.name}_{b}": block for b, block in enumerate(blocks)})
    for k in range(config.levels - 1):
        params[f"downs_{k}"] = sd.conv(f"downs.{k}.body.0", bias=False)
        params[f"ups_{k}"] = sd.conv(f"ups.{k}.body.0", bias=False)
    params["output"] = sd.conv("output")
    params["final_layer"] = conv_final_layer(sd)
    sd.finish()
    module = DiC(config)
    return module, check_image_backbone(module, params)
