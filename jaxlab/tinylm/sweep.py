"""Architecture sweep at a fixed parameter budget (PanGu-pi Pro, "architecture tweak"; ``launch/tinylm_sweep.py``).

``sample_architectures`` draws random (depth, FFN ratio) pairs and solves for the width that puts a
LLaMA-layout model at the parameter budget (width a multiple of ``head_dim``; kept only within
``tolerance`` of the budget, counted exactly by ``llama_param_count``). ``spearman_table`` ranks each
factor (depth, width, FFN ratio) against held-out loss and decode speed. The paper's notes report ~30
configs at ~1B on 5B tokens, Spearman(depth, performance) = 0.528, no clear relation for the FFN ratio;
the ranges here are jaxlab's CPU choices (flags of the launcher).
"""

import dataclasses

import numpy as np
from scipy import stats

from jaxlab.models.lm import LMConfig

FACTORS = ("depth", "width", "ffn_ratio")


@dataclasses.dataclass(frozen=True)
class Arch:
    depth: int
    width: int
    heads: int
    ffn: int

    @property
    def ffn_ratio(self) -> float:
        return self.ffn / self.width


def llama_config(arch: Arch, vocab: int, max_positions: int = 256) -> LMConfig:
    return LMConfig(layout="llama", vocab_size=vocab, hidden_size=arch.width, num_layers=arch.depth,
                    num_heads=arch.heads, num_kv_heads=arch.heads, intermediate_size=arch.ffn,
                    max_position_embeddings=max_positions, rotary_pct=1.0, parallel_residual=False, use_bias=False)


def llama_param_count(arch: Arch, vocab: int) -> int:
    """Exact parameters of ``llama_config(arch, vocab)``: embedding + untied head + final norm + per layer
    q/k/v/o (MHA), gate/up/down and two RMSNorm scales (equals ``lm_param_count``, tested)."""
    d = arch.width
    return 2 * vocab * d + d + arch.depth * (4 * d * d + 3 * d * arch.ffn + 2 * d)


def _width_for(budget: int, depth: int, ratio: float, vocab: int) -> float:
    # params ~ 2 V D + L (4 D^2 + 3 r D^2) + (2 L + 1) D  (untied head, RMSNorm scales)
    a, b, c = depth * (4 + 3 * ratio), 2 * vocab + 2 * depth + 1, -budget
    return (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)


def sample_architectures(n: int, budget: int, vocab: int, *, head_dim: int = 32, depth_range=(2, 12),
                         ffn_ratio_range=(2.0, 4.0), tolerance: float = 0.1, seed: int = 0,
                         max_tries: int = 10_000) -> list[Arch]:
    """``n`` distinct architectures within ``tolerance`` (relative) of ``budget`` parameters."""
    if n < 1 or budget <= 0 or not 0 < tolerance < 1 or depth_range[0] < 1 or depth_range[0] > depth_range[1]:
        raise ValueError(f"need n >= 1, budget > 0, tolerance in (0, 1) and 1 <= min depth <= max depth; got n={n}, "
                         f"budget={budget}, tolerance={tolerance}, depth_range={depth_range}")
    rng = np.random.default_rng(seed)
    out: list[Arch] = []
    for _ in range(max_tries):
        depth = int(rng.integers(depth_range[0], depth_range[1] + 1))
        ratio = float(rng.uniform(*ffn_ratio_range))
        width = max(head_dim, int(round(_width_for(budget, depth, ratio, vocab) / head_dim)) * head_dim)
        arch = Arch(depth, width, width // head_dim, max(8, int(round(ratio * width / 8)) * 8))
        if arch in out:
            continue
        if abs(llama_param_count(arch, vocab) - budget) <= tolerance * budget:
            out.append(arch)
        if len(out) == n:
            return out
    raise ValueError(f"found only {len(out)} of {n} architectures within {tolerance:.0%} of {budget:,} parameters; "
                     f"widen the depth / FFN ranges or the tolerance")


def spearman_table(rows: list[dict], targets=("loss", "decode_tok_s")) -> dict:
    """``{factor: {target: rho}}`` Spearman correlations over ``rows`` (dicts with the factors and targets)."""
    if len(rows) < 3:
        raise ValueError(f"Spearman correlation needs at least 3 configs, got {len(rows)}")
    out = {}
    for f in FACTORS:
        out[f] = {}
        for t in targets:
            x, y = [r[f] for r in rows], [r[t] for r in rows]
            out[f][t] = float("nan") if len(set(x)) < 2 else float(stats.spearmanr(x, y).statistic)
    return out
