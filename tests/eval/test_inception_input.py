"""The Inception input path: sample ranges, TF1 resize and normalisation as ADM's evaluator feeds its graph."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxlab.eval import inception



@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    """Implicit rank promotion is an error in these tests (scoped: other modules keep the default)."""
    with jax.numpy_rank_promotion("raise"):
        yield


def _tf1_resize_loop(img, out_h, out_w):
    """TF1 resize_bilinear_op.cc (legacy scaler, align_corners=False), pixel by pixel in float32."""
    in_h, in_w = img.shape[:2]
    sy, sx = np.float32(in_h) / np.float32(out_h), np.float32(in_w) / np.float32(out_w)
    out = np.zeros((out_h, out_w, img.shape[2]), np.float32)
    for i in range(out_h):
        fy = np.float32(i) * sy
        y0, y1 = int(np.floor(fy)), min(int(np.ceil(fy)), in_h - 1)
        ly = np.float32(fy - np.floor(fy))
        for j in range(out_w):
            fx = np.float32(j) * sx
            x0, x1 = int(np.floor(fx)), min(int(np.ceil(fx)), in_w - 1)
            lx = np.float32(fx - np.floor(fx))
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * lx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * lx
            out[i, j] = top + (bottom - top) * ly
    return out


def test_tf1_resize_has_no_half_pixel_centres():
    x = jnp.array([10.0, 20.0]).reshape(1, 1, 2, 1)
    got = np.asarray(inception.tf1_resize_bilinear(x, (1, 4)))[0, 0, :, 0]
    np.testing.assert_allclose(got, [10.0, 15.0, 20.0, 20.0])  # half-pixel centres would give 10, 12.5, 17.5, 20


@pytest.mark.parametrize("shape,size", [((7, 5), (13, 11)), ((32, 32), (75, 71)), ((40, 30), (17, 23))])
def test_tf1_resize_matches_the_tensorflow_kernel(shape, size):
    img = np.random.default_rng(0).uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    got = np.asarray(inception.tf1_resize_bilinear(jnp.asarray(img[None]), size))[0]
    np.testing.assert_allclose(got, _tf1_resize_loop(img, *size), rtol=1e-6, atol=1e-4)


def test_adm_input_is_tf_normalisation_and_identity_at_299():
    img = np.random.default_rng(1).integers(0, 256, size=(2, 299, 299, 3)).astype(np.uint8)
    got = np.asarray(inception.adm_inception_input(jnp.asarray(img)))
    np.testing.assert_allclose(got, (img.astype(np.float32) - 128.0) / 128.0, atol=1e-6)
    assert got.min() == -1.0 and got.max() == pytest.approx(127 / 128)


def test_pytorch_fid_input_matches_torch_interpolate():
    img = np.random.default_rng(2).integers(0, 256, size=(1, 64, 48, 3)).astype(np.uint8)
    got = np.asarray(inception.pytorch_fid_input(jnp.asarray(img)))
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0
    ref = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    assert np.abs(got - np.asarray(inception.adm_inception_input(jnp.asarray(img)))).max() > 0.05  # they differ


def test_sample_ranges():
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(inception.to_uint8_range(u8), u8)
    floats = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
    expected = np.clip(127.5 * floats.astype(np.float64) + 128, 0, 255).astype(np.uint8)  # DiT's sample_ddp.py
    np.testing.assert_array_equal(inception.to_uint8_range(floats), expected)
    assert inception.to_uint8_range(np.array([-1.0, 1.0]).reshape(1, 1, 2, 1)).ravel().tolist() == [0, 0, 0, 255, 255, 255]
    grey = inception.to_uint8_range(u8[..., :1])
    assert grey.shape == (2, 8, 8, 3) and (grey == u8[..., :1]).all()
    np.testing.assert_array_equal(inception.to_uint8_range(floats * 0.5 + 0.5, "0,1"), expected)


@pytest.mark.parametrize(
    "images,match",
    [
        (np.random.default_rng(4).uniform(0, 1, (2, 8, 8, 3)), r"ambiguous.*value_range='0,1'"),
        (np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)), r"must be in \[-1, 1\].*cast to uint8"),
        (np.zeros((2, 3, 8, 8), np.uint8), "looks NCHW"),
        (np.full((2, 8, 8, 3), 300, np.int32), r"0\.\.255"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 3), np.uint8), r"\[N, H, W, C\]"),
    ],
)
def test_bad_samples_are_refused_with_the_fix(images, match):
    with pytest.raises(ValueError, match=match):
        inception.to_uint8_range(images)


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth.*launch.convert --family=inception_fid"):
        inception.load_inception(None)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        inception.load_inception(tmp_path / "nope.pth")
