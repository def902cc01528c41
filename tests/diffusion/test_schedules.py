"""Respacing rules and schedule errors (the golden arrays are in test_golden_diffusion.py)."""

import numpy as np
import pytest

from jaxlab.diffusion import create_diffusion, space_timesteps


def test_respacing_uses_half_to_even_rounding_on_an_accumulated_index():
    steps = space_timesteps(1000, "25")
    assert 166 in steps and 832 in steps  # 166.5 and 832.5 round to even
    assert 167 not in steps and 833 not in steps


def test_ddim_respacing_is_an_integer_stride_from_zero():
    assert sorted(space_timesteps(1000, "ddim50")) == list(range(0, 1000, 20))
    assert 999 not in space_timesteps(1000, "ddim10")
    assert 999 in space_timesteps(1000, "10")


def test_sections_split_the_chain():
    steps = sorted(space_timesteps(1000, "50,30,20"))
    assert len(steps) == 100
    assert steps[0] == 0 and steps[49] == 333 and steps[50] == 334 and steps[-1] == 999


@pytest.mark.parametrize("bad", ["fast", "ddimx", "10,a", "0", "-5", "ddim0"])
def test_unknown_respacing_string_is_rejected(bad):
    with pytest.raises(ValueError, match="timestep_respacing"):
        create_diffusion(bad)


def test_impossible_respacing_is_rejected():
    with pytest.raises(ValueError, match="cannot take 1001 steps"):
        create_diffusion("1001")
    with pytest.raises(ValueError, match="no integer stride gives exactly 999"):
        create_diffusion("ddim999")


def test_unknown_noise_schedule_is_rejected():
    with pytest.raises(ValueError, match=r"unknown noise_schedule 'quadratic'.*linear"):
        create_diffusion("", noise_schedule="quadratic")


def test_cosine_alias_and_float64_arrays():
    d = create_diffusion("100", noise_schedule="cosine")
    ref = create_diffusion("100", noise_schedule="squaredcos_cap_v2")
    np.testing.assert_array_equal(d.betas, ref.betas)
    assert d.alphas_cumprod.dtype == np.float64 and d.num_timesteps == 100
