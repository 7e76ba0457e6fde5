"""Type stubs of quiver's extension module (re-exported by ``quiver``)."""

import datetime
from collections.abc import Iterator, Sequence
from os import PathLike
from typing import Any, Literal, TypedDict

import pyarrow

__version__: str

Instant = str | datetime.datetime | datetime.date
"""RFC 3339 text, a date (``"2024-06-03"``; as an ``end`` it covers the whole day), or a
``datetime`` (naive means UTC)."""

Symbols = str | Sequence[str]
Prices = Literal["decimal", "float64"]

class Error(Exception):
    """Every error quiver raises; the message is the library's."""

class InputError(Error):
    """Bad input: a bad row or column of a frame (``frame: row 3: open: …``) or a bad argument.
    Nothing was written."""

class UnknownSeriesError(Error):
    """The cache holds no bars of this symbol and timeframe."""

class EmptyRangeError(Error):
    """The range holds no bar; the message says where the series' bars are."""

class InvalidRangeError(Error):
    """The range's start is after its end."""

class EmptyCacheError(Error):
    """The cache has no version yet: run a sync first."""

class ConflictError(Error):
    """A bar already exists and ``on_conflict`` is ``"error"``; nothing was written."""

class DatabaseError(Error):
    """The SQL database failed (connection, statement, migration)."""

class Table:
    """Record batches of a read, shared with Python without a copy.

    The columns are ``symbol``, ``timeframe``, ``ts`` (``timestamp[us, UTC]``), ``open``,
    ``high``, ``low``, ``close``, ``volume`` (``Decimal128(28, 8)``, or ``float64``), in ``ts``
    order; the first :attr:`warmup` rows are warmup bars. Implements
    ``__arrow_c_stream__``: ``pyarrow.table(t)``, ``polars.DataFrame(t)``.
    """

    @property
    def num_rows(self) -> int:
        """Rows in all, warmup included."""
    @property
    def warmup(self) -> int:
        """How many of the first rows come before the range's start."""
    @property
    def column_names(self) -> list[str]:
        """The column names, in order."""
    def __len__(self) -> int: ...
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def to_pyarrow(self) -> pyarrow.Table:
        """The rows as a ``pyarrow.Table`` (no copy)."""
    def to_polars(self, *, prices: Prices = "decimal") -> Any:
        """The rows as a ``polars.DataFrame`` (needs polars): prices as Polars ``Decimal``,
        or ``Float64`` with ``prices="float64"``."""
    def to_pandas(self, *, prices: Prices = "decimal") -> Any:
        """The rows as a ``pandas.DataFrame``: ``ts`` timezone-aware UTC, prices as exact
        ``decimal.Decimal`` objects, or ``float64`` columns with ``prices="float64"``."""

class BarStream:
    """A read as a stream of record batches (warmup first), never the whole range in memory.

    Iterate it for ``pyarrow.RecordBatch``es, or pass it to
    ``pyarrow.RecordBatchReader.from_stream``; it can be consumed once.
    """

    def __iter__(self) -> Iterator[pyarrow.RecordBatch]: ...
    def __next__(self) -> pyarrow.RecordBatch: ...
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

class Reader:
    """Reads bars from a cache folder; share one reader between threads (reads release the
    GIL) and calls (open files and their metadata stay cached)."""

    def __init__(
        self, path: str | PathLike[str] | None = None, *, config: str | None = None
    ) -> None:
        """Opens the cache under ``path``, or the one a config file names, or the one of
        ``./config.toml`` and the ``QUIVER_*`` variables when both are left out."""
    def bars(
        self,
        symbol: Symbols,
        timeframe: str,
        *,
        start: Instant | None = None,
        end: Instant | None = None,
        warmup: int = 0,
        limit: int | None = None,
        as_of: int | Instant | None = None,
        prices: Prices = "decimal",
    ) -> Table:
        """Bars from ``start`` to ``end`` (inclusive) after exactly ``warmup`` bars before
        ``start`` (fewer only where the series begins later), across partitions. Several
        symbols are merged by ``ts``. ``as_of`` reads an older version (a version number or
        an instant). Raises :class:`UnknownSeriesError`, :class:`EmptyRangeError`,
        :class:`InvalidRangeError`, :class:`EmptyCacheError`."""
    def stream(
        self,
        symbol: Symbols,
        timeframe: str,
        *,
        start: Instant | None = None,
        end: Instant | None = None,
        warmup: int = 0,
        limit: int | None = None,
        as_of: int | Instant | None = None,
        prices: Prices = "decimal",
    ) -> BarStream:
        """:meth:`bars` as a stream of record batches."""
    def latest(self, symbol: Symbols, timeframe: str, *, prices: Prices = "decimal") -> Table:
        """The newest bar of each symbol, in the order given."""
    def sql(self, query: str) -> Table:
        """Runs SQL on the cache (the ``quiver sql`` shell's tables and functions)."""
    def series(self, *, as_of: int | Instant | None = None) -> Table:
        """The series the cache holds: ``symbol``, ``timeframe``, ``first`` and ``last``
        (``timestamp[us, UTC]``) and ``bars`` (int64), ordered by symbol and bar length; read
        from the table's manifest. Raises :class:`EmptyCacheError` before the first sync."""
    def version(self) -> int | None:
        """The newest version of the cache, or ``None`` before the first sync."""

class WriteReport(TypedDict):
    received: int
    written: int

class Store:
    """The SQL store (SQLite or PostgreSQL): migrations and writes, each one transaction."""

    def __init__(
        self, url: str | None = None, *, config: str | None = None, schema: str | None = None
    ) -> None:
        """Connects to ``url`` (``sqlite://market.db``, ``postgres://…``), or to the database
        of a config file, or of ``./config.toml`` and ``QUIVER_*`` when both are left out."""
    @property
    def backend(self) -> Literal["sqlite", "postgres"]: ...
    def migrate(self) -> list[int]:
        """Applies pending migrations; returns the versions applied."""
    def insert(
        self,
        frame: Any,
        *,
        symbol: str | None = None,
        timeframe: str | None = None,
        on_conflict: Literal["error", "skip", "replace"] = "error",
        floats: bool = False,
        tz: str = "UTC",
    ) -> WriteReport:
        """Writes the bars of an Arrow-capable frame (pyarrow, Polars, pandas) in one
        transaction with the checks of ``quiver import``.

        Columns (case-insensitive): ``symbol``/``ticker`` (or ``symbol=``), ``timeframe`` (or
        ``timeframe=``), ``ts``/``timestamp``/``datetime``/``date``/``time``, ``open``,
        ``high``, ``low``, ``close``, ``volume``; others are ignored. Prices are decimals,
        integers or decimal text; binary floats only with ``floats=True`` (rounded to 8
        decimals). Naive timestamps are in ``tz``. A bad row raises :class:`InputError`
        naming its 0-based index and column, and nothing is written."""
    def delete(
        self,
        symbol: str,
        timeframe: str | None = None,
        *,
        start: Instant | None = None,
        end: Instant | None = None,
    ) -> int:
        """Deletes bars of ``symbol`` (of one timeframe, in a range); returns how many."""

class PassReport(TypedDict):
    version: int | None
    rows: int
    changed_days: int
    written: int
    removed: int
    appended: int
    held_back: int
    seconds: float

def sync(
    url: str | None = None,
    *,
    cache: str | PathLike[str] | None = None,
    config: str | None = None,
    schema: str | None = None,
    full: bool = False,
) -> PassReport:
    """One sync pass: mirrors the database into the cache as one Delta commit."""
