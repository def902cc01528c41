"""DiT configs: ``--config=configs/dit.py:<variant>``.

Variants: the paper's presets ``S-2 ... XL-8`` (256x256 ImageNet latents, 32x32x4),
``tiny`` (a small latent model for CPU) and ``digits`` (a pixel-space DiT on the embedded
handwritten digits, upsampled to 16x16: trains on a laptop CPU in minutes). Every field can be
overridden on the command line, e.g. ``--config.sample.num_steps=250``; unknown keys are rejected.

Training sections (``training``, ``optimizer``, ``data``, ``checkpoint``, ``logging``, ``mesh``)
come from ``configs/common.py`` with the DiT recipe; the paper presets read precomputed VAE
latents (``--config.data.path``, see docs/training.md).
"""

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant
from jaxlab.models.dit import PRESETS

# Paper presets, named as on the command line: "XL-2" is DiT-XL/2.
_PAPER = {name.removeprefix("DiT-").replace("/", "-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # A 2-block model on 8x8x4 latents: runs anywhere in seconds.
    "tiny": dict(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10),
}
_PIXEL = {
    # Pixel-space DiT on the embedded 8x8 digits upsampled to 16x16, one channel, 10 classes;
    # 4x4 patches (16 tokens) keep a step cheap enough for a laptop CPU.
    "digits": dict(input_size=16, patch_size=4, in_channels=1, hidden_size=128, depth=4, num_heads=4, num_classes=10),
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    fields = pick_variant("dit", variant, {**_PAPER, **_SMALL, **_PIXEL}, default="XL-2")
    config = ml_collections.ConfigDict()
    config.variant = variant or "XL-2"
    config.model_family = "dit"
    config.seed = 0

    # Architecture: the official DiT constructor arguments + jaxlab's dtype/remat/scan switches.
    config.model = ml_collections.ConfigDict(
        dict(
            input_size=32,
            patch_size=2,
            in_channels=4,
            hidden_size=1152,
            depth=28,
            num_heads=16,
            mlp_ratio=4.0,
            class_dropout_prob=0.1,
            num_classes=1000,
            learn_sigma=True,
            dtype="float32",
            remat="none",
            scan_blocks=False,
        )
    )
    config.model.update(fields)

    # Training diffusion (create_diffusion arguments; learn_sigma comes from the model).
    config.diffusion = ml_collections.ConfigDict(
        dict(timestep_respacing="", noise_schedule="linear", diffusion_steps=1000, predict_xstart=False,
             sigma_small=False, use_kl=False, rescale_learned_sigmas=False)
    )

    # Sampling (launch/sample.py and periodic training samples).
    config.sample = ml_collections.ConfigDict(
        dict(
            sampler="ddim",  # "ddim" or "ddpm"
            num_steps=50,  # respaced chain length ("ddimN" for DDIM, "N" for DDPM)
            cfg_scale=4.0,  # 1.0 disables classifier-free guidance
            eta=0.0,  # DDIM only
            clip_denoised=False,
            classes=(207, 360, 387, 974, 88, 979, 417, 279),  # the labels of DiT sample.py
            num_samples=8,
            batch_size=8,
            latent=True,  # outputs are VAE latents (decode with the VAE); False: pixels in [-1, 1]
        )
    )
    if variant in _SMALL:
        config.sample.classes = (0, 1, 2, 3)
        config.sample.num_samples = 4
        config.sample.batch_size = 4
        config.sample.num_steps = 10

    # Training: the DiT recipe (AdamW 1e-4, no weight decay, EMA 0.9999, batch 256) on latents.
    training_defaults(config)
    if variant in _PIXEL:
        _digits_training(config)
    return config


def _digits_training(config: ml_collections.ConfigDict) -> None:
    """The laptop main job: 4,000 steps of batch 64 (~140 epochs of the digits) on 2 CPU cores.

    The cosine noise schedule learns faster at this resolution: after 2,000 steps its samples are
    mostly readable and the linear schedule's are not yet (both are readable at 4,000).
    """
    config.diffusion.noise_schedule = "squaredcos_cap_v2"
    config.training.update(num_steps=4000, global_batch_size=64, ema_decay=0.995)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
    config.data.update(source="digits", image_size=16)
    config.checkpoint.update(every_steps=1000, keep_last=2, keep_every=0)
    config.logging.update(every_steps=100, sample_every_steps=1000)
    config.sample.update(
        sampler="ddim", num_steps=50, cfg_scale=4.0, classes=tuple(range(10)), num_samples=40, batch_size=40,
        latent=False, clip_denoised=True,
    )
