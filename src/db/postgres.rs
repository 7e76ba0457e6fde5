//! PostgreSQL: a health-checked pool; bulk writes as binary `COPY` (into a temporary staging
//! table and one merge statement when bars may exist), so a million bars cost one round trip per
//! megabyte and one index pass, and the server parses no decimal or timestamp text.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Encode, PgPool, Postgres, Row, Transaction};

use futures_util::StreamExt;

use super::{
    BarFilter, FilterSql, FilterValue, ORDER_BARS, OnConflict, SELECT_BARS, SeriesSummary,
};
use super::{SLOW_STATEMENT, Scan, ScanStream, SeriesTracker};
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::feed::{ChangeBatch, ChangedDay, DayChange, FeedPosition};
use crate::model::{Bar, Symbol, Timeframe, fixed8_from_decimal, format_ts};

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// The signature that opens PostgreSQL's binary COPY format, before the flags and
/// header-extension words.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

pub(super) async fn connect(config: &DatabaseConfig, read_only: bool) -> Result<PgPool> {
    let mut options = PgConnectOptions::from_str(&config.url)?;
    // `application_name` in the URL (or PGAPPNAME) tells one quiver process from another in
    // `pg_stat_activity`; otherwise they all say "quiver".
    if options.get_application_name().is_none() {
        options = options.application_name("quiver");
    }
    let mut options = options
        .options([("TimeZone", "UTC")])
        .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
    if read_only {
        options = options.options([("default_transaction_read_only", "on")]);
    }
    if let Some(schema) = &config.schema {
        check_identifier(schema)?;
        options = options.options([("search_path", schema.as_str())]);
    }
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_with(options)
        .await?)
}

fn check_identifier(schema: &str) -> Result<()> {
    let ok = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            path: "database.schema".into(),
            message: format!("{schema:?} must be a lower-case SQL identifier"),
        })
    }
}

