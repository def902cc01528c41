"""``from_torch`` for the command line: one clear line when the kwargs do not describe the file.

A conversion that fails (shapes, missing tensors, the ``pos_embed`` table) is retried with each of
the family's presets (plus the kwargs the user gave), so the message can say which preset the
checkpoint looks like. Converted parameters holding NaN/Inf are refused: a damaged file must not
become a checkpoint that samples NaN.
"""

from collections.abc import Mapping
from typing import Any

from jaxlab.convert import from_torch
from jaxlab.train.integrity import describe_nonfinite, nonfinite_host


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def guess_preset(family: str, presets: Mapping[str, Mapping], user_kwargs: Mapping[str, Any], state_dict,
                 skip: str | None = None) -> str | None:
    """The first preset (with ``user_kwargs`` on top) that converts ``state_dict`` without error, or None."""
    for name, fields in presets.items():
        if name == skip:
            continue
        try:
            from_torch(family, {**fields, **user_kwargs}, state_dict)
        except Exception:  # any failure means "not this preset"
            continue
        return name
    return None


def convert_checked(family: str, state_dict, *, user_kwargs: Mapping[str, Any], preset: str | None,
                    presets: Mapping[str, Mapping], source: str):
    """``(module, params)`` as ``from_torch``; ValueError with one line naming the fix otherwise."""
    kwargs = {**(presets[preset] if preset else {}), **user_kwargs}
    try:
        module, params = from_torch(family, kwargs, state_dict)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        guess = guess_preset(family, presets, user_kwargs, state_dict, skip=preset)
        tail = (f"it looks like {guess}: rerun with --preset={guess}" if guess else
                "no jaxlab preset matches it: give the official constructor kwargs with --torch_kwargs='{...}' or "
                "--torch_config=config.json")
        what = f"--preset={preset}" if preset else (f"the kwargs {dict(user_kwargs)}" if user_kwargs else
                                                     f"the default {family} kwargs (no --preset given)")
        raise ValueError(f"{source} does not match {what} ({_reason(e)}); {tail}") from None
    bad = nonfinite_host(params)
    if bad:
        raise ValueError(f"{source} holds NaN/Inf in {describe_nonfinite(bad)}; the file is damaged or was saved from "
                         f"a diverged run: nothing written")
    return module, params
