"""Stop requests: SIGTERM on one process, JAX's preemption sync point across several.

With several processes (``jax.distributed``), JAX's preemption service receives the notice
(SIGTERM by default) on any host and agrees on a step at which *all* hosts stop, so every
process takes part in the final checkpoint. A single process handles SIGTERM itself: the
handler only sets a flag; the loop saves after the current step and exits cleanly.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopWatcher:
    """``should_stop(step)`` is True once the run has been asked to stop (call it every step)."""

    def __init__(self):
        self._requested = threading.Event()
        self._previous = None
        self.signal_name: str | None = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        del frame
        self.signal_name = signal.Signals(signum).name
        self._requested.set()

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
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
