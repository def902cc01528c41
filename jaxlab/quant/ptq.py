"""Post-training quantisation of a DiT in one call: calibrate, then fold and quantise."""

import dataclasses

from jaxlab.diffusion.gaussian import GaussianDiffusion
from jaxlab.models.dit import DiT
from jaxlab.quant.calibration import ADALN, BLOCK_LINEARS, CalibrationSpec, calibrate, step_timesteps
from jaxlab.quant.config import QuantConfig
from jaxlab.quant.folding import QuantizedDiT, build_quantized


def check_supported(module) -> None:
    if not isinstance(module, DiT):
        raise ValueError(
            f"{type(module).__name__} is not supported: jaxlab.quant folds HTG's shifts into DiT's adaLN/qkv/proj/fc1 "
            f"layout only (U-DiT's attention has a depthwise downsampler between adaLN and qkv; DiC is convolutional): "
            f"see docs/htg.md"
        )


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
