"""What ``jaxlab.quant`` quantises in each model family, and how the smoothing reaches the layer.

- **DiT** (``smoothing="folded"``): every block's qkv, attention out-projection, fc1 and fc2. The
  shifts and scales of qkv, fc1 and the out-projection are folded exactly into the adaLN
  modulation and the V projection (``jaxlab.quant.folding``): inference costs nothing extra.
- **U-DiT** (``smoothing="unfused"``): every linear of every block's two sub-layers: the
  attention's ``to_qkv`` and ``to_out``, and the FFN's 1x1 projections (``project_in_0/1``,
  ``project_out_0/1`` of the rep FFN; ``project_in``/``project_out`` once fused; ``fc1``/``fc2``
  of an MLP FFN). The folding does not apply: ``to_qkv`` reads a zero-padded depthwise conv of
  the modulated input (+ the identity shortcut), and ``conv(x - z) != conv(x) - z * sum(kernel)``
  on the border pixels, so a shift in the adaLN bias would change the model. The same HTG
  shift/scale/groups are therefore applied *unfused* (``jaxlab.quant.unfused``): the layer
  subtracts its group's shift ``z_g`` and multiplies by ``1/s`` before quantising its input
  (one subtract and one multiply per input element, not free), the kernel is ``diag(s) W``
  and the bias ``b + z_g W`` (exact in float). The FFN's depthwise convs, the level
  down/up-sampling convs, the ``reduce_chan`` linears between levels, embedders and the final
  layer stay float32.
- **DiC** (``smoothing="unfused"``): every block's two 3x3 convs (``conv0``, ``conv1``) and its
  1x1 ``skip`` conv where the block changes width (decoder blocks that take a concatenated
  skip), as linears over their zero-padded patches (``jaxlab.quant.conv``); HTG's shift/scale
  applied unfused like U-DiT's (folding fails for the same border reason: the convs pad with
  zeros). The stem (``x_embedder``), the down/up-sampling convs, the ``output`` conv, the
  GroupNorms, embedders and final layer stay float32; the blocks' ``affine`` modulation
  linears are the adaLN linears of ``quantize_adaln``.

``quantize_adaln`` adds the blocks' adaLN linears (DiT, U-DiT; DiC's ``affine``) to the quantised layers.
"""

import dataclasses

from jaxlab.quant.calibration import ADALN, BLOCK_LINEARS, DIT_BLOCK_PATTERN

UDIT_LINEARS = ("attn/to_qkv", "attn/to_out", "mlp/project_in_0", "mlp/project_in_1", "mlp/project_out_0",
                "mlp/project_out_1", "mlp/project_in", "mlp/project_out", "mlp/fc1", "mlp/fc2")
UDIT_BLOCK_PATTERN = r"(encoder_level_\d|latent|decoder_level_\d)_\d+/sub\d/"
DIC_CONVS = ("conv0", "conv1", "skip")
DIC_ADALN = "affine"
DIC_BLOCK_PATTERN = r"(enc|lat|dec)_blocks_\d+_\d+/"


@dataclasses.dataclass(frozen=True)
class FamilyPlan:
    """``targets``: path suffixes of the quantised layers; ``block_pattern``: regex a block's path
    starts with; ``smoothing``: "folded" (``folding.build_quantized``) or "unfused"
    (``unfused.build_unfused``); ``adaln``: path suffix of the blocks' modulation linear
    (``quantize_adaln``); ``convs``: the targets that are ``nn.Conv`` layers (``jaxlab.quant.conv``)."""

    family: str
    targets: tuple[str, ...]
    block_pattern: str
    smoothing: str
    adaln: str = ADALN
    convs: tuple[str, ...] = ()

    def calibration_targets(self, quantize_adaln: bool) -> tuple[str, ...]:
        return self.targets + ((self.adaln,) if quantize_adaln else ())


def family_plan(module) -> FamilyPlan:
    """The plan for ``module``'s family; a clear error for a family that cannot be quantised."""
    from jaxlab.models.dic import DiC
    from jaxlab.models.dit import DiT
    from jaxlab.models.udit import UDiT

    if isinstance(module, DiT):
        return FamilyPlan("dit", BLOCK_LINEARS, DIT_BLOCK_PATTERN, "folded")
    if isinstance(module, UDiT):
        return FamilyPlan("udit", UDIT_LINEARS, UDIT_BLOCK_PATTERN, "unfused")
    if isinstance(module, DiC):
        return FamilyPlan("dic", DIC_CONVS, DIC_BLOCK_PATTERN, "unfused", DIC_ADALN, DIC_CONVS)
    raise ValueError(f"{type(module).__name__} is not supported: jaxlab.quant quantises DiT, U-DiT and DiC "
                     f"(see docs/htg.md)")
