"""jaxlab.data: embedded digits, TFDS / npy / ArrayRecord sources, sharded checkpointable batches."""

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs.common import training_defaults
from jaxlab.data import ArraySource, SourceSpec, batch_stream, load_digits, make_train_data
from jaxlab.data import image_ops, records
from jaxlab.data.digits import raw_digits
from tests.data import tiny_tfds


def data_config(**overrides) -> ml_collections.ConfigDict:
    cfg = training_defaults(ml_collections.ConfigDict()).data
    cfg.update(overrides)
    return cfg


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def indexed_spec(n=10, augment=None) -> SourceSpec:
    return SourceSpec(ArraySource({"index": np.arange(n)}), augment=augment, in_memory=True)


def test_digits_are_embedded_and_upsampled():
    raw, labels = raw_digits()
    assert raw.shape == (1797, 8, 8) and raw.dtype == np.uint8 and raw.max() == 16
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    images8, _ = load_digits(8)
    np.testing.assert_allclose(images8[..., 0], raw / 8.0 - 1.0, atol=1e-6)
    images16, labels16 = load_digits(16)
    assert images16.shape == (1797, 16, 16, 1) and images16.dtype == np.float32 and labels16.dtype == np.int32
    assert images16.min() >= -1.0 and images16.max() <= 1.0
    # Upsampling keeps the picture: block means of the 16x16 image track the 8x8 original.
    blocks = images16[..., 0].reshape(1797, 8, 2, 8, 2).mean(axis=(2, 4))
    assert np.corrcoef(blocks.ravel(), images8.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="image_size"):
        load_digits(4)


def test_stream_shuffles_each_epoch_deterministically():
    def first_elements(seed):
        it = iter(batch_stream(indexed_spec(), global_batch_size=5, seed=seed))
        return np.concatenate([b["index"] for b in take(it, 4)])

    order = first_elements(0)
    epoch1, epoch2 = order[:10], order[10:]
    assert sorted(epoch1) == list(range(10)) and sorted(epoch2) == list(range(10))
    assert list(epoch1) != list(epoch2), "each epoch must be reshuffled"
    np.testing.assert_array_equal(order, first_elements(0))
    assert list(order) != list(first_elements(1))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_compose_the_global_batch(process_count):
    """Process p reads rows [p*B/P, (p+1)*B/P) of the same global batch, augmentations included."""

    def draw(example, rng):
        return {**example, "draw": np.float32(rng.random())}

    spec = indexed_spec(n=13, augment=draw)
    single = take(iter(batch_stream(spec, global_batch_size=8, seed=3)), 5)
    shards = [
        take(iter(batch_stream(spec, global_batch_size=8, seed=3, process_index=p, process_count=process_count)), 5)
        for p in range(process_count)
    ]
    for k in range(5):
        for key in ("index", "draw"):
            np.testing.assert_array_equal(np.concatenate([s[k][key] for s in shards]), single[k][key])


@pytest.mark.parametrize("read_threads", [0, 4])
def test_iterator_state_resumes_exactly(read_threads):
    spec = SourceSpec(ArraySource({"index": np.arange(23)}))
    it = iter(batch_stream(spec, global_batch_size=4, seed=0, read_threads=read_threads))
    take(it, 3)
    state = it.get_state()
    expected = take(it, 6)
    resumed = iter(batch_stream(spec, global_batch_size=4, seed=0, read_threads=read_threads))
    resumed.set_state(state)
    for a, b in zip(take(resumed, 6), expected):
        np.testing.assert_array_equal(a["index"], b["index"])


