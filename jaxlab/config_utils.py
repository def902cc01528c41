"""Small helpers for ``configs/<family>.py`` files and the launch scripts that read them."""

from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections


def pick_variant(family: str, variant: str | None, variants: Mapping[str, Any], default: str) -> Any:
    """``variants[variant or default]``, or a ValueError that lists the known variants."""
    name = variant or default
    if name not in variants:
        raise ValueError(
            f"unknown {family} config variant {name!r}; known variants: {sorted(variants)} "
            f"(use --config=configs/{family}.py:<variant>)"
        )
    return variants[name]


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raises a ValueError naming ``key``, the bad ``value`` and the allowed values."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"config.{key}={value!r} is not allowed; allowed values: {allowed}")


def check_positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"config.{key}={value!r} must be a positive number")


def to_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
