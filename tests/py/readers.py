"""Reads a quiver cache with outside tools, for quiver's tests.

One JSON request per line on stdin, one JSON answer per line on stdout:

    {"reader": "deltalake", "path": "<cache>/delta/market_data", "version": null}
    -> {"rows": [["SYM", "1m", <ts in microseconds>, "open", "high", "low", "close", "volume"], ...]}

Readers: deltalake (DeltaTable(...).to_pyarrow_dataset()), polars_delta (polars.scan_delta),
duckdb_delta (DuckDB delta_scan, the extension loaded offline from duckdb-ext-delta),
duckdb_glob and polars_glob (the plain view's files by glob, with hive partitioning).
Decimals are returned as exact strings without trailing zeros, never through a float.
"""

import decimal
import json
import os
import sys

COLUMNS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]


def text(d):
    if d is None:
        return None
    if not isinstance(d, decimal.Decimal):
        raise TypeError(f"a price or volume came back as {type(d).__name__}, not a decimal")
    return format(d.normalize(), "f")


def arrow_rows(table):
    import pyarrow as pa

    table = table.select(COLUMNS)
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    cols = [table.column(c).to_pylist() for c in COLUMNS]
    return [
        [cols[0][i], cols[1][i], ts[i]] + [text(cols[c][i]) for c in range(3, 8)]
        for i in range(table.num_rows)
    ]


def polars_rows(frame):
    import polars as pl

    frame = frame.select(COLUMNS).with_columns(pl.col("ts").dt.epoch("us"))
    return [[r[0], r[1], r[2]] + [text(v) for v in r[3:]] for r in frame.rows()]


_duckdb = None


def duckdb_connection():
    global _duckdb
    if _duckdb is None:
        import duckdb
        import duckdb_ext

        _duckdb = duckdb.connect()
        ext = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
        _duckdb.execute(f"SET extension_directory = '{ext}'")
        _duckdb.execute("SET autoinstall_known_extensions = false")
        _duckdb.execute("LOAD delta")
    return _duckdb


def duckdb_rows(source):
    query = (
        "SELECT symbol, timeframe, epoch_us(ts), open, high, low, close, volume "
        f"FROM {source}"
    )
    rows = duckdb_connection().execute(query).fetchall()
    return [[r[0], r[1], r[2]] + [text(v) for v in r[3:]] for r in rows]


def read(request):
    reader, path, version = request["reader"], request["path"], request.get("version")
    if reader == "deltalake":
        import deltalake

        table = deltalake.DeltaTable(path, version=version)
        return arrow_rows(table.to_pyarrow_dataset().to_table())
    if reader == "polars_delta":
        import polars as pl

        return polars_rows(pl.scan_delta(path, version=version).collect())
    if reader == "duckdb_delta":
        if version is not None:
            raise ValueError("delta_scan has no time travel")
        return duckdb_rows(f"delta_scan('{path}')")
    if reader == "duckdb_glob":
        return duckdb_rows(
            f"read_parquet('{path}/**/*.parquet', hive_partitioning = true)"
        )
    if reader == "polars_glob":
        import polars as pl

        return polars_rows(
            pl.scan_parquet(f"{path}/**/*.parquet", hive_partitioning=True).collect()
        )
    raise ValueError(f"unknown reader {reader!r}")


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"rows": read(json.loads(line))}
        except Exception as e:  # the test prints it
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
