"""Input pipelines: grain streams over named sources (embedded digits, TFDS, precomputed arrays).

``make_train_data(config.data, global_batch_size=..., seed=...)`` gives a checkpointable,
per-process batch iterator; ``register_source`` adds a source for ``config.data.source``.
"""

from jaxlab.data import image_folder  # noqa: F401  (registers the "image_folder" source)
from jaxlab.data.digits import load_digits
from jaxlab.data.pipeline import TrainData, batch_stream, example_stream, make_train_data
from jaxlab.data.sources import ArraySource, SourceSpec, build_source, register_source, source_names

__all__ = [
    "ArraySource",
    "SourceSpec",
    "TrainData",
    "batch_stream",
    "build_source",
    "example_stream",
    "load_digits",
    "make_train_data",
    "register_source",
    "source_names",
]
