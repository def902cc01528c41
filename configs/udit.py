"""U-DiT configs: ``--config=configs/udit.py:<variant>``.

Variants: the paper's models ``S``, ``B``, ``L`` (U-DiT-S/B/L on 256x256 ImageNet latents,
32x32x4; for 512px set ``--config.model.input_size=64``), ``tiny`` (a small latent model for
CPU) and ``digits`` (a pixel-space U-DiT on the embedded 8x8 handwritten digits, trained by
``launch/train.py`` like DiT's main job). Every field can be overridden on the command line,
e.g. ``--config.sample.num_steps=50``; unknown keys are rejected.

The paper's recipe is DiT's: Gaussian diffusion with 1000 linear-beta steps, learned sigma
(hybrid loss), epsilon prediction; AdamW, constant lr 1e-4, no weight decay, global batch 256,
EMA 0.9999, horizontal flips, 400K steps. Evaluation samples with 250 DDPM steps, with cfg 1.5
in the guided table (the official ``sample_ddp.py`` defaults).
"""

import ml_collections

from configs.common import image_diffusion_config
from jaxlab.config_utils import pick_variant
from jaxlab.models.udit import PRESETS

# Paper presets, named as on the command line: "B" is U-DiT-B.
_PAPER = {name.removeprefix("U-DiT-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # One block per stage, width 32, on 8x8x4 latents, with every paper option: runs anywhere in seconds.
    "tiny": dict(PRESETS["U-DiT-S"], input_size=8, hidden_size=32, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=10),
}
_DIGITS = {
    # The tiny architecture on the raw 8x8 one-channel digits (stages at 8, 4 and 2 pixels).
    "digits": dict(_SMALL["tiny"], in_channels=1),
}

# The official U_DiT constructor arguments (its defaults, with the named configs' downsampler)
# + jaxlab's dtype/remat/scan switches.
_MODEL = dict(
    input_size=32, down_factor=(2, 2, 2, 2, 2), in_channels=4, hidden_size=96, depth=(2, 5, 8, 5, 2), num_heads=4,
    mlp_ratio=2.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, cfg_channels=0, rep=True, ffn_type="rep",
    attn_type="v2", posemb_type="rope2d", downsampler="dwconv5", down_shortcut=True, dtype="float32", remat="none", scan_blocks=False,
)


def _typed(fields: dict) -> dict:
    """Preset kwargs (official spelling: ints for flags, one down factor) in the types of ``config.model``."""
    out = dict(fields)
    for key in ("rep", "down_shortcut"):
        if key in out:
            out[key] = bool(out[key])
    if "mlp_ratio" in out:
        out["mlp_ratio"] = float(out["mlp_ratio"])
    if isinstance(out.get("down_factor"), int):
        out["down_factor"] = (out["down_factor"],) * 5
    return out


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "S"
    fields = pick_variant("udit", variant, {**_PAPER, **_SMALL, **_DIGITS}, default="S")
    return image_diffusion_config(
        "udit", variant, {**_MODEL, **_typed(fields)}, small=variant in _SMALL, digits=variant in _DIGITS,
        digits_steps=2000, sampler="ddpm", num_sampling_steps=250, cfg_scale=1.5,
    )
