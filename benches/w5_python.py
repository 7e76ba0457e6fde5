#!/usr/bin/env python3
"""W5 beside Python (DESIGN.md section 5): the same 10k and 1M one-minute bars written into the
same migrated table (CHECKs and change-tracking triggers included) by Python's `sqlite3`
`executemany` in one transaction and by psycopg's `COPY`, then quiver's bulk writer on the
same rows (`cargo bench --bench w5_write -- bulk`, criterion medians), all in one run.

    python3 benches/w5_python.py [--runs N] [--no-rust]

Creates its own virtual environment under $QUIVER_BENCH_DIR (default /var/tmp/quiver-bench)
with psycopg pinned; uses the release `quiver` binary of $CARGO_TARGET_DIR (default
/var/tmp/quiver-bench-target), building it if missing, to generate the rows
(`quiver generate --symbols 50 --days 52 --timeframe 1m --seed 42`, the bench's rows) and to
migrate each fresh database. PostgreSQL from QUIVER_TEST_PG_URL (default
postgres://postgres@127.0.0.1:5432/test), in a schema of its own.
"""

import argparse
import datetime as dt
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import REPO, TARGET, quiver_binary, reexec_in_venv
PG_URL = os.environ.get("QUIVER_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
TOOLS = ["psycopg==3.3.9", "psycopg-binary==3.3.9"]
SCHEMA = "quiver_bench_w5_python"
COLUMNS = "symbol, timeframe, ts, open, high, low, close, volume"


def quiver(binary, env, *args):
    subprocess.run([str(binary), "-q", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def sqlite_env(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env["QUIVER_DATABASE_URL"] = f"sqlite://{path}"
    return env


def pg_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env["QUIVER_DATABASE_URL"] = PG_URL
    env["QUIVER_DATABASE_SCHEMA"] = SCHEMA
    return env


def the_rows(binary, tmp):
    """The bench's rows, in key order, as the text SQLite stores (ts in microseconds)."""
    source = tmp / "source.db"
    quiver(binary, sqlite_env(source), "migrate")
    quiver(binary, sqlite_env(source), "generate", "--symbols", "50", "--days", "52",
           "--timeframe", "1m", "--seed", "42")
    with sqlite3.connect(source) as c:
        return c.execute(
            f"SELECT {COLUMNS} FROM market_data ORDER BY symbol, timeframe, ts LIMIT 1000000"
        ).fetchall()


def sqlite_executemany(binary, tmp, rows, runs):
    times = []
    for i in range(runs):
        path = tmp / f"py-{len(rows)}-{i}.db"
        quiver(binary, sqlite_env(path), "migrate")
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = NORMAL")
        t = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        c.executemany(f"INSERT INTO market_data ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows)
        c.execute("COMMIT")
        times.append(time.perf_counter() - t)
        assert c.execute("SELECT count(*) FROM market_data").fetchone()[0] == len(rows)
        c.close()
        path.unlink()
    return statistics.median(times)


def psycopg_copy(binary, rows, runs):
    import psycopg

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    typed = [(s, tf, epoch + dt.timedelta(microseconds=ts), o, h, lo, c, v)
             for (s, tf, ts, o, h, lo, c, v) in rows]
    times = []
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        for _ in range(runs):
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            quiver(binary, pg_env(), "migrate")
            with psycopg.connect(PG_URL, options=f"-c search_path={SCHEMA}") as conn:
                t = time.perf_counter()
                with conn.cursor() as cur:
                    with cur.copy(f"COPY market_data ({COLUMNS}) FROM STDIN") as copy:
                        for row in typed:
                            copy.write_row(row)
                conn.commit()
                times.append(time.perf_counter() - t)
                n = conn.execute("SELECT count(*) FROM market_data").fetchone()[0]
                assert n == len(rows), n
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return statistics.median(times)


def quiver_bulk():
    """Criterion's median of `w5/<backend>/bulk/<size>`, in seconds."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "w5_write", "--", "bulk"],
        cwd=REPO, check=True, capture_output=True, text=True,
        env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)),
    ).stdout
    units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    found = {}
    for m in re.finditer(r"w5/(\w+)/bulk/(\w+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out):
        found[(m.group(1), m.group(2))] = float(m.group(3)) * units[m.group(4)]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-rust", action="store_true")
    args = parser.parse_args()
    reexec_in_venv("python-w5", TOOLS, "QUIVER_W5_VENV")
    binary = quiver_binary()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = the_rows(binary, tmp)
        results = {}
        for label, n in [("10k", 10_000), ("1M", 1_000_000)]:
            part = rows[:n]
            results[("sqlite", label)] = sqlite_executemany(binary, tmp, part, args.runs)
            results[("postgres", label)] = psycopg_copy(binary, part, args.runs)
    rust = {} if args.no_rust else quiver_bulk()
    print("| workload | Python | quiver | quiver faster by |")
    print("| --- | --- | --- | --- |")
    for backend, tool in [("sqlite", "sqlite3 executemany"), ("postgres", "psycopg COPY")]:
        for label in ["10k", "1M"]:
            py = results[(backend, label)]
            q = rust.get((backend, label))
            ours = f"{q * 1e3:.0f} ms" if q else "-"
            ratio = f"{py / q:.2f}x" if q else "-"
            print(f"| {backend} {label}: {tool} | {py * 1e3:.0f} ms | {ours} | {ratio} |")


if __name__ == "__main__":
    main()
