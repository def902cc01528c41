"""U-DiT configs: ``--config=configs/udit.py:<variant>``.

Variants: the paper's models ``S``, ``B``, ``L`` (U-DiT-S/B/L on 256x256 ImageNet latents,
32x32x4; for 512px set ``--config.model.input_size=64``), and ``tiny`` (a small latent model
for CPU). Every field can be overridden on the command line, e.g.
``--config.sample.num_steps=50``; unknown keys are rejected.

The paper's recipe is DiT's: Gaussian diffusion with 1000 linear-beta steps, learned sigma
(hybrid loss), epsilon prediction (``diffusion`` below); AdamW, constant lr 1e-4, no weight
decay, global batch 256, EMA 0.9999, horizontal flips, 400K steps. Evaluation samples with
250 DDPM steps, with cfg 1.5 in the guided table (the official ``sample_ddp.py`` defaults,
``sample`` below).
"""

import ml_collections

from jaxlab.config_utils import pick_variant
from jaxlab.models.udit import PRESETS

# Paper presets, named as on the command line: "B" is U-DiT-B.
_PAPER = {name.removeprefix("U-DiT-"): fields for name, fields in PRESETS.items()}
_SMALL = {
    # One block per stage, width 32, on 8x8x4 latents, with every paper option: runs anywhere in seconds.
    "tiny": dict(PRESETS["U-DiT-S"], input_size=8, hidden_size=32, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=10),
}


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
    fields = pick_variant("udit", variant, {**_PAPER, **_SMALL}, default="S")
    config = ml_collections.ConfigDict()
    config.variant = variant or "S"
    config.model_family = "udit"
    config.seed = 0

    # Architecture: the official U_DiT constructor arguments + jaxlab's dtype/remat switches.
    config.model = ml_collections.ConfigDict(
        dict(
            input_size=32,
            down_factor=(2, 2, 2, 2, 2),  # per stage [enc1, enc2, latent, dec2, dec1]
            in_channels=4,
            hidden_size=96,
            depth=(2, 5, 8, 5, 2),
            num_heads=4,
            mlp_ratio=2.0,
            class_dropout_prob=0.1,
            num_classes=1000,
            learn_sigma=True,
            rep=True,
            ffn_type="rep",
            attn_type="v2",
            posemb_type="rope2d",
            downsampler="dwconv5",
            down_shortcut=True,
            dtype="float32",
            remat="none",
        )
    )
    config.model.update(_typed(fields))

    # Training diffusion (create_diffusion arguments; learn_sigma comes from the model).
    config.diffusion = ml_collections.ConfigDict(
        dict(timestep_respacing="", noise_schedule="linear", diffusion_steps=1000, predict_xstart=False,
             sigma_small=False, use_kl=False, rescale_learned_sigmas=False)
    )

    # Sampling (launch/sample.py and periodic training samples): sample_ddp.py's defaults.
    config.sample = ml_collections.ConfigDict(
        dict(
            sampler="ddpm",  # "ddim" or "ddpm"
            num_steps=250,  # respaced chain length ("ddimN" for DDIM, "N" for DDPM)
            cfg_scale=1.5,  # 1.0 disables classifier-free guidance (the paper's main tables use 1.0)
            eta=0.0,  # DDIM only
            clip_denoised=False,
            classes=(207, 360, 387, 974, 88, 979, 417, 279),  # the labels of DiT sample.py
            num_samples=8,
            batch_size=8,
            latent=True,  # outputs are VAE latents (decode with the VAE); False: pixels in [-1, 1]
        )
    )
    if variant in _SMALL:
        config.sample.sampler = "ddim"
        config.sample.classes = (0, 1, 2, 3)
        config.sample.num_samples = 4
        config.sample.batch_size = 4
        config.sample.num_steps = 10
    return config
