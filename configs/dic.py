"""DiC configs: ``--config=configs/dic.py:<variant>``.

Variants: the paper's models ``S``, ``B``, ``XL``, ``H`` (DiC-S ... DiC-H on 256x256 ImageNet
SD-VAE latents, 32x32x4, 1000 classes), ``tiny`` (a small latent model for CPU) and ``digits``
(a pixel-space DiC on the embedded handwritten digits upsampled to 16x16, trained by
``launch/train.py`` like DiT's main job). The recipe is DiT's (papers/dic.md): 1000-step
linear-schedule Gaussian diffusion with learned sigma; sampling as the official
``sample_ddp.py``: 250 DDPM steps, guidance scale 1.5. Every field can be overridden on the
command line, e.g. ``--config.sample.num_steps=50``; unknown keys are rejected.
"""

import ml_collections

from configs.common import image_diffusion_config
from jaxlab.config_utils import pick_variant
from jaxlab.models.dic import PRESETS

# Paper presets, named as on the command line: "XL" is DiC-XL.
_PAPER = {name.removeprefix("DiC-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # One block per stage on 8x8x4 latents (widths 16/32/64): runs anywhere in seconds.
    "tiny": dict(input_size=8, hidden_size=16, depth=(1, 1, 1, 1, 1), num_classes=10),
}
_DIGITS = {
    # One block per stage, widths 32/64/128 at 16/8/4 pixels, one channel.
    "digits": dict(input_size=16, in_channels=1, hidden_size=32, depth=(1, 1, 1, 1, 1), num_classes=10),
}

# The official DiC constructor arguments (DiC_default's block options) + jaxlab's dtype/remat/scan switches.
_MODEL = dict(
    input_size=32, in_channels=4, hidden_size=384, depth=(7, 7, 8, 7, 7), mult_channels=(1, 2, 4, 2, 1),
    skip_stride=3, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, cfg_channels=0, blockconfig=0, affinef=3,
    actfunc="gelu", actf=(1, 1), actinada=1, num_groups=32, min_channels=4, dropout=0.0, skip_scale=1.0,
    eps=1e-5, init_zero=0, dtype="float32", remat="none", scan_blocks=False,
)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "XL"
    fields = pick_variant("dic", variant, {**_PAPER, **_SMALL, **_DIGITS}, default="XL")
    return image_diffusion_config(
        "dic", variant, {**_MODEL, **fields}, small=variant in _SMALL, digits=variant in _DIGITS,
        digits_steps=3000, sampler="ddpm", num_sampling_steps=250, cfg_scale=1.5,
    )
