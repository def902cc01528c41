"""Encode an image dataset to SD-VAE latents: ArrayRecord shards a latent model trains from.

  python -m launch.encode --config=configs/dit.py:XL-2 --vae=/tmp/sd_vae \
      --images=/data/imagenet/train --output=/data/imagenet256_latents
  python -m launch.encode --config=configs/dit.py:XL-2 --vae=/tmp/sd_vae --output=/data/in256_latents \
      --config.data.source=tfds --config.data.tfds_name=imagenet2012 --config.data.tfds_data_dir=/data/tfds
  python -m launch.train --config=configs/dit.py:XL-2 --config.data.source=array_record \
      --config.data.path=/data/imagenet256_latents --workdir=...

Images (an ``ImageFolder`` directory with ``--images``, or the config's tfds dataset) are
ADM/DiT centre-cropped to ``model.input_size * f`` pixels (``f`` = the VAE's downsampling
factor, 8: 256 for XL-2), encoded, and a posterior sample times ``scaling_factor`` is stored (the
fast-DiT ``extract_features.py`` convention, so ``config.data.scale`` stays 1): one ``.npz``
record ``{"image": [h, w, 4] float32, "label": int32}`` per example, ``--examples_per_shard``
per file ``latents-SSSSS-of-NNNNN.array_record``.

Resumable: a shard is written to ``<name>.tmp`` and renamed when complete, and a rerun skips
the finished ones (``encode.json`` records the run's settings; a rerun with other settings is
refused). Shards are dealt to processes round-robin: with ``--distributed`` (the same command on
every host of a TPU pod / SLURM job) or ``--worker=i/N`` (N independent processes, no
coordination needed); each batch is split over the process's local devices. Example ``i``'s posterior draw uses the key
``fold_in(seed, i)``, so the output does not depend on batching, devices or restarts.

``--hflip``: ``none``; ``random`` (fast-DiT: each image flipped with probability 1/2, decided
by the seed and its index); ``both`` (two examples per image, as is and flipped; train with
``--config.data.random_flip=False`` then).
"""

import dataclasses
import json
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from jaxlab.data import records
from jaxlab.data.image_folder import check_rgb, image_folder_spec, scan_image_folder
from jaxlab.data.sources import build_source
from jaxlab.diffusion.latents import make_latent_encoder
from .latents import load_vae

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<variant> of the latent model", lock_config=True)
_VAE = flags.DEFINE_string("vae", None, "converted SD VAE (launch.convert --family=vae)", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "directory for the ArrayRecord shards", required=True)
_IMAGES = flags.DEFINE_string("images", None, "image folder (<root>/<class>/<image>); default: the config's tfds dataset")
_HFLIP = flags.DEFINE_enum("hflip", "none", ["none", "random", "both"], "horizontal flips of the encoded images")
_CONVERT_RGB = flags.DEFINE_bool("convert_rgb", False, "convert non-RGB images (grayscale, CMYK) instead of failing")
_BATCH = flags.DEFINE_integer("batch_size", 32, "images per encode step (a multiple of the local device count)")
_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 10_000, "examples per ArrayRecord file")
_SEED = flags.DEFINE_integer("seed", 0, "posterior-sampling (and --hflip=random) seed")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() (TPU pods, SLURM); shards go round-robin to its processes")
_WORKER = flags.DEFINE_string("worker", None, "i/N: worker i of N independent processes sharing --output (instead of --distributed)")
_STOP = flags.DEFINE_integer("stop_after_shards", 0, "stop after writing this many shards (0: all); rerun to continue")

