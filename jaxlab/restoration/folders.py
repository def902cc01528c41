"""Benchmark-set folders for restoration: degraded/clean pairs found from the usual layouts.

``find_pairs(root)`` recognises, in this order:

1. **SR benchmark** (EDSR/IPT's ``benchmark/<Set5|Set14|B100|Urban100>``): ``root/HR/<name>.png``
   and ``root/LR_bicubic/X<s>/<name>x<s>.png`` (or the same name); ``scale`` picks ``X<s>`` when
   there are several.
2. **SIDD-style** scene folders: ``root[/Data]/<scene>/`` each holding ``*NOISY*`` and ``*GT*``
   files (SIDD-Small/Medium sRGB), paired by replacing ``NOISY`` with ``GT``.
3. **Two folders**, degraded and clean, with the names the public releases use:
   degraded ``input|rainy|rain|hazy|blur|blurry|noisy|snow|synthetic|lq|low``, clean
   ``target|norain|gt|clear|sharp|clean|groundtruth|hq|high`` (Rain100L/H ``rainy``+``norain``
   or ``input``+``target``, GoPro ``blur``+``sharp``, SOTS ``hazy``+``gt``/``clear``, Snow100K
   ``synthetic``+``gt``). A degraded file pairs with the clean file of the same stem, else with
   the one sharing its first number (``rain-001`` -> ``norain-001``, SOTS ``0001_0.8_0.2`` ->
   ``0001``); several degraded files may share one clean file; an unmatched file is an error.

A folder of clean images alone (BSD68/CBSD68/Set12/Kodak24) is not a pair set: use
``synthetic_pairs(root, task, seed)`` (seeded degradations of each image) for those.
Images must be RGB; grey (BSD68, Set12, some of Set14/B100) is refused naming the files unless
``grey_to_rgb=True`` (channels replicated).
"""

import dataclasses
import pathlib
import re

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
DEGRADED_DIRS = ("input", "rainy", "rain", "hazy", "blur", "blurry", "noisy", "snow", "synthetic", "lq", "low")
CLEAN_DIRS = ("target", "norain", "gt", "clear", "sharp", "clean", "groundtruth", "hq", "high")


def image_files(folder: str | pathlib.Path) -> list[pathlib.Path]:
    """Image files directly in ``folder``, sorted; raises when the folder is missing or has none."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) directly in {folder}")
    return files


def read_image(path: str | pathlib.Path, grey_to_rgb: bool = False) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 255]; non-RGB files are refused (grey replicated with ``grey_to_rgb``)."""
    with Image.open(path) as image:
        if image.mode == "L" and grey_to_rgb:
            image = image.convert("RGB")
        if image.mode != "RGB":
            raise ValueError(
                f"{path} is a {image.mode!r} image; these models restore RGB: convert it (PIL .convert('RGB')), or "
                f"pass grey_to_rgb=True for grey benchmark images (the channels are replicated)"
            )
        return np.asarray(image, np.float32)


