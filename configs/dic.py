"""DiC configs: ``--config=configs/dic.py:<variant>``.

Variants: the paper's models ``S``, ``B``, ``XL``, ``H`` (DiC-S ... DiC-H on 256x256 ImageNet
SD-VAE latents, 32x32x4, 1000 classes), and ``tiny`` (a small latent model for CPU). The
recipe is DiT's (papers/dic.md): 1000-step linear-schedule Gaussian diffusion with learned
sigma; sampling as the official ``sample_ddp.py``: 250 DDPM steps, guidance scale 1.5. Every
field can be overridden on the command line, e.g. ``--config.sample.num_steps=50``; unknown
keys are rejected.
"""

import ml_collections

from jaxlab.config_utils import pick_variant
from jaxlab.models.dic import PRESETS

# Paper presets, named as on the command line: "XL" is DiC-XL.
_PAPER = {name.removeprefix("DiC-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # One block per stage on 8x8x4 latents (widths 16/32/64): runs anywhere in seconds.
    "tiny": dict(input_size=8, hidden_size=16, depth=(1, 1, 1, 1, 1), num_classes=10),
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    fields = pick_variant("dic", variant, {**_PAPER, **_SMALL}, default="XL")
    config = ml_collections.ConfigDict()
    config.variant = variant or "XL"
    config.model_family = "dic"
    config.seed = 0

    # Architecture: the official DiC constructor arguments (DiC_default's block options)
    # + jaxlab's dtype/remat switches.
    config.model = ml_collections.ConfigDict(
        dict(
            input_size=32,
            in_channels=4,
            hidden_size=384,
            depth=(7, 7, 8, 7, 7),
            mult_channels=(1, 2, 4, 2, 1),
            skip_stride=3,
            class_dropout_prob=0.1,
            num_classes=1000,
            learn_sigma=True,
            blockconfig=0,
            affinef=3,
            actfunc="gelu",
            actf=(1, 1),
            actinada=1,
            num_groups=32,
            min_channels=4,
            dropout=0.0,
            skip_scale=1.0,
            eps=1e-5,
            init_zero=0,
            dtype="float32",
            remat="none",
        )
    )
    config.model.update(fields)

    # Training diffusion (create_diffusion arguments; learn_sigma comes from the model).
    config.diffusion = ml_collections.ConfigDict(
        dict(timestep_respacing="", noise_schedule="linear", diffusion_steps=1000, predict_xstart=False,
             sigma_small=False, use_kl=False, rescale_learned_sigmas=False)
    )

    # Sampling (launch/sample.py): the official sample_ddp.py defaults.
    config.sample = ml_collections.ConfigDict(
        dict(
            sampler="ddpm",  # "ddim" or "ddpm"
            num_steps=250,  # respaced chain length ("ddimN" for DDIM, "N" for DDPM)
            cfg_scale=1.5,  # 1.0 disables classifier-free guidance
            eta=0.0,  # DDIM only
            clip_denoised=False,
            classes=[207, 360, 387, 974, 88, 979, 417, 279],
            num_samples=8,
            batch_size=8,
            latent=True,  # outputs are VAE latents (decode with the VAE); False: pixels in [-1, 1]
        )
    )
    if variant in _SMALL:
        config.sample.sampler = "ddim"
        config.sample.classes = [0, 1, 2, 3]
        config.sample.num_samples = 4
        config.sample.batch_size = 4
        config.sample.num_steps = 10
    return config
