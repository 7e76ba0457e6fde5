#!/usr/bin/env python3
"""W14 (DESIGN.md section 5) with the tools users pick instead of quiver, in the run of
`cargo bench --bench w14_throughput`, right after quiver's figures:

    python3 benches/w14_others.py DESIGN_VIEW UNIVERSE_VIEW [--runs N]

DESIGN_VIEW and UNIVERSE_VIEW are the plain views (`<cache.dir>/market_data`) of the DESIGN
dataset (50 symbols, 2024) and of the universe (500 symbols, 21 days). Polars and DuckDB read
those Parquet files with their Hive partition columns in the filters (their best case: whole
folders skipped). ArcticDB reads the same bars from an LMDB library written once from the
plain view, prices and volumes as float64 (ArcticDB has no exact decimal type): its reads are
of half the bytes of quiver's Decimal128 columns.

The tools are installed with pip, pinned, into a virtual environment under $QUIVER_BENCH_DIR
(default /var/tmp/quiver-bench) the first time. Each workload runs once to warm up, then N
times; the median is printed.
"""

import datetime
import os
import sys
import warnings

from bench_env import BENCH_DIR, median_ms, reexec_in_venv

VERSIONS = ["duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1", "arcticdb==6.28.2"]
COLUMNS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
UTC = datetime.timezone.utc
DAY = (datetime.datetime(2024, 1, 10, tzinfo=UTC), datetime.datetime(2024, 1, 11, tzinfo=UTC))
WEEK = (datetime.datetime(2024, 1, 8, tzinfo=UTC), datetime.datetime(2024, 1, 13, tzinfo=UTC))
YEAR = (datetime.datetime(2024, 1, 1, tzinfo=UTC), datetime.datetime(2025, 1, 1, tzinfo=UTC))


def arctic_library(ac, name, view, symbols):
    """The bars of `view` in ArcticDB library `name`, float64 prices, one symbol each, indexed
    by ts; written once (a library that holds every symbol is reused)."""
    import polars as pl

    lib = ac.get_library(name, create_if_missing=True)
    if set(lib.list_symbols()) >= set(symbols):
        return lib
    print(f"writing {len(symbols)} symbols into ArcticDB library {name} (once)...", file=sys.stderr)
    for s in symbols:
        frame = (
            pl.scan_parquet(os.path.join(view, "tf=1m", f"sym={s}", "**", "*.parquet"))
            .select(COLUMNS)
            .sort("ts")
            .with_columns([pl.col(c).cast(pl.Float64) for c in COLUMNS[3:]])
            .collect()
            .to_pandas()
            .set_index("ts")
        )
        lib.write(s, frame)
    return lib


