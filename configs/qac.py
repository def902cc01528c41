"""QAC configs (issue 20): ``--config=configs/qac.py:<variant>``.

Variants so far:
- ``digits-baseline``: the EDM baseline of the CPU comparison: an unconditional pixel-space DiT
  (``configs/dit.py:digits``'s size: 16x16x1, 4x4 patches, width 128, depth 4) trained with
  EDM's preconditioning and loss (``jaxlab.diffusion.edm_task.EDMTask``) on the embedded digits.

- ``digits-qac``: the same backbone and recipe trained jointly with QAC's condition encoder
  (``jaxlab.diffusion.qac_task.QACTask``): binary code of 2 tokens x 4 bits (256 codes), encoder
  width 16 (~1% of the denoiser), the code added to the timestep embedding; sampling draws codes
  from the training set's codes (``prior="empirical"``) or a small autoregressive prior (``"ar"``).

Not yet here (see docs/qac.md): the ``cifar10-*`` / ``ffhq64-*`` / ``afhqv2-64-*`` presets. The training recipe (batch 64, lr 1e-3 with 100 warmup steps, EMA
0.995, 4,000 steps) is the DiT digits job's, a choice for CPU, not a recipe from QAC or EDM.
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
    # EDM (Karras et al. 2022) defaults; the sampler fields set the progress grids' solver.
    config.edm = ml_collections.ConfigDict(
        dict(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0, p_mean=-1.2, p_std=1.2, c_noise_scale=1.0,
             use_labels=fields["use_labels"], solver="heun", nfe=35, num_samples=40)
    )
    if fields.get("qac"):
        config.qac = ml_collections.ConfigDict(_QAC)
        training_defaults(config, task="jaxlab.diffusion.qac_task:QACTask.from_config")
    else:
        training_defaults(config, task="jaxlab.diffusion.edm_task:EDMTask.from_config")
    config.training.update(num_steps=4000, global_batch_size=64, ema_decay=0.995)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
    config.data.update(source="digits", image_size=config.model.input_size, random_flip=False)
    config.checkpoint.update(every_steps=1000, keep_last=2, keep_every=0)
    config.logging.update(every_steps=100, sample_every_steps=1000)
    return config
