"""Class-conditional image (or latent) diffusion as a training ``Task``, for any DiT-like backbone.

The backbone is ``config.model_family`` + ``config.model`` built through the model registry; it
must take ``module(x [N, H, W, C], t [N], y [N], train=...)`` with label dropout on the
``"dropout"`` rng (the null class for classifier-free guidance) and have a config with
``input_size``, ``in_channels``, ``num_classes``, ``learn_sigma`` and ``class_dropout_prob``.
The loss is DiT's: ``t`` uniform over the diffusion steps, Gaussian noise, and the mean over
the batch of ``GaussianDiffusion.training_losses`` (MSE, plus the variational bound when the
variance is learned).

Batches: ``{"image": [B, H, W, C] float32, "label": [B] int32}``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config_utils import to_dict
from jaxlab.diffusion import create_diffusion
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.models.common import check_labels
from jaxlab.models.registry import get_family


def check_dataset_labels(labels, num_classes: int) -> None:
    """Raises, naming ``config.model.num_classes``, unless every dataset label is in ``[0, num_classes)``."""
    try:
        check_labels(np.asarray(labels), num_classes, allow_null=False)
    except ValueError as e:
        raise ValueError(f"{e}; config.model.num_classes={num_classes} must cover the dataset's labels") from None


class DiffusionTask:
    """``init_params`` / ``loss_fn`` for DiT-style training, plus sampling for progress grids."""

    def __init__(self, family: str, model_config, diffusion_kwargs: dict | None = None, sample_cfg=None):
        self.family = family
        self.model_config = model_config
        self.module = get_family(family).module(model_config)
        kwargs = {k: v for k, v in (diffusion_kwargs or {}).items() if k != "learn_sigma"}
        self.diffusion_kwargs = kwargs
        self.diffusion = create_diffusion(learn_sigma=model_config.learn_sigma, **kwargs)
        self.sample_cfg = sample_cfg

    @classmethod
    def from_config(cls, config) -> "DiffusionTask":
        family = get_family(config.model_family)
        model_config = family.config.from_dict(to_dict(config.model))
        sample_cfg = config.get("sample") if hasattr(config, "get") else None
        return cls(config.model_family, model_config, to_dict(config.diffusion), sample_cfg)

    # ---------------------------------------------------------------- Task protocol

    def init_params(self, rng: jax.Array, batch) -> dict:
        x, y = batch["image"], batch["label"]
        t = jnp.zeros(y.shape, jnp.int32)
        param_rng, dropout_rng = jax.random.split(rng)
        variables = self.module.init({"params": param_rng, "dropout": dropout_rng}, x, t, y, train=False)
        return variables["params"]

    def loss_fn(self, params, batch, rng: jax.Array):
        x, y = batch["image"], batch["label"]
        t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        t = jax.random.randint(t_rng, y.shape, 0, self.diffusion.num_timesteps)
        noise = jax.random.normal(noise_rng, x.shape, jnp.float32)

        def model_fn(x_t, t_model, y):
            return self.module.apply({"params": params}, x_t, t_model, y, train=True, rngs={"dropout": dropout_rng})

        terms = self.diffusion.training_losses(model_fn, x, t, noise, model_kwargs={"y": y})
        metrics = {name: value.mean() for name, value in terms.items() if name != "loss"}
        return terms["loss"].mean(), metrics

    # ---------------------------------------------------------------- optional hooks

    def model_spec(self):
        return self.family, self.model_config

    def check_batch(self, batch) -> None:
        """Labels of a host batch within ``[0, num_classes)`` (the null class is the model's own)."""
        check_dataset_labels(batch["label"], self.model_config.num_classes)

    @property
    def grid_columns(self) -> int:
        classes = list(self.sample_cfg.classes) if self.sample_cfg is not None else []
        return len(classes) if classes and self.sample_cfg.num_samples % len(classes) == 0 else 0

    def sample(self, params, rng: jax.Array) -> jax.Array:
        """``sample.num_samples`` images ``[N, H, W, C]`` in [-1, 1] for ``sample.classes`` (cycled).

        Latent models (``sample.latent``) show latent channels 0-2, min-max scaled to [-1, 1].
        """
        cfg = self.sample_cfg
        if cfg is None:
            raise ValueError("this DiffusionTask has no sample config (config.sample)")
        diffusion = sampling_diffusion(cfg.sampler, cfg.num_steps, self.model_config.learn_sigma, **self.diffusion_kwargs)
        sampler = make_class_sampler(
            self.module, diffusion, sampler=cfg.sampler, cfg_scale=cfg.cfg_scale, eta=cfg.eta,
            clip_denoised=cfg.clip_denoised,
        )
        labels = jnp.asarray(np.resize(np.asarray(cfg.classes, np.int32), cfg.num_samples))
        images = sampler(params, labels, rng)
        if cfg.latent:
            view = images[..., :3]
            lo, hi = view.min(), view.max()
            return (view - lo) / jnp.maximum(hi - lo, 1e-6) * 2.0 - 1.0
        return images if images.shape[-1] in (1, 3) else images[..., :3]
