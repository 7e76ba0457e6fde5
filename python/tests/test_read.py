"""Reads through quiver.Reader: exact decimals, warmup, merges, streams, time travel, Arrow
hand-over without a copy."""

from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import quiver
from conftest import PRICE, minute_bars, utc


def exact_table() -> pa.Table:
    """Three 1d bars whose values have no binary float spelling."""
    values = {
        "open": ["0.00002853", "36304.2", "712345.12"],
        "high": ["0.00002900", "36310.25", "712400.5"],
        "low": ["0.00002800", "36300", "712300.00000001"],
        "close": ["0.00002853", "36304.2", "712345.12"],
        "volume": ["712345.12", "0.00002853", "36304.2"],
    }
    return pa.table(
        {
            "symbol": ["BTC/USDT"] * 3,
            "timeframe": ["1d"] * 3,
            "ts": pa.array([utc(2024, 1, d) for d in (2, 3, 4)], pa.timestamp("us", "UTC")),
            **{k: pa.array([Decimal(x) for x in v], PRICE) for k, v in values.items()},
        }
    ), values


def test_exact_decimals_round_trip(db):
    table, values = exact_table()
    assert db.store.insert(table) == {"received": 3, "written": 3}
    db.sync()
    t = db.reader().bars("BTC/USDT", "1d")
    assert t.num_rows == 3 and len(t) == 3 and t.warmup == 0
    assert t.column_names == ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    got = pa.table(t)
    for name, spelled in values.items():
        assert got.schema.field(name).type == PRICE
        assert got.column(name).to_pylist() == [Decimal(x) for x in spelled], name
    assert got.schema.field("ts").type == pa.timestamp("us", "UTC")

    floats = pa.table(db.reader().bars("BTC/USDT", "1d", prices="float64"))
    assert floats.schema.field("open").type == pa.float64()
    assert floats.column("open").to_pylist() == [0.00002853, 36304.2, 712345.12]
    assert floats.column("volume").to_pylist() == [712345.12, 0.00002853, 36304.2]
    with pytest.raises(ValueError, match="prices"):
        db.reader().bars("BTC/USDT", "1d", prices="float32")


def test_warmup_crosses_partitions(db):
    # 1m bars are partitioned by month: 23:00 on 31 May to 00:59 on 1 June spans two files.
    db.store.insert(minute_bars("NVDA", utc(2024, 5, 31, 23, 0), 120))
    db.sync()
    periods = sorted(p.name for p in (db.cache / "market_data" / "tf=1m" / "sym=NVDA").iterdir())
    assert periods == ["period=2024-05", "period=2024-06"]
    t = db.reader().bars("NVDA", "1m", start="2024-06-01T00:00:00Z", end=utc(2024, 6, 1, 0, 9), warmup=30)
    assert (t.num_rows, t.warmup) == (40, 30)
    ts = pa.table(t).column("ts").to_pylist()
    assert ts[0] == utc(2024, 5, 31, 23, 30)
    assert ts[29] == utc(2024, 5, 31, 23, 59)
    assert ts[30] == utc(2024, 6, 1, 0, 0)
    assert ts[-1] == utc(2024, 6, 1, 0, 9)
    # Fewer warmup bars only where the series begins later; limit counts the range's bars.
    t = db.reader().bars("NVDA", "1m", start=utc(2024, 5, 31, 23, 10), warmup=500, limit=5)
    assert (t.num_rows, t.warmup) == (15, 10)


def test_several_symbols_merge_by_ts(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 30, step=2))
    db.store.insert(minute_bars("BBB", utc(2024, 3, 1, 9, 1), 30, step=2, base=200))
    db.sync()
    t = pa.table(db.reader().bars(["AAA", "BBB"], "1m", start=utc(2024, 3, 1, 9, 10), warmup=2, limit=10))
    symbols = t.column("symbol").to_pylist()
    ts = t.column("ts").to_pylist()
    assert ts == sorted(ts)
    assert symbols[:4] == ["AAA", "BBB", "AAA", "BBB"]
    assert ts[0] == utc(2024, 3, 1, 9, 6)
    # Each symbol brings its own two warmup bars and ten range bars.
    assert symbols.count("AAA") == 12 and symbols.count("BBB") == 12


def test_stream_yields_the_same_rows_as_bars(db):
    db.store.insert(minute_bars("NVDA", utc(2024, 5, 31, 20, 0), 600))
    db.sync()
    reader = db.reader()
    whole = pa.table(reader.bars("NVDA", "1m", start=utc(2024, 6, 1), warmup=100))
    batches = list(reader.stream("NVDA", "1m", start=utc(2024, 6, 1), warmup=100))
    assert batches and all(isinstance(b, pa.RecordBatch) for b in batches)
    assert pa.Table.from_batches(batches).equals(whole)
    stream = reader.stream("NVDA", "1m", start=utc(2024, 6, 1), warmup=100)
    assert pa.RecordBatchReader.from_stream(stream).read_all().equals(whole)
    floats = pa.RecordBatchReader.from_stream(reader.stream("NVDA", "1m", prices="float64"))
    assert floats.schema.field("close").type == pa.float64()
    assert floats.read_all().num_rows == 600
    merged = pa.Table.from_batches(list(reader.stream(["NVDA"], "1m")))
    assert merged.num_rows == 600


