"""In-training sample quality: FID every N steps on a fixed set of EMA samples.

Switched on by the config section ``evals.fid`` (absent or ``every_steps=0``: off)::

    config.evals = ml_collections.ConfigDict(dict(fid=dict(
        every_steps=500,     # evaluate every N steps (and at the last step); 0 disables
        num_samples=500,     # EMA samples per evaluation; labels cycle through the classes
        batch_size=250,      # samples per sampler call (a multiple of the data-parallel size)
        kind="digits",       # the feature network: "digits" or "inception"
        inception="",        # kind="inception": pytorch-fid's .pth or a launch.convert directory
        reference="",        # kind="inception": .npz with the reference "mu" [2048] and "sigma" [2048, 2048]
        force=False,         # kind="inception": allow num_samples < 2048 (biased, unstable FID)
        fid_method="eigh",   # kind="inception": metrics.frechet_distance method ("sqrtm" is ADM's)
    )))

e.g. ``--config=configs/dit.py:digits --config.evals.fid.every_steps=500``. The samples use the
run's ``config.sample`` sampler / steps / guidance scale and the same noise at every evaluation
(the key is fixed), so successive numbers differ by the model only. Sampling runs on every
process, each batch sharded over the mesh's data axes and gathered (replicated) at the end;
statistics are host-side float64; the loop's writer logs on process 0 only.

``kind="digits"`` (``jaxlab.eval.digits_features``; one-channel pixel-space ``:digits`` models)
logs ``eval/digits_fid``, ``eval/digits_is``, ``eval/digits_precision``, ``eval/digits_recall``
and ``eval/label_accuracy``.

``kind="inception"`` (the ADM FID Inception of ``jaxlab.eval.inception``; pixel-space models with
1 or 3 channels) logs ``eval/fid`` (pool3 Fréchet distance against the reference file's
``mu``/``sigma``, as ADM uses its reference batches' stored statistics) and
``eval/inception_score``. The samples are quantised to uint8 as DiT's ``sample_ddp.py`` does and go
through ADM's resize to 299. The reference is any ``.npz`` holding ``mu`` and ``sigma`` of pool3
features: ADM's reference batches, pytorch-fid's ``--save-stats`` files, or
``launch.evaluate --write_stats`` for your own data. Fewer than 2048 samples are refused unless
``force`` (the covariance is singular below pool3's width). ``fid_method`` defaults to "eigh":
the same trace as ADM's ``sqrtm`` to float64 round-off on well-conditioned statistics, several
times faster at 2048 dimensions and never complex, so a forced small-sample evaluation cannot
stop the run; "sqrtm" gives ADM's computation. Latent models (``config.sample.latent``) are
refused: the in-training evaluator does not decode latents with a VAE; sample a checkpoint with
``launch.sample --vae=...`` and run ``launch.evaluate`` instead.
"""

import dataclasses
import pathlib
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxlab.eval import digits_features as df
from jaxlab.eval import metrics

KINDS = ("digits", "inception")
DEFAULTS = dict(every_steps=0, num_samples=500, batch_size=250, kind="digits", inception="", reference="",
                force=False, fid_method="eigh")


@dataclasses.dataclass
class FIDEvaluator:
    """Call ``evaluator(ema_params)`` -> ``{"eval/...": float}`` (``score``'s metrics of fixed-noise samples)."""

    every_steps: int
    num_samples: int
    batch_size: int
    sample_fn: object  # jitted (params, labels [B], key) -> images [B, H, W, C], replicated
    labels: np.ndarray
    label_sharding: object
    score: Callable[[np.ndarray, np.ndarray], dict]  # (images [N, H, W, C] in [-1, 1], labels [N]) -> metrics
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
        return self.score(np.clip(images, -1.0, 1.0), self.labels)


@dataclasses.dataclass
class DigitsScorer:
    """Digits FID / IS / precision / recall / label accuracy against all real digits."""

    features: df.DigitsFeatures
    ref_features: dict

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        feats = self.features(images)
        scores = df.digits_scores(feats, self.ref_features)
        out = {f"eval/{k}": float(v) for k, v in scores.items() if k.startswith("digits_")}
        out["eval/label_accuracy"] = float((feats["probs"].argmax(-1) == labels).mean())
        return out


@dataclasses.dataclass
class InceptionScorer:
    """Inception (pool3) FID against stored reference statistics, and the Inception Score."""

    features: object  # jaxlab.eval.inception.InceptionFeatures
    mu: np.ndarray  # [2048] float64
    sigma: np.ndarray  # [2048, 2048] float64
    fid_method: str = "eigh"

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from jaxlab.eval.inception import to_uint8_range

        feats = self.features(to_uint8_range(images, "-1,1"))
        mu, sigma = metrics.feature_statistics(feats["pool3"])
        return {
            "eval/fid": metrics.frechet_distance(mu, sigma, self.mu, self.sigma, method=self.fid_method),
            "eval/inception_score": metrics.inception_score(feats["probs"]),
        }