SETTINGS = "encode.json"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which examples go where: example ``i`` is source item ``i // copies``, flipped per ``hflip``."""

    num_images: int
    hflip: str
    examples_per_shard: int
    seed: int

    @property
    def num_examples(self) -> int:
        return self.num_images * (2 if self.hflip == "both" else 1)

    @property
    def num_shards(self) -> int:
        return -(-self.num_examples // self.examples_per_shard)

    def shard_name(self, shard: int) -> str:
        return f"latents-{shard:05d}-of-{self.num_shards:05d}.array_record"

    def shard_examples(self, shard: int) -> range:
        start = shard * self.examples_per_shard
        return range(start, min(start + self.examples_per_shard, self.num_examples))

    def image_and_flip(self, example: int) -> tuple[int, bool]:
        if self.hflip == "both":
            return example // 2, bool(example % 2)
        if self.hflip == "random":
            return example, bool(np.random.default_rng([self.seed, example]).random() < 0.5)
        return example, False


def image_size_for(model_cfg, vae_cfg, configured: int) -> int:
    """``input_size * f``; a configured ``data.image_size`` must agree (and be divisible by ``f``)."""
    f = vae_cfg.downsample_factor
    if configured and configured % f:
        raise ValueError(
            f"config.data.image_size={configured} is not divisible by the VAE's downsampling factor {f}; "
            f"use a multiple of {f} (or 0: model.input_size * {f})"
        )
    size = model_cfg.input_size * f
    if configured and configured != size:
        raise ValueError(
            f"config.data.image_size={configured} gives {configured // f}x{configured // f} latents, but the model "
            f"takes input_size={model_cfg.input_size}: use --config.data.image_size={size} (or 0)"
        )
    if vae_cfg.latent_channels != model_cfg.in_channels:
        raise ValueError(f"the VAE makes {vae_cfg.latent_channels}-channel latents but the model takes "
                         f"in_channels={model_cfg.in_channels}; use the VAE the model was trained with")
    return size


def prepare_output(output: pathlib.Path, settings: dict) -> None:
    """Creates ``output`` with ``encode.json``, or checks that a rerun has the same settings."""
    meta = output / SETTINGS
    if meta.exists():
        previous = json.loads(meta.read_text())
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(
                f"{output} holds shards of an encode run with other settings ({changed} differ); resume with the "
                f"same flags or choose a new --output"
            )
        return
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"--output {output} exists and is not a launch.encode output; choose a new directory")
    output.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(settings, indent=2))


