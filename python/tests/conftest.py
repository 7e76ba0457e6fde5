"""Fixtures of the quiver package's tests: a fresh database and cache folder per test.

The backend is ``QUIVER_PY_BACKEND`` (``sqlite``, the default, or ``postgres``); PostgreSQL
tests use the server at ``QUIVER_TEST_PG_URL``, each test in a schema of its own named
``<QUIVER_PY_SCHEMA_PREFIX><n>`` (the Rust test that runs this suite drops them afterwards).
"""

import datetime as dt
import itertools
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import quiver

BACKEND = os.environ.get("QUIVER_PY_BACKEND", "sqlite")
PG_URL = os.environ.get("QUIVER_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
SCHEMA_PREFIX = os.environ.get("QUIVER_PY_SCHEMA_PREFIX", f"quiver_py{os.getpid()}_")
_counter = itertools.count()

PRICE = pa.decimal128(28, 8)
UTC = dt.timezone.utc


class Db:
    """One test's database (SQLite file or PostgreSQL schema) and cache folder."""

    def __init__(self, tmp_path: Path):
        if BACKEND == "sqlite":
            self.url = f"sqlite://{tmp_path / 'market.db'}"
            self.schema = None
        elif BACKEND == "postgres":
            self.url = PG_URL
            self.schema = f"{SCHEMA_PREFIX}{next(_counter)}"
        else:
            raise ValueError(f"QUIVER_PY_BACKEND={BACKEND!r}")
        self.cache = tmp_path / "cache"
        self.store = quiver.Store(self.url, schema=self.schema)
        self.store.migrate()

    def sync(self, full: bool = False) -> dict:
        return quiver.sync(self.url, cache=self.cache, schema=self.schema, full=full)

    def reader(self) -> quiver.Reader:
        return quiver.Reader(self.cache)

    def env(self) -> dict[str, str]:
        """The environment that points the quiver binary at this database and cache."""
        env = dict(os.environ)
        env["QUIVER_DATABASE_URL"] = self.url
        env["QUIVER_CACHE_DIR"] = str(self.cache)
        env.pop("QUIVER_DATABASE_SCHEMA", None)
        if self.schema:
            env["QUIVER_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture
def db(tmp_path: Path) -> Db:
    return Db(tmp_path)


def minute_bars(symbol: str, start: dt.datetime, count: int, step: int = 1, base: int = 100) -> pa.Table:
    """``count`` 1m bars of ``symbol`` every ``step`` minutes from ``start``, with exact
    decimal prices that differ per bar (``base`` + i/100)."""
    ts = [start + dt.timedelta(minutes=i * step) for i in range(count)]
    price = [Decimal(base) + Decimal(i) / 100 for i in range(count)]
    return pa.table(
        {
            "symbol": [symbol] * count,
            "timeframe": ["1m"] * count,
            "ts": pa.array(ts, pa.timestamp("us", "UTC")),
            "open": pa.array(price, PRICE),
            "high": pa.array([p + 1 for p in price], PRICE),
            "low": pa.array([p - 1 for p in price], PRICE),
            "close": pa.array([p + Decimal("0.5") for p in price], PRICE),
            "volume": pa.array([Decimal(1000 + i) for i in range(count)], PRICE),
        }
    )


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)
