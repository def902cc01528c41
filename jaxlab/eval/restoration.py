"""Restoration metrics: PSNR and SSIM on RGB or on the Y channel (papers differ; say which).

Images are ``[..., H, W, 3]`` (or ``[..., H, W]`` for one channel) arrays in ``[0, data_range]``.

- ``rgb_to_y``: ITU-R BT.601 luma as MATLAB's ``rgb2ycbcr`` (Y in [16, 235] for data_range 255),
  the convention of the IPT/EDSR evaluation code (which computes PSNR on Y).
- ``psnr``: ``10 log10(data_range^2 / MSE)`` over all pixels and channels, after cropping
  ``crop_border`` pixels from each side (SR papers crop ``scale`` pixels).
- ``ssim``: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
  population covariances, mean over the valid (un-padded) area and over channels: the setting of
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``.
"""

import numpy as np
from scipy import ndimage

_Y_COEFFS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(rgb: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """``[..., 3]`` RGB in ``[0, data_range]`` -> ``[...]`` BT.601 luma in the same units (+16/255 offset)."""
    rgb = np.asarray(rgb, np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels in the last axis, got shape {rgb.shape}")
    return rgb @ _Y_COEFFS + 16.0 * data_range / 255.0


def _prepare(a, b, crop_border: int, y_channel: bool, data_range: float):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if y_channel:
        a, b = rgb_to_y(a, data_range)[..., None], rgb_to_y(b, data_range)[..., None]
    elif a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if crop_border:
        a, b = a[..., crop_border:-crop_border, crop_border:-crop_border, :], b[..., crop_border:-crop_border, crop_border:-crop_border, :]
    return a, b


def psnr(a, b, *, data_range: float = 255.0, y_channel: bool = False, crop_border: int = 0) -> float:
    """PSNR in dB between two ``[H, W, C]`` images (``inf`` for identical images)."""
    a, b = _prepare(a, b, crop_border, y_channel, data_range)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(a, b, *, data_range: float = 255.0, y_channel: bool = False, crop_border: int = 0) -> float:
    """Mean SSIM between two ``[H, W, C]`` images (channels averaged); see the module docstring."""
    a, b = _prepare(a, b, crop_border, y_channel, data_range)
    if a.ndim != 3:
        raise ValueError(f"ssim takes one [H, W, C] image pair, got {a.shape}")
    if min(a.shape[:2]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels (the window), got {a.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = 5

    def blur(x):
        return ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5)

    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))
