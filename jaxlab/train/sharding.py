"""The device mesh and the one table that maps the models' logical axis names to it.

Mesh axes: ``data`` (pure data parallelism), ``fsdp`` (data parallelism with parameters and
optimizer state sharded over it) and ``tensor`` (model parallelism over MLP / heads / vocab).
The batch is split over ``data x fsdp``; ``tensor`` shards weights and replicates the batch.

Logical names (``jaxlab.nn.LOGICAL_AXES``) resolve to mesh axes through ``LOGICAL_RULES``, in
one way for parameters, activations and the attention kernels' ``shard_map``: ``logical_to_spec``
applies flax's precedence (``nn.logical_to_mesh_axes``, the resolution ``nn.with_logical_constraint``
uses for activations under ``nn.logical_axis_rules``): rule by rule, each rule's mesh axes go to
the first dimension carrying its name unless an earlier rule already used them, so each mesh axis
shards at most one dimension (a ``("embed", "embed")`` kernel is sharded on its first dimension
only). Parameters and kernels then fit the result to the mesh: a dimension whose size the mesh
axes do not divide stays replicated.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch is split over

# Logical axis -> mesh axes (None: replicated). Read by parameters and activation constraints.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("classes", None),
    ("patch", None),
    ("freq", None),
    ("layers", None),
)


def mesh_shape(spec: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolves ``{"data": -1, "fsdp": 2, "tensor": 1}`` against ``num_devices`` (-1 = fill).

    Raises a ValueError naming the config keys when the sizes cannot tile the devices.
    """
    unknown = sorted(set(spec) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown} in config.mesh; allowed axes: {list(MESH_AXES)}")
    sizes = {axis: int(spec.get(axis, 1)) for axis in MESH_AXES}
    fill = [axis for axis, size in sizes.items() if size == -1]
    bad = {axis: size for axis, size in sizes.items() if size == 0 or size < -1}
    if bad or len(fill) > 1:
        raise ValueError(
            f"config.mesh={sizes} is invalid: sizes must be positive, with at most one -1 (fill); "
            f"e.g. --config.mesh.data=-1 --config.mesh.fsdp=2"
        )
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh={sizes}: the fixed axes ({fixed} devices) do not divide the {num_devices} "
                f"available devices; choose sizes whose product divides {num_devices}"
            )
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"config.mesh={sizes} needs {fixed} devices but {num_devices} are available; make the "
            f"product of the sizes equal {num_devices}, or set one axis to -1 to fill"
        )
    return sizes


def make_mesh(spec: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all), sizes from ``spec``."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(spec, len(devices))
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int], mesh, rules=LOGICAL_RULES
) -> PartitionSpec:
    """PartitionSpec for an array of ``shape`` whose dimensions carry logical ``names``.

    Precedence is flax's (``nn.logical_to_mesh_axes``, which ``nn.with_logical_constraint``
    applies to activations): rule by rule, a rule's mesh axes go to the first dimension carrying
    its name unless that dimension is assigned or an axis is taken. Unlike flax, a name may repeat
    (a ``("embed", "embed")`` kernel: the later dimension stays replicated). Then the result is
    fitted to ``mesh`` (a ``Mesh`` or ``AbstractMesh``): axes of size 1 are dropped and a
    dimension the axes do not divide is replicated. ``rules=None``: the rules active in flax's
    ``nn.logical_axis_rules`` context (none active: everything replicated).
    """
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match an array of shape {tuple(shape)}")
    if rules is None:  # flax's active rules; a name they do not cover is replicated, as flax does
        rules = tuple(nn.get_logical_axis_rules())
    else:
        known = {name for name, _ in rules}
        for name in names:
            if name is not None and name not in known:
                raise ValueError(f"logical axis {name!r} has no rule in jaxlab.train.sharding.LOGICAL_RULES")
    names = list(names)
    assigned: dict[int, tuple[str, ...]] = {}
    for name, target in rules:
        if name not in names:
            continue
        pos = names.index(name)
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        taken = {a for used in assigned.values() for a in used}
        if pos not in assigned and not taken & set(axes):
            assigned[pos] = axes
    spec = []
    for pos, size in enumerate(shape):
        axes = tuple(a for a in assigned.get(pos, ()) if mesh.shape.get(a, 1) > 1)
        if not axes or size % math.prod(mesh.shape[a] for a in axes):
            spec.append(None)
        else:
            spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def tree_shardings(abstract_tree, mesh: Mesh, rules=LOGICAL_RULES):
    """NamedShardings for a tree whose leaves may be boxed with logical names (``nn.Partitioned``).

    ``abstract_tree`` is usually ``jax.eval_shape`` of a function returning boxed params (or
    optimizer state built from boxed params); unboxed leaves are replicated. The result has the
    structure of ``nn.unbox(abstract_tree)``.
    """

    def one(leaf):
        if _is_box(leaf):
            value = leaf.value
            return NamedSharding(mesh, logical_to_spec(leaf.names, value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, abstract_tree, is_leaf=_is_box)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) dimension over ``data x fsdp``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(global_batch_size: int, mesh: Mesh, process_count: int = 1) -> None:
    """Raises unless the global batch splits evenly over the data-parallel devices and processes."""
    dp = data_parallel_size(mesh)
    if global_batch_size % dp:
        raise ValueError(
            f"config.training.global_batch_size={global_batch_size} is not divisible by the data-parallel "
            f"size {dp} (mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); use a multiple of {dp}"
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"config.training.global_batch_size={global_batch_size} is not divisible by the "
            f"{process_count} processes; use a multiple of {process_count}"
        )


def process_batch_rows(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
    """``[start, stop)``: the rows of the global batch that this process's devices hold.

    Read from the batch sharding's addressable indices, not assumed from the process index: when
    a non-batch axis (e.g. ``tensor``) spans processes, several processes hold the same rows and
    must feed the same data.
    """
    indices = batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch_size,))
    rows: set[int] = set()
    for index in indices.values():
        rows.update(range(*index[0].indices(global_batch_size)))
    start, stop = min(rows), max(rows) + 1
    if len(rows) != stop - start:
        raise ValueError(
            f"process {jax.process_index()}'s devices hold non-contiguous batch rows {sorted(rows)[:8]}...; order the "
            f"mesh devices so each process's devices are adjacent along the data/fsdp axes"
        )
    return start, stop


def batch_shard(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
    """``(shard_index, shard_count)`` of this process's rows: the data pipeline reads shard ``index`` of ``count``."""
    start, stop = process_batch_rows(mesh, global_batch_size)
    return start // (stop - start), global_batch_size // (stop - start)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, global_batch_size: int | None = None
                 ) -> dict[str, jax.Array]:
    """Assembles each process's rows (``process_batch_rows``) into global arrays sharded over ``data x fsdp``."""
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        shape = None if global_batch_size is None else (global_batch_size,) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value, shape)
    return out


def describe(shardings) -> dict[str, str]:
    """``{"params/blocks_0/attn/qkv/kernel": "PartitionSpec('fsdp', 'tensor')", ...}`` for logs/tests."""
    flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): str(s.spec) for path, s in flat}
