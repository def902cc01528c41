"""The LLaDA-8B-shaped accelerator-suite rows lower on CPU with abstract parameters (nothing materialised)."""

import pytest

from benchmarks.dlm_accelerator import lower_llada_8b


def test_llada_8b_dual_cache_block_decoder_lowers_without_weights():
    (row,) = lower_llada_8b(only={("block", "dual")})
    assert row["program"].startswith("LLaDA 8.02B block decoding, dual cache")
    assert row["result"].endswith("kB StableHLO")


@pytest.mark.slow  # all six decoder x cache programs (~10 s each on a loaded 2-core machine)
def test_every_llada_8b_decoder_lowers():
    assert len(lower_llada_8b()) == 6
