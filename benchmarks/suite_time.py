"""Test time of chosen test files, before (a git ref) and after (this checkout), side by side.

    python -m benchmarks.suite_time --base=main tests/nn/test_attention.py tests/models/test_udit.py

For each file, runs ``pytest -q -p no:cacheprovider --durations=0 FILE`` in a temporary worktree of
``--base`` and then in this checkout (one after the other, so both see about the same machine load),
and prints a table of the summed per-test durations and pytest's wall time. On a shared machine the
absolute numbers depend on the load: compare the two columns of one run, not runs.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
DURATION = re.compile(r"^([0-9.]+)s (?:call|setup|teardown)\s+(\S+?)::", re.M)
SUMMARY = re.compile(r" in ([0-9.]+)s")


def run_file(checkout: pathlib.Path, path: str) -> tuple[float, float, str]:
    """``(summed test durations, pytest wall seconds, last line)`` of ``path`` run in ``checkout``."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", path],
                          cwd=checkout, env=env, capture_output=True, text=True)
    out = proc.stdout
    last = out.strip().splitlines()[-1] if out.strip() else proc.stderr[-200:]
    total = sum(float(s) for s, _ in DURATION.findall(out))
    wall = SUMMARY.search(last)
    return total, float(wall.group(1)) if wall else float("nan"), last


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git ref to compare against (e.g. main)")
    parser.add_argument("files", nargs="+", help="test files or directories, relative to the checkout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jaxlab-test-time-") as tmp:
        base = pathlib.Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
        try:
            rows = [(path, run_file(base, path), run_file(ROOT, path)) for path in args.files]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(f"| file | {args.base}: tests (s) | this checkout: tests (s) | {args.base}: pytest wall (s) | this: pytest wall (s) |")
    print("|---|---|---|---|---|")
    for path, (b_total, b_wall, b_last), (a_total, a_wall, a_last) in rows:
        print(f"| {path} | {b_total:.1f} | {a_total:.1f} | {b_wall:.1f} | {a_wall:.1f} |")
    for path, (_, _, b_last), (_, _, a_last) in rows:
        print(f"{path}: {args.base}: {b_last} / this: {a_last}")


if __name__ == "__main__":
    main()
