"""Synthetic degradations: seeded, in range, and each changes the image the way its model says."""

import numpy as np
import pytest

from jaxlab.data.degradations import (
    TASKS,
    bicubic_down,
    degrade,
    disk_kernel,
    haze,
    motion_kernel,
    random_patches,
    sample_images,
)
from jaxlab.eval.restoration import psnr


@pytest.fixture(scope="module")
def patch():
    return random_patches(sample_images(), 64, 1, np.random.default_rng(0))[0]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_is_reproducible_in_range_and_degrades(patch, task):
    a = degrade(patch, task, np.random.default_rng(3))
    b = degrade(patch, task, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == patch.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    assert 10 < psnr(patch, a) < 40
    assert not np.array_equal(a, degrade(patch, task, np.random.default_rng(4)))


def test_noise_has_the_requested_sigma():
    grey = np.full((128, 128, 3), 128.0, np.float32)
    for sigma in (15, 25, 50):
        assert np.std(degrade(grey, "denoise", np.random.default_rng(0), sigma=sigma) - grey) == pytest.approx(sigma, rel=0.03)


def test_kernels_haze_and_bicubic():
    k = motion_kernel(9, 0.0)
    assert k.sum() == pytest.approx(1.0) and np.count_nonzero(k) == 9 and np.count_nonzero(k[k.shape[0] // 2]) == 9
    assert disk_kernel(2.0).sum() == pytest.approx(1.0)
    dark = np.zeros((32, 32, 3), np.float32)
    hazy = haze(dark, np.random.default_rng(0))
    assert hazy[:4].mean() > hazy[-4:].mean() > 0  # far (top) rows are hazier
    assert bicubic_down(np.zeros((33, 30, 3)), 3).shape == (11, 10, 3)
    with pytest.raises(ValueError, match="unknown degradation task"):
        degrade(dark, "deblock", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        degrade(dark[..., 0], "denoise", np.random.default_rng(0))
