"""Evaluate samples with the ADM suite (FID, sFID, IS, precision, recall) or the digits metric.

  python -m launch.evaluate --samples=samples.npz --reference=VIRTUAL_imagenet256_labeled.npz \
      --inception=pt_inception-2015-12-05-6726825d.pth --cfg_scale=1.5

``--samples``: an ``.npz`` (ADM's ``arr_0`` uint8, or ``launch.sample``'s ``samples`` floats in
[-1, 1]) or a folder of images. ``--reference``: an ADM reference batch (its stored ``mu``/``sigma``
are used, as ADM does) or a file written by ``--write_stats``. ``--inception``: pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` or its ``launch.convert --family=inception_fid`` output.
Prints the numbers and writes them with the fields that make them comparable (sample count,
resolution, guidance scale, ...) to ``--output`` (default ``<samples>.eval.json``).

  python -m launch.evaluate --write_stats=my_ref.npz --samples=my_dataset/ --inception=...

writes ADM-style reference statistics for your own data.

  python -m launch.evaluate --digits --samples=/tmp/samples/samples.npz

is the CPU-scale digits metric (``jaxlab.eval.digits_features``): digits FID / IS / precision /
recall of samples of a digits model against the embedded real digits.
"""

import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

from jaxlab.eval import evaluator, inception, metrics

_SAMPLES = flags.DEFINE_string("samples", None, "samples .npz (arr_0 or samples) or a folder of images", required=True)
_REFERENCE = flags.DEFINE_string("reference", None, "ADM reference batch .npz (or a --write_stats file)")
_INCEPTION = flags.DEFINE_string("inception", None, "pt_inception-2015-12-05-6726825d.pth or its launch.convert directory")
_OUTPUT = flags.DEFINE_string("output", None, "JSON report path (default: <samples>.eval.json)")
_WRITE_STATS = flags.DEFINE_string("write_stats", None, "write reference statistics of --samples to this .npz and stop")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing --output / --write_stats file")
_FORCE = flags.DEFINE_bool("force", False, "compute FID from fewer samples than the feature width (not comparable)")
_VALUE_RANGE = flags.DEFINE_enum("value_range", "auto", list(inception.VALUE_RANGES), "range of float samples")
_BATCH = flags.DEFINE_integer("batch_size", 64, "images per Inception batch")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", None, "guidance scale the samples were drawn with (recorded in the report)")
_NOTE = flags.DEFINE_string("note", None, "free text recorded in the report (sampler, steps, checkpoint)")
_PR = flags.DEFINE_bool("precision_recall", True, "compute precision/recall (needs the reference images' features)")
_PR_DTYPE = flags.DEFINE_enum("pr_distance_dtype", "float16", ["float16", "float32"], "precision/recall distances (ADM: float16)")
_FID_METHOD = flags.DEFINE_enum("fid_method", "sqrtm", ["sqrtm", "eigh"], "sqrtm: ADM's scipy sqrtm; eigh: same trace, faster")
_DIGITS = flags.DEFINE_bool("digits", False, "the digits metric against the embedded real digits (no Inception)")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _output_path() -> pathlib.Path:
    path = pathlib.Path(_OUTPUT.value or f"{pathlib.Path(_SAMPLES.value).with_suffix('')}.eval.json")
    if path.exists() and not _OVERWRITE.value:
        raise app.UsageError(f"{path} already exists; pass --output=NEW.json or --overwrite")
    return path


def main(argv):
    del argv
    if _DIGITS.value:
        from jaxlab.eval import digits_features

        out_path = _output_path()
        report = digits_features.evaluate_digits(evaluator.load_images(_SAMPLES.value), force=_FORCE.value)
    else:
        if _WRITE_STATS.value is None and _REFERENCE.value is None:
            raise app.UsageError("pass --reference=<ADM reference .npz> (or --write_stats=OUT.npz to make one, or --digits)")
        out_path = None if _WRITE_STATS.value else _output_path()
        if _WRITE_STATS.value and pathlib.Path(_WRITE_STATS.value).exists() and not _OVERWRITE.value:
            raise app.UsageError(f"{_WRITE_STATS.value} already exists; choose another path or pass --overwrite")
        # Cheap checks first: images, range, reference, sample count; then the 95 MB network.
        samples = inception.to_uint8_range(evaluator.load_images(_SAMPLES.value), _VALUE_RANGE.value)
        reference = None
        if not _WRITE_STATS.value:
            reference = evaluator.Reference(_REFERENCE.value)
            reference.check_resolution(samples.shape)
            metrics.check_sample_count(len(samples), force=_FORCE.value)
        module, params = inception.load_inception(_INCEPTION.value)
        features = inception.InceptionFeatures(module, params, batch_size=_BATCH.value)
        if _WRITE_STATS.value:
            path = evaluator.write_reference_stats(_WRITE_STATS.value, samples, features, overwrite=_OVERWRITE.value)
            print(f"wrote statistics of {len(samples)} images ({samples.shape[1]}x{samples.shape[2]}) to {path}")
            return
        start = time.time()
        report = evaluator.evaluate(
            samples, reference, features, force=_FORCE.value, precision_recall=_PR.value,
            pr_distance_dtype=_PR_DTYPE.value, fid_method=_FID_METHOD.value, progress=_log,
        )
        report.update(
            reference=str(reference.path), input_path="ADM: uint8 range, TF1 bilinear resize to 299, (x - 128) / 128",
            sample_quantization="uint8 as given; floats in [-1, 1]: clip(127.5 x + 128, 0, 255) truncated (DiT sample_ddp)",
            seconds=round(time.time() - start, 1),
        )
    report.update(samples=str(_SAMPLES.value), cfg_scale=_CFG_SCALE.value, note=_NOTE.value)
    if _CFG_SCALE.value is None:
        report["cfg_scale_note"] = "not given (--cfg_scale): record the guidance scale next to the number"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    shown = {k: report[k] for k in report if isinstance(report[k], float) and k not in ("cfg_scale", "seconds")}
    print("  ".join(f"{k}={v:.4f}" for k, v in shown.items()) + f"  (N={report['num_samples']})")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    app.run(main)
