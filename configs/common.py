"""Training sections shared by every family's config: ``training_defaults(config)``.

Adds ``task``, ``training``, ``optimizer``, ``data``, ``checkpoint``, ``logging`` and ``mesh``
(the DiT recipe: AdamW lr 1e-4, no weight decay, EMA 0.9999, global batch 256). Family files
call it once and override what differs; ``jaxlab.train.config.validate`` checks the result.
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