def load_reference_stats(path: str | pathlib.Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [dim], sigma [dim, dim])`` float64 from an ``.npz`` with ``mu`` and ``sigma``; raises naming the fix."""
    how = ("pass an .npz holding the reference pool3 statistics 'mu' and 'sigma': an ADM reference batch (e.g. "
           "VIRTUAL_imagenet256_labeled.npz), a pytorch-fid --save-stats file, or one written for your data by "
           "`python -m launch.evaluate --samples=<real images> --write_stats=ref.npz --inception=...`")
    if not path:
        raise ValueError(f"config.evals.fid.kind='inception' needs config.evals.fid.reference; {how}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config.evals.fid.reference={str(path)!r} does not exist; {how}")
    try:
        data = np.load(path)
    except Exception as e:  # not a zip/npy file
        raise ValueError(f"config.evals.fid.reference={str(path)!r} is not a NumPy .npz file ({e}); {how}") from None
    with data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"{path} has no {missing} (it holds {data.files}); {how}")
        mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise ValueError(
            f"{path} holds mu {mu.shape} and sigma {sigma.shape}, but the FID Inception's pool3 features are {dim}-d "
            f"(mu ({dim},), sigma ({dim}, {dim})): these statistics come from another feature network or layer; {how}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu/sigma contain NaN or inf; rewrite the reference statistics")
    return mu, sigma


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
    if section["fid_method"] not in metrics.FID_METHODS:
        raise ValueError(f"config.evals.fid.fid_method={section['fid_method']!r}; use one of {list(metrics.FID_METHODS)}")
    if not section["every_steps"]:
        return section
    if section["kind"] == "digits" and section["num_samples"] < df.FEATURE_DIM:
        raise ValueError(
            f"config.evals.fid.num_samples={section['num_samples']} is below the feature width {df.FEATURE_DIM}: "
            f"the covariance would be singular; use >= {df.FEATURE_DIM} (500 is a good CPU default)"
        )
    if section["kind"] == "inception":
        if section["num_samples"] < 2:
            raise ValueError(f"config.evals.fid.num_samples={section['num_samples']}: statistics need at least 2 samples")
        try:
            metrics.check_sample_count(section["num_samples"], force=bool(section["force"]), what="the in-training FID")
        except metrics.FIDError as e:
            raise metrics.FIDError(f"{e} (config.evals.fid.num_samples / config.evals.fid.force=True)") from None
    if section["num_samples"] % section["batch_size"]:
        raise ValueError(
            f"config.evals.fid.num_samples={section['num_samples']} must be a multiple of batch_size={section['batch_size']}"
        )
    return section


def _digits_scorer(model_config, sample_cfg) -> DigitsScorer:
    if model_config.in_channels != 1 or getattr(sample_cfg, "latent", False):
        raise ValueError(
            "config.evals.fid.kind='digits' needs a pixel-space one-channel digits model (a ':digits' config); "
            f"this model has in_channels={model_config.in_channels}, latent={getattr(sample_cfg, 'latent', False)}"
        )
    features = df.DigitsFeatures()
    return DigitsScorer(features=features, ref_features=features(df.real_digits(model_config.input_size)))


def _inception_scorer(section: dict, model_config, sample_cfg) -> InceptionScorer:
    from jaxlab.eval.inception import InceptionFeatures, load_inception
    from jaxlab.models.inception_fid import POOL3_DIM

    if getattr(sample_cfg, "latent", False):
        raise ValueError(
            "config.evals.fid.kind='inception' scores images, but this model samples VAE latents "
            "(config.sample.latent=True) and the in-training evaluator does not decode them; evaluate saved "
            "checkpoints with `launch.sample --vae=...` and `launch.evaluate` instead"
        )
    if model_config.in_channels not in (1, 3):
        raise ValueError(f"config.evals.fid.kind='inception' needs 1- or 3-channel images; the model has "
                         f"in_channels={model_config.in_channels}")
    mu, sigma = load_reference_stats(section["reference"], POOL3_DIM)  # before loading the 95 MB weights
    if not section["inception"]:
        raise FileNotFoundError(
            "config.evals.fid.kind='inception' needs config.evals.fid.inception: pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth or a `launch.convert --family=inception_fid` directory"
        )
    module, params = load_inception(section["inception"])
    return InceptionScorer(InceptionFeatures(module, jax.device_put(params), batch_size=min(64, section["batch_size"])),
                          mu, sigma, section["fid_method"])


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
    shards = sh.data_parallel_size(mesh)
    if section["batch_size"] % shards:
        raise ValueError(f"config.evals.fid.batch_size={section['batch_size']} must be a multiple of the {shards} data shards")
    if section["kind"] == "digits":
        score = _digits_scorer(model_config, sample_cfg)
    else:
        score = _inception_scorer(section, model_config, sample_cfg)
    diffusion = sampling_diffusion(sample_cfg.sampler, sample_cfg.num_steps, model_config.learn_sigma, **task.diffusion_kwargs)
    sample = make_class_sampler(
        task.module, diffusion, sampler=sample_cfg.sampler, cfg_scale=sample_cfg.cfg_scale, eta=sample_cfg.eta,
        clip_denoised=sample_cfg.clip_denoised,
    )
    return FIDEvaluator(
        every_steps=section["every_steps"],
        num_samples=section["num_samples"],
        batch_size=section["batch_size"],
        sample_fn=jax.jit(sample, out_shardings=sh.replicated(mesh)),
        labels=(np.arange(section["num_samples"]) % model_config.num_classes).astype(np.int32),
        label_sharding=NamedSharding(mesh, PartitionSpec(sh.BATCH_AXES)),
        score=score,
        seed=int(config.get("seed", 0)),
    )