/// Creates the configured schema (the first of `search_path`) if it does not exist.
pub(super) async fn ensure_schema(pool: &PgPool, schema: Option<&str>) -> Result<()> {
    if let Some(schema) = schema {
        check_identifier(schema)?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

pub(super) async fn applied_migrations(pool: &PgPool) -> Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

pub(super) struct Writer {
    tx: Transaction<'static, Postgres>,
    policy: OnConflict,
    buf: Vec<u8>,
    /// One value's binary form, as sqlx's encoder for its type writes it.
    scratch: PgArgumentBuffer,
    copied: u64,
}

impl Writer {
    pub(super) async fn begin(pool: &PgPool, policy: OnConflict) -> Result<Self> {
        let mut tx = pool.begin().await?;
        if policy != OnConflict::Error {
            // Temporary: never WAL-logged, private to this session, dropped at commit or
            // rollback. With the `error` policy there is nothing to merge, so bars are copied
            // straight into market_data and a duplicate key fails the COPY.
            sqlx::query(
                "CREATE TEMP TABLE quiver_staging \
                 (LIKE market_data INCLUDING DEFAULTS) ON COMMIT DROP",
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(Writer {
            tx,
            policy,
            buf: Vec::with_capacity(COPY_CHUNK + 4096),
            scratch: PgArgumentBuffer::default(),
            copied: 0,
        })
    }

    pub(super) async fn write(&mut self, bars: &[Bar]) -> Result<()> {
        if bars.is_empty() {
            return Ok(());
        }
        let statement = if self.policy == OnConflict::Error {
            "COPY market_data (symbol, timeframe, ts, open, high, low, close, volume) FROM STDIN \
             (FORMAT binary)"
        } else {
            "COPY quiver_staging (symbol, timeframe, ts, open, high, low, close, volume) FROM STDIN \
             (FORMAT binary)"
        };
        self.buf.clear();
        match self.copy(statement, bars).await {
            Ok(n) => {
                self.copied += n;
                Ok(())
            }
            Err(Error::Database { what, source }) => {
                Err(conflict_from(&source).unwrap_or(Error::Database { what, source }))
            }
            Err(e) => Err(e),
        }
    }

    async fn copy(&mut self, statement: &str, bars: &[Bar]) -> Result<u64> {
        let mut copy = self.tx.copy_in_raw(statement).await?;
        self.buf.extend_from_slice(COPY_SIGNATURE);
        self.buf.extend_from_slice(&[0; 8]); // flags, header extension length
        for bar in bars {
            self.buf.extend_from_slice(&8i16.to_be_bytes());
            text_field(&mut self.buf, bar.symbol.as_str());
            text_field(&mut self.buf, bar.timeframe);
            binary_field(&mut self.buf, &mut self.scratch, &bar.ts)?;
            for value in [&bar.open, &bar.high, &bar.low, &bar.close, &bar.volume] {
                binary_field(&mut self.buf, &mut self.scratch, value)?;
            }
            if self.buf.len() >= COPY_CHUNK {
                copy.send(self.buf.as_slice()).await?;
                self.buf.clear();
            }
        }
        self.buf.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
        copy.send(self.buf.as_slice()).await?;
        self.buf.clear();
        Ok(copy.finish().await?)
    }

    pub(super) async fn commit(mut self) -> Result<u64> {
        let merge = match self.policy {
            OnConflict::Error => {
                self.tx.commit().await?;
                return Ok(self.copied);
            }
            OnConflict::Skip => {
                "INSERT INTO market_data SELECT * FROM quiver_staging \
                 ON CONFLICT (symbol, timeframe, ts) DO NOTHING"
            }
            OnConflict::Replace => {
                "INSERT INTO market_data SELECT * FROM quiver_staging \
                 ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = EXCLUDED.open, \
                 high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, \
                 volume = EXCLUDED.volume \
                 WHERE (market_data.open, market_data.high, market_data.low, market_data.close, \
                 market_data.volume) IS DISTINCT FROM \
                 (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)"
            }
        };
        let written = match sqlx::query(merge).execute(&mut *self.tx).await {
            Ok(done) => done.rows_affected(),
            Err(e) => return Err(conflict_from(&e).unwrap_or(Error::from(e))),
        };
        self.tx.commit().await?;
        Ok(written)
    }
}

/// One field of a binary COPY row: its length, then `value` as UTF-8 text.
fn text_field(buf: &mut Vec<u8>, value: impl fmt::Display) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{value}");
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// One field of a binary COPY row in PostgreSQL's binary form of its type, as sqlx encodes a
/// bound parameter (numeric digits in base 10000, timestamps in microseconds since 2000).
fn binary_field<'q, T: Encode<'q, Postgres>>(
    buf: &mut Vec<u8>,
    scratch: &mut PgArgumentBuffer,
    value: &T,
) -> Result<()> {
    scratch.clear();
    match value.encode_by_ref(scratch).map_err(sqlx::Error::Encode)? {
        sqlx::encode::IsNull::No => {
            buf.extend_from_slice(&(scratch.len() as i32).to_be_bytes());
            buf.extend_from_slice(scratch);
        }
        sqlx::encode::IsNull::Yes => buf.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    Ok(())
}

/// Turns PostgreSQL's unique-violation detail, `Key (symbol, timeframe, ts)=(A, 1d,
/// 2024-01-02 00:00:00+00) already exists.`, into an [`Error::Conflict`] naming the bar.
fn conflict_from(e: &sqlx::Error) -> Option<Error> {
    let db = e.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    let detail = db.try_downcast_ref::<PgDatabaseError>()?.detail()?;
    let values = detail.split_once(")=(")?.1.split_once(')')?.0;
    let mut parts = values.splitn(3, ", ");
    let (symbol, timeframe, ts) = (parts.next()?, parts.next()?, parts.next()?);
    let ts = NaiveDateTime::parse_from_str(ts.trim_end_matches("+00"), "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| format_ts(&t.and_utc()))
        .unwrap_or_else(|_| ts.to_string());
    Some(Error::Conflict {
        symbol: symbol.into(),
        timeframe: timeframe.into(),
        ts,
    })
}

/// `head` (a statement on `market_data`) restricted by `filter`, then `tail`, with its values
/// bound.
fn filtered(
    head: &str,
    filter: &BarFilter,
    tail: &str,
) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    let FilterSql { clause, values } = FilterSql::new(filter, '$');
    let mut q = sqlx::query(AssertSqlSafe(format!("{head}{clause}{tail}")));
    for v in values {
        q = match v {
            FilterValue::Text(s) => q.bind(s),
            FilterValue::Ts(t) => q.bind(t),
        };
    }
    q
}

pub(super) async fn count(pool: &PgPool, filter: &BarFilter) -> Result<Vec<(String, i64)>> {
    let q = filtered(
        "SELECT timeframe, COUNT(*) AS bars FROM market_data",
        filter,
        " GROUP BY timeframe ORDER BY timeframe",
    );
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("timeframe")?, r.try_get("bars")?)))
        .collect()
}

pub(super) async fn delete(pool: &PgPool, filter: &BarFilter) -> Result<u64> {
    let q = filtered("DELETE FROM market_data", filter, "");
    Ok(q.execute(pool).await?.rows_affected())
}

pub(super) async fn read(pool: &PgPool, filter: &BarFilter) -> Result<Vec<Bar>> {
    let rows = filtered(SELECT_BARS, filter, ORDER_BARS)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let dec = |name: &str| -> Result<Decimal> {
                Ok(row.try_get::<Decimal, _>(name)?.normalize())
            };
            Ok(Bar {
                symbol: Symbol::parse(row.try_get("symbol")?)
                    .map_err(|m| Error::corrupt(format!("market_data.symbol: {m}")))?,
                timeframe: Timeframe::parse(row.try_get("timeframe")?)
                    .map_err(|m| Error::corrupt(format!("market_data.timeframe: {m}")))?,
                ts: row.try_get::<DateTime<Utc>, _>("ts")?,
                open: dec("open")?,
                high: dec("high")?,
                low: dec("low")?,
                close: dec("close")?,
                volume: dec("volume")?,
            })
        })
        .collect()
}

