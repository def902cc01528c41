"""Orbax checkpoints of the ``TrainState`` together with the grain iterator state.

Layout: ``<workdir>/checkpoints/<step>/{state,data}``. ``state`` is the TrainState pytree (each
process writes its own shards), ``data`` holds one JSON iterator state per process. Orbax writes
each step into a temporary directory and renames it when complete, so a step directory that
exists is whole; a run killed mid-save leaves only a temporary directory, ignored (and removed)
on the next start. Saves are asynchronous when ``config.checkpoint.async_save``: the arrays
are copied to host memory before ``save`` returns and written in the background.

Retention: the last ``keep_last`` steps, plus every step that is a multiple of ``keep_every``.
Restoring takes an abstract state whose ShapeDtypeStructs carry the *current* shardings, so a
checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).
"""

import contextlib
import json
import logging
import os

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from jaxlab.train.state import TrainState

STATE, DATA = "state", "data"


def orbax_path(directory: str | os.PathLike) -> epath.Path:
    """``directory`` as orbax takes it: local paths made absolute (orbax refuses relative ones), remote (``gs://``) as given."""
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.abspath(os.path.expanduser(text)))


class _IteratorSnapshot:
    """The iterator state at save time, so a background write cannot see later batches."""

    def __init__(self, iterator):
        self._state = json.dumps(iterator.get_state()).encode()

    def get_state(self) -> bytes:
        return self._state


def preservation_policy(keep_last: int, keep_every: int):
    keep = [policies.LatestN(n=keep_last)]
    if keep_every > 0:
        keep.append(policies.EveryNSteps(interval_steps=keep_every))
    return policies.AnyPreservationPolicy(keep)


class Checkpointer:
    """Saves / restores ``(TrainState, data iterator)`` under ``directory`` (local path or gs://)."""

    def __init__(self, directory: str | epath.Path, *, keep_last: int = 3, keep_every: int = 0, async_save: bool = True):
        if keep_last < 1:
            raise ValueError(f"config.checkpoint.keep_last={keep_last} must be >= 1")
        self.directory = orbax_path(directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preservation_policy(keep_last, keep_every),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA))

    @classmethod
    def from_config(cls, directory, ckpt_cfg) -> "Checkpointer":
        return cls(directory, keep_last=int(ckpt_cfg.keep_last), keep_every=int(ckpt_cfg.keep_every),
                   async_save=bool(ckpt_cfg.async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, iterator) -> None:
        """Saves ``state`` and ``iterator``'s position at ``step`` (every process must call it)."""
        args = ocp.args.Composite(
            **{STATE: ocp.args.PyTreeSave(state), DATA: grain.checkpoint.CheckpointSave(_IteratorSnapshot(iterator))}
        )
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState, iterator) -> TrainState:
        """The state at ``step``, laid out as ``abstract_state``'s shardings; ``iterator`` is rewound in place."""
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.PyTreeRestore(
                    abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
                ),
                DATA: grain.checkpoint.CheckpointRestore(iterator),
            }
        )
        restored = self.manager.restore(step, args=args)
        return restored[STATE]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@contextlib.contextmanager
def _quiet_absl():
    """Silences orbax's warnings about a read-only manager and the unread data item (expected here)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def restore_params_subtree(directory: str | epath.Path, key: str = "ema_params", step: int | None = None):
    """``(step, tree)``: one subtree of a saved TrainState (e.g. the EMA params), as numpy on the host.

    Needs no model or mesh: shapes come from the checkpoint metadata; nothing else is read.
    """
    with _quiet_absl():
        return _restore_params_subtree(directory, key, step)


def _restore_params_subtree(directory, key, step):
    manager = ocp.CheckpointManager(
        orbax_path(directory),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
        metadata = manager.item_metadata(step)[STATE]
        tree = metadata.tree if hasattr(metadata, "tree") else metadata
        if key not in tree:
            raise KeyError(f"checkpoint {directory}/{step} has no {key!r}; items: {sorted(tree)}")
        cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
        target = {key: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree[key])}
        restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)}
            ),
        )
        return step, jax.device_get(restored[STATE][key])
    finally:
        manager.close()