def test_latest_of_each_symbol_in_order(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 30))
    db.store.insert(minute_bars("BBB", utc(2024, 3, 1, 9, 0), 10, base=200))
    db.sync()
    t = pa.table(db.reader().latest(["BBB", "AAA"], "1m"))
    assert t.column("symbol").to_pylist() == ["BBB", "AAA"]
    assert t.column("ts").to_pylist() == [utc(2024, 3, 1, 9, 9), utc(2024, 3, 1, 9, 29)]
    assert t.column("open").to_pylist() == [Decimal("200.09"), Decimal("100.29")]
    one = db.reader().latest("AAA", "1m", prices="float64")
    assert pa.table(one).column("close").to_pylist() == [100.79]


def test_sql(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 30))
    db.store.insert(minute_bars("BBB", utc(2024, 3, 1, 9, 0), 10, base=200))
    db.sync()
    t = pa.table(
        db.reader().sql(
            "SELECT symbol, count(*) AS n, sum(volume) AS v FROM market_data GROUP BY symbol ORDER BY symbol"
        )
    )
    assert t.column("symbol").to_pylist() == ["AAA", "BBB"]
    assert t.column("n").to_pylist() == [30, 10]
    assert t.column("v").to_pylist() == [Decimal(sum(range(1000, 1030))), Decimal(sum(range(1000, 1010)))]
    with pytest.raises(quiver.Error, match="no_such_table"):
        db.reader().sql("SELECT * FROM no_such_table")


def test_time_travel_by_version_and_instant(db):
    reader = db.reader()
    assert reader.version() is None
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 30))
    first = db.sync()["version"]
    assert reader.version() == first
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 30), 30))
    second = db.sync()["version"]
    assert second > first and reader.version() == second
    assert reader.bars("AAA", "1m").num_rows == 60
    assert reader.bars("AAA", "1m", as_of=first).num_rows == 30
    assert reader.bars("AAA", "1m", as_of=str(first)).num_rows == 30
    assert reader.bars("AAA", "1m", as_of="2100-01-01T00:00:00Z").num_rows == 60


def buffer_address(chunked: pa.ChunkedArray) -> int:
    return chunked.chunk(0).buffers()[1].address


def test_results_are_shared_without_a_copy(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 300))
    db.sync()
    for prices in ("decimal", "float64"):
        t = db.reader().bars("AAA", "1m", prices=prices)
        a, b = pa.table(t), t.to_pyarrow()
        for column in ("ts", "close"):
            # Two hand-overs of the same result point at the same memory: neither copied.
            assert buffer_address(a.column(column)) == buffer_address(b.column(column)), column
        df = pl.DataFrame(t)
        assert df.height == 300
        assert df.schema["ts"] == pl.Datetime("us", "UTC")
        for column in ("ts", "close"):
            # Polars hands its own memory back to Arrow without a copy, so the address it
            # exports is where it keeps the column: quiver's buffer.
            exported = df[column].to_arrow()
            assert exported.buffers()[1].address == buffer_address(a.column(column)), (prices, column)
        assert t.to_polars().equals(df)
    assert isinstance(pl.DataFrame(db.reader().bars("AAA", "1m"))["close"][0], Decimal)


def test_to_pandas_has_utc_timestamps(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 5))
    db.sync()
    df = db.reader().bars("AAA", "1m").to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].iloc[0] == pd.Timestamp("2024-03-01T09:00:00Z")
    assert df["open"].iloc[1] == Decimal("100.01")
    floats = db.reader().bars("AAA", "1m", prices="float64").to_pandas()
    assert floats["open"].dtype == "float64"
    assert floats["open"].iloc[1] == 100.01
    # Asked for at the edge: the same exact read, floats only in the frame.
    exact = db.reader().bars("AAA", "1m")
    at_the_edge = exact.to_pandas(prices="float64")
    assert at_the_edge["open"].dtype == "float64" and at_the_edge["volume"].dtype == "float64"
    assert at_the_edge.equals(floats)
    assert pa.table(exact).schema.field("open").type == PRICE, "the table itself stays exact"
    polars_floats = exact.to_polars(prices="float64")
    assert polars_floats["close"].dtype == pl.Float64
    assert polars_floats["close"].to_list() == floats["close"].to_list()
    with pytest.raises(ValueError, match="prices"):
        exact.to_pandas(prices="float16")


def test_series_lists_what_the_cache_holds(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 5))
    db.store.insert(minute_bars("BBB", utc(2024, 3, 2, 9, 0), 3))
    with pytest.raises(quiver.EmptyCacheError):
        db.reader().series()
    db.sync()
    listing = pa.table(db.reader().series())
    assert listing.column_names == ["symbol", "timeframe", "first", "last", "bars"]
    assert listing.schema.field("first").type == pa.timestamp("us", "UTC")
    assert listing.to_pylist() == [
        {"symbol": "AAA", "timeframe": "1m", "first": utc(2024, 3, 1, 9, 0),
         "last": utc(2024, 3, 1, 9, 4), "bars": 5},
        {"symbol": "BBB", "timeframe": "1m", "first": utc(2024, 3, 2, 9, 0),
         "last": utc(2024, 3, 2, 9, 2), "bars": 3},
    ]


def test_reader_opens_from_a_config_file(db, tmp_path):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 5))
    db.sync()
    config = tmp_path / "quiver.toml"
    config.write_text(f'[database]\nurl = "{db.url}"\n\n[cache]\ndir = "{db.cache}"\n')
    reader = quiver.Reader(config=str(config))
    assert reader.bars("AAA", "1m").num_rows == 5
    assert "Reader(" in repr(reader)