def encode_shards(spec, plan: Plan, vae, vae_params, output: pathlib.Path, *, batch_size: int,
                  process_index: int = 0, process_count: int = 1, stop_after: int = 0, log=print) -> int:
    """Writes this process's missing shards; returns how many it wrote."""
    devices = jax.local_devices()
    if batch_size % len(devices):
        raise ValueError(f"--batch_size={batch_size} must be a multiple of the {len(devices)} local devices")
    mesh = Mesh(np.asarray(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    vae_params = jax.device_put(vae_params, NamedSharding(mesh, PartitionSpec()))  # replicated once, not per call
    encode = make_latent_encoder(vae)
    base_key = jax.random.key(plan.seed)
    mine = [s for s in range(plan.num_shards) if s % process_count == process_index]
    todo = [s for s in mine if not (output / plan.shard_name(s)).exists()]
    log(f"{plan.num_examples} examples in {plan.num_shards} shards; this process: {len(mine)} shards, "
        f"{len(mine) - len(todo)} already written")
    written, done_examples, start = 0, 0, time.perf_counter()

    def load(example):
        index, flip = plan.image_and_flip(example)
        item = spec.decode(spec.source[index]) if spec.decode else spec.source[index]
        image = item["image"][:, ::-1] if flip else item["image"]
        return np.ascontiguousarray(image, np.float32), np.int32(item["label"])

    with ThreadPoolExecutor(16) as pool:
        for shard in todo:
            if stop_after and written >= stop_after:
                log(f"stopped after {written} shards (--stop_after_shards); rerun the same command to continue")
                break
            examples = list(plan.shard_examples(shard))
            latents, labels = [], []
            for i in range(0, len(examples), batch_size):
                batch = examples[i : i + batch_size]
                loaded = list(pool.map(load, batch))
                images = np.stack([im for im, _ in loaded])
                pad = batch_size - len(batch)  # one compiled shape: pad the last batch
                images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
                keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(batch + [0] * pad))
                z = np.asarray(encode(vae_params, jax.device_put(images, sharding), jax.device_put(keys, sharding)))
                latents.append(z[: len(batch)])
                labels += [lab for _, lab in loaded]
            latents = np.concatenate(latents)
            if not np.isfinite(latents).all():
                raise FloatingPointError(f"shard {shard}: the VAE produced NaN/Inf latents; nothing was written for it")
            final = output / plan.shard_name(shard)
            tmp = final.with_name(final.name + ".tmp")
            records.write_array_record(tmp, ({"image": z, "label": y} for z, y in zip(latents, labels)))
            tmp.rename(final)
            written += 1
            done_examples += len(examples)
            elapsed = time.perf_counter() - start
            log(f"shard {shard + 1}/{plan.num_shards} ({final.name}): {done_examples} examples this run, "
                f"{done_examples / elapsed:.1f} images/s, ~{(len(todo) - written) * elapsed / written:.0f}s left")
    return written


def main(argv):
    del argv
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/dit.py:XL-2")
    if _PER_SHARD.value < 1 or _BATCH.value < 1:
        raise app.UsageError("--examples_per_shard and --batch_size must be >= 1")
    process_index, process_count = _process()
    vae, vae_params = load_vae(_VAE.value)
    image_size = image_size_for(config.model, vae.config, int(config.data.image_size))
    if _IMAGES.value:
        files = scan_image_folder(_IMAGES.value).files
        if not _CONVERT_RGB.value:
            check_rgb(files)
        spec = image_folder_spec(_IMAGES.value, image_size)
        source_name = str(pathlib.Path(_IMAGES.value).absolute())
    elif config.data.source == "tfds":
        spec = build_source(_tfds_data(config, image_size))
        source_name = f"tfds:{config.data.tfds_name}/{config.data.split}"
    else:
        raise app.UsageError(
            f"launch.encode reads images: pass --images=<image folder> or --config.data.source=tfds "
            f"--config.data.tfds_name=<dataset> (config.data.source is {config.data.source!r})"
        )
    plan = Plan(len(spec.source), _HFLIP.value, _PER_SHARD.value, _SEED.value)
    output = pathlib.Path(_OUTPUT.value).absolute()
    settings = dict(source=source_name, num_images=plan.num_images, image_size=image_size, hflip=plan.hflip,
                    examples_per_shard=plan.examples_per_shard, seed=plan.seed, vae=str(pathlib.Path(_VAE.value).absolute()),
                    scaling_factor=vae.config.scaling_factor)
    if process_index == 0:
        prepare_output(output, settings)
    encode_shards(spec, plan, vae, vae_params, output, batch_size=_BATCH.value, process_index=process_index,
                  process_count=process_count, stop_after=_STOP.value)
    finished = sum((output / plan.shard_name(s)).exists() for s in range(plan.num_shards))
    print(f"{finished}/{plan.num_shards} shards in {output}" + (
        f"; train with --config.data.source=array_record --config.data.path={output}" if finished == plan.num_shards
        else "; rerun the same command to write the rest"))


def _process() -> tuple[int, int]:
    """(this process's index, the number of processes) from --distributed or --worker."""
    if _DISTRIBUTED.value and _WORKER.value:
        raise app.UsageError("--distributed and --worker exclude each other")
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
        return jax.process_index(), jax.process_count()
    if _WORKER.value:
        try:
            index, count = (int(v) for v in _WORKER.value.split("/"))
        except ValueError:
            raise app.UsageError(f"--worker={_WORKER.value!r} must be i/N, e.g. --worker=0/4") from None
        if not 0 <= index < count:
            raise app.UsageError(f"--worker={_WORKER.value}: need 0 <= i < N")
        return index, count
    return 0, 1


def _tfds_data(config, image_size: int) -> ml_collections.ConfigDict:
    """``config.data`` cropping to ``image_size``, without random flips (``--hflip`` decides)."""
    return ml_collections.ConfigDict({**config.data.to_dict(), "image_size": image_size, "random_flip": False})


if __name__ == "__main__":
    app.run(main)
