"""A CPU-scale quality metric for the embedded digits: "digits FID" from a small classifier's features.

The Inception network cannot tell 16x16 grey digits apart and is far too slow on CPU, so the
digits models (DiT / U-DiT / DiC ``:digits``) are measured with a small CNN trained once on the
embedded digits (``jaxlab.data.digits``). Its 64-d penultimate activations play the role of
``pool_3``: digits FID (Fréchet distance of their Gaussian statistics), digits IS (its 10-way
softmax), and improved precision/recall (k = 3), all with ``jaxlab.eval.metrics``. The reference is
the real digits at the samples' resolution. These numbers rank digits models against each other;
they are not comparable with Inception FIDs.

Network (``DigitsNet``): input ``[B, 16, 16, 1]`` in [-1, 1] (other sizes are resized bilinearly to
16 first, the real digits and the samples alike); conv3x3(32)-ReLU, conv3x3(32)-ReLU, avgpool 2,
conv3x3(64)-ReLU, avgpool 2, dense(64)-ReLU (= the features), dense(10).

Training (``python -m jaxlab.eval.digits_features --output=jaxlab/assets/digits_classifier.npz``):
the digits split by a fixed permutation (seed 0) into 1,297 train and 500 test images at 16x16;
AdamW 1e-3, batch 64, 40 epochs, random +-1 pixel shifts. The shipped asset records its test
accuracy, the split seed and the training settings (``metadata``).
"""

import functools
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data.digits import NUM_CLASSES, load_digits
from jaxlab.eval import metrics

ASSET = pathlib.Path(__file__).resolve().parents[1] / "assets" / "digits_classifier.npz"
IMAGE_SIZE = 16
FEATURE_DIM = 64
SPLIT_SEED = 0
NUM_TEST = 500


class DigitsNet(nn.Module):
    """``x [B, 16, 16, 1]`` in [-1, 1] -> ``(features [B, 64], logits [B, 10])``."""

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(32, (3, 3), name="conv_0")(x_BHWC))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv_1")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), name="conv_2")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        features = nn.relu(nn.Dense(FEATURE_DIM, name="dense_0")(x.reshape(x.shape[0], -1)))
        return features, nn.Dense(NUM_CLASSES, name="head")(features)


def split_indices(n: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test split of the embedded digits: ``(train_idx, test_idx)``."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[NUM_TEST:]), np.sort(perm[:NUM_TEST])


def to_digits_input(images: np.ndarray) -> np.ndarray:
    """Samples ``[N, S, S, 1]`` (floats in [-1, 1] or uint8 0..255) -> float32 in [-1, 1], one channel.

    Raises ``ValueError`` naming the problem for other ranks, channel counts, NaNs or ranges.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[1] != images.shape[2]:
        raise ValueError(f"digit samples must be square [N, S, S, 1] images, got shape {images.shape}")
    if images.shape[1] < 8:
        raise ValueError(f"digit samples must be at least 8x8, got {images.shape[1]}x{images.shape[2]}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 127.5 - 1.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError("digit samples contain NaN or inf: the sampler diverged")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"float digit samples must be in [-1, 1] (the samplers' output), got [{lo:.3g}, {hi:.3g}]")
        x = np.clip(images.astype(np.float32), -1.0, 1.0)
    else:
        raise ValueError(f"digit samples must be uint8 or floats in [-1, 1], got dtype {images.dtype}")
    return x.mean(axis=-1, keepdims=True) if x.shape[-1] == 3 else x


def _resize(x_BHWC: jax.Array) -> jax.Array:
    if x_BHWC.shape[1] == IMAGE_SIZE:
        return x_BHWC
    b, _, _, c = x_BHWC.shape
    return jax.image.resize(x_BHWC, (b, IMAGE_SIZE, IMAGE_SIZE, c), "linear")


def load_classifier(path: str | pathlib.Path = ASSET) -> tuple[dict, dict]:
    """``(params, metadata)`` of the shipped (or a retrained) digits classifier."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"digits classifier {path} is missing; train it with `python -m jaxlab.eval.digits_features --output={path}`"
        )
    from flax import traverse_util

    with np.load(path) as data:
        flat = {tuple(k.split("/")): data[k] for k in data.files if k != "metadata"}
        meta = json.loads(str(data["metadata"]))
    return traverse_util.unflatten_dict(flat), meta


class DigitsFeatures:
    """Batched, jitted digits features: images -> ``{"features" [N, 64], "probs" [N, 10]}`` (numpy)."""

    def __init__(self, params: dict | None = None, batch_size: int = 256):
        if params is None:
            params, self.metadata = load_classifier()
        else:
            self.metadata = {}
        self.params = params
        self.batch_size = batch_size

    @functools.cached_property
    def _apply(self):
        net = DigitsNet()
        return jax.jit(lambda p, x: net.apply({"params": p}, _resize(x)))

    def features_jax(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Traceable: ``x [B, S, S, 1]`` in [-1, 1] -> ``(features [B, 64], probs [B, 10])`` (for jit'ed evals)."""
        feats, logits = DigitsNet().apply({"params": self.params}, _resize(x_BHWC))
        return feats, jax.nn.softmax(logits)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = to_digits_input(images)
        feats, logits = [], []
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, *batch.shape[1:]), np.float32)])
            f, lg = self._apply(self.params, batch)
            feats.append(np.asarray(f)[:n])
            logits.append(np.asarray(lg)[:n])
        return {"features": np.concatenate(feats), "probs": metrics.softmax(np.concatenate(logits))}


