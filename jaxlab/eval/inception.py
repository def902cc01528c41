"""Inception features as the ADM evaluator computes them: input range, resize, batching, weights.

ADM (``openai/guided-diffusion`` ``evaluations/evaluator.py``) feeds NHWC float32 images with
values 0..255 (its sample batches are uint8) into the TF graph at ``ExpandDims:0``; inside the
graph they are resized to 299x299 by TF1 ``ResizeBilinear`` (``align_corners=False``, no
half-pixel centres: source pixel ``i * in / out``, clamped at the last row/column, no antialias)
and normalised by ``(x - 128) / 128``. ``adm_inception_input`` does exactly that in JAX; pytorch-fid
instead resizes with half-pixel centres and uses ``2 x / 255 - 1``, which gives different FIDs.
The graph's outputs used are ``pool_3`` (FID), ``mixed_6/conv`` [..., :7] flattened (sFID, 2023
values per image) and the softmax of ``pool_3 @ W_softmax`` without the bias (IS).

Samples (``to_uint8_range``): uint8 is taken as is; floats must be the samplers' [-1, 1] and are
quantised like DiT's ``sample_ddp.py`` (``clip(127.5 x + 128, 0, 255)`` truncated to uint8), so the
numbers match an ADM evaluation of the saved ``.npz``. Floats in [0, 1] are ambiguous and refused
unless ``value_range`` says so.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.inception_fid import INPUT_SIZE, SPATIAL_CHANNELS, InceptionV3FID

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
VALUE_RANGES = ("auto", "uint8", "-1,1", "0,1")


# ----------------------------------------------------------------------------- samples -> 0..255


def to_uint8_range(images: np.ndarray, value_range: str = "auto") -> np.ndarray:
    """Samples ``[N, H, W, 3]`` -> uint8 ``[N, H, W, 3]`` (what ADM's sample ``.npz`` files hold).

    ``value_range``: "auto" (uint8 as is, other integers if within 0..255, floats must lie in
    [-1, 1] with some value below 0), "uint8", "-1,1" or "0,1". Raises ``ValueError`` naming the
    problem and the fix for NCHW arrays, a wrong channel count, NaNs and out-of-range values.
    """
    images = np.asarray(images)
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range={value_range!r}; use one of {VALUE_RANGES}")
    if images.ndim != 4:
        raise ValueError(f"samples must be [N, H, W, C] images, got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        hint = " (this looks NCHW: transpose to NHWC with x.transpose(0, 2, 3, 1))" if images.shape[1] in (1, 3) else ""
        raise ValueError(f"samples must have 1 or 3 channels last, got shape {images.shape}{hint}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)  # grey -> RGB, as PIL's convert("RGB")
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        if value_range not in ("auto", "uint8"):
            raise ValueError(f"integer samples ({images.dtype}) are 0..255 images; value_range={value_range!r} is for floats")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(
                f"integer samples must be in 0..255, got {images.min()}..{images.max()} ({images.dtype}); "
                f"scale them to uint8 images first"
            )
        return images.astype(np.uint8)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"samples must be uint8 images or floats in [-1, 1], got dtype {images.dtype}")
    if not np.isfinite(images).all():
        raise ValueError("samples contain NaN or inf: the sampler diverged; nothing was evaluated")
    lo, hi = float(images.min()), float(images.max())
    tol = 1e-3
    if value_range == "uint8":
        raise ValueError(f"value_range='uint8' but the samples are {images.dtype}; cast them to uint8 or pass '-1,1'")
    if value_range == "auto":
        if lo >= 0.0 and hi <= 1.0 + tol:
            raise ValueError(
                f"float samples in [{lo:.3g}, {hi:.3g}] are ambiguous: [0, 1] images or [-1, 1] samples with no dark "
                f"pixel? Pass value_range='0,1' (--value_range=0,1) or '-1,1'"
            )
        value_range = "-1,1"
    if value_range == "0,1":
        if lo < -tol or hi > 1 + tol:
            raise ValueError(f"value_range='0,1' but the samples span [{lo:.3g}, {hi:.3g}]")
        images = images * 2.0 - 1.0
    elif lo < -1 - tol or hi > 1 + tol:
        raise ValueError(
            f"float samples must be in [-1, 1] (the samplers' output), got [{lo:.3g}, {hi:.3g}]; for 0..255 floats "
            f"cast to uint8, for [0, 1] pass value_range='0,1'"
        )
    # DiT sample_ddp.py: clamp(127.5 x + 128, 0, 255).to(uint8) (truncation).
    return np.clip(127.5 * images.astype(np.float64) + 128.0, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- resize + normalise


def _tf1_axis(in_size: int, out_size: int):
    """TF1 legacy bilinear sampling along one axis: (low index, high index, fraction) per output."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lo = np.floor(src).astype(np.int32)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo).astype(np.float32)


def tf1_resize_bilinear(x_BHWC: jax.Array, size: tuple[int, int]) -> jax.Array:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)``: no half-pixel centres, no antialias.

    Output pixel ``i`` reads source position ``i * in / out`` (float32, as TF), interpolating its
    floor and the next pixel (clamped); rows first, then columns, as TF's kernel.
    """
    (_, h, w, _) = x_BHWC.shape
    ylo, yhi, dy = _tf1_axis(h, size[0])
    xlo, xhi, dx = _tf1_axis(w, size[1])
    x = x_BHWC.astype(jnp.float32)
    top_l, top_r = x[:, ylo][:, :, xlo], x[:, ylo][:, :, xhi]
    bot_l, bot_r = x[:, yhi][:, :, xlo], x[:, yhi][:, :, xhi]
    dx = jnp.asarray(dx)[None, None, :, None]
    dy = jnp.asarray(dy)[None, :, None, None]
    top = top_l + (top_r - top_l) * dx
    bottom = bot_l + (bot_r - bot_l) * dx
    return top + (bottom - top) * dy


def adm_inception_input(images_0_255: jax.Array) -> jax.Array:
    """``[B, H, W, 3]`` values 0..255 -> the Inception's ``[B, 299, 299, 3]`` input, as ADM's TF graph."""
    x = tf1_resize_bilinear(images_0_255.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
    return (x - 128.0) / 128.0


def pytorch_fid_input(images_0_255: jax.Array) -> jax.Array:
    """pytorch-fid's input path (half-pixel bilinear, ``2 x / 255 - 1``): an alternative, not ADM's."""
    b, _, _, c = images_0_255.shape
    x = jax.image.resize(images_0_255.astype(jnp.float32) / 255.0, (b, INPUT_SIZE, INPUT_SIZE, c), "linear", antialias=False)
    return 2.0 * x - 1.0


_INPUT_PATHS = {"adm": adm_inception_input, "pytorch_fid": pytorch_fid_input}


# ----------------------------------------------------------------------------- weights + features


def load_inception(path: str | pathlib.Path | None):
    """``(module, params)`` from pytorch-fid's ``.pth`` or a ``launch.convert --family=inception_fid`` directory."""
    how = (
        f"the FID Inception weights are not bundled (95 MB): download pytorch-fid's {FID_WEIGHTS_NAME} "
        f"(github.com/mseitzer/pytorch-fid releases, tag fid_weights) and pass its path, or a directory made by "
        f"`python -m launch.convert --family=inception_fid --checkpoint={FID_WEIGHTS_NAME} --output=DIR`"
    )
    if not path:
        raise FileNotFoundError(f"no Inception weights given (--inception). {how}")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Inception weights {path} do not exist. {how}")
    if path.is_dir():
        from jaxlab.train.params_io import load_model

        module, params = load_model(path)
        if not isinstance(module, InceptionV3FID):
            raise ValueError(f"{path} holds a {type(module).__name__}, not the FID Inception. {how}")
        return module, params
    from jaxlab.convert import from_torch
    from jaxlab.convert.io import load_state_dict

    return from_torch("inception_fid", {}, load_state_dict(path))


