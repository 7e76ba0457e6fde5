"""Writes through quiver.Store: every Arrow-capable frame, the import's checks, the conflict
policies, deletes."""

import datetime as dt
from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import quiver
from conftest import PRICE, minute_bars, utc


def rows(db, symbol="AAA", timeframe="1m"):
    db.sync()
    try:
        t = pa.table(db.reader().bars(symbol, timeframe))
    except quiver.UnknownSeriesError:
        return []
    return t.select(["ts", "open", "high", "low", "close", "volume"]).to_pylist()


def test_polars_frame_with_decimal_text(db):
    frame = pl.DataFrame(
        {
            "Ticker": ["eth/usdt", "eth/usdt"],
            "Timestamp": ["2024-01-02T00:00:00Z", "2024-01-02T00:01:00Z"],
            "Open": ["2301.12345678", "2302"],
            "High": ["2310", "2305.5"],
            "Low": ["2300", "2301"],
            "Close": ["2305.00000001", "2304"],
            "Volume": ["0.5", "12"],
            "note": ["ignored", "too"],
        }
    )
    assert db.store.insert(frame, timeframe="1m") == {"received": 2, "written": 2}
    got = rows(db, "ETH/USDT")
    assert [r["open"] for r in got] == [Decimal("2301.12345678"), Decimal("2302")]
    assert [r["close"] for r in got] == [Decimal("2305.00000001"), Decimal("2304")]
    assert got[0]["ts"] == utc(2024, 1, 2)


def test_pandas_frame_with_decimals_and_naive_local_times(db):
    frame = pd.DataFrame(
        {
            "datetime": pd.to_datetime(["2024-07-01 09:30", "2024-07-01 09:31"]),
            "open": [Decimal("10.01"), Decimal("10.02")],
            "high": [Decimal("10.5"), Decimal("10.6")],
            "low": [Decimal("9.99"), Decimal("10")],
            "close": [Decimal("10.2"), Decimal("10.3")],
            "volume": [100, 200],
        }
    )
    db.store.insert(frame, symbol="SPY", timeframe="1m", tz="America/New_York")
    got = rows(db, "SPY")
    assert [r["ts"] for r in got] == [utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 13, 31)]
    assert [r["volume"] for r in got] == [Decimal(100), Decimal(200)]
    assert [r["low"] for r in got] == [Decimal("9.99"), Decimal("10")]


def test_pyarrow_integers_and_dates(db):
    frame = pa.table(
        {
            "date": pa.array([dt.date(2024, 1, 2), dt.date(2024, 1, 3)], pa.date32()),
            "open": pa.array([10, 11], pa.int64()),
            "high": pa.array([12, 13], pa.int32()),
            "low": pa.array([9, 10], pa.int64()),
            "close": pa.array([11, 12], pa.int64()),
            "volume": pa.array([1_000_000, 2_000_000], pa.uint64()),
        }
    )
    db.store.insert(frame, symbol="IBM", timeframe="1d")
    got = rows(db, "IBM", "1d")
    assert [r["ts"] for r in got] == [utc(2024, 1, 2), utc(2024, 1, 3)]
    assert [r["high"] for r in got] == [Decimal(12), Decimal(13)]


def test_floats_only_when_asked(db):
    frame = pl.DataFrame(
        {
            "ts": [utc(2024, 1, 2)],
            "open": [0.1],
            "high": [0.30000000000000004],
            "low": [0.1],
            "close": [0.2],
            "volume": [1.0],
        }
    )
    with pytest.raises(quiver.InputError, match=r"^frame: .*column open holds binary floats"):
        db.store.insert(frame, symbol="AAA", timeframe="1m")
    assert rows(db) == []
    db.store.insert(frame, symbol="AAA", timeframe="1m", floats=True)
    [row] = rows(db)
    assert (row["open"], row["high"], row["close"]) == (Decimal("0.1"), Decimal("0.3"), Decimal("0.2"))


