"""Synthetic degradations for all-in-one restoration (IPT / Instruct-IPT) on clean images.

Every function takes an ``[H, W, 3]`` float image in ``[0, 255]`` and a ``numpy.random.Generator``
(so a seed reproduces a pair exactly) and returns the degraded image in ``[0, 255]``, float32.
These are **synthetic stand-ins** for the benchmark sets (BSD68, GoPro, Rain100L, SOTS, Snow100K),
chosen by us; the models here are not comparable with numbers on those sets.

- ``gaussian_noise``: ``x + N(0, sigma^2)``, clipped (the IPT denoising protocol, sigma 15/25/50).
- ``blur``: a random linear motion kernel (length 5..15 px, any angle) or a defocus disk
  (radius 1..4 px), reflect padding.
- ``rain``: sparse seeds motion-blurred into streaks along one random near-vertical angle,
  added as brightness (screen-like, clipped).
- ``haze``: the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)``, with
  a depth proxy ``d`` = image row (top is far) plus smooth noise, ``beta`` in [0.6, 1.8], airlight
  ``A`` in [0.7, 1.0] * 255.
- ``snow``: random flakes (small discs of two size classes), slightly blurred, blended toward white.
- ``bicubic_down``: PIL bicubic downsampling by ``scale`` (not MATLAB ``imresize``, which the SR
  papers use; their antialiasing differs slightly).
"""

import numpy as np
from PIL import Image
from scipy import ndimage

TASKS = ("denoise", "deblur", "derain", "dehaze", "desnow")


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"degradations take one [H, W, 3] RGB image in [0, 255], got shape {image.shape}")
    return image


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.convolve(image[..., c], kernel, mode="reflect") for c in range(image.shape[-1])], -1)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised ``[k, k]`` line kernel of ``length`` pixels at ``angle_deg`` (0 = horizontal)."""
    k = length if length % 2 else length + 1
    kernel = np.zeros((k, k), np.float32)
    c, t = k // 2, np.deg2rad(angle_deg)
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        kernel[int(round(c - s * np.sin(t))), int(round(c + s * np.cos(t)))] = 1.0
    return kernel / kernel.sum()


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised defocus disc of ``radius`` pixels."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (yy**2 + xx**2 <= radius**2).astype(np.float32)
    return kernel / kernel.sum()


def gaussian_noise(image, rng: np.random.Generator, sigma: float = 25.0) -> np.ndarray:
    image = _check(image)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.float32)


def blur(image, rng: np.random.Generator) -> np.ndarray:
    image = _check(image)
    if rng.random() < 0.5:
        kernel = motion_kernel(int(rng.integers(5, 16)), float(rng.uniform(0, 180)))
    else:
        kernel = disk_kernel(float(rng.uniform(1.0, 4.0)))
    return np.clip(_filter(image, kernel), 0, 255).astype(np.float32)


def rain(image, rng: np.random.Generator, density: float | None = None) -> np.ndarray:
    image = _check(image)
    h, w, _ = image.shape
    density = rng.uniform(0.002, 0.01) if density is None else density
    seeds = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.6, 1.0, (h, w))
    streaks = ndimage.convolve(seeds, motion_kernel(int(rng.integers(9, 21)), float(rng.uniform(70, 110))), mode="wrap")
    streaks = np.clip(streaks / max(streaks.max(), 1e-6), 0, 1)[..., None] * rng.uniform(150, 230)
    return np.clip(image + streaks, 0, 255).astype(np.float32)


def haze(image, rng: np.random.Generator) -> np.ndarray:
    image = _check(image)
    h, w, _ = image.shape
    rows = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    smooth = ndimage.gaussian_filter(rng.normal(size=(h, w)).astype(np.float32), sigma=max(h, w) / 8)
    depth = np.clip(rows + 0.3 * smooth / (np.abs(smooth).max() + 1e-6), 0, 1)
    t = np.exp(-rng.uniform(0.6, 1.8) * depth)[..., None]
    airlight = rng.uniform(0.7, 1.0) * 255.0
    return np.clip(image * t + airlight * (1 - t), 0, 255).astype(np.float32)


def snow(image, rng: np.random.Generator) -> np.ndarray:
    image = _check(image)
    h, w, _ = image.shape
    mask = np.zeros((h, w), np.float32)
    for radius, density in ((0.8, rng.uniform(0.004, 0.01)), (1.8, rng.uniform(0.0005, 0.002))):
        seeds = (rng.random((h, w)) < density).astype(np.float32)
        mask = np.maximum(mask, np.clip(ndimage.convolve(seeds, disk_kernel(radius) * 9, mode="wrap"), 0, 1))
    mask = ndimage.gaussian_filter(mask, 0.7)[..., None] * rng.uniform(0.7, 1.0)
    return np.clip(image * (1 - mask) + 255.0 * mask, 0, 255).astype(np.float32)


def bicubic_down(image, scale: int) -> np.ndarray:
    """``[H, W, 3] -> [H/scale, W/scale, 3]`` (H, W cropped to multiples of ``scale`` first)."""
    image = _check(image)
    h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    pil = Image.fromarray(np.clip(np.round(image[:h, :w]), 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((w // scale, h // scale), Image.BICUBIC), np.float32)


def degrade(image, task: str, rng: np.random.Generator, sigma: float = 25.0) -> np.ndarray:
    """The degraded input for restoration ``task`` (one of ``TASKS``; ``sigma`` for denoise)."""
    fns = {"denoise": lambda x: gaussian_noise(x, rng, sigma), "deblur": lambda x: blur(x, rng), "derain": lambda x: rain(x, rng),
           "dehaze": lambda x: haze(x, rng), "desnow": lambda x: snow(x, rng)}
    if task not in fns:
        raise ValueError(f"unknown degradation task {task!r}; known: {list(TASKS)}")
    return fns[task](image)


def sample_images() -> list[np.ndarray]:
    """Clean RGB images that ship with scikit-image (``pip install 'jaxlab[ipt]'``), float32 [0, 255]."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("clean sample images need scikit-image: pip install 'jaxlab[ipt]'") from e
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    return [np.asarray(getattr(data, n)(), np.float32)[..., :3] for n in names]


def random_patches(images: list[np.ndarray], size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[count, size, size, 3]`` random crops (with random flips) of ``images``."""
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        img = images[rng.integers(len(images))]
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        patch = img[y : y + size, x : x + size]
        out[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return out
