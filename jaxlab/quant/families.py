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
- **DiC**: refused (``family_plan``). Its blocks are 3x3 convolutions; the only linears are the
  per-block ``affine`` modulation layers, which read the conditioning vector, not the image
  activations, so quantising them alone would leave the whole compute path in float32. An
  int8 conv needs a conv quantiser whose zero-point correction depends on the pixel position
  (zero padding of an asymmetric input): not built.

``quantize_adaln`` adds the blocks' adaLN linears (DiT, U-DiT) to the quantised layers.
"""

import dataclasses

from jaxlab.quant.calibration import ADALN, BLOCK_LINEARS, DIT_BLOCK_PATTERN

UDIT_LINEARS = ("attn/to_qkv", "attn/to_out", "mlp/project_in_0", "mlp/project_in_1", "mlp/project_out_0",
                "mlp/project_out_1", "mlp/project_in", "mlp/project_out", "mlp/fc1", "mlp/fc2")
UDIT_BLOCK_PATTERN = r"(encoder_level_\d|latent|decoder_level_\d)_\d+/sub\d/"


@dataclasses.dataclass(frozen=True)
class FamilyPlan:
    """``targets``: linear path suffixes quantised; ``block_pattern``: regex a block's path starts
    with; ``smoothing``: "folded" (``folding.build_quantized``) or "unfused" (``unfused.build_unfused``)."""

    family: str
    targets: tuple[str, ...]
    block_pattern: str
    smoothing: str

    def calibration_targets(self, quantize_adaln: bool) -> tuple[str, ...]:
        return self.targets + ((ADALN,) if quantize_adaln else ())


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
        raise ValueError(
            "DiC is not supported: its blocks are 3x3 convolutions and jaxlab.quant quantises linears; DiC's only "
            "block linears are the 'affine' modulation layers, which read the conditioning vector, so the image "
            "compute path would stay float32 (see docs/htg.md, 'What is quantised')"
        )
    raise ValueError(f"{type(module).__name__} is not supported: jaxlab.quant quantises DiT and U-DiT (see docs/htg.md)")
