"""benchmarks/vae.py runs both libraries on the same weights and reports their agreement."""

import pytest

TINY = dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=4)


@pytest.mark.slow  # imports diffusers (~10 s); benchmarks, not behaviour users rely on
def test_bench_reports_throughput_and_agreement():
    pytest.importorskip("diffusers")
    from benchmarks import vae

    rows, diffs = vae.throughput(size=16, batch=2, rounds=1, config=TINY)
    assert [r["op"] for r in rows] == ["encode", "decode"]
    assert all(float(r["jaxlab_img_s"]) > 0 and float(r["diffusers_img_s"]) > 0 for r in rows)
    assert diffs["encode mean"] < 1e-4 and diffs["decode"] < 1e-4 * max(1.0, diffs["decode range"])
    rel = vae.bf16_difference(16, 2, config=TINY)
    assert 0 < rel["encode mean"] < 0.1 and 0 < rel["decode"] < 0.1
