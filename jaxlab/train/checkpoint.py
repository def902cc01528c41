"""Orbax checkpoints of the ``TrainState`` together with the grain iterator state, with integrity data.

Layout: ``<workdir>/checkpoints/<step>/{state,data,integrity}``. ``state`` is the TrainState pytree
(each process writes its own shards), ``data`` holds one JSON iterator state per process and
``integrity`` the per-array checksums of the state (``jaxlab.train.integrity``). Orbax writes each
step into a temporary directory and renames it when complete, so a run killed mid-save leaves only
a temporary directory, ignored (and removed) on the next start. Saves are asynchronous when
``config.checkpoint.async_save``: the arrays are copied to host memory before ``save`` returns and
written in the background.

Trust: ``save`` refuses a state holding NaN/Inf (``NonFiniteStateError``). ``restore_latest`` tries
the steps newest first; a step whose files are missing, unreadable or whose arrays do not match
their checksums (or hold NaN/Inf) is skipped with a one-line warning naming the step and why, and
the newest valid step is restored. A step whose arrays have other *shapes* than the requested
state is not damage but a different model: that raises ``CheckpointMismatchError`` at once.

Retention: the last ``keep_last`` steps, plus every step that is a multiple of ``keep_every``.
Restoring takes an abstract state whose ShapeDtypeStructs carry the *current* shardings, so a
checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).
"""

import contextlib
import json
import logging
import os
import sys

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from jaxlab.train import integrity
from jaxlab.train.state import TrainState

STATE, DATA, INTEGRITY = "state", "data", "integrity"
DAMAGED_DIR = "checkpoints_damaged"  # next to checkpoints/: skipped steps are moved here by training runs


class NonFiniteStateError(FloatingPointError):
    """The state to save holds NaN/Inf values; nothing was written."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays have other names/shapes than the state the config builds."""


class NoValidCheckpointError(RuntimeError):
    """Every checkpoint step in the directory is damaged."""


