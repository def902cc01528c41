"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph) in Flax, NHWC.

Faithful to ``pytorch-fid`` 0.3.0 ``src/pytorch_fid/inception.py`` (``fid_inception_v3``:
torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` with the FID block variants
``FIDInceptionA`` (Mixed_5b/5c/5d), ``FIDInceptionC`` (Mixed_6b..6e), ``FIDInceptionE_1``
(Mixed_7b) and ``FIDInceptionE_2`` (Mixed_7c)). With the released weights
``pt_inception-2015-12-05-6726825d.pth`` (converted by ``jaxlab.convert.inception``) this is the
network behind the FID of Heusel et al. and the ADM evaluator (``openai/guided-diffusion``
``evaluations/evaluator.py``).

Input: ``x_BHWC`` float32, 299x299 RGB, already normalised to about [-1, 1]
(``jaxlab.eval.inception.adm_inception_input`` turns uint8-range images into this the way
ADM's TF graph does). Output: a dict with

- ``pool3`` ``[B, 2048]``: global average of Mixed_7c (TF ``pool_3``, the FID feature);
- ``logits`` ``[B, 1008]``: ``fc(pool3)`` with its bias (pytorch-fid's ``fc``, TF ``softmax/logits``);
- ``logits_nobias`` ``[B, 1008]``: ``pool3 @ fc.kernel``: ADM's Inception Score multiplies
  ``pool_3`` by the weight of ``softmax/logits/MatMul`` only, without the bias;
- ``spatial`` ``[B, 17, 17, 192]``: Mixed_6d's ``branch1x1`` output after its ReLU, TF
  ``mixed_6/conv`` (TF's mixed, mixed_1, mixed_2 = 5b/5c/5d, mixed_3 = 6a, mixed_4..7 = 6b..6e);
  ADM's sFID takes its first 7 channels, flattened.

``BasicConv2d`` (conv without bias -> BatchNorm(eps=1e-3, running stats) -> ReLU) is stored with
the BatchNorm folded into the convolution (kernel * gamma / sqrt(var + eps), bias beta - mean * that
scale), computed in float64 by the converter: the network is an inference-only evaluator, so the
fold saves one pass over every activation. Parameters are replicated (no logical axis names): the
evaluator is never trained or sharded by parameter. Sown intermediates (``intermediates``
collection): ``block1_maxpool2`` [B, 35, 35, 192] and ``mixed_7c`` [B, 8, 8, 2048].
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models.common import ModelConfig

INPUT_SIZE = 299
POOL3_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM's sFID: the first 7 channels of mixed_6/conv


@dataclasses.dataclass(frozen=True)
class InceptionConfig(ModelConfig):
    """The FID Inception; ``num_classes`` is 1008 for the TF 2015-12-05 graph (pytorch-fid's)."""

    num_classes: int = 1008
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be >= 1 (1008 for the FID Inception)")


PRESETS = {"fid": {}}


class BasicConv(nn.Module):
    """Conv (BatchNorm folded in: kernel + bias) -> ReLU; ``padding`` as (top/bottom, left/right)."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        (ph, pw) = self.padding
        y = nn.Conv(
            self.features,
            self.kernel,
            strides=self.stride,
            padding=((ph, ph), (pw, pw)),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x_BHWC)
        return nn.relu(y)


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """FIDInceptionA (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3, avg-pool branches."""

    pool_features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, p=(0, 0), name=None: BasicConv(f, k, padding=p, dtype=self.dtype, name=name)  # noqa: E731
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), (2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), (1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), (1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """torchvision InceptionB (Mixed_6a): 35 -> 17 pixels."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, s=1, p=(0, 0), name=None: BasicConv(f, k, s, p, dtype=self.dtype, name=name)  # noqa: E731
        b3 = conv(384, (3, 3), 2, name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), 1, (1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), 2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """FIDInceptionC (Mixed_6b..6e): factorised 7x7 branches; returns ``(output, branch1x1 output)``."""

    channels_7x7: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, p=(0, 0), name=None: BasicConv(f, k, padding=p, dtype=self.dtype, name=name)  # noqa: E731
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), (0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), (3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), (3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), (0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), (3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), (0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nn.Module):
    """torchvision InceptionD (Mixed_7a): 17 -> 8 pixels."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, s=1, p=(0, 0), name=None: BasicConv(f, k, s, p, dtype=self.dtype, name=name)  # noqa: E731
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), 2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), 1, (0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), 1, (3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), 2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (Mixed_7b, avg pool) / FIDInceptionE_2 (Mixed_7c, ``max_pool=True``)."""

    max_pool: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, p=(0, 0), name=None: BasicConv(f, k, padding=p, dtype=self.dtype, name=name)  # noqa: E731
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [conv(384, (1, 3), (0, 1), name="branch3x3_2a")(b3), conv(384, (3, 1), (1, 0), name="branch3x3_2b")(b3)],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), (1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [conv(384, (1, 3), (0, 1), name="branch3x3dbl_3a")(bd), conv(384, (3, 1), (1, 0), name="branch3x3dbl_3b")(bd)],
            axis=-1,
        )
        if self.max_pool:  # the 2015 graph's last block pools with max, not avg (pytorch-fid's E_2)
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
    """The FID Inception: ``x_BHWC`` [B, 299, 299, 3] in [-1, 1] -> dict of features (module docstring)."""

    config: InceptionConfig

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> dict[str, jax.Array]:
        if x_BHWC.ndim != 4 or x_BHWC.shape[-1] != 3:
            raise ValueError(f"the FID Inception takes [B, H, W, 3] RGB images, got shape {x_BHWC.shape}")
        if x_BHWC.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"the FID Inception takes {INPUT_SIZE}x{INPUT_SIZE} images, got {x_BHWC.shape[1:3]}; resize with "
                f"jaxlab.eval.inception.adm_inception_input (TF1 bilinear, as the ADM evaluator does)"
            )
        dt = jnp.dtype(self.config.dtype)
        conv = lambda f, k, s=1, p=(0, 0), name=None: BasicConv(f, k, s, p, dtype=dt, name=name)  # noqa: E731
        x = x_BHWC.astype(dt)
        x = conv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), p=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        self.sow("intermediates", "block1_maxpool2", x)
        x = InceptionA(32, dt, name="Mixed_5b")(x)
        x = InceptionA(64, dt, name="Mixed_5c")(x)
        x = InceptionA(64, dt, name="Mixed_5d")(x)
        x = InceptionB(dt, name="Mixed_6a")(x)
        x, _ = InceptionC(128, dt, name="Mixed_6b")(x)
        x, _ = InceptionC(160, dt, name="Mixed_6c")(x)
        x, spatial = InceptionC(160, dt, name="Mixed_6d")(x)
        x, _ = InceptionC(192, dt, name="Mixed_6e")(x)
        x = InceptionD(dt, name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, dtype=dt, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, dtype=dt, name="Mixed_7c")(x)
        self.sow("intermediates", "mixed_7c", x)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        fc = nn.Dense(self.config.num_classes, dtype=jnp.float32, param_dtype=jnp.float32, name="fc")
        logits = fc(pool3)
        logits_nobias = pool3 @ fc.variables["params"]["kernel"]
        return {
            "pool3": pool3,
            "logits": logits,
            "logits_nobias": logits_nobias,
            "spatial": spatial.astype(jnp.float32),
        }
