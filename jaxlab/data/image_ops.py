"""Per-example image preprocessing for grain maps (numpy + PIL; no TensorFlow)."""

import io

import numpy as np
from PIL import Image


def decode_image(data: bytes | np.ndarray) -> Image.Image:
    """Encoded bytes (JPEG/PNG/...) or a decoded ``[H, W(, C)]`` uint8 array -> an RGB PIL image."""
    if isinstance(data, np.ndarray) and data.dtype != np.uint8:
        raise ValueError(f"expected encoded image bytes or a uint8 array, got a {data.dtype} array")
    if isinstance(data, np.ndarray):
        image = Image.fromarray(data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data)
    else:
        image = Image.open(io.BytesIO(bytes(data)))
    return image.convert("RGB")


def center_crop(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM/DiT preprocessing: halve with a box filter while the short side is >= 2x the target,
    resize bicubically so the short side equals ``image_size``, then crop the centre square.

    Returns ``[image_size, image_size, 3]`` uint8.
    """
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top : top + image_size, left : left + image_size]


def to_unit_range(image_u8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (DiT's Normalize(mean=0.5, std=0.5) on ToTensor's [0, 1])."""
    return (image_u8.astype(np.float32) / 127.5) - 1.0


def random_hflip(example: dict, rng: np.random.Generator, key: str = "image") -> dict:
    """Flips ``example[key]`` (``[H, W, C]``) left-right with probability 1/2."""
    if rng.random() < 0.5:
        example = dict(example)
        example[key] = np.ascontiguousarray(example[key][:, ::-1])
    return example
