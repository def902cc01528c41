"""Post-training quantisation of a DiT in one call: calibrate, then fold and quantise."""

import dataclasses

from jaxlab.diffusion.gaussian import GaussianDiffusion
from jaxlab.models.dit import DiT
from jaxlab.quant.calibration import ADALN, BLOCK_LINEARS, CalibrationSpec, calibrate, step_timesteps
from jaxlab.quant.config import QuantConfig
from jaxlab.quant.folding import QuantizedDiT, build_quantized
from jaxlab.train.params_io import read_model_config


def check_supported(module) -> None:
    if not isinstance(module, DiT):
        raise ValueError(
            f"{type(module).__name__} is not supported: jaxlab.quant folds HTG's shifts into DiT's adaLN/qkv/proj/fc1 "
            f"layout only (U-DiT's attention has a depthwise downsampler between adaLN and qkv; DiC is convolutional): "
            f"see docs/htg.md"
        )


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


def targets_for(qcfg: QuantConfig) -> tuple[str, ...]:
    return BLOCK_LINEARS + ((ADALN,) if qcfg.quantize_adaln else ())


def quantize_dit(module, params: dict, diffusion: GaussianDiffusion, spec: CalibrationSpec, qcfg: QuantConfig,
                 stats: dict | None = None) -> tuple[QuantizedDiT, dict]:
    """``(quantised model, calibration stats)``; pass ``stats`` to reuse a calibration."""
    check_supported(module)
    qcfg.validate()
    spec.validate()
    if stats is None:
        stats = calibrate(module, params, diffusion, spec, targets_for(qcfg))
    meta = dict(calibration=dataclasses.asdict(spec))
    qmodel = build_quantized(params, stats, step_timesteps(diffusion), qcfg, _table_size(diffusion), meta)
    return qmodel, stats


def _table_size(diffusion: GaussianDiffusion) -> int:
    """Entries of the timestep -> step table (larger timesteps are refused by ``io.check_schedule``)."""
    return int(max(diffusion.timestep_map)) + 1
