"""Golden equivalence with XLA's default compiler options, as users run it.

The suite compiles with fast, unoptimised XLA:CPU options (tests/conftest.py); this reruns the
golden tests marked ``default_xla`` (DiT, U-DiT, DiC with guidance; LLaDA, scanned and not) in a
subprocess with ``JAXLAB_TEST_DEFAULT_XLA=1``, i.e. with the compiler's defaults, at the same
JSON tolerances.
"""

import os
import subprocess
import sys

from tests.conftest import FAST_COMPILE_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["tests/models/test_dit.py", "tests/models/test_udit.py", "tests/models/test_dic.py", "tests/dlm/test_model.py"]


def test_marked_golden_tests_pass_with_default_xla_options():
    env = dict(os.environ, JAXLAB_TEST_DEFAULT_XLA="1")
    flags = env.get("XLA_FLAGS", "")
    for flag in FAST_COMPILE_FLAGS.split():
        flags = flags.replace(flag, "")
    env["XLA_FLAGS"] = flags.strip()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "default_xla", *FILES],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 6, summary  # every marked case ran
