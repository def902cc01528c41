"""launch.encode: an image folder to latent ArrayRecord shards that the trainer reads; resume; bad input."""

import hashlib
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs.dit import get_config
from jaxlab.convert import from_torch
from jaxlab.data import records
from jaxlab.data.image_folder import check_rgb, image_folder_spec, scan_image_folder
from jaxlab.diffusion.latents import make_latent_encoder
from jaxlab.train.params_io import save_model
from launch.encode import Plan, encode_shards, image_size_for, prepare_output
from tests.conftest import GoldenCase

VAE = GoldenCase("vae", "vae_tiny")  # factor 2: 16x16 images -> the tiny DiT's 8x8x4 latents
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    module, params = from_torch("vae", VAE.meta["constructor"], VAE.state_dict)
    path = save_model(tmp_path_factory.mktemp("vae") / "vae", "vae", module.config, params)
    return path, module, params


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of random RGB images of uneven sizes (centre-cropped to 16x16)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        cls = root / ("cat" if i % 2 else "ant")
        cls.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (18 + i, 20, 3), dtype=np.uint8)).save(cls / f"{i:02d}.png")
    return root


def _read_shards(directory: pathlib.Path):
    files = records.array_record_files(str(directory))
    from array_record.python.array_record_module import ArrayRecordReader

    out = []
    for f in files:
        reader = ArrayRecordReader(f)
        out += [records.decode_example(r) for r in reader.read_all()]
        reader.close()
    return files, out


