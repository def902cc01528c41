"""Build a quantised DiT: smoothing factors folded exactly into the float weights, then quantised.

Per block (x@W convention, kernels ``[in, out]``; D = hidden size; step k of K):

- qkv and fc1 inputs are ``modulate(LN(x)) = LN(x)(1 + scale) + shift`` with ``[shift, scale]``
  columns of the block's adaLN linear (chunks 0, 1 for attention, 3, 4 for the MLP). Quantising
  ``X^ = (X - z_k) / s`` instead: adaLN scale columns ``W/s``, bias ``b/s + (1/s - 1)``; shift
  columns ``W/s``, bias ``(b - z_k)/s`` (per step); the linear's kernel ``diag(s) W`` and bias
  ``b + z_k W``. Then ``modulate'(LN(x)) = X^`` and the linear's output is unchanged.
- the out-projection's input is softmax(QK^T) V per head; rows of softmax sum to one, so
  ``P (V - 1 z^T) / s = (P V - 1 z^T) / s``: the V columns of the qkv kernel become ``W_v / s``
  and their bias ``(b_v - z_k) / s``; the projection kernel ``diag(s) W_o`` and bias
  ``b_o + z_k W_o``. (Exact; whether the paper absorbs this shift this way is unknown.)
- fc2 (post-GELU) and the adaLN linears (opt-in) are quantised unsmoothed.

The result (``QuantizedDiT``) replaces each changed linear by a table entry (see
``jaxlab.quant.runtime``); everything else keeps the float parameters. Per-step biases are
stored once per distinct row (``bias [R, O]`` + ``bias_row [K]``): with contiguous groups, R is
at most the number of group boundaries involved + 1.
"""

import dataclasses

import numpy as np

from jaxlab.quant import smoothing
from jaxlab.quant.calibration import ADALN, BLOCK_LINEARS
from jaxlab.quant.config import QuantConfig
from jaxlab.quant.grouping import default_num_groups, group_steps
from jaxlab.quant.quantizers import quantize, range_to_params, weight_params

SMOOTHED = ("attn/qkv", "mlp/fc1", "attn/proj")
# adaLN chunk indices (shift, scale) that modulate each smoothed input (DiT's block order:
# shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp).
_MODULATION_CHUNKS = {"attn/qkv": (0, 1), "mlp/fc1": (3, 4)}


@dataclasses.dataclass
class QuantizedDiT:
    """``meta``: JSON-able description; ``tables``: ``{"step_of_timestep": [T_train] int32 (-1:
    uncalibrated), "layers": {path: {kernel, bias, bias_row, [w_int, w_step, w_zp, a_step, a_zp,
    act_row]}}}`` numpy leaves, ``kernel [I, O]`` the folded float kernel (flattened)."""

    meta: dict
    tables: dict


@dataclasses.dataclass
class Smoothing:
    """One layer's per-step shift ``z [K, C]``, scale ``s [C]`` and group labels ``[K]``."""

    z: np.ndarray
    s: np.ndarray
    labels: np.ndarray


def layer_smoothing(mn, mx, w_IO, qcfg: QuantConfig, num_groups: int, smoothed: bool) -> Smoothing:
    k, c = mn.shape
    z_step = smoothing.step_shifts(mn, mx)
    labels = group_steps(z_step, num_groups, qcfg.grouping)
    if not smoothed or qcfg.shift == "none":
        z = np.zeros((k, c))
    elif qcfg.shift == "step":
        z = z_step
    else:
        z = smoothing.grouped_shifts(z_step, labels)
    if not smoothed or qcfg.scale == "none":
        s = np.ones(c)
    elif qcfg.scale == "ema":
        s = smoothing.ema_scale(mn, mx, z, w_IO, qcfg.alpha)
    elif qcfg.scale == "max":
        s = smoothing.max_scale(mn, mx, w_IO)
    else:
        s = smoothing.ssc_scale(mn, mx, w_IO)
    if qcfg.act_groups == "one":
        labels = np.zeros(k, np.int32)
    return Smoothing(z, s, labels)


def _dense(params, path):
    p = params
    for name in path.split("/"):
        p = p[name]
    w = np.asarray(p["kernel"], np.float64)
    b = np.asarray(p["bias"], np.float64) if "bias" in p else None
    return w, b


