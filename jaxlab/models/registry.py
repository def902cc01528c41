"""Registry: family name -> (module class, config class, named presets)."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jaxlab.models import dic, dit, dlm, inception_fid, ipt, lm, lvlm, udit, vae


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    module: type[nn.Module]
    config: type
    presets: Mapping[str, Mapping[str, Any]]


FAMILIES: dict[str, Family] = {
    "dit": Family("dit", dit.DiT, dit.DiTConfig, dit.PRESETS),
    "llada": Family("llada", dlm.LLaDA, dlm.LLaDAConfig, dlm.PRESETS),
    "dic": Family("dic", dic.DiC, dic.DiCConfig, dic.PRESETS),
    "udit": Family("udit", udit.UDiT, udit.UDiTConfig, udit.PRESETS),
    "vae": Family("vae", vae.AutoencoderKL, vae.VAEConfig, vae.PRESETS),
    "lm": Family("lm", lm.CausalLM, lm.LMConfig, lm.PRESETS),
    # The LM converters' names (launch.convert --family=gpt_neox|llama|dijiang): the same CausalLM.
    **{name: Family(name, lm.CausalLM, lm.LMConfig, lm.PRESETS) for name in ("gpt_neox", "llama", "dijiang")},
    "ipt": Family("ipt", ipt.IPT, ipt.IPTConfig, ipt.PRESETS),
    "lvlm": Family("lvlm", lvlm.LVLM, lvlm.LVLMConfig, lvlm.PRESETS),
    "inception_fid": Family(
        "inception_fid", inception_fid.InceptionV3FID, inception_fid.InceptionConfig, inception_fid.PRESETS
    ),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_model(family: str, preset: str | None = None, **overrides) -> nn.Module:
    """Builds ``family``'s module from a named preset (e.g. ``"DiT-XL/2"``) plus field overrides."""
    fam = get_family(family)
    fields = {}
    if preset is not None:
        if preset not in fam.presets:
            raise ValueError(f"unknown {family} preset {preset!r}; known presets: {sorted(fam.presets)}")
        fields.update(fam.presets[preset])
    fields.update(overrides)
    return fam.module(fam.config.from_dict(fields))