class InceptionFeatures:
    """Batched, jitted ADM features: uint8 ``[N, H, W, 3]`` -> ``{"pool3", "spatial", "probs"}`` (numpy).

    ``pool3`` [N, 2048] float32, ``spatial`` [N, 2023] float32 (mixed_6/conv [..., :7] flattened
    in NHWC order, as ADM), ``probs`` [N, 1008] float64 (softmax of the bias-free logits). Every
    batch is padded to ``batch_size`` so one compiled program serves all of them.
    """

    def __init__(self, module: InceptionV3FID, params, batch_size: int = 64, input_path: str = "adm"):
        if input_path not in _INPUT_PATHS:
            raise ValueError(f"input_path={input_path!r}; use one of {sorted(_INPUT_PATHS)}")
        self.batch_size = batch_size
        self.params = params
        prepare = _INPUT_PATHS[input_path]

        def features(params, images):
            out = module.apply({"params": params}, prepare(images))
            spatial = out["spatial"][..., :SPATIAL_CHANNELS]
            return out["pool3"], spatial.reshape(spatial.shape[0], -1), out["logits_nobias"]

        self._features = jax.jit(features)

    def __call__(self, images_uint8: np.ndarray, progress=None) -> dict[str, np.ndarray]:
        from jaxlab.eval.metrics import softmax

        images_uint8 = np.asarray(images_uint8)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
            raise ValueError(
                f"InceptionFeatures takes uint8 [N, H, W, 3] images (see to_uint8_range), got {images_uint8.dtype} "
                f"{images_uint8.shape}"
            )
        pool, spatial, logits = [], [], []
        for start in range(0, len(images_uint8), self.batch_size):
            batch = images_uint8[start : start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, *batch.shape[1:]), np.uint8)])
            p, s, lg = self._features(self.params, batch)
            pool.append(np.asarray(p)[:n])
            spatial.append(np.asarray(s)[:n])
            logits.append(np.asarray(lg)[:n])
            if progress is not None:
                progress(start + n, len(images_uint8))
        out = {"pool3": np.concatenate(pool), "spatial": np.concatenate(spatial), "probs": softmax(np.concatenate(logits))}
        for name, value in out.items():
            if not np.isfinite(value).all():
                raise FloatingPointError(f"Inception {name} features are not finite; check the weights file")
        return out
