"""Stop requests: SIGTERM and Ctrl-C (SIGINT) on one process, JAX's preemption sync point across several.

With several processes (``jax.distributed``), JAX's preemption service receives the notice
(SIGTERM by default) on any host and agrees on a step at which *all* hosts stop, so every
process takes part in the final checkpoint (Ctrl-C keeps Python's default there: agreeing on it
would need a host round trip every step). A single process handles SIGTERM and the first Ctrl-C
itself: the handler only sets a flag; the loop saves after the current step and exits cleanly.
A second Ctrl-C aborts at once (exit status 130) without saving: the step in progress is lost,
an unfinished save leaves only a temporary directory that the next start removes, and no Python
code runs that could wait on orbax's background threads.
"""

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

ABORT_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports an interrupted program


class StopWatcher:
    """``should_stop(step)`` is True once the run has been asked to stop (call it every step)."""

    def __init__(self):
        self._requested = threading.Event()
        self._previous: dict[int, object] = {}
        self.signal_name: str | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        if jax.process_count() == 1:  # several processes: SIGTERM goes to JAX's preemption service
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self._requested.is_set():
            print("second Ctrl-C: aborting without saving", file=sys.stderr, flush=True)
            os._exit(ABORT_EXIT_CODE)
        self.signal_name = signal.Signals(signum).name
        self._requested.set()
        if signum == signal.SIGINT:
            print("Ctrl-C: saving a checkpoint after this step (press Ctrl-C again to abort without saving)",
                  file=sys.stderr, flush=True)

    def request_stop(self) -> None:
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = self.signal_name or "preemption notice"
                return True
            return False
        return self._requested.is_set()

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
