"""Data sources by name (``config.data.source``): random access to decoded training examples.

A source builder turns the ``config.data`` section into a ``SourceSpec``: a random-access
source (``len`` + ``[index]``), a deterministic per-example ``decode`` and an optional random
``augment``. ``jaxlab.data.pipeline`` shuffles, shards and batches it. Examples come out as dicts
of numpy arrays; the keys are the batch keys a task reads (``"image"`` NHWC float32 in [-1, 1]
and ``"label"`` int32 for class-conditional image models; e.g. ``"tokens"`` for text).

Built in:

- ``digits``: the embedded 8x8 handwritten digits, upsampled to ``image_size`` (no download).
- ``tfds``: a prepared TFDS dataset in ArrayRecord format (``tfds.data_source``); images are
  decoded with PIL here, never by TensorFlow, then centre-cropped to ``image_size``.
- ``npy`` / ``array_record``: precomputed examples (e.g. VAE latents + labels), see
  ``jaxlab.data.records``.

Other families add theirs with ``register_source(name, builder)``.
"""

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxlab.data import image_ops, records
from jaxlab.data.digits import load_digits

Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What the pipeline needs from a source.

    Attributes:
      source: random access (``len(source)``, ``source[i]``) to raw records.
      decode: raw record -> example dict (deterministic; runs in grain's reader threads/workers,
        so it must be picklable: a module-level function or a ``functools.partial`` of one).
      augment: ``(example, np.random.Generator) -> example`` or None; its generator is seeded
        from the run seed and the example's global position, so resumes replay it exactly.
      in_memory: the records are already in RAM (the pipeline then reads without threads).
    """

    source: Any
    decode: Callable[[Any], Example] | None = None
    augment: Callable[[Example, np.random.Generator], Example] | None = None
    in_memory: bool = False


class ArraySource:
    """Random access over equal-length arrays: ``source[i] == {field: array[i]}``."""

    def __init__(self, fields: Mapping[str, np.ndarray], name: str = "arrays"):
        lengths = {k: len(v) for k, v in fields.items()}
        if not fields or len(set(lengths.values())) != 1:
            raise ValueError(f"ArraySource needs at least one field and equal lengths, got {lengths}")
        self._fields = dict(fields)
        self._len = next(iter(lengths.values()))
        self._name = name

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Example:
        return {k: np.asarray(v[index]) for k, v in self._fields.items()}

    def __repr__(self) -> str:
        shapes = {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in self._fields.items()}
        return f"ArraySource({self._name}, n={self._len}, fields={shapes})"


SourceBuilder = Callable[[Any], SourceSpec]
_SOURCES: dict[str, SourceBuilder] = {}


def register_source(name: str, builder: SourceBuilder) -> None:
    """Makes ``config.data.source=name`` build its ``SourceSpec`` with ``builder(config.data)``."""
    _SOURCES[name] = builder


def source_names() -> list[str]:
    return sorted(_SOURCES)


def build_source(data_cfg) -> SourceSpec:
    """``config.data`` -> ``SourceSpec``; fails fast (before any training work) on missing data."""
    name = data_cfg.source
    if name not in _SOURCES:
        raise ValueError(f"config.data.source={name!r} is not a known data source; allowed values: {source_names()}")
    return _SOURCES[name](data_cfg)


# ---------------------------------------------------------------- digits


def _digits(data_cfg) -> SourceSpec:
    images, labels = load_digits(int(data_cfg.image_size or 8))
    return SourceSpec(ArraySource({"image": images, "label": labels}, name="digits"), in_memory=True)


# ---------------------------------------------------------------- tfds


def _decode_tfds(record: Mapping[str, Any], *, image_key: str, label_key: str, image_size: int) -> Example:
    image = image_ops.decode_image(record[image_key])
    if image_size:
        pixels = image_ops.center_crop(image, image_size)
    else:
        pixels = np.asarray(image)
    return {"image": image_ops.to_unit_range(pixels), "label": np.asarray(record[label_key], np.int32)}


def open_tfds(name: str, split: str, data_dir: str | None, image_key: str):
    """``tfds.data_source`` of a prepared ArrayRecord dataset with the image left encoded.

    Raises FileNotFoundError (naming the directory and the command that prepares it) when the
    dataset is not there; never downloads.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, or no dataset_info in data_dir
        raise FileNotFoundError(
            f"tfds dataset {name!r} was not found (data_dir={data_dir or 'the TFDS default'}): {e}. "
            f"Prepare it with `tfds build {name} --data_dir=<dir> --file_format=array_record` and set "
            f"config.data.tfds_data_dir"
        ) from None
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir}; prepare it with "
            f"`tfds build {name} --data_dir=<dir> --file_format=array_record` and point "
            f"config.data.tfds_data_dir at <dir>"
        )
    if split not in builder.info.splits:
        raise ValueError(f"config.data.split={split!r} is not a split of {name}; available: {list(builder.info.splits)}")
    features = builder.info.features
    decoders = {image_key: tfds.decode.SkipDecoding()} if isinstance(features[image_key], tfds.features.Image) else None
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False, decoders=decoders)
    except NotImplementedError as e:  # prepared as TFRecord
        raise ValueError(
            f"tfds dataset {name!r} in {builder.data_dir} is not stored as ArrayRecord, which random access "
            f"needs: rebuild it with `tfds build {name} --file_format=array_record` ({e})"
        ) from None


