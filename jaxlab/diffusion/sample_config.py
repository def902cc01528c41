"""The ``sample`` section of the image-diffusion configs, checked before any work.

Read by ``launch/sample.py`` and by the training loop's sample grids (``jaxlab.train.config``
checks it with the rest of the config, so a bad value fails at start, not at the first grid).
"""

import math

import numpy as np

from jaxlab.config_utils import check_choice, check_positive
from jaxlab.diffusion.sampling import SAMPLERS

# key -> type the value must have (bool is not accepted where int/float is).
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "sampler": str, "num_steps": int, "cfg_scale": (int, float), "eta": (int, float), "clip_denoised": bool,
    "classes": (tuple, list), "num_samples": int, "batch_size": int, "latent": bool,
}


def validate_sample_config(sample, num_classes: int | None = None) -> None:
    """Raises ValueError naming the bad ``config.sample.<key>`` and the fix.

    ``num_classes`` (the model's) bounds ``classes`` when given.
    """
    unknown = sorted(set(sample) - set(SCHEMA))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config.sample; allowed keys: {sorted(SCHEMA)}")
    missing = sorted(set(SCHEMA) - set(sample))
    if missing:
        raise ValueError(f"config.sample lacks {missing}; start from configs.common.image_diffusion_config")
    for key, expected in SCHEMA.items():
        types = expected if isinstance(expected, tuple) else (expected,)
        value = sample[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValueError(f"config.sample.{key}={value!r} must be {' or '.join(t.__name__ for t in types)}")
    check_choice("sample.sampler", sample.sampler, SAMPLERS)
    for key in ("num_steps", "num_samples", "batch_size"):
        check_positive(f"sample.{key}", sample[key])
    if not (math.isfinite(sample.cfg_scale) and sample.cfg_scale >= 1.0):
        raise ValueError(f"config.sample.cfg_scale={sample.cfg_scale} must be >= 1 and finite (1 disables guidance)")
    if not (math.isfinite(sample.eta) and sample.eta >= 0.0):
        raise ValueError(f"config.sample.eta={sample.eta} must be a finite number >= 0 (DDIM's eta; 0 is deterministic)")
    classes = list(sample.classes)
    if not classes:
        raise ValueError("config.sample.classes is empty; give at least one class label, e.g. (0, 1, 2)")
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in classes):
        raise ValueError(f"config.sample.classes={tuple(classes)} must be integer class labels")
    if num_classes is not None and (min(classes) < 0 or max(classes) >= num_classes):
        raise ValueError(
            f"config.sample.classes={tuple(classes)}: class label out of range for the model's classes "
            f"[0, {num_classes - 1}]; pick labels below config.model.num_classes={num_classes}"
        )