def _flat_in(w, path):
    """DiT kernels as ``[I, O]``: qkv ``[D, 3, H, hd] -> [D, 3D]``, proj ``[H, hd, D] -> [D, D]``."""
    if path.endswith("attn/proj"):
        return w.reshape(-1, w.shape[-1])
    return w.reshape(w.shape[0], -1)


def fold_block(params_block: dict, stats: dict, qcfg: QuantConfig, num_groups: int, prefix: str):
    """``{suffix: (kernel [I, O], bias [K, O], Smoothing)}`` for one block's changed linears."""
    k = next(iter(stats.values()))["min"].shape[0]
    ada_w, ada_b = _dense(params_block, ADALN)
    ada_bias = np.tile(ada_b, (k, 1))
    d = ada_w.shape[0]
    out = {}
    kernels = {}
    for suffix in BLOCK_LINEARS:
        w, b = _dense(params_block, suffix)
        kernels[suffix] = (_flat_in(w, suffix), np.zeros(_flat_in(w, suffix).shape[1]) if b is None else b.reshape(-1))
    smooth = {}
    for suffix in BLOCK_LINEARS:
        st = stats[f"{prefix}/{suffix}"]
        smooth[suffix] = layer_smoothing(st["min"].astype(np.float64), st["max"].astype(np.float64),
                                         kernels[suffix][0], qcfg, num_groups, suffix in SMOOTHED)
    biases = {}
    for suffix in BLOCK_LINEARS:
        w, b = kernels[suffix]
        sm = smooth[suffix]
        biases[suffix] = b[None] + sm.z @ w  # the shift's compensation, from the original kernel
        kernels[suffix] = (sm.s[:, None] * w, b)
    for suffix, (c_shift, c_scale) in _MODULATION_CHUNKS.items():
        sm = smooth[suffix]
        sh, sc = slice(c_shift * d, (c_shift + 1) * d), slice(c_scale * d, (c_scale + 1) * d)
        ada_w[:, sh] /= sm.s
        ada_w[:, sc] /= sm.s
        ada_bias[:, sh] = (ada_bias[:, sh] - sm.z) / sm.s
        ada_bias[:, sc] = ada_bias[:, sc] / sm.s + (1 / sm.s - 1)
    # The out-projection's shift and scale go into the V columns of qkv (head-major, like proj's input).
    sm = smooth["attn/proj"]
    w_qkv = kernels["attn/qkv"][0]
    v = slice(2 * d, 3 * d)
    w_qkv[:, v] /= sm.s
    biases["attn/qkv"][:, v] = (biases["attn/qkv"][:, v] - sm.z) / sm.s
    for suffix in BLOCK_LINEARS:
        out[suffix] = (kernels[suffix][0], biases[suffix], smooth[suffix])
    out[ADALN] = (ada_w, ada_bias, None)
    return out


def _compress(bias_KO):
    rows, inverse = np.unique(bias_KO.astype(np.float32), axis=0, return_inverse=True)
    return rows, inverse.reshape(-1).astype(np.int32)


def _act_tables(mn, mx, sm: Smoothing, qcfg: QuantConfig):
    """Per-group static per-tensor activation quantiser of the smoothed input."""
    lo_K = ((mn - sm.z) / sm.s).min(axis=1)
    hi_K = ((mx - sm.z) / sm.s).max(axis=1)
    groups = int(sm.labels.max()) + 1
    lo = np.array([lo_K[sm.labels == g].min() for g in range(groups)])
    hi = np.array([hi_K[sm.labels == g].max() for g in range(groups)])
    step, zp = range_to_params(lo, hi, qcfg.act_bits, qcfg.act_symmetric)
    return np.asarray(step, np.float32), np.asarray(zp, np.int32), sm.labels.astype(np.int32)


def _quantized_entry(kernel, bias_KO, a_tables, qcfg: QuantConfig):
    w = kernel.astype(np.float32)
    w_step, w_zp = weight_params(w, qcfg.weight_bits, qcfg.weight_symmetric, qcfg.weight_search)
    w_int = np.asarray(quantize(w, w_step, w_zp, qcfg.weight_bits, qcfg.weight_symmetric), np.int8)
    bias, bias_row = _compress(bias_KO)
    a_step, a_zp, act_row = a_tables
    return dict(kernel=w, bias=bias, bias_row=bias_row, w_int=w_int, w_step=np.asarray(w_step, np.float32),
                w_zp=np.asarray(w_zp, np.int32), a_step=a_step, a_zp=a_zp, act_row=act_row)