@dataclasses.dataclass(frozen=True)
class PairedSet:
    """Matched ``degraded[i]`` / ``clean[i]`` files of one benchmark folder (``scale`` > 1 for SR)."""

    root: str
    layout: str
    degraded: tuple[str, ...]
    clean: tuple[str, ...]
    scale: int = 1

    def __len__(self) -> int:
        return len(self.degraded)

    def load(self, i: int, grey_to_rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
        bad, good = read_image(self.degraded[i], grey_to_rgb), read_image(self.clean[i], grey_to_rgb)
        want = (bad.shape[0] * self.scale, bad.shape[1] * self.scale)
        if good.shape[:2] != want:
            if self.scale > 1 and good.shape[0] >= want[0] and good.shape[1] >= want[1]:
                good = good[: want[0], : want[1]]  # EDSR crops HR to a multiple of the scale
            else:
                raise ValueError(f"{self.degraded[i]} is {bad.shape[1]}x{bad.shape[0]} but its clean {self.clean[i]} is "
                                 f"{good.shape[1]}x{good.shape[0]} (expected x{self.scale})")
        return bad, good

    def load_all(self, min_size: int = 1, grey_to_rgb: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every pair, refusing (with the names) images smaller than ``min_size`` (the model's patch)."""
        pairs = [self.load(i, grey_to_rgb) for i in range(len(self))]
        small = [self.degraded[i] for i, (d, _) in enumerate(pairs) if min(d.shape[:2]) < min_size]
        if small:
            raise ValueError(f"{len(small)} image(s) in {self.root} are smaller than the {min_size}px patch: {small[:3]}")
        return pairs


def _first_number(stem: str) -> int | None:
    match = re.search(r"\d+", stem)
    return int(match.group()) if match else None


def _match(degraded: list[pathlib.Path], clean: list[pathlib.Path], root) -> list[pathlib.Path]:
    """The clean file of each degraded file: same stem, else same first number (unique)."""
    by_stem = {p.stem.lower(): p for p in clean}
    by_number: dict[int, list[pathlib.Path]] = {}
    for p in clean:
        n = _first_number(p.stem)
        if n is not None:
            by_number.setdefault(n, []).append(p)
    out, unmatched = [], []
    for d in degraded:
        if d.stem.lower() in by_stem:
            out.append(by_stem[d.stem.lower()])
            continue
        candidates = by_number.get(_first_number(d.stem), [])
        if len(candidates) == 1:
            out.append(candidates[0])
        else:
            unmatched.append(d.name)
    if unmatched:
        raise ValueError(f"{len(unmatched)} degraded file(s) in {root} have no unique clean partner (same name, or the "
                         f"same first number): {unmatched[:5]}")
    return out


def _sr_pairs(root: pathlib.Path, scale: int | None) -> PairedSet:
    lr_root = root / "LR_bicubic"
    scales = sorted(int(p.name[1:]) for p in lr_root.iterdir() if p.is_dir() and re.fullmatch(r"[Xx]\d+", p.name))
    if not scales:
        raise FileNotFoundError(f"{lr_root} has no X<scale> folders (EDSR benchmark layout: LR_bicubic/X2/<name>x2.png)")
    if scale is None:
        if len(scales) > 1:
            raise ValueError(f"{root} has LR images for scales {scales}; pass scale=")
        scale = scales[0]
    if scale not in scales:
        raise ValueError(f"{root} has no LR_bicubic/X{scale}; it has scales {scales}")
    lr_dir = next(p for p in lr_root.iterdir() if p.name.lower() == f"x{scale}")
    hr = image_files(root / "HR")
    lr = {p.stem.lower(): p for p in image_files(lr_dir)}
    degraded, missing = [], []
    for h in hr:
        match = lr.get(f"{h.stem.lower()}x{scale}") or lr.get(h.stem.lower())
        (degraded.append(match) if match else missing.append(h.name))
    if missing:
        raise ValueError(f"no x{scale} LR image in {lr_dir} for HR {missing[:5]} (expected <name>x{scale}.png)")
    return PairedSet(str(root), "sr", tuple(map(str, degraded)), tuple(map(str, hr)), scale)


def _sidd_pairs(root: pathlib.Path) -> PairedSet | None:
    base = root / "Data" if (root / "Data").is_dir() else root
    degraded, clean = [], []
    for scene in sorted(p for p in base.iterdir() if p.is_dir()):
        for noisy in sorted(p for p in scene.iterdir() if "NOISY" in p.name and p.suffix.lower() in IMAGE_EXTENSIONS):
            gt = noisy.with_name(noisy.name.replace("NOISY", "GT"))
            if not gt.is_file():
                raise ValueError(f"{noisy} has no ground truth {gt.name} next to it (SIDD layout)")
            degraded.append(str(noisy))
            clean.append(str(gt))
    return PairedSet(str(root), "sidd", tuple(degraded), tuple(clean)) if degraded else None


def find_pairs(root: str | pathlib.Path, scale: int | None = None) -> PairedSet:
    """The pairs of a benchmark folder in one of the layouts of the module docstring."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} does not exist")
    if (root / "HR").is_dir() and (root / "LR_bicubic").is_dir():
        return _sr_pairs(root, scale)
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    bad = next((subdirs[n] for n in DEGRADED_DIRS if n in subdirs), None)
    good = next((subdirs[n] for n in CLEAN_DIRS if n in subdirs), None)
    if bad is not None and good is not None:
        degraded = image_files(bad)
        return PairedSet(str(root), f"{bad.name}+{good.name}", tuple(map(str, degraded)),
                         tuple(map(str, _match(degraded, image_files(good), root))))
    sidd = _sidd_pairs(root)
    if sidd is not None:
        return sidd
    raise FileNotFoundError(
        f"{root} is in no known benchmark layout: expected HR/ + LR_bicubic/X<s>/ (Set5/Set14/B100/Urban100), a "
        f"degraded folder ({'|'.join(DEGRADED_DIRS)}) next to a clean one ({'|'.join(CLEAN_DIRS)}), or SIDD scene "
        f"folders with *NOISY*/*GT* files. For clean images only (BSD68, CBSD68) use synthetic_pairs(root, task, seed)"
    )


def synthetic_pairs(root: str | pathlib.Path, task: str, seed: int = 0, sigma: float = 25.0,
                    grey_to_rgb: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(degraded, clean)`` for each clean image in ``root``: seeded degradations (e.g. BSD68 + noise sigma)."""
    from jaxlab.data.degradations import degrade

    out = []
    for i, path in enumerate(image_files(root)):
        clean = read_image(path, grey_to_rgb)
        out.append((degrade(clean, task, np.random.default_rng((seed, i)), sigma=sigma), clean))
    return out
