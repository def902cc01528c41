"""Quantised checkpoints: ``launch.quantize``'s output directory.

Layout: the float model as ``jaxlab.train.params_io.save_model`` writes it (``model.json`` +
``params/``: the unchanged layers are read from there) plus ``quant.json`` (method, bit widths,
groups, the calibrated sampler and timesteps) and ``quant.npz`` (the tables: int8 weights, or
int4 packed two per byte, their per-channel steps/zero points, per-group activation quantisers,
folded biases, the folded float adaLN kernels). The folded float kernels of quantised layers are
not stored (``kernel`` is rebuilt as ``dequant(w_int)`` on load, so ``"float"`` mode after loading
is the weight-quantised model).
"""

import json
import pathlib
import warnings

import numpy as np
from jaxlab.quant.folding import QuantizedDiT
from jaxlab.quant.quantizers import dequantize, pack_int4, unpack_int4
from jaxlab.train.params_io import load_model, save_model

QUANT_JSON = "quant.json"
QUANT_NPZ = "quant.npz"


def is_quantized(path) -> bool:
    return (pathlib.Path(path) / QUANT_JSON).exists()


def save_quantized(path, family: str, config, params: dict, qmodel: QuantizedDiT) -> pathlib.Path:
    """Writes the float model and the tables (refuses to replace an existing ``path``)."""
    path = save_model(path, family, config, params)
    bits = qmodel.meta["quant"]["weight_bits"]
    flat = {"step_of_timestep": qmodel.tables["step_of_timestep"]}
    for layer, entry in qmodel.tables["layers"].items():
        for field, value in entry.items():
            key = f"{layer}/{field}"
            if field == "kernel" and "w_int" in entry:
                continue  # rebuilt from the integer weights
            if field == "w_int" and bits <= 4:
                flat[key + "_packed4"] = pack_int4(value)
                flat[key + "_shape"] = np.asarray(value.shape, np.int64)
                continue
            flat[key] = np.asarray(value)
    np.savez(path / QUANT_NPZ, **flat)
    (path / QUANT_JSON).write_text(json.dumps(qmodel.meta, indent=2))
    return path


def load_quantized(path):
    """``(module, params, QuantizedDiT)`` from a ``save_quantized`` directory."""
    path = pathlib.Path(path)
    if not is_quantized(path):
        raise FileNotFoundError(f"{path} has no {QUANT_JSON}: it is not a quantised checkpoint (make one with "
                                f"`python -m launch.quantize`)")
    module, params = load_model(path)
    return module, params, load_tables(path)


def load_tables(path) -> QuantizedDiT:
    """The quantised part of a ``save_quantized`` directory (the float params are ``load_model``'s)."""
    path = pathlib.Path(path)
    meta = json.loads((path / QUANT_JSON).read_text())
    with np.load(path / QUANT_NPZ) as z:
        raw = {k: z[k] for k in z.files}
    tables = {"step_of_timestep": raw.pop("step_of_timestep"), "layers": {}}
    for key, value in raw.items():
        layer, field = key.rsplit("/", 1)
        if field == "w_int_shape":
            continue
        if field == "w_int_packed4":
            field, value = "w_int", unpack_int4(value, tuple(raw[f"{layer}/w_int_shape"]))
        tables["layers"].setdefault(layer, {})[field] = value
    for entry in tables["layers"].values():
        if "w_int" in entry:
            entry["kernel"] = np.asarray(dequantize(entry["w_int"].astype(np.int32), entry["w_step"], entry["w_zp"]))
    return QuantizedDiT(meta, tables)


def quantized_sampling(path, module, params: dict, diffusion, sampler: str, num_steps: int, mode: str = "integer"):
    """``(sampler params, apply_fn)`` for ``make_class_sampler(..., apply_fn=...)`` from a quantised
    checkpoint, after checking that the sampling schedule was calibrated."""
    from jaxlab.quant.calibration import step_timesteps
    from jaxlab.quant.runtime import quantized_apply, variables

    qmodel = load_tables(path)
    check_schedule(qmodel.meta, step_timesteps(diffusion), sampler, num_steps)
    q = qmodel.meta["quant"]
    print(f"quantised checkpoint: {q['method']} W{q['weight_bits']}A{q['act_bits']}, {qmodel.meta['num_groups']} "
          f"timestep groups, {mode} execution")
    return variables(params, qmodel)["params"], quantized_apply(module, qmodel.meta, mode)


def check_schedule(meta: dict, timesteps: np.ndarray, sampler: str, num_steps: int) -> None:
    """Refuses a sampling schedule with timesteps that were not calibrated; warns on another sampler."""
    calibrated = set(meta["timesteps"])
    missing = sorted(set(int(t) for t in timesteps) - calibrated)
    cal = meta.get("calibration", {})
    if missing:
        raise ValueError(
            f"the sampler calls the model at {len(missing)} timesteps the quantised model was not calibrated for "
            f"(e.g. {missing[:5]}): it was calibrated for {cal.get('sampler')}-{cal.get('num_steps')}. Sample with "
            f"--config.sample.sampler={cal.get('sampler')} --config.sample.num_steps={cal.get('num_steps')}, or "
            f"quantise again with this schedule"
        )
    if cal and (cal.get("sampler"), cal.get("num_steps")) != (sampler, num_steps):
        warnings.warn(f"calibrated with {cal.get('sampler')}-{cal.get('num_steps')}, sampling with {sampler}-{num_steps}: "
                      f"same timesteps, but the activation ranges were recorded on the other sampler's trajectories")
