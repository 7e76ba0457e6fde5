#!/usr/bin/env python3
"""W10 (DESIGN.md section 5): the W1 read from Python through the quiver package, into a
pyarrow table and into a Polars frame, beside Polars `scan_parquet` and DuckDB on the same
files, and beside quiver's own Rust W1, all in one run.

    python3 benches/w10_python.py [--runs N] [--no-rust]

Builds the package's release wheel with maturin (CARGO_TARGET_DIR, default
/var/tmp/quiver-bench-target) and installs it with the pinned tools into a virtual
environment under $QUIVER_BENCH_DIR (default /var/tmp/quiver-bench). Then runs
`cargo bench --bench read -- w1/read/quiver_mmap` (which also builds the benchmark cache,
$QUIVER_BENCH_DIR/cache-sqlite) for the Rust figure, unless --no-rust.
"""

import os
import re
import subprocess
import sys

import duckdb_polars
from bench_env import BENCH_DIR, REPO, TARGET, reexec_in_venv

TOOLS = [*duckdb_polars.VERSIONS, "maturin==1.16.0"]


def install_wheel(python):
    """Builds the package's release wheel and installs it into the bench's environment."""
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    wheels = BENCH_DIR / "w10-wheel"
    subprocess.run(["rm", "-rf", str(wheels)], check=True)
    print("building the release wheel (maturin build --release)", file=sys.stderr)
    subprocess.run(
        [str(python.parent / "maturin"), "build", "--release", "--quiet", "-m",
         str(REPO / "python" / "Cargo.toml"), "--interpreter", str(python), "-o", str(wheels)],
        check=True,
        env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)),
    )
    [wheel] = wheels.glob("*.whl")
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True)


def rust_w1_ms():
    """quiver's own W1 (the bars API, mmap), the criterion median of `cargo bench --bench read`."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "read", "--", "--exact", "w1/read/quiver_mmap"],
        cwd=REPO,
        env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET), QUIVER_BENCH_PYTHON="0", QUIVER_BENCH_DIR=str(BENCH_DIR)),
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", out.stdout)
    if not m:
        raise RuntimeError(f"no criterion figure in:\n{out.stdout}\n{out.stderr}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main():
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 200
    reexec_in_venv("python-w10", TOOLS, "QUIVER_W10_VENV", after_install=install_wheel)
    rust = None if "--no-rust" in sys.argv else rust_w1_ms()

    import datetime

    import duckdb
    import polars as pl
    import pyarrow as pa
    import warnings

    import quiver

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    cache = BENCH_DIR / "cache-sqlite"
    start = datetime.datetime(2024, 6, 3, 14, 30, tzinfo=datetime.timezone.utc)
    reader = quiver.Reader(cache)

    def to_pyarrow():
        t = pa.table(reader.bars("SYM007", "1m", start=start, warmup=200, limit=1000))
        assert t.num_rows == 1200
        return t

    def to_polars():
        df = pl.DataFrame(reader.bars("SYM007", "1m", start=start, warmup=200, limit=1000))
        assert df.height == 1200
        return df

    def to_pyarrow_f64():
        t = pa.table(reader.bars("SYM007", "1m", start=start, warmup=200, limit=1000, prices="float64"))
        assert t.num_rows == 1200
        return t

    table = str(cache / "market_data")
    glob = os.path.join(table, "**", "*.parquet")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    duck = duckdb_polars.duckdb_w1(con, f"read_parquet('{glob}', hive_partitioning = true)", start)
    polars = duckdb_polars.polars_w1_of(pl.scan_parquet(glob, hive_partitioning=True), start)

    # The same rows: quiver's pyarrow table against DuckDB's two halves.
    a, b = duck()
    theirs = pa.concat_tables([a.sort_by("ts"), b]).cast(to_pyarrow().schema)
    assert to_pyarrow().equals(theirs), "quiver and DuckDB disagree on W1"

    figures = {}
    for name, fn, n in [
        ("quiver -> pyarrow", to_pyarrow, runs),
        ("quiver -> polars", to_polars, runs),
        ("quiver -> pyarrow f64", to_pyarrow_f64, runs),
        ("polars scan_parquet", polars, max(runs // 5, 20)),
        ("duckdb read_parquet", duck, max(runs // 5, 20)),
    ]:
        figures[name] = duckdb_polars.median_ms(fn, n)
        print(f"{name:<22} median {figures[name]:8.3f} ms  ({n} runs)")
    print(f"quiver {quiver.__version__}, pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}")
    py = figures["quiver -> pyarrow"]
    if rust is not None:
        print(f"{'rust bars API (mmap)':<22} median {rust:8.3f} ms  (criterion)")
        print(f"pyarrow / rust {py / rust:.2f}x (goal <= 1.3x)")
    print(f"pyarrow under 1 ms: {'met' if py < 1 else 'missed'}")
    for other in ("polars scan_parquet", "duckdb read_parquet"):
        print(f"{other}: {figures[other] / py:.1f}x slower than quiver -> pyarrow (goal >= 10x)")
    print(f"polars frame: {figures['polars scan_parquet'] / figures['quiver -> polars']:.1f}x faster than scan_parquet")


if __name__ == "__main__":
    main()
