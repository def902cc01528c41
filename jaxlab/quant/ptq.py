"""Post-training quantisation in one call: calibrate, then fold (DiT) or smooth at the layer
(U-DiT, DiC) and quantise (``jaxlab.quant.families`` says what, per family)."""

import dataclasses

from jaxlab.diffusion.gaussian import GaussianDiffusion
from jaxlab.quant.calibration import CalibrationSpec, calibrate, step_timesteps
from jaxlab.quant.config import QuantConfig
from jaxlab.quant.families import family_plan
from jaxlab.quant.folding import QuantizedDiT, build_quantized
from jaxlab.quant.unfused import build_unfused
from jaxlab.train.params_io import read_model_config


def check_supported(module) -> None:
    """Raises for a family ``jaxlab.quant`` cannot quantise (anything but DiT, U-DiT and DiC)."""
    family_plan(module)


def check_checkpoint_matches(family_name: str, model_fields: dict, checkpoint) -> None:
    """Refuses a checkpoint whose family or architecture differs from the config's ``model`` section
    (compute switches dtype/remat/scan_blocks may differ)."""
    family, ckpt_cfg = read_model_config(checkpoint)
    if family_name != family.name:
        raise ValueError(f"the config is for {family_name}, the checkpoint holds a {family.name} model")
    want = family.config.from_dict(model_fields)
    diff = {f.name: (getattr(want, f.name), getattr(ckpt_cfg, f.name)) for f in dataclasses.fields(ckpt_cfg)
            if f.name not in ("dtype", "remat", "scan_blocks") and getattr(want, f.name) != getattr(ckpt_cfg, f.name)}
    if diff:
        listed = ", ".join(f"{k}: config {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the checkpoint does not match the config ({listed}); pass the variant it was trained "
                         f"with, or override those config.model fields")


def quantize_dit(module, params: dict, diffusion: GaussianDiffusion, spec: CalibrationSpec, qcfg: QuantConfig,
                 stats: dict | None = None) -> tuple[QuantizedDiT, dict]:
    """``(quantised model, calibration stats)`` of a DiT, U-DiT or DiC; pass ``stats`` to reuse a calibration."""
    plan = family_plan(module)
    qcfg.validate()
    spec.validate()
    if stats is None:
        stats = calibrate(module, params, diffusion, spec, plan.calibration_targets(qcfg.quantize_adaln),
                          plan.block_pattern)
    meta = dict(calibration=dataclasses.asdict(spec), family=plan.family)
    args = (params, stats, step_timesteps(diffusion), qcfg, _table_size(diffusion), meta)
    qmodel = build_quantized(*args) if plan.smoothing == "folded" else build_unfused(*args, convs=plan.convs)
    return qmodel, stats


def _table_size(diffusion: GaussianDiffusion) -> int:
    """Entries of the timestep -> step table (larger timesteps are refused by ``io.check_schedule``)."""
    return int(max(diffusion.timestep_map)) + 1
