"""What every ``launch/`` command shares: quiet library logs and one-line errors.

``run(main)`` wraps an absl ``main``:

- absl/orbax/JAX INFO logs are silenced (WARNING and above still show) unless ``--verbosity``
  is given on the command line (``--verbosity=0`` restores INFO, ``1`` adds debug output);
- errors a user caused (a bad value, a missing or damaged file, a config that does not match
  the run, non-finite numbers) print one line ``error: <message>`` and exit with status 1 (3
  for NaN/Inf); ``--traceback`` shows the full Python traceback instead. Bugs (any other
  exception) keep their traceback.
"""

import sys

from absl import app, flags
from absl import logging as absl_logging

_TRACEBACK = flags.DEFINE_bool("traceback", False, "show the Python traceback of errors (default: one line)")

NONFINITE_EXIT_CODE = 3


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story for the user."""
    from jaxlab.train.checkpoint import NoValidCheckpointError

    return (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, FloatingPointError,
            NoValidCheckpointError, ImportError)


def quiet_libraries() -> None:
    """absl (and through it orbax) at WARNING unless ``--verbosity`` was given explicitly."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def run(main, **kwargs) -> None:
    """``app.run(main)`` with quiet library logs and one-line user errors (see the module docstring)."""

    def wrapped(argv):
        quiet_libraries()
        try:
            return main(argv)
        except user_errors() as e:
            if _TRACEBACK.value:
                raise
            print(f"error: {str(e) or type(e).__name__}", file=sys.stderr, flush=True)
            sys.exit(NONFINITE_EXIT_CODE if isinstance(e, FloatingPointError) else 1)

    app.run(wrapped, **kwargs)
