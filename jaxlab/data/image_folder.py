"""A folder of image files as a data source (``config.data.source="image_folder"``).

Layout as torchvision's ``ImageFolder`` (what DiT's ``train.py`` and fast-DiT's
``extract_features.py`` read): ``<root>/<class name>/<image>``, labels are the sorted class
names' indices. A folder with the images directly in it is one class (label 0). Images are
decoded with PIL, converted to RGB (DiT's ``pil_image.convert("RGB")``) and ADM/DiT
centre-cropped to ``config.data.image_size``; ``check_rgb`` finds files that are not RGB first.
"""

import dataclasses
import functools
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from jaxlab.data import image_ops
from jaxlab.data.sources import ArraySource, SourceSpec, register_source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The files (sorted by class, then name), their labels and the class names."""

    files: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]


def _images_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_image_folder(root: str | pathlib.Path) -> ImageFolder:
    """Lists ``root`` in ``ImageFolder`` order; raises naming the layout when there are no images."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for label, folder in enumerate(class_dirs):
        images = _images_in(folder)
        files += [str(p) for p in images]
        labels += [label] * len(images)
    classes = tuple(p.name for p in class_dirs)
    if not files:
        files = [str(p) for p in _images_in(root)]
        labels, classes = [0] * len(files), ("",)
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root} or its sub-folders; expected "
            f"<root>/<class name>/<image> (ImageNet's train/ layout) or images directly in {root}"
        )
    return ImageFolder(tuple(files), np.asarray(labels, np.int32), classes)


def _mode(path: str) -> str:
    with Image.open(path) as image:  # reads the header only
        return image.mode


def check_rgb(files, threads: int = 16) -> None:
    """Raises ValueError listing the files that are not 8-bit RGB (grayscale, CMYK, RGBA, palette, ...)."""
    with ThreadPoolExecutor(threads) as pool:
        modes = list(pool.map(_mode, files))
    bad = [(f, m) for f, m in zip(files, modes) if m != "RGB"]
    if bad:
        shown = ", ".join(f"{f} ({m})" for f, m in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"{len(bad)} of {len(files)} images are not RGB: {shown}. Convert them, or pass --convert_rgb to "
            f"convert them on reading as DiT's own pipeline does (PIL .convert('RGB'))"
        )


def decode_file(record: dict, *, image_size: int) -> dict:
    """``{"path", "label"}`` -> ``{"image": [S, S, 3] float32 in [-1, 1], "label": int32}``."""
    with Image.open(str(record["path"])) as image:
        pixels = image_ops.center_crop(image.convert("RGB"), image_size)
    return {"image": image_ops.to_unit_range(pixels), "label": np.asarray(record["label"], np.int32)}


def image_folder_spec(root: str | pathlib.Path, image_size: int, random_flip: bool = False) -> SourceSpec:
    """A ``SourceSpec`` over ``root`` whose examples are ``image_size`` centre crops."""
    if image_size <= 0:
        raise ValueError("config.data.image_size must be set (> 0) for an image folder: the centre-crop size")
    folder = scan_image_folder(root)
    source = ArraySource({"path": np.asarray(folder.files), "label": folder.labels}, name=str(root))
    return SourceSpec(source, decode=functools.partial(decode_file, image_size=int(image_size)),
                      augment=image_ops.random_hflip if random_flip else None)


def _image_folder(data_cfg) -> SourceSpec:
    if not data_cfg.path:
        raise ValueError("config.data.path is empty; point it at the image folder (<root>/<class>/<image>)")
    return image_folder_spec(data_cfg.path, int(data_cfg.image_size), bool(data_cfg.random_flip))


register_source("image_folder", _image_folder)
