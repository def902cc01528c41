"""QAC configs (issue 20): ``--config=configs/qac.py:<variant>``.

Variants:
- ``digits-baseline``: the EDM baseline of the CPU comparison: an unconditional pixel-space DiT
  (``configs/dit.py:digits``'s size: 16x16x1, 4x4 patches, width 128, depth 4) trained with
  EDM's preconditioning and loss (``jaxlab.diffusion.edm_task.EDMTask``) on the embedded digits.
- ``digits-qac``: the same backbone and recipe trained jointly with QAC's condition encoder
  (``jaxlab.diffusion.qac_task.QACTask``): binary code of 2 tokens x 4 bits (256 codes), encoder
  width 16 (18,144 parameters, 1.4% of the denoiser), the code added to the timestep embedding; sampling draws codes
  from the training set's codes (``prior="empirical"``) or a small autoregressive prior (``"ar"``).
  The digits recipe (batch 64, lr 1e-3 with 100 warmup steps, EMA 0.995, 4,000 steps) is the DiT
  digits job's, a choice for CPU, not a recipe from QAC or EDM.
- ``cifar10-{baseline,qac}`` (32x32x3, tfds ``cifar10``), ``ffhq64-{baseline,qac}`` and
  ``afhqv2-64-{baseline,qac}`` (64x64x3 ArrayRecord files, ``--config.data.path``): QAC's three
  benchmarks at EDM's sizes for an accelerator. EDM trains DDPM++ (~56M parameters) on them;
  jaxlab has no DDPM++ U-Net, so the backbone is a DiT of about that size (width 512, depth 12,
  8 heads: 57.6M; 2x2 patches at 32, 4x4 at 64, 256 tokens each) - a substitution, not EDM's
  network. EDM's recipe where it applies: batch 512, lr 1e-3 (CIFAR-10) / 2e-4 (64x64),
  EMA 0.9993 (a per-step stand-in for EDM's 0.5 Mimg half-life at batch 512), x-flips,
  200 Mimg (CIFAR-10, 390k steps) / 200 Mimg (64x64). The encoder width keeps it near 1%.
  These presets are lowered and instantiated in tests, never trained here.
"""

import ml_collections

from configs.common import training_defaults
from jaxlab.config_utils import pick_variant

_DIGITS_DIT = dict(
    input_size=16, patch_size=4, in_channels=1, hidden_size=128, depth=4, num_heads=4, mlp_ratio=4.0,
    num_classes=1, class_dropout_prob=0.0, learn_sigma=False, dtype="float32", remat="none", scan_blocks=False,
)

_VARIANTS = {
    "digits-baseline": dict(model_family="dit", model=_DIGITS_DIT, use_labels=False),
    "digits-qac": dict(model_family="dit", model=_DIGITS_DIT, use_labels=False, qac=True),
}

# DiT stand-ins for EDM's ~56M DDPM++ (see the module docstring).
_EDM_SIZE = dict(_DIGITS_DIT, hidden_size=512, depth=12, num_heads=8, in_channels=3)
_PAPER = {
    "cifar10": dict(model=dict(_EDM_SIZE, input_size=32, patch_size=2), lr=1e-3, encoder_width=64,
                    data=dict(source="tfds", tfds_name="cifar10", image_size=32, random_flip=True)),
    "ffhq64": dict(model=dict(_EDM_SIZE, input_size=64, patch_size=4), lr=2e-4, encoder_width=32,
                   data=dict(source="array_record", image_size=64, random_flip=True)),
    "afhqv2-64": dict(model=dict(_EDM_SIZE, input_size=64, patch_size=4), lr=2e-4, encoder_width=32,
                      data=dict(source="array_record", image_size=64, random_flip=True)),
}
for _name, _fields in _PAPER.items():
    for _kind in ("baseline", "qac"):
        _VARIANTS[f"{_name}-{_kind}"] = dict(model_family="dit", use_labels=False, qac=_kind == "qac", paper=True,
                                             **_fields)

# QAC's code and encoder (choices, not the paper's: see jaxlab/diffusion/qac.py and docs/qac.md).
_QAC = dict(quantizer="binary", code_tokens=2, bits=4, fsq_levels=(5, 3), encoder_width=16, injection="embedding",
            prior="empirical", prior_steps=500, prior_hidden=64)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    fields = pick_variant("qac", variant, _VARIANTS, default="digits-baseline")
    config = ml_collections.ConfigDict()
    config.variant = variant or "digits-baseline"
    config.model_family = fields["model_family"]
    config.seed = 0
    config.model = ml_collections.ConfigDict(fields["model"])
    # EDM (Karras et al. 2022) defaults; the sampler fields (solver, nfe, num_samples and the few-NFE
    # switches schedule / final_denoise / afs of jaxlab.diffusion.edm.SamplingOptions) set the progress
    # grids' and launch.sample's solver.
    config.edm = ml_collections.ConfigDict(
        dict(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0, p_mean=-1.2, p_std=1.2, c_noise_scale=1.0,
             use_labels=fields["use_labels"], solver="heun", nfe=35, num_samples=40,
             schedule="polynomial", final_denoise=True, afs=False)
    )
    if fields.get("qac"):
        config.qac = ml_collections.ConfigDict(_QAC)
        training_defaults(config, task="jaxlab.diffusion.qac_task:QACTask.from_config")
    else:
        training_defaults(config, task="jaxlab.diffusion.edm_task:EDMTask.from_config")
    if fields.get("paper"):
        # 4 tokens x 8 bits (256 values per token): more code for the richer datasets (a choice).
        if fields.get("qac"):
            config.qac.update(code_tokens=4, bits=8, encoder_width=fields["encoder_width"], prior="ar")
        config.training.update(num_steps=390_000, global_batch_size=512, ema_decay=0.9993)
        config.optimizer.update(learning_rate=fields["lr"], warmup_steps=5000)
        config.data.update(**fields["data"])
        config.checkpoint.update(every_steps=10_000, keep_last=3, keep_every=100_000)
        config.logging.update(every_steps=100, sample_every_steps=10_000)
        return config
    config.training.update(num_steps=4000, global_batch_size=64, ema_decay=0.995)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
    config.data.update(source="digits", image_size=config.model.input_size, random_flip=False)
    config.checkpoint.update(every_steps=1000, keep_last=2, keep_every=0)
    config.logging.update(every_steps=100, sample_every_steps=1000)
    return config