def test_a_bad_row_names_its_index_and_field_and_writes_nothing(db):
    good = minute_bars("AAA", utc(2024, 3, 1, 9, 0), 5)
    high = good.column("high").to_pylist()
    high[3] = Decimal("1")  # below the low
    bad = good.set_column(good.schema.get_field_index("high"), "high", pa.array(high, PRICE))
    with pytest.raises(quiver.InputError, match=r"^frame: row 3: high: ") as e:
        db.store.insert(bad)
    assert "low" in str(e.value)
    assert rows(db) == []

    nine = good.set_column(
        good.schema.get_field_index("open"),
        "open",
        pa.array([Decimal("1.123456789")] * 5, pa.decimal128(28, 9)),
    )
    with pytest.raises(quiver.InputError, match=r"row 0: open: .*fractional digits"):
        db.store.insert(nine)

    text = pl.DataFrame(pa.table(good)).with_columns(pl.col("close").cast(pl.String))
    text = text.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("abc")).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(quiver.InputError, match=r"row 2: close: "):
        db.store.insert(text)

    with pytest.raises(quiver.InputError, match=r"row 1: symbol: "):
        db.store.insert(good.set_column(0, "symbol", pa.array(["AAA", "no spaces", "AAA", "AAA", "AAA"])))

    twice = pa.concat_tables([good, good.slice(1, 1)])
    with pytest.raises(quiver.InputError, match=r"row 5: .*duplicate.*row 1"):
        db.store.insert(twice)

    with pytest.raises(quiver.InputError, match="volume"):
        db.store.insert(good.drop_columns(["volume"]))
    with pytest.raises(TypeError, match="Arrow"):
        db.store.insert([1, 2, 3])
    assert rows(db) == []


def test_conflict_policies(db):
    first = minute_bars("AAA", utc(2024, 3, 1, 9, 0), 5)
    db.store.insert(first)
    later = minute_bars("AAA", utc(2024, 3, 1, 9, 3), 5, base=300)
    with pytest.raises(quiver.ConflictError, match="AAA"):
        db.store.insert(later)
    assert len(rows(db)) == 5
    assert db.store.insert(later, on_conflict="skip") == {"received": 5, "written": 3}
    got = rows(db)
    assert len(got) == 8 and got[3]["open"] == Decimal("100.03")
    # Replace counts the bars it changed: the three that skip wrote are already equal.
    assert db.store.insert(later, on_conflict="replace") == {"received": 5, "written": 2}
    got = rows(db)
    assert len(got) == 8 and got[3]["open"] == Decimal("300")
    with pytest.raises(ValueError, match="on_conflict"):
        db.store.insert(later, on_conflict="merge")


def test_delete(db):
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 10))
    db.store.insert(minute_bars("BBB", utc(2024, 3, 1, 9, 0), 10))
    assert db.store.delete("AAA", "1m", start=utc(2024, 3, 1, 9, 2), end="2024-03-01T09:04:00Z") == 3
    assert len(rows(db)) == 7
    assert db.store.delete("BBB") == 10
    assert rows(db, "BBB") == []
    assert db.store.delete("BBB") == 0


def test_store_and_sync_report(db):
    assert db.store.backend in ("sqlite", "postgres")
    assert db.store.migrate() == []
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 10))
    report = db.sync()
    assert report["rows"] == 10 and report["version"] is not None
    assert set(report) >= {"version", "rows", "changed_days", "written", "removed", "seconds"}
    again = db.sync()
    # Nothing changed, so nothing was committed.
    assert again["version"] is None and again["changed_days"] == 0
    assert db.reader().version() == report["version"]
    assert db.sync(full=True)["rows"] == 10


def test_the_url_password_never_shows(tmp_path):
    url = "postgres://quiver:s3cret-pw@127.0.0.1:1/none"
    with pytest.raises(quiver.DatabaseError) as e:
        quiver.Store(url)
    assert "s3cret-pw" not in str(e.value)