def _digest(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(pathlib.Path(f).read_bytes())
    return h.hexdigest()


def test_killed_encode_resumes_without_losing_or_duplicating_then_trains(vae, folder, tmp_path):
    vae_dir, module, params = vae
    out = tmp_path / "latents"
    args = [sys.executable, "-m", "launch.encode", "--config=configs/dit.py:tiny", f"--vae={vae_dir}",
            f"--images={folder}", f"--output={out}", "--examples_per_shard=4", "--batch_size=4"]
    # The first run splits each batch over 2 (fake) CPU devices, then stops (as if killed) after one shard.
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    first = subprocess.run(args + ["--stop_after_shards=1"], capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.glob("*.array_record")) == ["latents-00000-of-00003.array_record"]
    # A run killed while writing shard 1 leaves its partial .tmp behind.
    (out / "latents-00001-of-00003.array_record.tmp").write_bytes(b"partial garbage")
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "1 already written" in second.stdout and "images/s" in second.stdout and "3/3 shards" in second.stdout
    assert not list(out.glob("*.tmp"))

    files, examples = _read_shards(out)
    assert len(files) == 3 and len(examples) == NUM_IMAGES
    # Every example exactly once, in order: the encoder's output for image i with key fold_in(seed 0, i).
    spec = image_folder_spec(folder, 16)
    images = np.stack([spec.decode(spec.source[i])["image"] for i in range(NUM_IMAGES)])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(NUM_IMAGES))
    expected = np.asarray(make_latent_encoder(module)(params, images, keys))
    np.testing.assert_allclose(np.stack([e["image"] for e in examples]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal([int(e["label"]) for e in examples], [0] * 5 + [1] * 5)  # ant/, then cat/
    assert examples[0]["image"].shape == (8, 8, 4) and examples[0]["image"].dtype == np.float32

    # The shards the resumed (one-device) run wrote are byte-identical to an uninterrupted one-device run's
    # (the 2-device shard 0 agrees to float rounding, checked above).
    clean = tmp_path / "clean"
    prepare_output(clean, {"any": 1})
    encode_shards(spec, Plan(NUM_IMAGES, "none", 4, 0), module, params, clean, batch_size=4, log=lambda m: None)
    assert _digest(records.array_record_files(str(clean))[1:]) == _digest(files[1:])

    # The trainer reads the shards (configs/dit.py:tiny takes 8x8x4 latents).
    from jaxlab.train.loop import train

    config = get_config("tiny")
    config.data.update(source="array_record", path=str(out), random_flip=True)
    config.training.update(num_steps=2, global_batch_size=4)
    config.logging.update(every_steps=1, sample_every_steps=0, tensorboard=False, progress_bar=False)
    config.checkpoint.update(every_steps=2, async_save=False)
    result = train(config, str(tmp_path / "run"))
    assert result.step == 2 and np.isfinite(result.last_metrics["loss"])


def test_hflip_plans():
    both = Plan(3, "both", 4, 0)
    assert both.num_examples == 6 and both.num_shards == 2 and list(both.shard_examples(1)) == [4, 5]
    assert [both.image_and_flip(i) for i in range(4)] == [(0, False), (0, True), (1, False), (1, True)]
    flips = [Plan(1000, "random", 10, 0).image_and_flip(i)[1] for i in range(1000)]
    assert 400 < sum(flips) < 600 and flips == [Plan(1000, "random", 10, 0).image_and_flip(i)[1] for i in range(1000)]
    assert not any(Plan(5, "none", 2, 0).image_and_flip(i)[1] for i in range(5))


def test_bad_inputs_are_named(vae, folder, tmp_path):
    _, module, _ = vae
    gray = tmp_path / "gray" / "cls"
    gray.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(gray / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(gray / "b.png")
    files = scan_image_folder(gray.parent).files
    with pytest.raises(ValueError, match=r"1 of 2 images are not RGB: .*b.png \(L\).*--convert_rgb"):
        check_rgb(files)
    check_rgb(scan_image_folder(folder).files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        scan_image_folder(tmp_path / "empty")

    model = get_config("tiny").model  # input_size 8
    assert image_size_for(model, module.config, 0) == 16
    with pytest.raises(ValueError, match="image_size=15 is not divisible by the VAE's downsampling factor 2"):
        image_size_for(model, module.config, 15)
    with pytest.raises(ValueError, match="gives 16x16 latents, but the model takes input_size=8"):
        image_size_for(model, module.config, 32)

    out = tmp_path / "out"
    prepare_output(out, {"seed": 0})
    prepare_output(out, {"seed": 0})  # a rerun with the same settings resumes
    with pytest.raises(ValueError, match=r"other settings \(\['seed'\] differ\)"):
        prepare_output(out, {"seed": 1})
    with pytest.raises(FileExistsError, match="not a launch.encode output"):
        prepare_output(folder, {"seed": 0})


def test_tfds_source_with_flipped_copies(vae, tmp_path):
    """The config's tfds dataset (launch.encode without --images), --hflip=both: image k is examples
    2k (as is) and 2k+1 (mirrored), each encoded with its own key."""
    from jaxlab.data.sources import build_source
    from launch.encode import _tfds_data
    from tests.data import tiny_tfds

    _, module, params = vae
    tiny_tfds.build(tmp_path / "tfds")
    config = get_config("tiny")
    config.data.update(source="tfds", tfds_name=tiny_tfds.NAME, tfds_data_dir=str(tmp_path / "tfds"), random_flip=True)
    spec = build_source(_tfds_data(config, 16))
    plan = Plan(len(spec.source), "both", 8, 0)
    out = tmp_path / "out"
    prepare_output(out, {"any": 1})
    assert encode_shards(spec, plan, module, params, out, batch_size=4, log=lambda m: None) == 3
    _, examples = _read_shards(out)
    assert len(examples) == 2 * tiny_tfds.NUM_EXAMPLES
    items = [spec.decode(spec.source[k]) for k in range(tiny_tfds.NUM_EXAMPLES)]  # TFDS's stored order
    images = np.stack([item["image"] for item in items])
    images = np.stack([images, images[:, :, ::-1]], axis=1).reshape(-1, 16, 16, 3)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(len(images)))
    expected = np.asarray(make_latent_encoder(module)(params, images, keys))
    np.testing.assert_allclose(np.stack([e["image"] for e in examples]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal([int(e["label"]) for e in examples], np.repeat([int(item["label"]) for item in items], 2))


def test_workers_split_the_shards(vae, folder, tmp_path):
    """--worker=i/N (or --distributed): process i writes shards i, i+N, ...; together they write each once."""
    _, module, params = vae
    spec, plan = image_folder_spec(folder, 16), Plan(NUM_IMAGES, "none", 4, 0)
    written = [encode_shards(spec, plan, module, params, tmp_path, batch_size=4, process_index=i, process_count=2,
                             log=lambda m: None) for i in (1, 0)]
    assert written == [1, 2]
    assert sorted(p.name for p in tmp_path.glob("*.array_record")) == [plan.shard_name(s) for s in range(3)]
    assert len(_read_shards(tmp_path)[1]) == NUM_IMAGES
