"""In-training sample quality: digits FID every N steps on a fixed set of EMA samples.

Switched on by the config section ``evals.fid`` (absent or ``every_steps=0``: off)::

    config.evals = ml_collections.ConfigDict(dict(fid=dict(
        every_steps=500,     # evaluate every N steps (and at the last step); 0 disables
        num_samples=500,     # EMA samples per evaluation; labels cycle through the classes
        batch_size=250,      # samples per sampler call (a multiple of the data-parallel size)
        kind="digits",       # the feature network: "digits" (jaxlab.eval.digits_features)
    )))

e.g. ``--config=configs/dit.py:digits --config.evals.fid.every_steps=500``. The samples use the
run's ``config.sample`` sampler / steps / guidance scale and the same noise at every evaluation
(the key is fixed), so successive numbers differ by the model only. Sampling runs on every
process, each batch sharded over the mesh's data axes and gathered (replicated) at the end;
statistics are host-side float64. The loop logs ``eval/digits_fid``, ``eval/digits_is``,
``eval/digits_precision``, ``eval/digits_recall`` and ``eval/label_accuracy`` to
``metrics.jsonl`` and TensorBoard at the evaluation step.

Only the digits feature network is wired here: an Inception FID during training needs the
user's Inception weights and a reference batch and costs minutes per evaluation on CPU; use
``launch.evaluate`` on saved checkpoints for it.
"""

import dataclasses

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxlab.eval import digits_features as df

KINDS = ("digits",)
DEFAULTS = dict(every_steps=0, num_samples=500, batch_size=250, kind="digits")


@dataclasses.dataclass
class FIDEvaluator:
    """Call ``evaluator(ema_params)`` -> ``{"eval/digits_fid": ..., ...}`` (floats)."""

    every_steps: int
    num_samples: int
    batch_size: int
    sample_fn: object  # jitted (params, labels [B], key) -> images [B, H, W, C], replicated
    labels: np.ndarray
    label_sharding: object
    features: df.DigitsFeatures
    ref_features: dict
    seed: int = 0

    def due(self, step: int, num_steps: int) -> bool:
        return self.every_steps > 0 and (step % self.every_steps == 0 or step == num_steps)

    def samples(self, params) -> np.ndarray:
        key = jax.random.key(self.seed)
        chunks = []
        for start in range(0, self.num_samples, self.batch_size):
            labels = jax.device_put(self.labels[start : start + self.batch_size], self.label_sharding)
            chunks.append(np.asarray(jax.device_get(self.sample_fn(params, labels, jax.random.fold_in(key, start)))))
        return np.concatenate(chunks)

    def __call__(self, params) -> dict[str, float]:
        images = self.samples(params)
        if not np.isfinite(images).all():
            raise FloatingPointError("the EMA samples for the in-training FID are not finite")
        feats = self.features(np.clip(images, -1.0, 1.0))
        scores = df.digits_scores(feats, self.ref_features)
        out = {f"eval/{k}": float(v) for k, v in scores.items() if k.startswith("digits_")}
        out["eval/label_accuracy"] = float((feats["probs"].argmax(-1) == self.labels).mean())
        return out


def check_config(evals) -> dict:
    """The ``evals.fid`` section with defaults filled in; raises naming a bad key."""
    section = dict(DEFAULTS)
    given = dict(evals.get("fid", {}) or {}) if evals is not None else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config.evals.fid; allowed keys: {sorted(DEFAULTS)}")
    section.update(given)
    for key in ("every_steps", "num_samples", "batch_size"):
        if not isinstance(section[key], int) or isinstance(section[key], bool) or section[key] < 0:
            raise ValueError(f"config.evals.fid.{key}={section[key]!r} must be an int >= 0")
    if section["kind"] not in KINDS:
        raise ValueError(f"config.evals.fid.kind={section['kind']!r} is not supported; allowed: {list(KINDS)}")
    if section["every_steps"] and section["num_samples"] < df.FEATURE_DIM:
        raise ValueError(
            f"config.evals.fid.num_samples={section['num_samples']} is below the feature width {df.FEATURE_DIM}: "
            f"the covariance would be singular; use >= {df.FEATURE_DIM} (500 is a good CPU default)"
        )
    if section["every_steps"] and section["num_samples"] % section["batch_size"]:
        raise ValueError(
            f"config.evals.fid.num_samples={section['num_samples']} must be a multiple of batch_size={section['batch_size']}"
        )
    return section


def make_fid_evaluator(config, task, mesh) -> FIDEvaluator | None:
    """The evaluator ``config.evals.fid`` asks for, or None when it is off."""
    section = check_config(config.get("evals"))
    if not section["every_steps"]:
        return None
    from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
    from jaxlab.train import sharding as sh

    model_config = getattr(task, "model_config", None)
    sample_cfg = getattr(task, "sample_cfg", None)
    if model_config is None or sample_cfg is None or not hasattr(task, "diffusion_kwargs"):
        raise ValueError(f"config.evals.fid needs a class-conditional diffusion task; {type(task).__name__} is not one")
    if model_config.in_channels != 1 or getattr(sample_cfg, "latent", False):
        raise ValueError(
            "config.evals.fid.kind='digits' needs a pixel-space one-channel digits model (a ':digits' config); "
            f"this model has in_channels={model_config.in_channels}, latent={getattr(sample_cfg, 'latent', False)}"
        )
    shards = sh.data_parallel_size(mesh)
    if section["batch_size"] % shards:
        raise ValueError(f"config.evals.fid.batch_size={section['batch_size']} must be a multiple of the {shards} data shards")
    diffusion = sampling_diffusion(sample_cfg.sampler, sample_cfg.num_steps, model_config.learn_sigma, **task.diffusion_kwargs)
    sample = make_class_sampler(
        task.module, diffusion, sampler=sample_cfg.sampler, cfg_scale=sample_cfg.cfg_scale, eta=sample_cfg.eta,
        clip_denoised=sample_cfg.clip_denoised,
    )
    features = df.DigitsFeatures()
    real = df.real_digits(model_config.input_size)
    return FIDEvaluator(
        every_steps=section["every_steps"],
        num_samples=section["num_samples"],
        batch_size=section["batch_size"],
        sample_fn=jax.jit(sample, out_shardings=sh.replicated(mesh)),
        labels=(np.arange(section["num_samples"]) % model_config.num_classes).astype(np.int32),
        label_sharding=NamedSharding(mesh, PartitionSpec(sh.BATCH_AXES)),
        features=features,
        ref_features=features(real),
        seed=int(config.get("seed", 0)),
    )


