"""Training / held-out data for all-in-one restoration: a grain source of task-grouped patch pairs.

``config.data.source="restoration"`` (registered on import of this module). One example is a
*task group*: the same-size patches of every task in the task list, so every global batch holds
every task in equal numbers (Instruct-IPT's synchronous training; see ``jaxlab.restoration.task``)::

    {"degraded": [T, P, P, 3] float32 in [0, 255],
     "clean":    [T, P, P, 3] float32 in [0, 255],
     "task":     [T] int32 (= 0 .. T-1, the task of each row)}

and a batch of ``B`` examples is ``[B, T, P, P, 3]`` (``config.training.global_batch_size`` counts
task groups: ``B * T`` patches per step). ``P = config.data.image_size``.

``config.data.path`` is a spec string ``key=value,...`` (the pattern of ``lm_text``/``text_task``):

- ``tasks=denoise+deblur+derain+dehaze+desnow`` (default all five, ``jaxlab.data.degradations.TASKS``);
- ``images=skimage`` (default: scikit-image's sample photos), ``generated`` (procedural scenes,
  no dependency) or a folder of clean RGB images;
- ``sigma=25`` (Gaussian noise level of ``denoise``);
- synthetic degradations (``jaxlab.data.degradations``) run on a 64 px context region around the
  patch (haze depth, rain and snow density are image-level), then the patch is cropped; a patch
  that came out unchanged (no streak or flake in it) is redrawn, up to 8 times;
- ``<task>=<folder>``: real degraded/clean pairs for that task (a Rain100L/GoPro/SOTS/SIDD-style
  folder, ``jaxlab.restoration.folders.find_pairs``) instead of synthetic degradations; aligned
  patches are cropped from a random pair.

Splits: the clean images are split by columns, the left 80 % for ``split=train`` and the right
20 % for ``eval``/``test`` (our choice: held-out patches come from image regions never trained on);
the example at index ``i`` is drawn from ``numpy.random.default_rng((split_seed, i))``, so it is
the same in every run and a resumed run replays it. Real pair folders are used whole in every split
(point a training run at a train set and evaluate on the test set with ``folders``).
"""

import dataclasses
import functools
import pathlib

import numpy as np

from jaxlab.data.degradations import TASKS, degrade, sample_images

SPLIT_SEEDS = {"train": 0, "eval": 1, "test": 2}
TRAIN_FRACTION = 0.8  # of every clean image's width, for split="train"
CONTEXT = 64  # side of the region a synthetic degradation is computed on (then the patch is cropped)
_STREAM_LENGTH = 1 << 30  # examples per "epoch" (drawn independently anyway)


@dataclasses.dataclass(frozen=True)
class RestorationSpec:
    """The parsed ``config.data.path`` spec (see the module docstring)."""

    tasks: tuple[str, ...] = TASKS
    images: str = "skimage"
    sigma: float = 25.0
    pairs: tuple[tuple[str, str], ...] = ()  # (task, folder) with real pairs

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("the restoration spec names no task; e.g. tasks=denoise+derain")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks={'+'.join(self.tasks)}: each must be one of {list(TASKS)}, at most once")
        for task, _ in self.pairs:
            if task not in self.tasks:
                raise ValueError(f"real pairs given for {task!r}, which is not in tasks={'+'.join(self.tasks)}")
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma} must be > 0 (the denoise noise level, in [0, 255] units)")


def parse_spec(spec: str) -> RestorationSpec:
    """``"tasks=denoise+derain,images=generated,sigma=15,derain=/data/Rain100L"`` -> ``RestorationSpec``."""
    kwargs, pairs = {}, []
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise ValueError(f"bad restoration spec {spec!r}: {item!r} is not key=value (e.g. 'tasks=denoise+derain,images=skimage')")
        if key == "tasks":
            kwargs["tasks"] = tuple(t.strip() for t in value.split("+") if t.strip())
        elif key == "images":
            kwargs["images"] = value
        elif key == "sigma":
            try:
                kwargs["sigma"] = float(value)
            except ValueError:
                raise ValueError(f"bad restoration spec: sigma={value!r} is not a number") from None
        elif key in TASKS:
            pairs.append((key, value))
        else:
            raise ValueError(f"unknown restoration spec key {key!r}; allowed: tasks, images, sigma, or a task name "
                             f"({', '.join(TASKS)}) = a folder of real pairs")
    return RestorationSpec(**kwargs, pairs=tuple(pairs))


