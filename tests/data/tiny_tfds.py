"""A tiny TFDS dataset that the tests build locally (ArrayRecord, PNG-encoded images, no TensorFlow).

``build(data_dir)`` prepares ``jaxlab_tiny_images`` exactly as ``tfds build`` would prepare
a real one, so the tests read it through ``tfds.data_source`` like imagenet2012 or cifar10.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NAME = "jaxlab_tiny_images"
NUM_EXAMPLES, HEIGHT, WIDTH, NUM_CLASSES = 12, 12, 10, 3


def images() -> np.ndarray:
    """``[12, 12, 10, 3]`` uint8: the pixels the dataset stores (losslessly, as PNG)."""
    return np.random.default_rng(0).integers(0, 256, (NUM_EXAMPLES, HEIGHT, WIDTH, 3), dtype=np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class JaxlabTinyImages(tfds.core.GeneratorBasedBuilder):
    """12 random 12x10 RGB images with labels ``i % 3``."""

    # A top-level module name: TFDS then skips locating the builder's source inside its package,
    # a lookup that needs the optional ``importlib_resources`` package.
    __module__ = NAME
    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(HEIGHT, WIDTH, 3)), "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES)}
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, pixels in enumerate(images()):
            # Encoded bytes, as real datasets provide JPEG/PNG files (encoding arrays would need TensorFlow).
            yield i, {"image": _png(pixels), "label": i % NUM_CLASSES}


def build(data_dir) -> None:
    JaxlabTinyImages(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
