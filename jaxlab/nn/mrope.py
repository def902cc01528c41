"""Multimodal rotary embedding (Qwen2-VL / Qwen2.5-VL M-RoPE), half-split layout.

Positions come as three channels ``(t, h, w)`` ``[3, B, T]`` (float: Circle-RoPE's are not
integers). Each channel gets the 1-D table of ``jaxlab.nn.rope`` (``inv_freq = theta^(-2i/hd)``,
``[angles | angles]``); the head dim is then cut into ``mrope_section * 2`` chunks
``[s_t, s_h, s_w, s_t, s_h, s_w]`` and chunk ``i`` is read from channel ``i % 3``. When the three
channels are equal this is exactly the 1-D rotary embedding.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.nn.rope import rope_sin_cos


def check_mrope_section(mrope_section: Sequence[int], head_dim: int) -> None:
    """Raises unless ``mrope_section`` has three positive parts summing to ``head_dim / 2``."""
    section = list(mrope_section)
    if len(section) != 3 or any(int(s) <= 0 for s in section) or sum(section) * 2 != head_dim:
        raise ValueError(
            f"mrope_section={section} must be three positive sizes (t, h, w) summing to head_dim/2={head_dim // 2} "
            f"(head_dim={head_dim}); e.g. [16, 24, 24] for head_dim 128, [8, 12, 12] for 64"
        )


def mrope_tables(positions_3BT: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Per-channel ``(cos, sin)`` ``[3, B, T, head_dim]`` float32 (the reference's rotary module output)."""
    sin, cos = rope_sin_cos(positions_3BT.astype(jnp.float32), head_dim, theta)
    return cos, sin


def section_index(mrope_section: Sequence[int]) -> np.ndarray:
    """``[head_dim]`` channel (0=t, 1=h, 2=w) each feature reads, from the doubled section list."""
    parts = list(mrope_section) * 2
    return np.concatenate([np.full(s, i % 3) for i, s in enumerate(parts)]).astype(np.int32)


def select_sections(table_3BTH: jax.Array, mrope_section: Sequence[int]) -> jax.Array:
    """``[3, B, T, hd] -> [B, T, hd]``: feature ``d`` from channel ``section_index[d]``."""
    idx = jnp.asarray(section_index(mrope_section))
    onehot = idx[None, :] == jnp.arange(3)[:, None]  # [3, hd]
    return jnp.sum(jnp.where(onehot[:, None, None, :], table_3BTH, 0.0), axis=0)


def mrope_sin_cos(positions_3BT: jax.Array, head_dim: int, theta: float,
                  mrope_section: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """``(sin, cos)`` ``[B, T, head_dim]`` float32 for ``jaxlab.nn.rope.apply_rope``."""
    check_mrope_section(mrope_section, head_dim)
    cos, sin = mrope_tables(positions_3BT, head_dim, theta)
    return select_sections(sin, mrope_section), select_sections(cos, mrope_section)
