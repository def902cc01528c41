"""The embedded handwritten digits: 1,797 grey 8x8 images of the digits 0-9, no download needed.

``digits.npz`` (next to this file, ~45 kB) holds ``images [1797, 8, 8]`` uint8 with values 0..16
and ``labels [1797]`` uint8. It was written once from ``sklearn.datasets.load_digits()`` (a copy
of the test set of the UCI "Optical Recognition of Handwritten Digits" data set, E. Alpaydin and
C. Kaynak, 1998). Licenses: the UCI data set is CC BY 4.0; scikit-learn, which distributes it,
is BSD-3-Clause.
"""

import functools
import pathlib

import numpy as np
from PIL import Image

DIGITS_FILE = pathlib.Path(__file__).with_name("digits.npz")
NUM_CLASSES = 10
MAX_VALUE = 16  # pixel values are counts of "on" pixels in 4x4 blocks: 0..16


@functools.lru_cache(maxsize=1)
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 8, 8] uint8 in 0..16, labels [1797] int32)``, read-only."""
    with np.load(DIGITS_FILE) as data:
        images, labels = data["images"], data["labels"].astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_digits(image_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``images [1797, S, S, 1]`` float32 in [-1, 1] (background -1) and ``labels [1797]`` int32.

    ``image_size`` S >= 8 upsamples bilinearly from 8x8 (values stay in [-1, 1]).
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"digits image_size={image_size!r} must be an int >= 8 (the digits are 8x8)")
    images, labels = raw_digits()
    scaled = images.astype(np.float32) / MAX_VALUE
    if image_size != 8:
        scaled = np.stack(
            [np.asarray(Image.fromarray(x, mode="F").resize((image_size, image_size), Image.BILINEAR)) for x in scaled]
        )
    out = np.clip(scaled, 0.0, 1.0) * 2.0 - 1.0
    return out[..., None].astype(np.float32), labels
