"""The training input pipeline: an endless, shuffled, per-process stream of batches (grain).

Order of operations, all on grain's lazy random-access ``MapDataset`` until the last step:

1. ``shuffle`` (a fresh permutation per epoch, from the run seed) and ``repeat`` forever;
2. ``decode`` and the random ``augment`` of the source, seeded by the example's *global*
   position in this stream;
3. process sharding: global batch ``k`` is examples ``[k*B, (k+1)*B)`` of the stream, and
   process ``p`` of ``P`` reads rows ``[p*B/P, (p+1)*B/P)`` of it;
4. reader threads (and optional worker processes) prefetch, then rows are stacked into batches.

So the global batch at step k is the same whatever the number of processes, and the iterator
state (``get_state`` / ``set_state``, saved with each checkpoint) is just a position: a resumed
run reads exactly the batches it would have read.
"""

import dataclasses
import sys

import grain
import jax
import numpy as np

from jaxlab.data.sources import Example, SourceSpec, build_source


class _ProcessRows(grain.MapDataset):
    """Process ``p``'s rows of each global batch: element ``k*b + j`` -> parent ``k*B + p*b + j``."""

    def __init__(self, parent: grain.MapDataset, global_batch_size: int, process_index: int, process_count: int):
        super().__init__(parent)
        self._global = global_batch_size
        self._local = global_batch_size // process_count
        self._offset = process_index * self._local

    def __len__(self) -> int:
        return sys.maxsize if len(self._parent) >= sys.maxsize else (len(self._parent) // self._global) * self._local

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        batch, row = divmod(index, self._local)
        return self._parent[batch * self._global + self._offset + row]

    def __str__(self) -> str:
        return f"_ProcessRows(global={self._global}, local={self._local}, offset={self._offset})"


def example_stream(spec: SourceSpec, seed: int, shuffle: bool = True) -> grain.MapDataset:
    """Steps 1-2: the endless stream of decoded, augmented examples (global positions)."""
    if len(spec.source) == 0:
        raise ValueError(f"data source {spec.source!r} is empty")
    ds = grain.MapDataset.source(spec.source).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(None)
    if spec.decode is not None:
        ds = ds.map(spec.decode)
    if spec.augment is not None:
        ds = ds.random_map(spec.augment)
    return ds


def batch_stream(
    spec: SourceSpec,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = -1,
    prefetch_buffer_size: int = 256,
    worker_count: int = 0,
    shuffle: bool = True,
) -> grain.IterDataset:
    """This process's batches ``{key: [global_batch_size / process_count, ...]}``, forever.

    ``read_threads=-1`` picks 0 for in-memory sources (no GIL contention) and 16 otherwise.
    """
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the {process_count} processes"
        )
    if read_threads < 0:
        read_threads = 0 if spec.in_memory else 16
    ds = example_stream(spec, seed, shuffle)
    ds = _ProcessRows(ds, global_batch_size, process_index, process_count)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size))
    it = it.batch(global_batch_size // process_count, drop_remainder=True)
    if worker_count > 0:
        _ensure_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it


def _ensure_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside an absl app (tests, notebooks) use defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@dataclasses.dataclass
class TrainData:
    """A checkpointable batch iterator plus what the loop needs to know before reading from it.

    ``iterator`` supports ``next``, ``get_state`` and ``set_state`` (grain ``DatasetIterator``);
    ``example`` is one decoded example (shapes/dtypes, e.g. to initialise parameters) and
    ``num_examples`` the size of one epoch of the source.
    """

    iterator: grain.DatasetIterator
    example: Example
    local_batch_size: int
    num_examples: int


def make_train_data(
    data_cfg,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainData:
    """``config.data`` -> ``TrainData`` for this process (defaults: ``jax.process_index/count()``)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    spec = build_source(data_cfg)
    stream = batch_stream(
        spec,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        read_threads=int(data_cfg.read_threads),
        prefetch_buffer_size=int(data_cfg.prefetch_buffer_size),
        worker_count=int(data_cfg.worker_count),
        shuffle=bool(data_cfg.shuffle),
    )
    example = example_stream(spec, seed, shuffle=False)[0]
    return TrainData(
        iterator=iter(stream),
        example={k: np.asarray(v) for k, v in example.items()},
        local_batch_size=global_batch_size // process_count,
        num_examples=len(spec.source),
    )
