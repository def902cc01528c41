"""Turning model outputs into viewable images."""

import pathlib

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """``[N, H, W, C]`` floats in ``value_range`` -> uint8 in [0, 255] (clipped)."""
    lo, hi = value_range
    scaled = (np.asarray(images, np.float32) - lo) / (hi - lo)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles uint8 ``[N, H, W, C]`` (C = 1 or 3) into one ``[rows*(H+pad)+pad, ..., C]`` image."""
    n, h, w, c = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = image
    return grid


def save_grid(path: str | pathlib.Path, images: np.ndarray, ncol: int | None = None, scale: int = 1,
              value_range: tuple[float, float] = (-1.0, 1.0)) -> pathlib.Path:
    """Writes ``[N, H, W, C]`` images in ``value_range`` as one PNG grid, upscaled ``scale`` times."""
    images = to_uint8(images, value_range)
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"a grid needs 1 or 3 channels, got {images.shape[-1]}")
    grid = make_grid(images, ncol)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path