pub(super) async fn summary(pool: &PgPool) -> Result<Vec<SeriesSummary>> {
    let rows = sqlx::query(
        "SELECT symbol, timeframe, count(*) AS bars, min(ts) AS first, max(ts) AS last \
         FROM market_data GROUP BY symbol, timeframe ORDER BY symbol, timeframe",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SeriesSummary {
                symbol: r.try_get("symbol")?,
                timeframe: r.try_get("timeframe")?,
                bars: r.try_get("bars")?,
                first: r.try_get("first")?,
                last: r.try_get("last")?,
            })
        })
        .collect()
}

pub(super) async fn change_log(pool: &PgPool) -> Result<Vec<ChangedDay>> {
    let rows = sqlx::query("SELECT DISTINCT symbol, timeframe, day FROM market_data_changes")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ChangedDay {
                symbol: r.try_get("symbol")?,
                timeframe: r.try_get("timeframe")?,
                day: r.try_get("day")?,
            })
        })
        .collect()
}

pub(super) async fn changes_since(pool: &PgPool, since: &FeedPosition) -> Result<ChangeBatch> {
    let (prev_xmin, prev_done): (i64, &[i64]) = match since {
        FeedPosition::Start => (0, &[]),
        FeedPosition::Postgres { xmin, done } => (*xmin, done),
        other => {
            return Err(Error::invalid(format!(
                "the cache was built from another backend ({other:?}); run `quiver sync --full`"
            )));
        }
    };
    // One transaction (one view of the database) for the horizon and the log, so they agree.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let xmin: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *tx)
            .await?;
    // Every row visible here belongs to a committed transaction. Those below the previous
    // horizon were consumed before; those in `done` too.
    let rows = sqlx::query(
        "SELECT txid::text::bigint AS txid, symbol, timeframe, day, bool_or(rewrite) AS rewrite, \
         min(min_ts) AS min_ts FROM market_data_changes \
         WHERE txid >= $1::text::xid8 AND NOT (txid::text::bigint = ANY($2)) \
         GROUP BY txid, symbol, timeframe, day",
    )
    .bind(prev_xmin)
    .bind(prev_done)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut batch = ChangeBatch::default();
    let mut done: Vec<i64> = prev_done.iter().copied().filter(|t| *t >= xmin).collect();
    for r in &rows {
        let txid: i64 = r.try_get("txid")?;
        if txid >= xmin {
            done.push(txid);
        }
        let min_ts: Option<DateTime<Utc>> = r.try_get("min_ts")?;
        batch.record(
            ChangedDay {
                symbol: r.try_get("symbol")?,
                timeframe: r.try_get("timeframe")?,
                day: r.try_get("day")?,
            },
            DayChange {
                rewrite: r.try_get("rewrite")?,
                min_ts: min_ts.map(|t| t.timestamp_micros()),
            },
        );
    }
    done.sort_unstable();
    done.dedup();
    batch.next = FeedPosition::Postgres { xmin, done };
    Ok(batch)
}