def generated_images(count: int = 6, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``count`` procedural RGB scenes ``[size, size, 3]`` float32 in [0, 255] (no data needed).

    Smooth colour gradients, random filled ellipses and rectangles (edges), a sinusoidal texture
    and fine grain: enough structure for every degradation to matter. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        c0, c1 = rng.uniform(20, 235, (2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        img = c0 + (c1 - c0) * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        for _ in range(int(rng.integers(8, 16))):
            colour = rng.uniform(0, 255, 3)
            cy, cx, ry, rx = rng.uniform(0, 1, 2).tolist() + rng.uniform(0.04, 0.25, 2).tolist()
            if rng.random() < 0.5:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            img[mask] = colour
        freq, phase = rng.uniform(8, 40), rng.uniform(0, 2 * np.pi)
        img = img + 12 * np.sin(2 * np.pi * freq * (xx + 0.5 * yy) + phase)[..., None]
        img = img + rng.normal(0, 3, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.float32))
    return images


def image_folder_rgb(root: str | pathlib.Path) -> list[np.ndarray]:
    """Every image directly in ``root`` as ``[H, W, 3]`` float32 (RGB only, named errors otherwise)."""
    from jaxlab.restoration.folders import image_files, read_image

    return [read_image(p) for p in image_files(root)]


def split_region(image: np.ndarray, split: str) -> np.ndarray:
    """The columns of ``image`` that ``split`` may use (left 80 % for train, the rest otherwise)."""
    cut = int(round(image.shape[1] * TRAIN_FRACTION))
    return image[:, :cut] if split == "train" else image[:, cut:]


def clean_pool(images: str, split: str, patch: int) -> list[np.ndarray]:
    """The split's regions of the clean images named by ``images`` that fit a ``patch`` crop."""
    if images == "skimage":
        full = sample_images()
    elif images == "generated":
        full = generated_images()
    else:
        full = image_folder_rgb(images)
    pool = [r for r in (split_region(img, split) for img in full) if min(r.shape[:2]) >= patch]
    if not pool:
        sizes = [tuple(img.shape[:2]) for img in full]
        raise ValueError(f"no {split} region of the clean images ({images}: sizes {sizes}) fits a {patch}x{patch} patch; "
                         f"use a smaller config.data.image_size or larger images")
    return pool


def crop(rng: np.random.Generator, size: int, *images: np.ndarray) -> list[np.ndarray]:
    """The same random ``size`` crop (and horizontal flip) of equally sized ``images``."""
    h, w = images[0].shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    flip = rng.random() < 0.5
    out = [img[y : y + size, x : x + size] for img in images]
    return [np.ascontiguousarray(o[:, ::-1] if flip else o, np.float32) for o in out]


class RestorationSource:
    """Random access to task groups: ``source[i]`` is a pure function of ``(split seed, i)``."""

    def __init__(self, spec: RestorationSpec, patch: int, split: str = "train", length: int = _STREAM_LENGTH):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split={split!r} is not one of {list(SPLIT_SEEDS)}")
        if patch < 1:
            raise ValueError(f"patch size {patch} must be >= 1 (config.data.image_size: the model's patch_size)")
        self.spec, self.patch, self.split, self._length = spec, int(patch), split, int(length)
        self.seed = SPLIT_SEEDS[split]
        pair_tasks = dict(spec.pairs)
        self._pairs = {}
        if pair_tasks:
            from jaxlab.restoration.folders import find_pairs

            for task, root in pair_tasks.items():
                pairs = find_pairs(root)
                if pairs.scale != 1:
                    raise ValueError(f"{root} holds x{pairs.scale} super-resolution pairs; the {task} task needs same-size pairs")
                self._pairs[task] = pairs.load_all(min_size=self.patch)
        synthetic = [t for t in spec.tasks if t not in self._pairs]
        self._clean = clean_pool(spec.images, split, self.patch) if synthetic else []

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, int(index)))
        degraded, clean = [], []
        for task in self.spec.tasks:
            if task in self._pairs:
                bad, good = self._pairs[task][int(rng.integers(len(self._pairs[task])))]
                d, c = crop(rng, self.patch, bad, good)
            else:
                c, d = self._synthetic(rng, task)
            degraded.append(d)
            clean.append(c)
        return {"degraded": np.stack(degraded).astype(np.float32), "clean": np.stack(clean).astype(np.float32),
                "task": np.arange(len(self.spec.tasks), dtype=np.int32)}

    def _synthetic(self, rng: np.random.Generator, task: str) -> tuple[np.ndarray, np.ndarray]:
        """A clean patch and its degradation, computed on a larger context region (haze depth, streak and
        flake density are image-level effects) and redrawn when the patch came out unchanged (no streak
        or flake inside it), up to 8 times."""
        for _ in range(8):
            image = self._clean[int(rng.integers(len(self._clean)))]
            size = min(CONTEXT, *image.shape[:2])
            (region,) = crop(rng, size, image)
            bad = degrade(region, task, rng, sigma=self.spec.sigma)
            c, d = crop(rng, self.patch, region, bad)
            if np.abs(d - c).max() >= 1.0:
                break
        return c, d

    def batch(self, count: int, start: int = 0) -> dict[str, np.ndarray]:
        """Examples ``start .. start+count-1`` stacked: ``{"degraded": [count, T, P, P, 3], ...}`` (held-out sets)."""
        rows = [self[start + i] for i in range(count)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def __repr__(self) -> str:
        return f"RestorationSource(tasks={'+'.join(self.spec.tasks)}, images={self.spec.images}, split={self.split}, patch={self.patch})"


def _restoration_source(data_cfg):
    from jaxlab.data.sources import SourceSpec

    if data_cfg.split not in SPLIT_SEEDS:
        raise ValueError(f"config.data.split={data_cfg.split!r} is not allowed for restoration; allowed: {list(SPLIT_SEEDS)}")
    if int(data_cfg.image_size) <= 0:
        raise ValueError("config.data.image_size must be the patch size (> 0), the IPT's model.patch_size")
    return SourceSpec(RestorationSource(parse_spec(data_cfg.path), int(data_cfg.image_size), data_cfg.split), in_memory=True)


@functools.cache
def register() -> None:
    """Makes ``config.data.source="restoration"`` available (idempotent; also done on import)."""
    from jaxlab.data.sources import register_source

    register_source("restoration", _restoration_source)


register()