def orbax_path(directory: str | os.PathLike) -> epath.Path:
    """``directory`` as orbax takes it: local paths made absolute (orbax refuses relative ones), remote (``gs://``) as given."""
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.abspath(os.path.expanduser(text)))


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    """One line for a restore failure (orbax/TensorStore messages run to many lines)."""
    text = " ".join(str(error).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    return {k: tuple(getattr(v, "shape", ())) for k, v in integrity.flatten(tree).items()}


def check_structure(saved_tree, abstract_tree, where: str) -> None:
    """Raises CheckpointMismatchError when array names or shapes differ (a different model/optimizer, not damage)."""
    saved, wanted = _shapes(saved_tree), _shapes(abstract_tree)
    diffs = [f"{k}: saved {saved[k]} vs now {wanted[k]}" for k in sorted(saved.keys() & wanted.keys()) if saved[k] != wanted[k]]
    diffs += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - wanted.keys())]
    diffs += [f"{k}: not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
    if diffs:
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise CheckpointMismatchError(
            f"the checkpoint {where} holds a different model or optimizer than the config builds: "
            f"{'; '.join(diffs[:4])}{more}. Resume with the run's own config (see config.json in the workdir) "
            f"or start a new run with another --workdir"
        )


def _read_state_metadata(step_dir: epath.Path):
    metadata = ocp.PyTreeCheckpointHandler().metadata(step_dir / STATE)
    return metadata.tree if hasattr(metadata, "tree") else metadata


def verify(report: dict, saved_checksums: dict | None, step: int, prefix: str = "") -> None:
    """Raises ValueError when ``report`` (``integrity.fingerprint``) disagrees with the saved checksums or holds NaN/Inf."""
    if saved_checksums is not None:
        bad = integrity.mismatches(saved_checksums, report, prefix)
        if bad:
            raise ValueError(f"checksum mismatch in {len(bad)} array(s), e.g. {bad[0]} (corrupt bytes)")
    nonfinite = integrity.nonfinite_leaves({k: v for k, v in report.items() if k.startswith(prefix)})
    if nonfinite:
        raise ValueError(f"NaN/Inf values in {integrity.describe_nonfinite(nonfinite)}")


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
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, DATA, INTEGRITY))

    @classmethod
    def from_config(cls, directory, ckpt_cfg) -> "Checkpointer":
        return cls(directory, keep_last=int(ckpt_cfg.keep_last), keep_every=int(ckpt_cfg.keep_every),
                   async_save=bool(ckpt_cfg.async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: TrainState, iterator) -> None:
        """Saves ``state``, its checksums and ``iterator``'s position at ``step`` (every process must call it).

        Raises NonFiniteStateError (writing nothing) when the state holds NaN/Inf.
        """
        report = integrity.fingerprint(state)
        nonfinite = integrity.nonfinite_leaves(report)
        if nonfinite:
            raise NonFiniteStateError(
                f"refusing to save step {step}: the state holds NaN/Inf in {integrity.describe_nonfinite(nonfinite)}"
            )
        checksums = {k: v["checksum"] for k, v in report.items()}
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.PyTreeSave(state),
                DATA: grain.checkpoint.CheckpointSave(_IteratorSnapshot(iterator)),
                INTEGRITY: ocp.args.JsonSave({"format": 1, "checksum": "weighted-uint32-sum", "checksums": checksums}),
            }
        )
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState, iterator) -> TrainState:
        """The state at ``step``, laid out as ``abstract_state``'s shardings; ``iterator`` is rewound in place.

        Raises CheckpointMismatchError for a different model, and other errors when the step is damaged.
        """
        step_dir = self.directory / str(step)
        check_structure(_read_state_metadata(step_dir), abstract_state, f"{step_dir}")
        has_integrity = (step_dir / INTEGRITY).exists()
        items = {
            STATE: ocp.args.PyTreeRestore(
                abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
            ),
            DATA: grain.checkpoint.CheckpointRestore(iterator),
        }
        if has_integrity:
            items[INTEGRITY] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        state = restored[STATE]
        saved = restored[INTEGRITY]["checksums"] if has_integrity else None
        if not has_integrity:
            _warn(f"checkpoint step {step} has no checksums (written by an older jaxlab); only checked for NaN/Inf")
        verify(integrity.fingerprint(state), saved, step)
        return state

    def restore_latest(self, abstract_state: TrainState, iterator, *, move_damaged: bool = True):
        """``(step, state)`` of the newest valid step, or ``(None, None)`` when there is no checkpoint.

        Damaged steps are skipped with a warning and, when ``move_damaged``, moved to
        ``<workdir>/checkpoints_damaged/`` (so later saves can reuse their step numbers).
        Raises NoValidCheckpointError when every step is damaged.
        """
        skipped: list[tuple[int, str]] = []
        try:
            for step in reversed(self.all_steps()):
                try:
                    state = self.restore(step, abstract_state, iterator)
                    error = None
                except CheckpointMismatchError:
                    raise
                except Exception as e:  # anything else: missing/corrupt files, checksum or NaN mismatch
                    state, error = None, _reason(e)
                if not _all_processes_agree(error is None):
                    error = error or "damaged on another process"
                if error is None:
                    return step, state
                skipped.append((step, error))
                older = "falling back to the previous step" if step != self.all_steps()[0] else "no older step left"
                _warn(f"skipping damaged checkpoint step {step} ({error}); {older}")
        finally:
            if skipped and move_damaged:
                self._move_aside([s for s, _ in skipped])
        if skipped:
            raise NoValidCheckpointError(
                f"every checkpoint in {self.directory} is damaged (steps {[s for s, _ in skipped]}; moved to "
                f"{self.directory.parent / DAMAGED_DIR}): start a new run with another --workdir, or rerun to "
                f"train from scratch in this one"
            )
        return None, None

    def _move_aside(self, steps: list[int]) -> None:
        target_root = self.directory.parent / DAMAGED_DIR
        if jax.process_index() == 0:
            target_root.mkdir(parents=True, exist_ok=True)
            for step in steps:
                source, target = self.directory / str(step), target_root / str(step)
                suffix = 1
                while target.exists():
                    target, suffix = target_root / f"{step}.{suffix}", suffix + 1
                if source.exists():
                    source.rename(target)
                    _warn(f"moved damaged checkpoint step {step} to {target}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxlab_move_damaged_checkpoints")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _all_processes_agree(ok: bool) -> bool:
    """True when ``ok`` on every process (so all processes restore the same step)."""
    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


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

    Needs no model or mesh: shapes come from the checkpoint metadata; nothing else is read. The
    subtree is checked against the step's checksums and for NaN/Inf. Without ``step``, damaged
    steps are skipped (with a warning) for the newest valid one; nothing is moved or deleted.
    """
    with _quiet_absl():
        return _restore_params_subtree(directory, key, step)


def _restore_params_subtree(directory, key, step):
    manager = ocp.CheckpointManager(
        orbax_path(directory),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler(), INTEGRITY: ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
        problems = []
        for candidate in steps:
            try:
                return candidate, _read_subtree(manager, orbax_path(directory), candidate, key)
            except KeyError:
                raise
            except Exception as e:
                if step is not None:
                    raise ValueError(f"checkpoint {directory}/{candidate} is damaged: {_reason(e)}") from None
                problems.append(candidate)
                _warn(f"skipping damaged checkpoint step {candidate} ({_reason(e)})")
        raise NoValidCheckpointError(f"every checkpoint in {directory} is damaged (steps {problems})")
    finally:
        manager.close()


def _read_subtree(manager, directory: epath.Path, step: int, key: str):
    try:
        metadata = manager.item_metadata(step)[STATE]
    except KeyError:
        metadata = None
    tree = metadata.tree if hasattr(metadata, "tree") else metadata
    if tree is None:
        raise FileNotFoundError(f"no {STATE}/ item")
    if key not in tree:
        raise KeyError(f"checkpoint {directory}/{step} has no {key!r}; items: {sorted(tree)}")
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = {key: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree[key])}
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
    items = {STATE: ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)}
    has_integrity = (directory / str(step) / INTEGRITY).exists()
    if has_integrity:
        items[INTEGRITY] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    subtree = restored[STATE][key]
    saved = restored[INTEGRITY]["checksums"] if has_integrity else None
    verify(integrity.fingerprint({key: subtree}), saved, step, prefix=f"{key}/")
    return jax.device_get(subtree)