def test_worker_processes_give_the_same_batches():
    cfg = data_config(source="digits", image_size=8, worker_count=1)
    with_workers = take(make_train_data(cfg, global_batch_size=6, seed=0).iterator, 2)
    cfg.worker_count = 0
    in_process = take(make_train_data(cfg, global_batch_size=6, seed=0).iterator, 2)
    for a, b in zip(with_workers, in_process):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_npy_and_array_record_sources_agree(tmp_path):
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(9, 4, 4, 2)).astype(np.float16)
    labels = np.arange(9, dtype=np.int64) % 5
    records.write_npy(tmp_path / "npy", {"image": latents, "label": labels})
    records.write_array_record(tmp_path / "ar" / "part-0.array_record",
                               ({"image": x, "label": y} for x, y in zip(latents, labels)))

    batches = {}
    for source, path in (("npy", tmp_path / "npy"), ("array_record", tmp_path / "ar")):
        data = make_train_data(data_config(source=source, path=str(path), scale=0.5), global_batch_size=3, seed=1)
        assert data.num_examples == 9 and data.example["image"].shape == (4, 4, 2)
        batches[source] = take(data.iterator, 4)
    for a, b in zip(batches["npy"], batches["array_record"]):
        assert a["image"].dtype == np.float32 and a["label"].dtype == np.int32
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # Every value is a stored latent times `scale`.
    first = batches["npy"][0]
    for x, y in zip(first["image"], first["label"]):
        i = int(np.flatnonzero(np.all(latents.astype(np.float32) * 0.5 == x, axis=(1, 2, 3)))[0])
        assert labels[i] == y


def test_tfds_source_decodes_with_pil(tmp_path):
    tiny_tfds.build(tmp_path)
    cfg = data_config(source="tfds", tfds_name=tiny_tfds.NAME, tfds_data_dir=str(tmp_path), image_size=8, shuffle=False)
    data = make_train_data(cfg, global_batch_size=4, seed=0)
    assert data.num_examples == tiny_tfds.NUM_EXAMPLES
    batch = next(data.iterator)
    assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.float32
    # TFDS stores examples in its own (hashed) order: match each image to the one it came from.
    expected = np.stack([image_ops.to_unit_range(image_ops.center_crop(Image.fromarray(x), 8))
                         for x in tiny_tfds.images()])
    for image, label in zip(batch["image"], batch["label"]):
        (j,) = np.flatnonzero(np.all(expected == image, axis=(1, 2, 3)))
        assert label == j % tiny_tfds.NUM_CLASSES

    cfg.update(random_flip=True, image_size=0)
    flipped = next(make_train_data(cfg, global_batch_size=12, seed=0).iterator)["image"]
    originals = image_ops.to_unit_range(tiny_tfds.images())
    same = [any(np.array_equal(f, o) for o in originals) for f in flipped]
    mirrored = [any(np.array_equal(f, o[:, ::-1]) for o in originals) for f in flipped]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)


def test_center_crop_follows_adm():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = image_ops.center_crop(image, 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # 40x30 -> box-halved to 20x15 (15 < 16 stops), bicubic to 11x8, centre 8 columns.
    step = image.resize((20, 15), Image.BOX).resize((11, 8), Image.BICUBIC)
    np.testing.assert_array_equal(out, np.asarray(step)[:, 1:9])
    square = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_ops.center_crop(Image.fromarray(square), 8), square)


def test_missing_and_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        make_train_data(data_config(source="tfds", tfds_name="cifar10", tfds_data_dir=str(tmp_path)),
                        global_batch_size=2, seed=0)
    with pytest.raises(FileNotFoundError, match="was not found"):
        make_train_data(data_config(source="tfds", tfds_name="no_such_dataset_xyz", tfds_data_dir=str(tmp_path)),
                        global_batch_size=2, seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_train_data(data_config(source="npy", path=str(tmp_path / "missing")), global_batch_size=2, seed=0)
    with pytest.raises(FileNotFoundError, match="no ArrayRecord files"):
        make_train_data(data_config(source="array_record", path=str(tmp_path / "*.array_record")),
                        global_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="config.data.path is empty"):
        make_train_data(data_config(source="npy"), global_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="allowed values"):
        make_train_data(data_config(source="imagenet"), global_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        batch_stream(indexed_spec(), global_batch_size=4, seed=0, process_count=3)
