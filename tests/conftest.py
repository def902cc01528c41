"""Shared test setup: fast XLA:CPU compiles, full-precision matmuls and the golden-vector loader."""

import json
import os
import pathlib
import subprocess
import sys

# Test-sized programs spend most of their time in XLA:CPU's compiler. These options make it
# several times cheaper (float32 numerics stay within the golden tolerances). They go in the
# environment, before JAX starts its backend, so subprocesses and notebook kernels inherit them.
# An XLA that does not know one of them would abort at start-up, so they are checked first.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false"
)


def _enable_fast_compile() -> None:
    if os.environ.get("JAXLAB_TEST_DEFAULT_XLA"):  # opt out: test with the compiler's defaults
        return
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), FAST_COMPILE_FLAGS]))
    probe = subprocess.run(
        [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = flags


_enable_fast_compile()

import jax  # noqa: E402  (after XLA_FLAGS is final)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Equivalence with the float32 PyTorch reference needs full-f32 matmuls (no TF32/bf16 passes).
jax.config.update("jax_default_matmul_precision", "highest")

GOLDEN = pathlib.Path(__file__).parent / "golden"


class GoldenCase:
    """One ``<case>.npz`` + ``<case>.json`` pair from ``tests/golden/<family>/``."""

    def __init__(self, family: str, case: str):
        self.meta = json.loads((GOLDEN / family / f"{case}.json").read_text())
        with np.load(GOLDEN / family / f"{case}.npz") as data:
            self.arrays = {k: data[k] for k in data.files}

    @property
    def state_dict(self) -> dict[str, np.ndarray]:
        return {k[len("params/") :]: v for k, v in self.arrays.items() if k.startswith("params/")}

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def tolerance(self, output: str) -> dict[str, float]:
        per_output = self.meta.get("tolerance_per_output", {})
        tol = per_output.get(output, self.meta["tolerance"])
        return {"rtol": tol["rtol"], "atol": tol["atol"]}

    def assert_close(self, output: str, actual, expected=None) -> None:
        """Compares ``actual`` with ``outputs/<output>`` at the case's tolerance for that output."""
        if expected is None:
            expected = self[f"outputs/{output}"]
        actual = np.asarray(actual)
        assert actual.shape == expected.shape, f"{output}: shape {actual.shape} != reference {expected.shape}"
        np.testing.assert_allclose(actual, expected, **self.tolerance(output), err_msg=output)


@pytest.fixture
def golden():
    return GoldenCase


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """Reference images are NCHW (also with leading step axes); jaxlab's are NHWC."""
    return np.moveaxis(x, -3, -1)


def nhwc_to_nchw(x) -> np.ndarray:
    return np.moveaxis(np.asarray(x), -1, -3)


@pytest.fixture(scope="session")
def installed_env():
    """A fresh virtual environment outside the checkout and a wheel of it (see tests/installed.py)."""
    from tests.installed import shared_environment

    return shared_environment()
