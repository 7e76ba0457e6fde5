"""quiver: exact OHLCV bars from quiver's cache, at the speed of its Rust reader.

Reads (:class:`Reader`) come from the cache folder that ``quiver sync`` keeps as a Delta table
and return Arrow data through the Arrow PyCapsule interface, so ``pyarrow.table(t)``,
``polars.DataFrame(t)`` and ``t.to_pandas()`` take them without a copy. Writes
(:class:`Store`) go to the SQL database (SQLite or PostgreSQL) with the checks of
``quiver import``; :func:`sync` runs one pass of the mirror.

Prices and volumes are exact ``Decimal128(28, 8)`` values unless ``prices="float64"`` asks
for floats at the edge.
"""

from quiver._quiver import (
    BarStream,
    ConflictError,
    DatabaseError,
    EmptyCacheError,
    EmptyRangeError,
    Error,
    InputError,
    InvalidRangeError,
    Reader,
    Store,
    Table,
    UnknownSeriesError,
    __version__,
    sync,
)

__all__ = [
    "BarStream",
    "ConflictError",
    "DatabaseError",
    "EmptyCacheError",
    "EmptyRangeError",
    "Error",
    "InputError",
    "InvalidRangeError",
    "Reader",
    "Store",
    "Table",
    "UnknownSeriesError",
    "__version__",
    "sync",
]
