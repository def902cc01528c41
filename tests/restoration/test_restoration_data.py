"""The restoration grain source (task groups, seeded, split regions) and benchmark-folder layouts."""

import numpy as np
import pytest
from PIL import Image

from jaxlab.data.pipeline import batch_stream
from jaxlab.data.sources import SourceSpec
from jaxlab.eval.restoration import psnr
from jaxlab.restoration.data import RestorationSource, clean_pool, generated_images, parse_spec, split_region
from jaxlab.restoration.folders import find_pairs, synthetic_pairs


@pytest.fixture(scope="module")
def source():
    return RestorationSource(parse_spec("tasks=denoise+derain+dehaze,images=generated,sigma=15"), 16)


def test_examples_are_task_groups_reproducible_and_degraded(source):
    ex = source[7]
    assert ex["degraded"].shape == ex["clean"].shape == (3, 16, 16, 3)
    assert ex["degraded"].dtype == np.float32 and ex["task"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ex["degraded"], source[7]["degraded"])  # a pure function of the index
    assert not np.array_equal(ex["clean"], source[8]["clean"])
    for t in range(3):
        assert psnr(ex["clean"][t], ex["degraded"][t]) < 45  # every row is degraded
    noise = ex["degraded"][0] - ex["clean"][0]
    assert 8 < noise.std() < 20  # sigma 15 (clipping shrinks it a little)


def test_train_and_eval_regions_do_not_overlap():
    image = np.arange(10 * 50 * 3, dtype=np.float32).reshape(10, 50, 3)
    train, held = split_region(image, "train"), split_region(image, "eval")
    assert train.shape[1] + held.shape[1] == 50 and train.shape[1] == 40
    assert not np.intersect1d(train, held).size
    with pytest.raises(ValueError, match="fits a 64x64 patch"):
        clean_pool("generated", "eval", 64)  # the 20 % strips of 256 px images are 51 px wide


def test_grain_batches_put_every_task_in_every_batch(source):
    stream = iter(batch_stream(SourceSpec(source, in_memory=True), global_batch_size=4, seed=0))
    batch = next(stream)
    assert batch["degraded"].shape == (4, 3, 16, 16, 3)
    assert (batch["task"] == np.arange(3)).all()


def test_bad_specs_are_named():
    with pytest.raises(ValueError, match="must be one of"):
        parse_spec("tasks=denoise+sharpen")
    with pytest.raises(ValueError, match="unknown restoration spec key"):
        parse_spec("task=denoise")
    with pytest.raises(ValueError, match="not in tasks"):
        parse_spec("tasks=denoise,derain=/data/rain")
    with pytest.raises(ValueError, match="not a number"):
        parse_spec("sigma=high")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RestorationSource(parse_spec("tasks=denoise,images=/nonexistent/clean"), 16)


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def images():
    return [img[:40, :40] for img in generated_images(3, 64, seed=1)]


def test_sr_benchmark_layout(tmp_path, images):
    for name, img in zip(("baby", "bird", "butterfly"), images):  # Set5-style: HR/ + LR_bicubic/X2/<name>x2.png
        _save(tmp_path / "Set5" / "HR" / f"{name}.png", img)
        _save(tmp_path / "Set5" / "LR_bicubic" / "X2" / f"{name}x2.png", img[::2, ::2])
    pairs = find_pairs(tmp_path / "Set5")
    assert pairs.layout == "sr" and pairs.scale == 2 and len(pairs) == 3
    low, high = pairs.load(1)
    assert low.shape == (20, 20, 3) and high.shape == (40, 40, 3)
    np.testing.assert_array_equal(high, np.clip(images[1], 0, 255).astype(np.uint8))
    _save(tmp_path / "Set5" / "LR_bicubic" / "X4" / "babyx4.png", images[0][::4, ::4])
    with pytest.raises(ValueError, match=r"scales \[2, 4\]; pass scale="):
        find_pairs(tmp_path / "Set5")
    with pytest.raises(ValueError, match="no x4 LR image"):
        find_pairs(tmp_path / "Set5", scale=4)


