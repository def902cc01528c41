"""Beta schedules and timestep respacing (host-side float64 numpy, as the iDDPM reference)."""

import math

import numpy as np

NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2", "cosine")


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """``[T]`` float64 betas. ``"linear"`` scales with T (as in iDDPM); ``"cosine"`` is ``"squaredcos_cap_v2"``."""
    if name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if name in ("squaredcos_cap_v2", "cosine"):
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown noise_schedule {name!r}; allowed values: {list(NOISE_SCHEDULES)}")


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Betas discretising a continuous ``alpha_bar(u)``, ``u`` in [0, 1], capped at ``max_beta``."""
    t = num_diffusion_timesteps
    betas = [min(1 - alpha_bar((i + 1) / t) / alpha_bar(i / t), max_beta) for i in range(t)]
    return np.array(betas, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """The original timesteps a respaced chain keeps (the reference's exact rounding).

    ``section_counts`` is ``"ddimN"`` (the smallest integer stride giving exactly N steps
    from 0), a comma-separated string ``"a,b,c"`` / ``"N"``, or a list of ints: the T steps
    are split into equal sections (the first ``T % n`` one step longer) and each section is
    strided evenly with Python's half-to-even ``round`` on an accumulated float index.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            count = _parse_count(text[4:], section_counts)
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == count:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"timestep_respacing={section_counts!r}: no integer stride gives exactly {count} of "
                f"{num_timesteps} steps; pick another DDIM step count"
            )
        section_counts = [_parse_count(part, section_counts) for part in text.split(",")]
    if not section_counts:
        raise ValueError("timestep_respacing needs at least one section count")
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"timestep_respacing: cannot take {count} steps from a section of {size} "
                f"(of {num_timesteps} diffusion steps)"
            )
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride  # accumulated, not multiplied: the reference's rounding depends on it
        start += size
    return set(steps)


def _parse_count(text: str, whole: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise ValueError(
            f"unknown timestep_respacing {whole!r}: use '' (all steps), 'N' or 'a,b,c' "
            f"(evenly strided sections), or 'ddimN'"
        ) from None
    if count <= 0:
        raise ValueError(f"timestep_respacing {whole!r}: step counts must be positive")
    return count
