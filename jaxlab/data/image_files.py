"""Reading and writing user image files safely (RGB in, PNG out, inputs never overwritten)."""

import pathlib

import numpy as np
from PIL import Image


def read_rgb(path: str | pathlib.Path) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 255]; grey, alpha and palette images are refused with the fix."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with Image.open(path) as image:
        if image.mode != "RGB":
            raise ValueError(
                f"{path} is a {image.mode!r} image; RGB is expected: convert it first "
                f"(e.g. PIL: Image.open(p).convert('RGB').save(q); alpha is dropped, grey is replicated)"
            )
        return np.asarray(image, np.float32)


def check_output_path(output: str | pathlib.Path, inputs: list, overwrite: bool) -> pathlib.Path:
    """Raises unless ``output`` is a ``.png`` path that is no input and (without ``overwrite``) new."""
    output = pathlib.Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"output {output} must be a .png file")
    if any(output.resolve() == pathlib.Path(p).resolve() for p in inputs):
        raise ValueError(f"output {output} is an input file; choose another path (inputs are never overwritten)")
    if output.exists() and not overwrite:
        raise ValueError(f"output {output} already exists; choose a new path or pass --overwrite")
    return output


def write_png(path: str | pathlib.Path, image: np.ndarray) -> None:
    """Writes ``[H, W, 3]`` floats in [0, 255] (rounded, clipped); non-finite values are an error."""
    image = np.asarray(image)
    if not np.isfinite(image).all():
        raise ValueError("the image has non-finite values; nothing written")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(path)
