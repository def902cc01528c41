"""``QuantConfig``: what a post-training quantisation recipe does, and the method presets.

Choices where HTG's paper body was unreadable (see docs/htg.md for the alternatives):

- quantised: the four linears of every block (qkv, attention out-projection, fc1, fc2; their
  inputs quantised per tensor, statically, per timestep group; weights per output channel).
  Patch/timestep/label embedders, adaLN linears (opt-in: ``quantize_adaln``), the final layer
  and the attention matmuls (QK^T, softmax x V) stay float32.
- smoothed (shift + scale folded away): qkv and fc1 (folded into the adaLN modulation) and the
  out-projection (folded into the V projection). fc2's post-GELU input has no linear-only
  predecessor to fold into: it is quantised with its own asymmetric per-group range.
- defaults: weights symmetric (no zero-point correction in the int8 matmul), activations
  asymmetric (the zero point absorbs what the shift leaves).

Presets (``METHODS``):

- ``htg``: grouped shift (G = T/10 adjacent-merge clusters of the shift vectors), EMA-max
  SmoothQuant scale (alpha 0.99), per-group activation ranges (the shift's groups), MSE weights.
- ``minmax``: no shift/scale, one activation range over all steps, min-max weights.
- ``smoothquant``: SmoothQuant scale (alpha 0.5, max over all steps), one activation range,
  min-max weights.
- ``ptq4dit-lite``: PTQ4DiT's channel-wise salience balancing with Spearman-guided temporal
  aggregation, folded like HTG's scale, one activation range, MSE weights; without PTQ4DiT's
  block reconstruction (20k iterations/block) and without quantised attention matmuls.
"""

import dataclasses

from jaxlab.quant.grouping import METHODS as GROUPINGS
from jaxlab.quant.quantizers import check_bits
from jaxlab.quant.smoothing import SCALES

SHIFTS = ("none", "step", "group")
WEIGHT_SEARCHES = ("mse", "minmax")


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Attributes:
      method: preset name recorded with the result.
      weight_bits, act_bits: 2..8 (int8 containers; 4-bit weights are packed two per byte on disk).
      weight_symmetric, act_symmetric: zero point 0 (symmetric) or asymmetric.
      weight_search: per-output-channel range: "mse" grid search or "minmax".
      shift: "none", "step" (z_t per sampling step) or "group" (z_g, the group mean).
      scale: "none", "ema" (HTG), "max" (SmoothQuant), "ssc" (PTQ4DiT).
      num_groups: G; 0 = T // 10 (HTG's default).
      act_groups: "shift" (activation ranges per shift group) or "one" (one range for all steps).
      grouping: "agglomerative" (HTG) or "optimal" (DP, an alternative).
      alpha: EMA factor of the "ema" scale.
      quantize_adaln: also quantise the adaLN linears' inputs (SiLU(c)) and weights.
    """

    method: str = "htg"
    weight_bits: int = 8
    act_bits: int = 8
    weight_symmetric: bool = True
    act_symmetric: bool = False
    weight_search: str = "mse"
    shift: str = "group"
    scale: str = "ema"
    num_groups: int = 0
    act_groups: str = "shift"
    grouping: str = "agglomerative"
    alpha: float = 0.99
    quantize_adaln: bool = False

    def validate(self) -> "QuantConfig":
        check_bits(self.weight_bits, "weight")
        check_bits(self.act_bits, "activation")
        for name, allowed in (("shift", SHIFTS), ("scale", SCALES), ("weight_search", WEIGHT_SEARCHES),
                              ("grouping", GROUPINGS), ("act_groups", ("shift", "one"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed values: {list(allowed)}")
        if not isinstance(self.num_groups, int) or self.num_groups < 0:
            raise ValueError(f"num_groups={self.num_groups!r} must be an int >= 0 (0 = T // 10)")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1) (HTG: 0.99)")
        return self


METHODS = {
    "htg": dict(shift="group", scale="ema", act_groups="shift", weight_search="mse"),
    "minmax": dict(shift="none", scale="none", act_groups="one", weight_search="minmax"),
    "smoothquant": dict(shift="none", scale="max", act_groups="one", weight_search="minmax"),
    "ptq4dit-lite": dict(shift="none", scale="ssc", act_groups="one", weight_search="mse"),
}


def method_config(method: str, **overrides) -> QuantConfig:
    """The preset ``method`` with ``overrides`` (any ``QuantConfig`` field), validated."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed values: {list(METHODS)}")
    return QuantConfig(method=method, **{**METHODS[method], **overrides}).validate()
