"""Shared test setup: full-precision matmuls and the golden-vector loader."""

import json
import pathlib

import jax
import numpy as np
import pytest

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
