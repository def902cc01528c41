"""On-disk formats for precomputed examples (e.g. VAE latents + labels, the Fast-DiT recipe).

Two layouts, both holding examples that are dicts of arrays (e.g. ``{"image": [32, 32, 4]
float32, "label": [] int32}``; the field names are the batch keys the task reads):

- **npy**: a directory with one ``<field>.npy`` per field, all with the same leading length N.
  Read memory-mapped, so N may exceed RAM.
- **ArrayRecord**: ``*.array_record`` files whose records are ``.npz`` bytes of one example.
"""

import glob
import io
import pathlib
import threading
from collections.abc import Iterable, Mapping

import numpy as np


def write_npy(directory: str | pathlib.Path, fields: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Writes ``<directory>/<field>.npy`` for each field (equal leading lengths)."""
    lengths = {k: len(v) for k, v in fields.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"all fields need the same number of examples, got {lengths}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, values in fields.items():
        np.save(directory / f"{name}.npy", np.asarray(values))
    return directory


def read_npy(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
    """``{field: memory-mapped [N, ...] array}`` from a directory written by ``write_npy``."""
    directory = pathlib.Path(directory)
    files = sorted(directory.glob("*.npy")) if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no <field>.npy files in {directory}; write a dataset with jaxlab.data.records.write_npy "
            f"(e.g. image.npy [N, H, W, C] + label.npy [N]) or fix config.data.path"
        )
    fields = {f.stem: np.load(f, mmap_mode="r") for f in files}
    lengths = {k: len(v) for k, v in fields.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"the .npy files in {directory} have different lengths: {lengths}")
    return fields


def encode_example(example: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in example.items()})
    return buffer.getvalue()


# np.load parses each array header with ast.literal_eval; CPython 3.11.7's parser can fail under
# concurrent use ("SystemError: AST constructor recursion depth mismatch"), and grain decodes records
# in a thread pool. One lock around the (small) decode keeps it correct on every 3.11 patch release.
_DECODE_LOCK = threading.Lock()


def decode_example(record: bytes) -> dict[str, np.ndarray]:
    with _DECODE_LOCK, np.load(io.BytesIO(record)) as data:
        return {k: data[k] for k in data.files}


def write_array_record(path: str | pathlib.Path, examples: Iterable[Mapping[str, np.ndarray]]) -> pathlib.Path:
    """Writes examples (dicts of arrays) to one ArrayRecord file, one ``.npz`` record each."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")
    try:
        for example in examples:
            writer.write(encode_example(example))
    finally:
        writer.close()
    return path


def array_record_files(pattern: str) -> list[str]:
    """Files matching ``pattern`` (a path, a glob, or a directory of ``*.array_record``; local or gs://), sorted."""
    from etils import epath

    path = epath.Path(pattern)
    if path.is_dir():
        files = sorted(str(f) for f in path.glob("*.array_record"))
    elif glob.has_magic(pattern):
        files = sorted(str(f) for f in path.parent.glob(path.name))
    else:
        files = [str(path)] if path.exists() else []
    if not files:
        raise FileNotFoundError(
            f"no ArrayRecord files match {pattern!r}; write them with jaxlab.data.records.write_array_record "
            f"or fix config.data.path"
        )
    return files