def main():
    reexec_in_venv("python-w14", VERSIONS, "QUIVER_W14_VENV")
    import arcticdb
    import duckdb
    import pandas as pd
    import polars as pl
    from arcticdb import QueryBuilder
    from arcticdb.version_store.library import ReadRequest

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    design, universe = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
    print(
        f"DuckDB {duckdb.__version__}, Polars {pl.__version__}, ArcticDB {arcticdb.__version__} "
        f"(LMDB, float64), pandas {pd.__version__}"
    )

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    d_glob = os.path.join(design, "**", "*.parquet")
    u_glob = os.path.join(universe, "**", "*.parquet")
    d_scan = f"read_parquet('{d_glob}', hive_partitioning = true)"
    u_scan = f"read_parquet('{u_glob}', hive_partitioning = true)"
    d_lazy = pl.scan_parquet(d_glob, hive_partitioning=True)
    u_lazy = pl.scan_parquet(u_glob, hive_partitioning=True)
    ac = arcticdb.Arctic(f"lmdb://{BENCH_DIR / 'arctic-w14'}?map_size=8GB")
    d_symbols = [f"SYM{i:03}" for i in range(1, 51)]
    u_symbols = [f"SYM{i:03}" for i in range(1, 501)]
    d_lib = arctic_library(ac, "design", design, d_symbols)
    u_lib = arctic_library(ac, "universe", universe, u_symbols)

    results = []

    def run(name, fn, expected, n):
        got = fn()
        assert got == expected, f"{name}: {got} rows, expected {expected}"
        results.append((name, median_ms(fn, n), expected, n))

    # W1 (kept beside the large reads: its goal is 10x Polars): 200 bars before
    # 2024-06-03T14:30Z and the next 1000, two lazy queries.
    w1_at = datetime.datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
    sym7 = (pl.col("tf") == "1m") & (pl.col("sym") == "SYM007")

    def polars_w1():
        a = d_lazy.filter(sym7 & (pl.col("ts") < w1_at)).select(COLUMNS).sort("ts", descending=True).head(200).collect()
        b = d_lazy.filter(sym7 & (pl.col("ts") >= w1_at)).select(COLUMNS).sort("ts").head(1000).collect()
        return a.height + b.height

    run("w1 polars", polars_w1, 1200, runs)

    # W2: one symbol-year, into memory, in ts order.
    run(
        "w2 duckdb",
        lambda: con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {d_scan} WHERE tf = '1m' AND sym = 'SYM007' ORDER BY ts"
        ).to_arrow_table().num_rows,
        98_280,
        runs,
    )
    run(
        "w2 polars",
        lambda: d_lazy.filter((pl.col("tf") == "1m") & (pl.col("sym") == "SYM007"))
        .select(COLUMNS)
        .sort("ts")
        .collect()
        .height,
        98_280,
        runs,
    )
    run("w2 arcticdb", lambda: len(d_lib.read("SYM007").data), 98_280, runs)

    # The universe: every symbol's bars of a day or a week, merged by (ts, symbol).
    for label, (start, end), rows in [("day", DAY, 195_000), ("week", WEEK, 975_000)]:
        periods = "('2024-01')"
        run(
            f"universe {label} duckdb",
            lambda: con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {u_scan} WHERE tf = '1m' AND period IN {periods} "
                "AND ts >= ? AND ts < ? ORDER BY ts, symbol",
                [start, end],
            ).to_arrow_table().num_rows,
            rows,
            max(runs // 2, 5),
        )
        run(
            f"universe {label} polars",
            lambda: u_lazy.filter(
                (pl.col("tf") == "1m")
                & (pl.col("period") == "2024-01")
                & (pl.col("ts") >= start)
                & (pl.col("ts") < end)
            )
            .select(COLUMNS)
            .sort(["ts", "symbol"])
            .collect()
            .height,
            rows,
            max(runs // 2, 5),
        )
        naive = (start.replace(tzinfo=None), (end - datetime.timedelta(microseconds=1)).replace(tzinfo=None))

        def arctic_universe(naive=naive):
            frames = u_lib.read_batch([ReadRequest(s, date_range=naive) for s in u_symbols])
            merged = pd.concat(
                [r.data.assign(symbol=r.symbol) for r in frames]
            ).reset_index().sort_values(["ts", "symbol"], kind="stable")
            return len(merged)

        run(f"universe {label} arcticdb", arctic_universe, rows, max(runs // 2, 5))

    day_naive = (DAY[0].replace(tzinfo=None), (DAY[1] - datetime.timedelta(microseconds=1)).replace(tzinfo=None))
    run(
        "universe day, 50, arcticdb",
        lambda: len(
            pd.concat([r.data.assign(symbol=r.symbol) for r in u_lib.read_batch([ReadRequest(s, date_range=day_naive) for s in u_symbols[:50]])])
            .reset_index()
            .sort_values(["ts", "symbol"], kind="stable")
        ),
        19_500,
        runs,
    )

    # W3: daily VWAP, high and low per symbol over 2024.
    w3_runs = max(runs // 4, 5)
    run(
        "w3 duckdb",
        lambda: con.execute(
            f"SELECT symbol, date_trunc('day', ts) AS day, sum(close * volume) / sum(volume) AS vwap, "
            f"max(high) AS high, min(low) AS low FROM {d_scan} WHERE tf = '1m' "
            "AND ts >= TIMESTAMPTZ '2024-01-01 00:00:00+00' AND ts < TIMESTAMPTZ '2025-01-01 00:00:00+00' "
            "GROUP BY 1, 2"
        ).to_arrow_table().num_rows,
        12_600,
        w3_runs,
    )
    run(
        "w3 polars",
        lambda: d_lazy.filter((pl.col("tf") == "1m") & (pl.col("ts") >= YEAR[0]) & (pl.col("ts") < YEAR[1]))
        .group_by("symbol", pl.col("ts").dt.truncate("1d").alias("day"))
        .agg(
            ((pl.col("close") * pl.col("volume")).sum() / pl.col("volume").sum()).alias("vwap"),
            pl.col("high").max().alias("high"),
            pl.col("low").min().alias("low"),
        )
        .collect()
        .height,
        12_600,
        w3_runs,
    )

    def arctic_w3():
        q = QueryBuilder()
        q = q.apply("cv", q["close"] * q["volume"])
        q = q.resample("1D").agg({"cv": "sum", "volume": "sum", "high": "max", "low": "min"})
        frames = d_lib.read_batch(d_symbols, query_builder=q)
        n = 0
        for r in frames:
            days = r.data[r.data["volume"] > 0]
            vwap = days["cv"] / days["volume"]
            n += len(vwap)
        return n

    run("w3 arcticdb", arctic_w3, 12_600, w3_runs)

    for name, ms, rows, n in results:
        print(f"{name:<30} {ms:9.2f} ms {rows:>9} rows {rows / ms / 1e3:7.2f}M rows/s  ({n} runs)")


if __name__ == "__main__":
    main()
