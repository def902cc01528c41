"""PSNR / SSIM on RGB and Y: against scikit-image's metrics and closed forms."""

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxlab.eval.restoration import psnr, rgb_to_y, ssim

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def pair():
    clean = data.astronaut()[100:196, 150:230].astype(np.float64)
    noisy = np.clip(clean + RNG.normal(0, 25, clean.shape), 0, 255)
    return clean, noisy


def test_psnr_and_ssim_match_scikit_image_on_rgb(pair):
    clean, noisy = pair
    assert psnr(clean, noisy) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=255), abs=1e-9)
    ref = structural_similarity(clean, noisy, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(clean, noisy) == pytest.approx(ref, abs=1e-6)


def test_y_channel_metrics(pair):
    clean, noisy = pair
    assert rgb_to_y(np.array([255.0, 255, 255])) == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(np.array([0.0, 0, 0])) == pytest.approx(16.0)
    yc, yn = rgb_to_y(clean), rgb_to_y(noisy)
    assert psnr(clean, noisy, y_channel=True) == pytest.approx(peak_signal_noise_ratio(yc, yn, data_range=255), abs=1e-9)
    ref = structural_similarity(yc, yn, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(clean, noisy, y_channel=True) == pytest.approx(ref, abs=1e-6)
    # Independent per-channel noise averages out in Y: Y-PSNR is higher than RGB-PSNR.
    assert psnr(clean, noisy, y_channel=True) > psnr(clean, noisy) + 2


def test_closed_forms_and_errors():
    a = np.zeros((16, 16, 3))
    assert psnr(a, a + 2.55) == pytest.approx(40.0)
    assert psnr(a, a) == float("inf") and ssim(a + 7, a + 7) == pytest.approx(1.0)
    assert psnr(a, np.pad(np.full((12, 12, 3), 9.0), ((2, 2), (2, 2), (0, 0))), crop_border=2) == pytest.approx(10 * np.log10(255**2 / 81))
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:8])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], a[:8, :8])