def _tfds(data_cfg) -> SourceSpec:
    if not data_cfg.tfds_name:
        raise ValueError("config.data.tfds_name is empty; name a TFDS dataset, e.g. --config.data.tfds_name=cifar10")
    source = open_tfds(data_cfg.tfds_name, data_cfg.split, data_cfg.tfds_data_dir or None, data_cfg.image_key)
    decode = functools.partial(
        _decode_tfds, image_key=data_cfg.image_key, label_key=data_cfg.label_key, image_size=int(data_cfg.image_size)
    )
    return SourceSpec(source, decode=decode, augment=_flip if data_cfg.random_flip else None)


# ---------------------------------------------------------------- precomputed examples (latents)


def _scale_image(example: Example, *, scale: float) -> Example:
    example = dict(example)
    if "image" in example:
        example["image"] = np.asarray(example["image"], np.float32) * np.float32(scale)
    if "label" in example:
        example["label"] = np.asarray(example["label"], np.int32)
    return example


def _decode_record(record: bytes, *, scale: float) -> Example:
    return _scale_image(records.decode_example(record), scale=scale)


def _flip(example: Example, rng: np.random.Generator) -> Example:
    return image_ops.random_hflip(example, rng)


def _need_path(data_cfg) -> str:
    if not data_cfg.path:
        raise ValueError(
            f"config.data.path is empty; point it at the precomputed {data_cfg.source} dataset "
            f"(see jaxlab.data.records and docs/training.md)"
        )
    return data_cfg.path


def _npy(data_cfg) -> SourceSpec:
    path = pathlib.Path(_need_path(data_cfg))
    if not path.exists():
        raise FileNotFoundError(f"config.data.path={str(path)!r} does not exist; write it with jaxlab.data.records.write_npy")
    fields = records.read_npy(path)
    decode = functools.partial(_scale_image, scale=float(data_cfg.scale))
    return SourceSpec(ArraySource(fields, name=str(path)), decode=decode,
                      augment=_flip if data_cfg.random_flip else None, in_memory=True)


def _array_record(data_cfg) -> SourceSpec:
    import grain

    files = records.array_record_files(_need_path(data_cfg))
    decode = functools.partial(_decode_record, scale=float(data_cfg.scale))
    return SourceSpec(grain.sources.ArrayRecordDataSource(files), decode=decode,
                      augment=_flip if data_cfg.random_flip else None)


register_source("digits", _digits)
register_source("tfds", _tfds)
register_source("npy", _npy)
register_source("array_record", _array_record)
