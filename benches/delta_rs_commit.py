#!/usr/bin/env python3
"""delta-rs's own commit path on a quiver cache, for the comparison in W8 (docs/BENCHMARKS.md).

    python3 benches/delta_rs_commit.py DELTA_TABLE [--runs N]

Run by `cargo bench --bench w8_scale` on each size's table right after quiver's figures. The
table is copied first (data files hard-linked, the log copied), so the cache is untouched.
Measured with the deltalake package (pinned below, installed into a virtual environment
under $QUIVER_BENCH_DIR): opening the table, and one change committed through an open
DeltaTable: delete() of one bar (its file rewritten: one remove and one add, the same commit
a quiver pass makes for a changed partition) and an append of one bar (one add).
"""

import datetime
import decimal
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv

VERSIONS = ["deltalake==1.6.6", "pyarrow==26.0.1"]


def ensure_tools():
    """Re-executes this script inside a virtual environment holding the pinned tools."""
    if os.environ.get("QUIVER_BENCH_DELTA_VENV"):
        return
    root = os.environ.get("QUIVER_BENCH_DIR", "/var/tmp/quiver-bench")
    env_dir = os.path.join(root, "python-deltalake")
    python = os.path.join(env_dir, "bin", "python")
    if not os.path.exists(python):
        print(f"installing {', '.join(VERSIONS)} into {env_dir}", file=sys.stderr)
        venv.create(env_dir, with_pip=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *VERSIONS],
            check=True,
        )
    env = dict(os.environ, QUIVER_BENCH_DELTA_VENV="1")
    os.execve(python, [python, *sys.argv], env)


def copy_table(src, dst):
    def link(a, b):
        if "_delta_log" in a:
            shutil.copy2(a, b)
        else:
            os.link(a, b)

    shutil.copytree(src, dst, copy_function=link)


def main():
    ensure_tools()
    import deltalake
    import pyarrow as pa

    table = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    work = tempfile.mkdtemp(dir=os.path.dirname(table))
    try:
        copy = os.path.join(work, "t")
        copy_table(table, copy)
        opens = []
        for _ in range(runs):
            t = time.perf_counter()
            dt = deltalake.DeltaTable(copy)
            files = len(dt.file_uris())
            opens.append((time.perf_counter() - t) * 1e3)
        schema = dt.schema().to_arrow()
        schema = pa.schema(schema)  # a pyarrow schema from the arro3 one
        deletes, appends = [], []
        for i in range(runs):
            # One bar of the first symbol: a quiver table holds S00000's bar of 2016-01
            # at 14:00 UTC.
            day = datetime.datetime(2016, 1 + i, 1, 14, tzinfo=datetime.timezone.utc)
            t = time.perf_counter()
            dt.delete(f"symbol = 'S00000' AND ts = '{day.isoformat()}'")
            deletes.append((time.perf_counter() - t) * 1e3)
            price = decimal.Decimal("1.5")
            row = pa.table(
                {
                    "symbol": ["S00000"],
                    "timeframe": ["1m"],
                    "ts": [day + datetime.timedelta(minutes=1)],
                    "open": [price],
                    "high": [price],
                    "low": [price],
                    "close": [price],
                    "volume": [price],
                },
                schema=schema,
            )
            t = time.perf_counter()
            deltalake.write_deltalake(dt, row, mode="append")
            appends.append((time.perf_counter() - t) * 1e3)
        print(
            f"delta-rs (deltalake {deltalake.__version__}) on {files} files: open "
            f"{statistics.median(opens):.1f} ms, delete of one bar (remove + add) "
            f"{statistics.median(deletes):.1f} ms, append of one bar "
            f"{statistics.median(appends):.1f} ms (medians of {runs})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