def test_two_folder_layouts_pair_by_name_or_number(tmp_path, images):
    # Rain100L as released: rainy/rain-001.png + norain/norain-001.png
    for i, img in enumerate(images, 1):
        _save(tmp_path / "Rain100L" / "rainy" / f"rain-{i:03d}.png", img + 40)
        _save(tmp_path / "Rain100L" / "norain" / f"norain-{i:03d}.png", img)
    pairs = find_pairs(tmp_path / "Rain100L")
    assert pairs.layout == "rainy+norain" and [p.rsplit("/", 1)[1] for p in pairs.clean] == [
        "norain-001.png", "norain-002.png", "norain-003.png"]
    bad, good = pairs.load(2)
    assert np.abs(bad - good).mean() > 10
    # SOTS: several hazy images per clear one, named <id>_<A>_<beta>
    for i, img in enumerate(images[:2], 1):
        _save(tmp_path / "SOTS" / "gt" / f"{i:04d}.png", img)
        for beta in ("0.8_0.2", "0.9_0.1"):
            _save(tmp_path / "SOTS" / "hazy" / f"{i:04d}_{beta}.png", img * 0.5 + 100)
    pairs = find_pairs(tmp_path / "SOTS")
    assert len(pairs) == 4 and pairs.clean[1].endswith("0001.png") and pairs.clean[2].endswith("0002.png")
    _save(tmp_path / "SOTS" / "hazy" / "0009_0.8_0.2.png", images[0])
    with pytest.raises(ValueError, match="no unique clean partner"):
        find_pairs(tmp_path / "SOTS")


def test_sidd_layout_and_clean_only_folders(tmp_path, images):
    for i, img in enumerate(images[:2]):
        _save(tmp_path / "SIDD" / "Data" / f"000{i}_001_S6" / "NOISY_SRGB_010.PNG", img + 5)
        _save(tmp_path / "SIDD" / "Data" / f"000{i}_001_S6" / "GT_SRGB_010.PNG", img)
    pairs = find_pairs(tmp_path / "SIDD")
    assert pairs.layout == "sidd" and len(pairs) == 2 and "GT_SRGB" in pairs.clean[0]
    for i, img in enumerate(images):  # CBSD68-style: clean images only
        _save(tmp_path / "CBSD68" / f"{i}.png", img)
    with pytest.raises(FileNotFoundError, match="synthetic_pairs"):
        find_pairs(tmp_path / "CBSD68")
    a = synthetic_pairs(tmp_path / "CBSD68", "denoise", seed=3, sigma=25)
    b = synthetic_pairs(tmp_path / "CBSD68", "denoise", seed=3, sigma=25)
    assert len(a) == 3 and np.array_equal(a[1][0], b[1][0]) and 15 < psnr(a[1][1], a[1][0]) < 25
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "CBSD68" / "grey.png")
    with pytest.raises(ValueError, match="grey_to_rgb=True"):
        synthetic_pairs(tmp_path / "CBSD68", "denoise")
    assert len(synthetic_pairs(tmp_path / "CBSD68", "denoise", grey_to_rgb=True)) == 4


def test_real_pairs_feed_the_source(tmp_path, images):
    for i, img in enumerate(images):
        _save(tmp_path / "rain" / "input" / f"{i}.png", img * 0.5 + 60)
        _save(tmp_path / "rain" / "target" / f"{i}.png", img * 0.5)
    source = RestorationSource(parse_spec(f"tasks=denoise+derain,images=generated,derain={tmp_path / 'rain'}"), 16)
    ex = source[0]
    diff = ex["degraded"][1] - ex["clean"][1]
    assert (diff == 60).all()  # an aligned crop of a real pair
    with pytest.raises(ValueError, match="smaller than the 48px patch"):
        RestorationSource(parse_spec(f"tasks=derain,derain={tmp_path / 'rain'}"), 48)
