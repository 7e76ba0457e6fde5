"""Files written by other tools (pyarrow, Polars, pandas) imported by `quiver import`:
Parquet with decimals exact, binary floats refused unless rounding is asked for, and a
whole-market gzip CSV with `ticker` and `window_start` in epoch nanoseconds."""

import datetime as dt
import gzip
import os
import shutil
import subprocess
from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quiver

from conftest import utc

BIN = os.environ.get("QUIVER_BIN") or shutil.which("quiver")


def quiver_cli(db, *args):
    assert BIN, "QUIVER_BIN must name the quiver binary (cargo test sets it)"
    return subprocess.run([BIN, *args], env=db.env(), capture_output=True, text=True)


def test_pyarrow_parquet_with_decimals_imports_exactly(db, tmp_path):
    ts = [utc(2024, 3, 7, 9, m) for m in range(3)]
    table = pa.table(
        {
            # Dictionary-encoded text, nanosecond timestamps, a wider decimal than the cache's.
            "Ticker": pa.array(["shib/usdt"] * 3).dictionary_encode(),
            "Timestamp": pa.array(ts, pa.timestamp("ns", "UTC")),
            "Open": pa.array([Decimal("0.00002853"), Decimal("36304.2"), Decimal("712345.12")], pa.decimal128(38, 10)),
            "High": pa.array([Decimal("0.00002860"), Decimal("36305"), Decimal("712346")], pa.decimal128(38, 10)),
            "Low": pa.array([Decimal("0.00002850"), Decimal("36304.2"), Decimal("712345")], pa.decimal128(38, 10)),
            "Close": pa.array(["0.00002855", "36304.5", "712345.12"]),
            "Volume": pa.array([10, 20, 30], pa.int64()),
        }
    )
    path = tmp_path / "shib.parquet"
    pq.write_table(table, path)
    run = quiver_cli(db, "import", str(path), "--timeframe", "1m")
    assert run.returncode == 0, run.stderr
    assert f"{path}: 3 bars (parquet)" in run.stdout
    db.sync()
    got = db.reader().bars("SHIB/USDT", "1m").to_pyarrow()
    assert got.column("open").to_pylist() == [Decimal("0.00002853"), Decimal("36304.2"), Decimal("712345.12")]
    assert got.column("close").to_pylist() == [Decimal("0.00002855"), Decimal("36304.5"), Decimal("712345.12")]
    assert got.column("ts").to_pylist() == ts


def test_polars_float_parquet_needs_round_floats(db, tmp_path):
    frame = pl.DataFrame(
        {
            "symbol": ["ETH", "ETH"],
            "ts": [dt.datetime(2024, 3, 7, 9, 0), dt.datetime(2024, 3, 7, 9, 1)],
            "open": [0.1 + 0.2, 3800.1],
            "high": [0.5, 3801.0],
            "low": [0.1, 3800.0],
            "close": [0.3, 3800.5],
            "volume": [36304.2, 1.0],
        }
    )
    path = tmp_path / "eth.parquet"
    frame.write_parquet(path)
    refused = quiver_cli(db, "import", str(path), "--timeframe", "1m")
    assert refused.returncode == 2
    assert "holds binary floats" in refused.stderr

    rounded = quiver_cli(db, "import", str(path), "--timeframe", "1m", "--round-floats", "--tz", "UTC")
    assert rounded.returncode == 0, rounded.stderr
    db.sync()
    got = db.reader().bars("ETH", "1m").to_pyarrow()
    assert got.column("open").to_pylist() == [Decimal("0.3"), Decimal("3800.1")]
    assert got.column("volume").to_pylist() == [Decimal("36304.2"), Decimal("1")]


def test_whole_market_gzip_csv_from_pandas(db, tmp_path):
    start = pd.Timestamp("2024-03-07 09:00", tz="UTC")
    rows = []
    for i, ticker in enumerate(["AAPL", "MSFT", "BRK.B", "X:BTCUSD"]):
        for m in range(5):
            price = Decimal(100 + i) + Decimal(m) / 100
            rows.append(
                {
                    "ticker": ticker,
                    "volume": 1000 + m,
                    "open": str(price),
                    "close": str(price + Decimal("0.01")),
                    "high": str(price + Decimal("0.02")),
                    "low": str(price),
                    "window_start": (start + pd.Timedelta(minutes=m)).value,
                    "transactions": 7,
                }
            )
    path = tmp_path / "2024-03-07.csv.gz"
    with gzip.open(path, "wt") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    run = quiver_cli(db, "import", str(path), "--timeframe", "1m")
    assert run.returncode == 0, run.stderr
    assert "imported 20 bars" in run.stdout
    db.sync()
    reader = db.reader()
    btc = reader.bars("X:BTCUSD", "1m").to_pyarrow()
    assert btc.num_rows == 5
    assert btc.column("close").to_pylist()[4] == Decimal("103.05")
    assert btc.column("ts").to_pylist()[0] == utc(2024, 3, 7, 9, 0)
    merged = reader.bars(["AAPL", "MSFT", "BRK.B"], "1m").to_pyarrow()
    assert merged.num_rows == 15

    # A bad line inside the archive: named by its line in the text, nothing written.
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("ticker,volume,open,close,high,low,window_start\n")
        f.write("NVDA,10,900,901,902,899,1709802000000000000\n")
        f.write("NVDA,10,900,901,898,899,1709802060000000000\n")
    refused = quiver_cli(db, "import", str(bad), "--timeframe", "1m")
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"quiver: {bad}:3: high: high 898 is below low 899"
    db.sync()
    with pytest.raises(quiver.UnknownSeriesError):
        db.reader().bars("NVDA", "1m")
