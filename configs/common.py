"""Config sections shared by the families' config files.

- ``training_defaults(config)``: ``task``, ``training``, ``optimizer``, ``data``, ``checkpoint``,
  ``logging`` and ``mesh`` (the DiT recipe: AdamW lr 1e-4, no weight decay, EMA 0.9999, global
  batch 256); ``jaxlab.train.config.validate`` checks the result.
- ``image_diffusion_config(...)``: a whole class-conditional image-diffusion config (DiT, U-DiT,
  DiC): ``model``, ``diffusion`` (``create_diffusion`` arguments), ``sample`` and the training
  sections, with the ``tiny`` and ``digits`` variant recipes every image family shares.
"""

import ml_collections


def training_defaults(config: ml_collections.ConfigDict, task: str = "diffusion") -> ml_collections.ConfigDict:
    """Adds the training sections to ``config`` (in place) and returns it."""
    config.task = task  # a key of jaxlab.train.task.TASKS or "package.module:factory"

    config.training = ml_collections.ConfigDict(
        dict(
            num_steps=400_000,
            global_batch_size=256,  # over all devices and processes
            ema_decay=0.9999,
        )
    )
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",
            learning_rate=1e-4,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            grad_clip_norm=0.0,  # 0 disables clipping
            schedule="constant",  # or "cosine" (decays to end_learning_rate at num_steps)
            warmup_steps=0,
            end_learning_rate=0.0,
        )
    )
    config.data = ml_collections.ConfigDict(
        dict(
            source="npy",  # digits | tfds | npy | array_record (jaxlab.data.sources)
            path="",  # npy: directory of <field>.npy; array_record: file, glob or directory
            tfds_name="",  # tfds: e.g. imagenet2012, cifar10 (prepared as ArrayRecord)
            tfds_data_dir="",  # tfds: "" = the TFDS default directory
            split="train",
            image_key="image",
            label_key="label",
            image_size=0,  # tfds: centre-crop size; digits: upsampled size; 0 = as stored
            random_flip=False,
            scale=1.0,  # multiplies float "image" fields of npy/array_record (e.g. 0.18215 for raw VAE latents)
            shuffle=True,
            read_threads=-1,  # -1: 0 for in-memory sources, 16 otherwise
            prefetch_buffer_size=256,  # examples
            worker_count=0,  # grain worker processes (decoding-heavy sources)
        )
    )
    config.checkpoint = ml_collections.ConfigDict(
        dict(
            every_steps=5_000,
            keep_last=3,
            keep_every=50_000,  # also keep every K-th step forever; 0 disables
            async_save=True,
            # Resuming with other values of these fields (comma-separated keys or sections, e.g.
            # "optimizer.grad_clip_norm,training.global_batch_size"); see jaxlab.train.run_config.
            allow_config_change="",
        )
    )
    config.logging = ml_collections.ConfigDict(
        dict(
            every_steps=100,
            sample_every_steps=50_000,  # sample grid from the EMA params; 0 disables (a grid is also written at the end)
            tensorboard=True,
            progress_bar=True,  # shown only when stderr is a terminal
            peak_flops_per_device=0.0,  # for MFU; 0 = detect from the device kind (CPU: measured matmul)
        )
    )
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1 = fill
    return config


# ImageNet class labels of DiT's sample.py: the default sampling classes of the paper presets.
DIT_SAMPLE_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)


def image_diffusion_config(
    family: str,
    variant: str,
    model: dict,
    *,
    small: bool = False,
    digits: bool = False,
    digits_steps: int = 4000,
    sampler: str = "ddim",
    num_sampling_steps: int = 50,
    cfg_scale: float = 4.0,
) -> ml_collections.ConfigDict:
    """A complete config for a class-conditional image-diffusion backbone.

    Args:
      family: a ``jaxlab.models`` registry family ("dit", "udit", "dic").
      variant: the variant name (recorded in ``config.variant``).
      model: every field of the family's model config (the official constructor arguments plus
        jaxlab's ``dtype``/``remat``/...).
      small: a CPU-sized latent variant: 10 steps, 4 samples of classes 0-3.
      digits: the pixel-space main job on the embedded handwritten digits (``digits_recipe``),
        ``digits_steps`` training steps long.
      sampler, num_sampling_steps, cfg_scale: the family's sampling defaults.
    """
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model_family = family
    config.seed = 0
    config.model = ml_collections.ConfigDict(model)

    # Training diffusion (create_diffusion arguments; learn_sigma comes from the model).
    config.diffusion = ml_collections.ConfigDict(
        dict(timestep_respacing="", noise_schedule="linear", diffusion_steps=1000, predict_xstart=False,
             sigma_small=False, use_kl=False, rescale_learned_sigmas=False)
    )
    # Sampling (launch/sample.py and the periodic grids of training).
    config.sample = ml_collections.ConfigDict(
        dict(
            sampler=sampler,  # "ddim" or "ddpm"
            num_steps=num_sampling_steps,  # respaced chain length ("ddimN" for DDIM, "N" for DDPM)
            cfg_scale=cfg_scale,  # 1.0 disables classifier-free guidance
            eta=0.0,  # DDIM only
            clip_denoised=False,
            classes=DIT_SAMPLE_CLASSES,
            num_samples=8,
            batch_size=8,
            latent=True,  # outputs are VAE latents (decode with the VAE); False: pixels in [-1, 1]
        )
    )
    training_defaults(config)
    # In-training FID (jaxlab.eval.train_eval): off until every_steps > 0. kind="digits" on the
    # ':digits' configs; kind="inception" with the user's Inception weights and reference mu/sigma.
    config.evals = ml_collections.ConfigDict(
        dict(fid=dict(every_steps=0, num_samples=500, batch_size=250, kind="digits", inception="", reference="",
                      force=False, fid_method="eigh"))
    )
    # DiT's recipe flips horizontally (U-DiT and DiC reuse it). On latent sources the latents are
    # flipped, the usual stand-in for flipping the images before encoding them.
    config.data.random_flip = not (small or digits)
    if small:
        config.sample.update(sampler="ddim", num_steps=10, classes=(0, 1, 2, 3), num_samples=4, batch_size=4)
    if digits:
        digits_recipe(config, digits_steps)
    return config


def digits_recipe(config: ml_collections.ConfigDict, num_steps: int = 4000) -> None:
    """The laptop main job: batch 64 on the 1,797 digits at ``config.model.input_size`` pixels.

    4,000 steps are ~140 epochs. The cosine noise schedule learns faster at this resolution: after
    2,000 steps a DiT's samples are mostly readable and the linear schedule's are not yet (both
    are readable at 4,000).
    """
    config.diffusion.noise_schedule = "squaredcos_cap_v2"
    config.training.update(num_steps=num_steps, global_batch_size=64, ema_decay=0.995)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100)
    config.data.update(source="digits", image_size=config.model.input_size)
    config.checkpoint.update(every_steps=1000, keep_last=2, keep_every=0)
    config.logging.update(every_steps=100, sample_every_steps=1000)
    config.sample.update(
        sampler="ddim", num_steps=50, cfg_scale=4.0, classes=tuple(range(10)), num_samples=40, batch_size=40,
        latent=False, clip_denoised=True,
    )
