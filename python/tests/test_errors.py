"""Every error the library raises arrives as a subclass of quiver.Error carrying its message."""

import pytest

import quiver
from conftest import minute_bars, utc

CLASSES = [
    quiver.InputError,
    quiver.UnknownSeriesError,
    quiver.EmptyRangeError,
    quiver.InvalidRangeError,
    quiver.EmptyCacheError,
    quiver.ConflictError,
    quiver.DatabaseError,
]


def test_every_class_is_a_quiver_error():
    for cls in CLASSES:
        assert issubclass(cls, quiver.Error) and cls is not quiver.Error
    assert issubclass(quiver.Error, Exception)


def test_read_errors(db):
    reader = db.reader()
    with pytest.raises(quiver.EmptyCacheError, match="sync"):
        reader.bars("AAA", "1m")
    db.store.insert(minute_bars("AAA", utc(2024, 3, 1, 9, 0), 10))
    db.sync()
    with pytest.raises(quiver.UnknownSeriesError, match="ZZZ"):
        reader.bars("ZZZ", "1m")
    with pytest.raises(quiver.EmptyRangeError, match="2024-03-01"):
        reader.bars("AAA", "1m", start="2025-01-01")
    with pytest.raises(quiver.InvalidRangeError):
        reader.bars("AAA", "1m", start="2024-03-02", end="2024-03-01")
    with pytest.raises(quiver.InputError, match="timeframe"):
        reader.bars("AAA", "7x")
    with pytest.raises(quiver.InputError, match="symbol"):
        reader.bars("not a symbol", "1m")
    with pytest.raises(quiver.Error, match="version 99"):
        reader.bars("AAA", "1m", as_of=99)
    with pytest.raises(TypeError):
        reader.bars(42, "1m")


def test_database_errors(tmp_path):
    (tmp_path / "garbage.db").write_bytes(b"this is not a SQLite database file" * 100)
    with pytest.raises(quiver.DatabaseError, match="not a database"):
        quiver.Store(f"sqlite://{tmp_path / 'garbage.db'}").migrate()
    with pytest.raises(quiver.DatabaseError):
        quiver.Store("postgres://postgres@127.0.0.1:1/none")
    with pytest.raises(quiver.Error, match="mysql"):
        quiver.Store("mysql://localhost/market")


def test_writing_before_migrate_says_so(tmp_path):
    from conftest import BACKEND, PG_URL, SCHEMA_PREFIX, _counter

    if BACKEND == "sqlite":
        store = quiver.Store(f"sqlite://{tmp_path / 'fresh.db'}")
    else:
        store = quiver.Store(PG_URL, schema=f"{SCHEMA_PREFIX}{next(_counter)}")
    bars = minute_bars("AAA", utc(2024, 3, 1, 9, 0), 3)
    with pytest.raises(quiver.DatabaseError, match=r"no quiver tables.*Store\.migrate\(\)"):
        store.insert(bars)
    with pytest.raises(quiver.DatabaseError, match="no quiver tables"):
        store.delete("AAA")
    store.migrate()
    assert store.insert(bars)["written"] == 3