pub(super) async fn prune(pool: &PgPool, xmin: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM market_data_changes WHERE txid < $1::text::xid8")
            .bind(xmin)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

const SCAN_ALL: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data ORDER BY symbol, timeframe, ts";
const SCAN_SERIES: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data WHERE symbol = $1 AND timeframe = $2 ORDER BY ts";
const SCAN_RANGE: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data WHERE symbol = $1 AND timeframe = $2 AND ts >= $3 AND ts < $4 \
     ORDER BY ts";
/// Every window's rows in one statement: the windows arrive as arrays, each joined to the
/// table through its primary key, and the rows come back window by window.
const SCAN_WINDOWS: &str = "SELECT m.symbol, m.timeframe, m.ts, m.open, m.high, m.low, m.close, m.volume \
     FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) \
       WITH ORDINALITY AS w(symbol, timeframe, lo, hi, n) \
     JOIN market_data m ON m.symbol = w.symbol AND m.timeframe = w.timeframe \
       AND m.ts >= w.lo AND m.ts < w.hi \
     ORDER BY w.n, m.ts";
/// The earliest and latest instants PostgreSQL's timestamptz holds (about 4700 BC and
/// 255,000 AD): unbounded sides of a window are clamped to them.
const PG_MIN_MICROS: i64 = -210_000_000_000_000_000;
const PG_MAX_MICROS: i64 = 8_000_000_000_000_000_000;

/// An instant for a bound in microseconds, clamped to what `timestamptz` holds.
fn clamp(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros.clamp(PG_MIN_MICROS, PG_MAX_MICROS))
}

pub(super) fn scan(pool: &PgPool, scan: Scan) -> ScanStream<'_> {
    let query = match scan {
        Scan::All => sqlx::query(SCAN_ALL),
        Scan::Series {
            symbol,
            timeframe,
            start,
            end,
        } => match (start, end) {
            (None, None) => sqlx::query(SCAN_SERIES).bind(symbol).bind(timeframe),
            // One bound given: the other side open, as on SQLite.
            (start, end) => sqlx::query(SCAN_RANGE)
                .bind(symbol)
                .bind(timeframe)
                .bind(clamp(start.unwrap_or(i64::MIN)))
                .bind(clamp(end.unwrap_or(i64::MAX))),
        },
        Scan::Windows(windows) => {
            let (mut symbols, mut timeframes) = (Vec::new(), Vec::new());
            let (mut lows, mut highs): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) =
                Default::default();
            for w in windows {
                let (Some(lo), Some(hi)) = (clamp(w.from), clamp(w.until)) else {
                    continue; // outside every timestamp: no rows
                };
                symbols.push(w.symbol);
                timeframes.push(w.timeframe);
                lows.push(lo);
                highs.push(hi);
            }
            sqlx::query(SCAN_WINDOWS)
                .bind(symbols)
                .bind(timeframes)
                .bind(lows)
                .bind(highs)
        }
        Scan::Filter(filter) => filtered(SELECT_BARS, &filter, ORDER_BARS),
    };
    let mut tracker = SeriesTracker::default();
    Box::pin(query.fetch(pool).map(move |row| {
        let row = row?;
        let series = tracker.next(row.try_get(0)?, row.try_get(1)?);
        let ts = row.try_get::<DateTime<Utc>, _>(2)?.timestamp_micros();
        // NaN and values beyond 28 digits do not decode: bad rows, not a failed scan.
        Ok(
            tracker.row(series, ts, |i| match row.try_get::<Decimal, _>(3 + i) {
                Ok(d) => fixed8_from_decimal(d),
                Err(e) => Err(format!("not a decimal quiver can hold: {e}")),
            }),
        )
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers() {
        assert!(super::check_identifier("quiver_t1").is_ok());
        assert!(super::check_identifier("Bad").is_err());
        assert!(super::check_identifier("a;drop").is_err());
        assert!(super::check_identifier("").is_err());
    }
}
