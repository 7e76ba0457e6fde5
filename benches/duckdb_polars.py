#!/usr/bin/env python3
"""W1, W2 and W3 (DESIGN.md section 5) with DuckDB and Polars on quiver's cache files.

    python3 benches/duckdb_polars.py CACHE_DIR/market_data [--runs N]

Run by `cargo bench --bench read` after quiver's own figures, on the same files. DuckDB and
Polars are installed with pip into a virtual environment under $QUIVER_BENCH_DIR (default
/var/tmp/quiver-bench) the first time. Each workload runs once to warm up, then N times;
the median is printed. Both tools read the Hive folders (tf=, sym=, period=) and are given
the partition columns in their filters so they can skip folders, their best case.
"""

import os
import subprocess
import sys
import venv

from bench_env import median_ms

VERSIONS = ["duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1"]


def ensure_tools():
    """Re-executes this script inside a virtual environment holding the pinned tools."""
    try:
        import duckdb  # noqa: F401
        import polars  # noqa: F401
        import pyarrow  # noqa: F401

        if os.environ.get("QUIVER_BENCH_VENV") or sys.prefix != sys.base_prefix:
            return
    except ImportError:
        pass
    root = os.environ.get("QUIVER_BENCH_DIR", "/var/tmp/quiver-bench")
    env_dir = os.path.join(root, "python")
    python = os.path.join(env_dir, "bin", "python")
    if not os.path.exists(python):
        print(f"installing {', '.join(VERSIONS)} into {env_dir}", file=sys.stderr)
        venv.create(env_dir, with_pip=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *VERSIONS],
        check=True,
    )
    env = dict(os.environ, QUIVER_BENCH_VENV="1")
    os.execve(python, [python, *sys.argv], env)


COLUMNS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]


def duckdb_w1(con, scan, start):
    """W1 in DuckDB: two statements on the Hive glob, into Arrow tables."""

    def run():
        a = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {scan} "
            "WHERE tf = '1m' AND sym = 'SYM007' AND symbol = 'SYM007' AND ts < ? "
            "ORDER BY ts DESC LIMIT 200",
            [start],
        ).to_arrow_table()
        b = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {scan} "
            "WHERE tf = '1m' AND sym = 'SYM007' AND symbol = 'SYM007' AND ts >= ? "
            "ORDER BY ts LIMIT 1000",
            [start],
        ).to_arrow_table()
        assert a.num_rows + b.num_rows == 1200
        return a, b

    return run


def polars_w1_of(lazy, start):
    """W1 in Polars: two lazy queries on `scan_parquet` of the Hive glob."""
    import polars as pl

    one = (pl.col("tf") == "1m") & (pl.col("sym") == "SYM007") & (pl.col("symbol") == "SYM007")

    def run():
        a = lazy.filter(one & (pl.col("ts") < start)).select(COLUMNS).sort("ts", descending=True).head(200).collect()
        b = lazy.filter(one & (pl.col("ts") >= start)).select(COLUMNS).sort("ts").head(1000).collect()
        assert a.height + b.height == 1200
        return a, b

    return run


def main():
    ensure_tools()
    import datetime

    import warnings

    import duckdb
    import polars as pl

    # DuckDB 2 suggests con.sql(...).to_arrow_table() to save a copy; measured here, the
    # relation API made W1 slower (152 ms against 77 ms), so the DB-API path stays.
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")

    table = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
    glob = os.path.join(table, "**", "*.parquet")
    start = datetime.datetime(2024, 6, 3, 14, 30, tzinfo=datetime.timezone.utc)

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    scan = f"read_parquet('{glob}', hive_partitioning = true)"

    duck_w1 = duckdb_w1(con, scan, start)

    def duck_w2():
        t = con.execute(
            f"SELECT symbol, timeframe, ts, open, high, low, close, volume FROM {scan} "
            "WHERE tf = '1m' AND sym = 'SYM007' AND symbol = 'SYM007' ORDER BY ts"
        ).to_arrow_table()
        return t.num_rows

    def duck_w3():
        t = con.execute(
            f"SELECT symbol, date_trunc('day', ts) AS day, sum(close * volume) / sum(volume) AS vwap, "
            f"max(high) AS high, min(low) AS low FROM {scan} WHERE tf = '1m' AND timeframe = '1m' "
            "AND ts >= TIMESTAMPTZ '2024-01-01 00:00:00+00' AND ts < TIMESTAMPTZ '2025-01-01 00:00:00+00' "
            "GROUP BY 1, 2"
        ).to_arrow_table()
        return t.num_rows

    lazy = pl.scan_parquet(glob, hive_partitioning=True)
    cols = COLUMNS
    one = (pl.col("tf") == "1m") & (pl.col("sym") == "SYM007") & (pl.col("symbol") == "SYM007")

    polars_w1 = polars_w1_of(lazy, start)

    def polars_w2():
        return lazy.filter(one).select(cols).sort("ts").collect().height

    def polars_w3():
        year = (pl.col("ts") >= datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)) & (
            pl.col("ts") < datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
        )
        return (
            lazy.filter((pl.col("tf") == "1m") & (pl.col("timeframe") == "1m") & year)
            .group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"))
            .agg(
                ((pl.col("close") * pl.col("volume")).sum() / pl.col("volume").sum()).alias("vwap"),
                pl.col("high").max().alias("high"),
                pl.col("low").min().alias("low"),
            )
            .collect()
            .height
        )

    w2_rows, w3_rows = duck_w2(), duck_w3()
    assert polars_w2() == w2_rows and polars_w3() == w3_rows, "DuckDB and Polars disagree"
    print(f"DuckDB {duckdb.__version__}, Polars {pl.__version__}: W2 {w2_rows} bars, W3 {w3_rows} rows")
    for name, fn, n in [
        ("duckdb w1", duck_w1, runs * 2),
        ("polars w1", polars_w1, runs * 2),
        ("duckdb w2", duck_w2, runs),
        ("polars w2", polars_w2, runs),
        ("duckdb w3", duck_w3, max(runs // 4, 5)),
        ("polars w3", polars_w3, max(runs // 4, 5)),
    ]:
        print(f"{name:<10} median {median_ms(fn, n):9.2f} ms  ({n} runs)")


if __name__ == "__main__":
    main()
