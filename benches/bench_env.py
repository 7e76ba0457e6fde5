"""What the Python benches share: their own virtual environments with pinned tools, and the
release `quiver` binary they time.

A bench imports this module (it sits beside them, so `python3 benches/<bench>.py` finds it)
and calls `reexec_in_venv` first thing in `main`.
"""

import os
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(os.environ.get("QUIVER_BENCH_DIR", "/var/tmp/quiver-bench"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/quiver-bench-target"))


def median_ms(fn, runs):
    """Runs `fn` once to warm up, then `runs` times; the median in milliseconds."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def reexec_in_venv(name, tools, marker, after_install=None):
    """Re-executes the running script inside $QUIVER_BENCH_DIR/<name>, a virtual environment
    with `tools` (pinned requirement strings) installed from PyPI. `marker` is the environment
    variable that tells the re-executed script it is there; `after_install(python)` may install
    more (a wheel) before the switch."""
    if os.environ.get(marker):
        return
    env_dir = BENCH_DIR / name
    python = env_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {env_dir}", file=sys.stderr)
        venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *tools],
        check=True,
    )
    if after_install is not None:
        after_install(python)
    os.execve(str(python), [str(python), *sys.argv], dict(os.environ, **{marker: "1"}))


def quiver_binary():
    """The release binary of $CARGO_TARGET_DIR, built first if missing."""
    binary = TARGET / "release" / "quiver"
    if not binary.exists():
        print("building the release binary", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "quiver"], cwd=REPO, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)))
    return binary
