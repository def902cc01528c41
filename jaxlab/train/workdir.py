"""The run directory: local or remote (``gs://...``), checked for writability before any work.

Checkpoints go straight to the workdir (orbax writes gs:// natively). Small files written by
process 0 (``metrics.jsonl``, TensorBoard events, sample PNGs, ``model.json``) are written to a
local staging directory when the workdir is remote and copied over by ``publish``; files a
restarted run appends to (``metrics.jsonl``) are first copied back with ``fetch``, so the remote
copy keeps the rows of every segment. ``cleanup`` removes the staging directory at the end.
"""

import pathlib
import shutil
import tempfile
import uuid

from etils import epath

from jaxlab.train.checkpoint import orbax_path


class Workdir:
    def __init__(self, path: str):
        if not path:
            raise ValueError("--workdir is empty; give a directory (local path or gs://bucket/dir) for the run")
        self.remote = "://" in str(path)
        self.path = orbax_path(path)  # local paths absolute (orbax refuses relative ones)
        self.local = pathlib.Path(tempfile.mkdtemp(prefix="jaxlab-run-")) if self.remote else pathlib.Path(self.path)

    @property
    def checkpoints(self) -> epath.Path:
        return self.path / "checkpoints"

    def check_writable(self) -> None:
        """Creates the directory and writes + removes a probe file; raises a clear error otherwise."""
        probe = self.path / f".write_probe_{uuid.uuid4().hex}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
            probe.unlink()
        except Exception as e:  # PermissionError, read-only file system, missing bucket, ...
            raise PermissionError(
                f"cannot write to --workdir {self.path}: {type(e).__name__}: {e}; choose a directory you can write to"
            ) from None
        self.local.mkdir(parents=True, exist_ok=True)

    def local_file(self, relpath: str) -> pathlib.Path:
        """Where to write ``relpath`` now (the workdir itself, or the staging directory)."""
        path = self.local / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def fetch(self, relpath: str) -> None:
        """Copies a remote file into the staging directory, so a restarted run appends to it (no-op locally)."""
        if not self.remote:
            return
        source = self.path / relpath
        if source.exists():
            self.local_file(relpath).write_bytes(source.read_bytes())

    def publish(self, relpath: str) -> None:
        """Copies a staged file to a remote workdir (no-op for local workdirs)."""
        if not self.remote:
            return
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((self.local / relpath).read_bytes())

    def cleanup(self) -> None:
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)
