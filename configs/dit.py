"""DiT configs: ``--config=configs/dit.py:<variant>``.

Variants: the paper's presets ``S-2 ... XL-8`` (256x256 ImageNet latents, 32x32x4; the paper
presets read precomputed VAE latents, ``--config.data.path``, see docs/training.md), ``tiny``
(a small latent model for CPU) and ``digits`` (a pixel-space DiT on the embedded handwritten
digits, upsampled to 16x16: the README's main job, minutes on a laptop CPU). Every field can
be overridden on the command line, e.g. ``--config.sample.num_steps=250``; unknown keys are
rejected. Sampling defaults: DDIM-50 with guidance 4 (DiT's sample.py uses DDPM-250).
"""

import ml_collections

from configs.common import image_diffusion_config
from jaxlab.config_utils import pick_variant
from jaxlab.models.dit import PRESETS

# Paper presets, named as on the command line: "XL-2" is DiT-XL/2.
_PAPER = {name.removeprefix("DiT-").replace("/", "-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # A 2-block model on 8x8x4 latents: runs anywhere in seconds.
    "tiny": dict(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10),
}
_DIGITS = {
    # Pixel-space DiT on the embedded 8x8 digits upsampled to 16x16, one channel, 10 classes;
    # 4x4 patches (16 tokens) keep a step cheap enough for a laptop CPU.
    "digits": dict(input_size=16, patch_size=4, in_channels=1, hidden_size=128, depth=4, num_heads=4, num_classes=10),
}

# The official DiT constructor arguments (its defaults) + jaxlab's dtype/remat/scan switches.
_MODEL = dict(
    input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
    class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, cfg_channels=0, dtype="float32", remat="none", scan_blocks=False,
)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "XL-2"
    fields = pick_variant("dit", variant, {**_PAPER, **_SMALL, **_DIGITS}, default="XL-2")
    return image_diffusion_config(
        "dit", variant, {**_MODEL, **fields}, small=variant in _SMALL, digits=variant in _DIGITS,
    )
