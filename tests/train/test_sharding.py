"""jaxlab.train.sharding: mesh sizes, the logical-axis rules, batch checks (no devices needed)."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxlab.nn import LOGICAL_AXES
from jaxlab.train import sharding as sh


class FakeMesh:
    """Just ``.shape``, which is all the resolvers read."""

    def __init__(self, **shape):
        self.shape = shape


def test_mesh_shape_fills_and_validates():
    assert sh.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sh.mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 4) == {"data": 1, "fsdp": 4, "tensor": 1}
    with pytest.raises(ValueError, match="needs 12 devices but 8 are available"):
        sh.mesh_shape({"data": 3, "fsdp": 2, "tensor": 2}, 8)
    with pytest.raises(ValueError, match=r"fixed axes \(3 devices\) do not divide the 8"):
        sh.mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="at most one -1"):
        sh.mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sh.mesh_shape({"data": -1, "pipeline": 2}, 8)


def test_every_logical_axis_has_a_rule():
    assert set(LOGICAL_AXES) <= {name for name, _ in sh.LOGICAL_RULES}


def test_logical_to_spec():
    mesh = FakeMesh(data=2, fsdp=2, tensor=2)
    assert sh.logical_to_spec(("embed", "mlp"), (64, 256), mesh) == P("fsdp", "tensor")
    assert sh.logical_to_spec(("embed", None, "heads", "kv"), (64, 3, 4, 16), mesh) == P("fsdp", None, "tensor", None)
    # An axis used once per array: the second "embed" stays replicated.
    assert sh.logical_to_spec(("embed", "embed"), (64, 64), mesh) == P("fsdp", None)
    # Sizes the mesh axes do not divide stay replicated (1001-row label table, 3 heads).
    assert sh.logical_to_spec(("classes", "embed"), (1001, 64), mesh) == P(None, "fsdp")
    assert sh.logical_to_spec(("heads", "kv"), (3, 16), mesh) == P(None, None)
    assert sh.logical_to_spec(("batch", "length", "embed"), (8, 16, 64), mesh) == P(("data", "fsdp"), None, None)
    # Axes of size 1 are dropped.
    assert sh.logical_to_spec(("batch", "embed"), (8, 64), FakeMesh(data=4, fsdp=1, tensor=1)) == P("data", None)
    with pytest.raises(ValueError, match="no rule"):
        sh.logical_to_spec(("pixels",), (4,), mesh)


def test_parameters_and_activations_resolve_alike():
    """One precedence for parameters (logical_to_spec) and activations (flax's
    nn.logical_to_mesh_axes under nn.logical_axis_rules): rule order, not dimension order."""
    mesh = FakeMesh(data=2, fsdp=2, tensor=2)
    for names in [("heads", "mlp"), ("mlp", "heads"), ("batch", "length", "embed"), ("vocab", "embed"),
                  ("batch", "heads", "length", "kv"), ("layers", "embed", "mlp")]:
        assert sh.logical_to_spec(names, (8,) * len(names), mesh) == nn.logical_to_mesh_axes(names, sh.LOGICAL_RULES)
    assert sh.logical_to_spec(("heads", "mlp"), (8, 8), mesh) == P(None, "tensor")  # the "mlp" rule comes first
    with nn.logical_axis_rules(sh.LOGICAL_RULES):  # rules=None: the active rules, as the attention kernels read them
        assert sh.logical_to_spec(("batch", "heads"), (8, 4), mesh, rules=None) == P(("data", "fsdp"), "tensor")
    assert sh.logical_to_spec(("batch", "heads"), (8, 4), mesh, rules=None) == P(None, None)  # no rules active


def test_batch_divisibility_errors():
    mesh = FakeMesh(data=2, fsdp=3, tensor=2)
    sh.check_batch_divisible(12, mesh, process_count=2)
    with pytest.raises(ValueError, match="global_batch_size=8 is not divisible by the data-parallel size 6"):
        sh.check_batch_divisible(8, mesh)
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        sh.check_batch_divisible(6, FakeMesh(data=2, fsdp=1, tensor=1), process_count=4)


def test_single_device_mesh_and_global_batch():
    mesh = sh.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    batch = sh.global_batch({"image": np.ones((2, 4, 4, 1), np.float32), "label": np.arange(2)}, mesh)
    assert batch["image"].shape == (2, 4, 4, 1) and batch["label"].sharding.spec == P(("data", "fsdp"))
