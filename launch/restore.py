"""Restore an image file with an IPT checkpoint (any size: overlapping tiles, blended seams).

  python -m launch.convert --family=ipt --checkpoint=IPT_sr2.pt --preset=IPT \
      --torch_kwargs='{"scale": [2]}' --output=/tmp/ipt_sr2
  python -m launch.restore --checkpoint=/tmp/ipt_sr2 --task=sr2 --input=low.png --output=high.png

  python -m launch.train --config=configs/ipt.py:tiny --workdir=/tmp/instruct_ipt
  python -m launch.restore --checkpoint=/tmp/instruct_ipt --task="please remove the rain" --input=rainy.png --output=clean.png

``--task`` is a task index, ``sr2``/``sr3``/``sr4`` or a same-size task name (``denoise``, ...)
when the checkpoint has exactly one same-size task, or a free-text instruction
(``jaxlab.restoration.instructions``: an unclear or multi-task one is refused with the question
"which task?"). ``--checkpoint`` is a converted IPT or an Instruct-IPT training workdir (its
task's weight biases are merged in). RGB PNG/JPEG in, PNG out; the input is never overwritten and
an existing output only with ``--overwrite``. ``--reference`` (the clean image) prints PSNR/SSIM on
RGB and on the Y channel (``--crop_border`` pixels cropped, SR papers use the scale).
"""

import time

import jax
import numpy as np
from absl import app, flags

from jaxlab.data.image_files import check_output_path, read_rgb, write_png
from jaxlab.eval.restoration import psnr, ssim
from jaxlab.models.ipt_ops import make_restorer, tile_starts
from jaxlab.restoration.inference import load_for_task

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "IPT checkpoint (launch.convert) or Instruct-IPT training workdir",
                                  required=True)
_TASK = flags.DEFINE_string("task", None, "task index, sr2/sr3/sr4, denoise/derain/..., or an instruction", required=True)
_INPUT = flags.DEFINE_string("input", None, "RGB image (PNG/JPEG)", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "output PNG path", required=True)
_REFERENCE = flags.DEFINE_string("reference", None, "clean image: report PSNR/SSIM of the output against it")
_CROP_BORDER = flags.DEFINE_integer("crop_border", 0, "pixels cropped from each side for the metrics")
_BATCH = flags.DEFINE_integer("batch", 8, "tiles per model call (memory vs speed)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing output file (never the input)")


def _show_progress(done: int, total: int) -> None:
    print(f"\r{done}/{total} tiles", end="", flush=True)


def main(argv):
    del argv
    inputs = [_INPUT.value] + ([_REFERENCE.value] if _REFERENCE.value else [])
    try:
        out = check_output_path(_OUTPUT.value, inputs, _OVERWRITE.value)
        image = read_rgb(_INPUT.value)
        reference = read_rgb(_REFERENCE.value) if _REFERENCE.value else None
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e)) from None
    try:
        loaded = load_for_task(_CHECKPOINT.value, _TASK.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    module, params, task = loaded.module, loaded.params, loaded.task
    cfg = module.config
    h, w = image.shape[:2]
    try:
        step = cfg.patch_size // 4
        tiles = len(tile_starts(h, cfg.patch_size, step)) * len(tile_starts(w, cfg.patch_size, step))
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    scale = cfg.scale[task]
    if reference is not None and reference.shape != (h * scale, w * scale, 3):
        raise app.UsageError(f"--reference is {reference.shape[1]}x{reference.shape[0]}, the output will be {w * scale}x{h * scale}")
    print(f"restoring {_INPUT.value} ({w}x{h}) with task {task} ({loaded.name}, scale {scale}): {tiles} tiles of {cfg.patch_size}px, {_BATCH.value} per call")
    start = time.time()
    restore = make_restorer(module, task, batch=_BATCH.value, progress=_show_progress)
    result = np.asarray(jax.block_until_ready(restore(params, image[None])))[0]
    print()
    try:
        write_png(out, result)
    except ValueError as e:
        raise RuntimeError(f"{e}: the checkpoint or the input is broken") from None
    print(f"wrote {out} ({w * scale}x{h * scale}) in {time.time() - start:.1f}s")
    if reference is not None:
        got = read_rgb(out)
        kw = dict(crop_border=_CROP_BORDER.value)
        print(
            f"PSNR RGB {psnr(reference, got, **kw):.2f} dB, Y {psnr(reference, got, y_channel=True, **kw):.2f} dB; "
            f"SSIM RGB {ssim(reference, got, **kw):.4f}, Y {ssim(reference, got, y_channel=True, **kw):.4f}"
        )


if __name__ == "__main__":
    app.run(main)
