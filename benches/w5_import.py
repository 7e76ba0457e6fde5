#!/usr/bin/env python3
"""Import beside DuckDB (DESIGN.md section 5, W5; issue: import speed): one day of a whole market
as the flat-file vendors ship it (gzip CSV, `window_start` in epoch nanoseconds), its rows by
minute then ticker and (a second file) by ticker then minute, imported end to end by
`quiver import` into SQLite and PostgreSQL, and read by DuckDB's `read_csv` into a table of the
same shape, all in one run.

    python3 benches/w5_import.py [--runs N] [--tickers N] [--order minute|ticker|both]

Creates its own virtual environment under $QUIVER_BENCH_DIR (default /var/tmp/quiver-bench)
with duckdb pinned; uses the release `quiver` binary of $CARGO_TARGET_DIR (default
/var/tmp/quiver-bench-target), building it if missing. PostgreSQL from QUIVER_TEST_PG_URL
(default postgres://postgres@127.0.0.1:5432/test), in a schema of its own. Each timing is the
median of --runs, each into a fresh, migrated database; quiver's includes starting the process,
reading and decompressing the file, parsing and validating every row, sorting, and the one
write transaction.
"""

import argparse
import gzip
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import quiver_binary, reexec_in_venv
PG_URL = os.environ.get("QUIVER_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
TOOLS = ["duckdb==2.0.0", "psycopg==3.3.9", "psycopg-binary==3.3.9"]
SCHEMA = "quiver_bench_w5_import"
MINUTES = 390  # one regular US session of 1m bars


def flat_file(path, tickers, order):
    """A vendor-style day, prices of 2-4 decimals, its rows ordered by minute, then ticker
    (`minute`), or by ticker, then minute (`ticker`, as Massive's flat files list them); the
    same bars either way."""
    rng = random.Random(42)
    start_ns = 1_709_821_800 * 10**9  # 2024-03-07 14:30 UTC
    names = [f"T{i:05d}" for i in range(tickers)]
    price = [rng.uniform(5, 500) for _ in names]
    rows = [[] for _ in names]
    for m in range(MINUTES):
        ts = start_ns + m * 60 * 10**9
        for i, name in enumerate(names):
            o = price[i]
            c = max(0.01, o * (1 + rng.gauss(0, 0.001)))
            h = max(o, c) * (1 + abs(rng.gauss(0, 0.0005)))
            lo = min(o, c) * (1 - abs(rng.gauss(0, 0.0005)))
            price[i] = c
            v = rng.randint(100, 50_000)
            rows[i].append(f"{name},{v},{o:.4f},{c:.4f},{h:.4f},{lo:.4f},{ts},{v // 50}\n")
    with gzip.open(path, "wt", compresslevel=6, newline="") as f:
        f.write("ticker,volume,open,close,high,low,window_start,transactions\n")
        if order == "ticker":
            for lines in rows:
                f.writelines(lines)
        else:
            for m in range(MINUTES):
                f.writelines(lines[m] for lines in rows)
    return tickers * MINUTES


def env_for(url, schema=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env["QUIVER_DATABASE_URL"] = url
    if schema:
        env["QUIVER_DATABASE_SCHEMA"] = schema
    return env


def run(binary, env, *args):
    subprocess.run([str(binary), "-q", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def quiver_import(binary, tmp, path, rows, runs, backend):
    import psycopg

    times = []
    for i in range(runs):
        if backend == "sqlite":
            db = tmp / f"import-{i}.db"
            env = env_for(f"sqlite://{db}")
        else:
            with psycopg.connect(PG_URL, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            env = env_for(PG_URL, SCHEMA)
        run(binary, env, "migrate")
        t = time.perf_counter()
        run(binary, env, "import", "--timeframe", "1m", str(path))
        times.append(time.perf_counter() - t)
        if backend == "sqlite":
            with sqlite3.connect(db) as c:
                n = c.execute("SELECT count(*) FROM market_data").fetchone()[0]
            db.unlink()
        else:
            with psycopg.connect(PG_URL, options=f"-c search_path={SCHEMA}") as c:
                n = c.execute("SELECT count(*) FROM market_data").fetchone()[0]
        assert n == rows, (backend, n)
    if backend == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return statistics.median(times)


DUCKDB_TABLE = """CREATE TABLE market_data (
    symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
    open DECIMAL(28,8) NOT NULL, high DECIMAL(28,8) NOT NULL, low DECIMAL(28,8) NOT NULL,
    close DECIMAL(28,8) NOT NULL, volume DECIMAL(28,8) NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (symbol, timeframe, ts),
    CHECK (high >= low AND high >= open AND high >= close AND low <= open AND low <= close))"""

DUCKDB_INSERT = """INSERT INTO market_data
SELECT ticker, '1m', make_timestamp(window_start // 1000), open, high, low, close, volume
FROM read_csv('{path}', header = true, columns = {{
    'ticker': 'VARCHAR', 'volume': 'DECIMAL(28,8)', 'open': 'DECIMAL(28,8)',
    'close': 'DECIMAL(28,8)', 'high': 'DECIMAL(28,8)', 'low': 'DECIMAL(28,8)',
    'window_start': 'BIGINT', 'transactions': 'BIGINT'}})
ORDER BY 1, 3"""


def duckdb_read_csv(tmp, path, rows, runs, typed):
    import duckdb

    times = []
    for i in range(runs):
        db = tmp / f"duck-{i}.duckdb"
        con = duckdb.connect(str(db))
        t = time.perf_counter()
        if typed:
            con.execute(DUCKDB_TABLE)
            con.execute(DUCKDB_INSERT.format(path=path))
        else:
            con.execute(f"CREATE TABLE market_data AS SELECT * FROM read_csv('{path}')")
        con.execute("CHECKPOINT")
        times.append(time.perf_counter() - t)
        n = con.execute("SELECT count(*) FROM market_data").fetchone()[0]
        assert n == rows, n
        con.close()
        db.unlink()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tickers", type=int, default=2_564)  # x 390 minutes ~ 1M rows
    parser.add_argument("--order", choices=["minute", "ticker", "both"], default="both",
                        help="rows by minute then ticker, by ticker then minute, or a file of each")
    args = parser.parse_args()
    reexec_in_venv("python-w5-import", TOOLS, "QUIVER_W5_IMPORT_VENV")
    binary = quiver_binary()
    orders = ["minute", "ticker"] if args.order == "both" else [args.order]
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for order in orders:
            path = tmp / f"2024-03-07-by-{order}.csv.gz"
            rows = flat_file(path, args.tickers, order)
            size = path.stat().st_size
            print(f"{rows} rows by {order}, {args.tickers} tickers, {size / 1e6:.1f} MB gzip",
                  file=sys.stderr)
            results += [
                (f"quiver import, SQLite, by {order}",
                 quiver_import(binary, tmp, path, rows, args.runs, "sqlite")),
                (f"quiver import, PostgreSQL, by {order}",
                 quiver_import(binary, tmp, path, rows, args.runs, "postgres")),
                (f"DuckDB read_csv into a keyed DECIMAL table, by {order}",
                 duckdb_read_csv(tmp, path, rows, args.runs, True)),
                (f"DuckDB read_csv, types guessed (DOUBLE), no key, by {order}",
                 duckdb_read_csv(tmp, path, rows, args.runs, False)),
            ]
    print(f"| {rows} rows, gzip CSV, end to end | median of {args.runs} | rows/s |")
    print("| --- | --- | --- |")
    for label, seconds in results:
        print(f"| {label} | {seconds:.2f} s | {rows / seconds / 1e6:.2f}M |")


if __name__ == "__main__":
    main()