def digits_scores(sample_features: dict, ref_features: dict, *, force: bool = False, fid_method: str = "eigh") -> dict:
    """Digits FID / IS / precision / recall from ``DigitsFeatures`` outputs (samples vs reference).

    ``fid_method="eigh"`` by default: some ReLU features are always 0 on digits, so the
    covariances are singular and ``sqrtm`` warns; the eigendecomposition gives the same trace.
    IS uses one split (a few hundred samples); precision/recall use float32 distances.
    """
    n = len(sample_features["features"])
    metrics.check_sample_count(n, FEATURE_DIM, force=force, what="digits FID")
    mu, sigma = metrics.feature_statistics(sample_features["features"])
    mu_r, sigma_r = metrics.feature_statistics(ref_features["features"])
    precision, recall = metrics.precision_recall(ref_features["features"], sample_features["features"], distance_dtype="float32")
    return {
        "digits_fid": metrics.frechet_distance(mu, sigma, mu_r, sigma_r, method=fid_method),
        "digits_is": metrics.inception_score(sample_features["probs"], num_splits=1),
        "digits_precision": precision,
        "digits_recall": recall,
        "num_samples": n,
        "num_reference": len(ref_features["features"]),
    }


def real_digits(image_size: int) -> np.ndarray:
    """All 1,797 real digits ``[N, S, S, 1]`` in [-1, 1] at the samples' size (the reference)."""
    return load_digits(image_size)[0]


def evaluate_digits(samples: np.ndarray, *, force: bool = False, features: DigitsFeatures | None = None) -> dict:
    """Digits metric of ``samples [N, S, S, 1]`` against all real digits at size S; a JSON-ready report."""
    x = to_digits_input(samples)
    metrics.check_sample_count(len(x), FEATURE_DIM, force=force, what="digits FID")
    features = features or DigitsFeatures()
    report = digits_scores(features(x), features(real_digits(x.shape[1])), force=force)
    report.update(
        resolution=list(x.shape[1:3]),
        reference="the 1,797 embedded real digits at the samples' resolution",
        feature_network=f"jaxlab.eval.digits_features.DigitsNet (test accuracy {features.metadata.get('test_accuracy')})",
        digits_is_splits=1,
        forced_below_min_samples=bool(len(x) < FEATURE_DIM),
    )
    return report


# ----------------------------------------------------------------------------- training (run once)


def train(epochs: int = 40, batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 0) -> tuple[dict, dict]:
    """Trains ``DigitsNet`` on the train split; returns ``(params, metadata with test_accuracy)``."""
    import optax

    images, labels = load_digits(IMAGE_SIZE)
    train_idx, test_idx = split_indices(len(images))
    net = DigitsNet()
    key = jax.random.key(seed)
    params = net.init(key, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))["params"]
    tx = optax.adamw(learning_rate, weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y, shift_key):
        shifts = jax.random.randint(shift_key, (2,), -1, 2)
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
        x = jax.lax.dynamic_slice(padded, (0, 1 + shifts[0], 1 + shifts[1], 0), x.shape)

        def loss_fn(p):
            _, logits = net.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(train_idx)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            key, sub = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, images[idx], labels[idx], sub)
    _, logits = jax.jit(net.apply)({"params": params}, images[test_idx])
    accuracy = float((np.asarray(logits).argmax(-1) == labels[test_idx]).mean())
    meta = dict(
        test_accuracy=accuracy, num_train=len(train_idx), num_test=len(test_idx), split_seed=SPLIT_SEED,
        image_size=IMAGE_SIZE, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        final_train_loss=float(loss),
    )
    return params, meta


def save_classifier(path: str | pathlib.Path, params: dict, meta: dict) -> pathlib.Path:
    from flax import traverse_util

    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(params).items()}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, metadata=np.array(json.dumps(meta)), **flat)
    return path


def main(argv):
    from absl import flags

    del argv
    output = pathlib.Path(flags.FLAGS.output)
    if output.exists() and not flags.FLAGS.overwrite:
        raise SystemExit(f"{output} exists; pass --overwrite to replace it")
    params, meta = train(epochs=flags.FLAGS.epochs)
    save_classifier(output, params, meta)
    print(f"test accuracy {meta['test_accuracy']:.4f} on {meta['num_test']} held-out digits; wrote {output}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("output", str(ASSET), "where to write the classifier .npz")
    flags.DEFINE_integer("epochs", 40, "training epochs")
    flags.DEFINE_bool("overwrite", False, "replace an existing file")
    app.run(main)
