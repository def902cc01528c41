"""Post-training quantisation of a DiT, U-DiT or DiC checkpoint (HTG, or a baseline); see docs/htg.md.

  python -m launch.quantize --config=configs/dit.py:digits --checkpoint=workdirs/digits \
      --method=htg --weights=8 --activations=8 --output=/tmp/digits_w8a8
  python -m launch.sample --config=configs/dit.py:digits --checkpoint=/tmp/digits_w8a8 --outdir=/tmp/q_samples

Calibration trajectories are drawn with ``config.sample``'s sampler, number of steps, guidance
and clipping (the quantised model is tied to those timesteps: ``launch.sample`` refuses other
ones). The output directory holds the float model (``model.json``, ``params/``) and the
quantised tables (``quant.json``, ``quant.npz``).
"""

import pathlib
import time

from absl import app, flags
from ml_collections import config_flags

from jaxlab import cli
from jaxlab.config_utils import to_dict
from jaxlab.diffusion.pipeline import sampling_diffusion
from jaxlab.quant.calibration import CalibrationSpec
from jaxlab.quant.config import METHODS, method_config
from jaxlab.quant.io import save_quantized
from jaxlab.quant.ptq import check_checkpoint_matches, quantize_dit
from jaxlab.train.params_io import load_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<variant> the checkpoint was trained with", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "float checkpoint (launch.convert output or training workdir)", required=True)
_METHOD = flags.DEFINE_enum("method", "htg", list(METHODS), "quantisation recipe (jaxlab.quant.config)")
_WEIGHTS = flags.DEFINE_integer("weights", 8, "weight bits (2..8; 4 is packed two per byte)")
_ACTIVATIONS = flags.DEFINE_integer("activations", 8, "activation bits (2..8)")
_OUTPUT = flags.DEFINE_string("output", None, "output directory (must not exist)", required=True)
_GROUPS = flags.DEFINE_integer("num_groups", 0, "timestep groups G (0: T // 10)")
_CALIB = flags.DEFINE_integer("calibration_samples", 32, "calibration trajectories (HTG: 32)")
_QUANT_ADALN = flags.DEFINE_bool("quantize_adaln", False, "also quantise the adaLN linears")


def main(argv):
    del argv
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/dit.py:digits")
    output = pathlib.Path(_OUTPUT.value)
    if output.exists():
        raise app.UsageError(f"{output} already exists; choose a new --output directory")
    try:
        qcfg = method_config(_METHOD.value, weight_bits=_WEIGHTS.value, act_bits=_ACTIVATIONS.value,
                             num_groups=_GROUPS.value, quantize_adaln=_QUANT_ADALN.value)
        s = config.sample
        spec = CalibrationSpec(num_samples=_CALIB.value, sampler=s.sampler, num_steps=s.num_steps, cfg_scale=s.cfg_scale,
                               eta=s.eta, clip_denoised=s.clip_denoised, seed=config.seed)
        spec.validate()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    try:
        check_checkpoint_matches(config.model_family, to_dict(config.model), _CHECKPOINT.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    module, params = load_model(_CHECKPOINT.value)
    diffusion = sampling_diffusion(s.sampler, s.num_steps, module.config.learn_sigma, **to_dict(config.diffusion))
    start = time.perf_counter()
    qmodel, _ = quantize_dit(module, params, diffusion, spec, qcfg)
    path = save_quantized(output, config.model_family, module.config, params, qmodel)
    tables = sum(f.stat().st_size for f in path.glob("quant.*"))
    print(f"{qcfg.method} W{qcfg.weight_bits}A{qcfg.act_bits}: {len(qmodel.tables['layers'])} layers, "
          f"{qmodel.meta['num_groups']} timestep groups over {s.sampler}-{s.num_steps}, calibrated on "
          f"{spec.num_samples} trajectories in {time.perf_counter() - start:.1f}s; quantised tables {tables / 1e6:.2f} MB; "
          f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