def check_schedule(stats: dict, timesteps: np.ndarray, qcfg: QuantConfig) -> tuple[np.ndarray, int]:
    """``(timesteps [K], number of timestep groups)`` after checking that ``qcfg`` is valid, that
    every layer's calibration ``stats`` cover the K calibrated steps, and that the groups fit."""
    qcfg.validate()
    timesteps = np.asarray(timesteps)
    k = len(timesteps)
    for path, st in stats.items():
        if st["min"].shape[0] != k:
            raise ValueError(f"stats of {path} cover {st['min'].shape[0]} steps, the schedule has {k}")
    num_groups = qcfg.num_groups or default_num_groups(k)
    if num_groups > k:
        raise ValueError(f"num_groups={num_groups} exceeds the {k} calibrated sampling steps")
    return timesteps, num_groups


def quantized_dit(layers: dict, timesteps: np.ndarray, qcfg: QuantConfig, num_groups: int, diffusion_steps: int,
                  meta: dict | None, smoothing: str) -> QuantizedDiT:
    """The quantised layers with the timestep -> calibrated-step table (-1: not calibrated) and
    the metadata a checkpoint records (``smoothing``: "folded" or "unfused")."""
    step_of_timestep = np.full(diffusion_steps, -1, np.int32)
    step_of_timestep[timesteps] = np.arange(len(timesteps), dtype=np.int32)
    meta = dict(meta or {})
    meta.update(quant=dataclasses.asdict(qcfg), num_groups=num_groups, timesteps=[int(t) for t in timesteps],
                smoothing=smoothing)
    return QuantizedDiT(meta, dict(step_of_timestep=step_of_timestep, layers=layers))


def build_quantized(params: dict, stats: dict, timesteps: np.ndarray, qcfg: QuantConfig, diffusion_steps: int,
                    meta: dict | None = None) -> QuantizedDiT:
    """Fold and quantise a DiT's block linears from calibration ``stats`` (``calibration.calibrate``).

    ``timesteps [K]``: the original timestep of each calibrated step (``calibration.step_timesteps``).
    """
    timesteps, num_groups = check_schedule(stats, timesteps, qcfg)
    blocks = sorted({p.split("/")[0] for p in stats}, key=lambda b: int(b.split("_")[1]))
    layers = {}
    for block in blocks:
        needed = [f"{block}/{s}" for s in BLOCK_LINEARS] + ([f"{block}/{ADALN}"] if qcfg.quantize_adaln else [])
        missing = [p for p in needed if p not in stats]
        if missing:
            raise ValueError(f"calibration stats lack {missing}: calibrate with the targets this config quantises")
        folded = fold_block(params[block], stats, qcfg, num_groups, block)
        for suffix in BLOCK_LINEARS:
            kernel, bias_KO, sm = folded[suffix]
            st = stats[f"{block}/{suffix}"]
            a = _act_tables(st["min"].astype(np.float64), st["max"].astype(np.float64), sm, qcfg)
            layers[f"{block}/{suffix}"] = _quantized_entry(kernel, bias_KO, a, qcfg)
        ada_w, ada_bias, _ = folded[ADALN]
        if qcfg.quantize_adaln:
            st = stats[f"{block}/{ADALN}"]
            mn, mx = st["min"].astype(np.float64), st["max"].astype(np.float64)
            sm = layer_smoothing(mn, mx, ada_w, qcfg, num_groups, smoothed=False)
            layers[f"{block}/{ADALN}"] = _quantized_entry(ada_w, ada_bias, _act_tables(mn, mx, sm, qcfg), qcfg)
        else:
            bias, bias_row = _compress(ada_bias)
            layers[f"{block}/{ADALN}"] = dict(kernel=ada_w.astype(np.float32), bias=bias, bias_row=bias_row)
    return quantized_dit(layers, timesteps, qcfg, num_groups, diffusion_steps, meta, smoothing="folded")
