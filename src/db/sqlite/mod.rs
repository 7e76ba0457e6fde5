//! SQLite: WAL, `synchronous=NORMAL`, a busy timeout; bulk writes as multi-row prepared inserts
//! in one transaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

mod scan;

pub(super) use scan::{Direct, scan, scan_sqlx};

use super::{Access, SLOW_STATEMENT};
use super::{
    BarFilter, FilterSql, FilterValue, ORDER_BARS, OnConflict, SELECT_BARS, SeriesSummary,
};
use crate::config::redact_url;
use crate::error::{Error, Result};
use crate::feed::{ChangeBatch, ChangedDay, DayChange, FeedPosition};
use crate::model::{Bar, Symbol, Timeframe, format_ts, push_decimal_text, ts_from_micros};

/// Rows per multi-row INSERT of the change log (through sqlx): 6 parameters each stays under
/// SQLite's 32766 limit while amortising the per-statement round trip to sqlx's worker thread.
const ROWS_PER_STATEMENT: usize = 4000;

/// Rows per prepared INSERT of bars (through rusqlite, bound in place): enough to amortise a
/// statement's step, small enough that preparing it once per write call costs nothing.
/// (Measured on a 1M-bar import: 1.69 s to write at 1000 rows, 1.78 s at 4000, 1.73 s at 64.)
const INSERT_ROWS: usize = 1000;

/// Turns off SQLite's memory statistics for this process: every allocation SQLite makes then
/// skips a process-wide mutex. A bulk write of 1M bars spends 0.68 s instead of 0.83 s
/// writing (measured side by side on the import bench's file, see docs/BENCHMARKS.md). quiver reads no
/// SQLite memory statistics. Does nothing once SQLite has started in this process.
///
/// # Safety
///
/// No other thread may be using SQLite (of this build) meanwhile: call it before starting
/// threads, as the `quiver` binary does first thing in `main`.
pub unsafe fn sqlite_without_memory_statistics() {
    // SAFETY: the caller guarantees no other thread is in SQLite; before SQLite's
    // initialisation this only sets a flag, and after it SQLite refuses (SQLITE_MISUSE).
    let code = unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
            std::ffi::c_int::from(0u8),
        )
    };
    if code != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(
            code,
            "SQLite had started already; its memory statistics stay on"
        );
    }
}

pub(super) async fn connect(url: &str, access: Access) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?;
    let file = options.get_filename().to_path_buf();
    if access != Access::Create && !file.exists() {
        return Err(Error::NotMigrated {
            database: format!("database {}", redact_url(url)),
            detail: format!("does not exist ({} is missing)", file.display()),
        });
    }
    let read_only = access == Access::ReadOnly;
    let options = if read_only {
        options.read_only(true).pragma("query_only", "ON")
    } else {
        options
            .create_if_missing(access == Access::Create)
            .journal_mode(SqliteJournalMode::Wal)
    };
    let options = options
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-65536")
        // New databases get 16 KiB pages: fewer page splits and B-tree levels per bar written
        // (a 1M-bar import wrote in 1.73 s instead of 1.91 s); existing files keep theirs.
        .page_size(16384)
        .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && access == Access::Create)
    {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?)
}

pub(super) async fn applied_migrations(pool: &SqlitePool) -> Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
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

fn insert_sql(rows: usize, policy: OnConflict) -> String {
    let mut sql = String::with_capacity(100 + rows * 20);
    sql.push_str(
        "INSERT INTO market_data (symbol, timeframe, ts, open, high, low, close, volume) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql.push_str(match policy {
        OnConflict::Error => "",
        OnConflict::Skip => " ON CONFLICT (symbol, timeframe, ts) DO NOTHING",
        OnConflict::Replace => {
            " ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = excluded.open, \
             high = excluded.high, low = excluded.low, close = excluded.close, volume = excluded.volume \
             WHERE open IS NOT excluded.open OR high IS NOT excluded.high OR low IS NOT excluded.low \
             OR close IS NOT excluded.close OR volume IS NOT excluded.volume"
        }
    });
    sql
}

pub(super) struct Writer {
    tx: Transaction<'static, Sqlite>,
    /// The insert trigger's `CREATE TRIGGER` statement, dropped for this transaction and run
    /// again before it commits (`None` when the table has no such trigger).
    trigger: Option<String>,
    policy: OnConflict,
    written: u64,
    /// The `(symbol, timeframe, day)`s written with their earliest bar, logged at commit in
    /// place of the trigger.
    days: BTreeMap<(Symbol, Timeframe, i64), i64>,
    /// One decimal's text as it is bound, reused.
    text: String,
}

impl Writer {
    pub(super) async fn begin(pool: &SqlitePool, policy: OnConflict) -> Result<Self> {
        // IMMEDIATE takes the write lock now, so a concurrent writer waits on the busy timeout
        // instead of failing our transaction half-way.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // The insert trigger stands aside for this transaction; commit() logs the days instead.
        // It is dropped, not just told to skip (its WHEN check costs about 0.6 s per million
        // rows), and created again from its own stored SQL before the commit: the drop is part
        // of the transaction, so a rollback or a crash restores it, and no other client can
        // write meanwhile (this transaction holds the write lock).
        let trigger: Option<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'market_data_track_insert'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if trigger.is_some() {
            sqlx::raw_sql("DROP TRIGGER market_data_track_insert")
                .execute(&mut *tx)
                .await?;
        }
        Ok(Writer {
            tx,
            trigger,
            policy,
            written: 0,
            days: BTreeMap::new(),
            text: String::new(),
        })
    }

    pub(super) async fn write(&mut self, bars: &[Bar]) -> Result<()> {
        for bar in bars {
            self.track(bar);
        }
        let policy = self.policy;
        let outcome = {
            let mut handle = self.tx.lock_handle().await?;
            // The rows go through rusqlite's statement API on sqlx's own connection (its handle
            // is locked for the call), inside this writer's transaction: values are bound from
            // borrowed text, with no argument allocated per value as sqlx's binds do.
            // SAFETY: the handle stays locked, so sqlx's worker leaves the connection alone,
            // until the end of this block, where `conn` is dropped first; a connection made
            // by `from_handle` never closes the handle.
            let conn =
                unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) };
            match conn {
                Ok(conn) => ChecksSkipped::on(&conn)
                    .map_err(|e| (e, 0..0))
                    .and_then(|_skipped| insert_rows(&conn, bars, policy, &mut self.text)),
                Err(e) => Err((e, 0..0)),
            }
        };
        match outcome {
            Ok(written) => {
                self.written += written;
                Ok(())
            }
            Err((e, rows)) if is_primary_key_violation(&e) => Err(self
                .conflict_in(&bars[rows])
                .await?
                .unwrap_or_else(|| rusqlite_error(e))),
            Err((e, _)) => Err(rusqlite_error(e)),
        }
    }

    /// Notes the `(symbol, timeframe, day)` of `bar` with its earliest bar, for commit.
    fn track(&mut self, bar: &Bar) {
        let day = crate::feed::day_of(&bar.ts);
        let ts = bar.ts_micros();
        match self.days.last_key_value() {
            // Bars usually come in key order: the last day's entry, without a lookup.
            Some(((s, t, d), _)) if (s, t, *d) == (&bar.symbol, &bar.timeframe, day) => {
                if let Some(mut last) = self.days.last_entry() {
                    *last.get_mut() = (*last.get()).min(ts);
                }
            }
            _ => {
                self.days
                    .entry((bar.symbol.clone(), bar.timeframe, day))
                    .and_modify(|m| *m = (*m).min(ts))
                    .or_insert(ts);
            }
        }
    }

    /// Names the first bar of `chunk` whose key is already stored (the failed statement was
    /// rolled back, so any match existed before it).
    async fn conflict_in(&mut self, chunk: &[Bar]) -> Result<Option<Error>> {
        for bar in chunk {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM market_data WHERE symbol = ? AND timeframe = ? AND ts = ?",
            )
            .bind(bar.symbol.as_str())
            .bind(bar.timeframe.to_string())
            .bind(bar.ts_micros())
            .fetch_optional(&mut *self.tx)
            .await?;
            if found.is_some() {
                return Ok(Some(Error::Conflict {
                    symbol: bar.symbol.to_string(),
                    timeframe: bar.timeframe.to_string(),
                    ts: format_ts(&bar.ts),
                }));
            }
        }
        Ok(None)
    }

    pub(super) async fn commit(mut self) -> Result<u64> {
        // A write that changed no row (all skipped or identical) has nothing for the mirror.
        let days: Vec<_> = if self.written == 0 {
            Vec::new()
        } else {
            std::mem::take(&mut self.days).into_iter().collect()
        };
        // Inserts, as the insert trigger would log them (updates by `replace` were logged
        // by the update trigger, which never stands aside).
        for chunk in days.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO market_data_changes (symbol, timeframe, day, epoch, rewrite, min_ts) ",
            );
            q.push_values(chunk, |mut row, ((symbol, timeframe, day), min_ts)| {
                row.push_bind(symbol.as_str().to_owned())
                    .push_bind(timeframe.to_string())
                    .push_bind(*day)
                    .push("(SELECT epoch FROM quiver_clock WHERE id = 1)")
                    .push("0")
                    .push_bind(*min_ts);
            });
            q.push(
                " ON CONFLICT (symbol, timeframe, day, epoch) DO UPDATE SET \
                 min_ts = min(min_ts, excluded.min_ts)",
            );
            q.build().execute(&mut *self.tx).await?;
        }
        if let Some(create) = self.trigger.take() {
            sqlx::raw_sql(AssertSqlSafe(create))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(self.written)
    }
}

/// SQLite's CHECK constraints skipped on a connection while this lives (the statements
/// prepared meanwhile carry no CHECK code). The bars were checked exactly before
/// ([`super::BarWriter::write`]); SQLite's own check of them is ten decimal-to-float casts per
/// row, about a quarter of a 1M-bar import's CPU. Only the writer's own inserts skip them:
/// the guard turns them back on before the connection can be used for anything else, also
/// when an insert fails.
struct ChecksSkipped<'c>(&'c rusqlite::Connection);

impl<'c> ChecksSkipped<'c> {
    fn on(conn: &'c rusqlite::Connection) -> rusqlite::Result<Self> {
        conn.execute_batch("PRAGMA ignore_check_constraints = ON")?;
        Ok(ChecksSkipped(conn))
    }
}

impl Drop for ChecksSkipped<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .0
            .execute_batch("PRAGMA ignore_check_constraints = OFF")
        {
            tracing::error!(error = %e, "could not turn SQLite's CHECK constraints back on");
        }
    }
}

/// Inserts `bars` with statements of [`INSERT_ROWS`] rows (and one for the rest), each decimal
/// written as canonical text into `text` and bound from there. Returns the rows changed, or the error with
/// the rows of the statement that failed (rolled back alone; the transaction goes on).
fn insert_rows(
    conn: &rusqlite::Connection,
    bars: &[Bar],
    policy: OnConflict,
    text: &mut String,
) -> Result<u64, (rusqlite::Error, std::ops::Range<usize>)> {
    let mut written = 0;
    let mut full = None;
    let mut at = 0;
    let mut timeframe = String::new();
    let mut last_timeframe = None;
    for chunk in bars.chunks(INSERT_ROWS) {
        let rows = at..at + chunk.len();
        at = rows.end;
        let fail = |e| (e, rows.clone());
        let mut rest;
        let statement = if chunk.len() == INSERT_ROWS {
            if full.is_none() {
                full = Some(
                    conn.prepare(&insert_sql(INSERT_ROWS, policy))
                        .map_err(fail)?,
                );
            }
            full.as_mut().expect("prepared above")
        } else {
            rest = conn
                .prepare(&insert_sql(chunk.len(), policy))
                .map_err(fail)?;
            &mut rest
        };
        // rusqlite binds text as SQLITE_TRANSIENT (SQLite copies it at once), so one buffer
        // serves every decimal, and a timeframe is spelled again only when it changes.
        let mut param = 1;
        for bar in chunk {
            if last_timeframe != Some(bar.timeframe) {
                timeframe.clear();
                // Writing into a String cannot fail.
                let _ = write!(timeframe, "{}", bar.timeframe);
                last_timeframe = Some(bar.timeframe);
            }
            statement
                .raw_bind_parameter(param, bar.symbol.as_str())
                .map_err(fail)?;
            statement
                .raw_bind_parameter(param + 1, timeframe.as_str())
                .map_err(fail)?;
            statement
                .raw_bind_parameter(param + 2, bar.ts_micros())
                .map_err(fail)?;
            for (k, value) in [&bar.open, &bar.high, &bar.low, &bar.close, &bar.volume]
                .into_iter()
                .enumerate()
            {
                text.clear();
                push_decimal_text(text, value);
                statement
                    .raw_bind_parameter(param + 3 + k, text.as_str())
                    .map_err(fail)?;
            }
            param += 8;
        }
        written += statement.raw_execute().map_err(fail)? as u64;
    }
    Ok(written)
}

/// A failed insert's error, as quiver reports database errors.
fn rusqlite_error(source: rusqlite::Error) -> Error {
    Error::Sqlite {
        what: "writing bars".into(),
        source,
    }
}

fn is_primary_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// `head` (a statement on `market_data`) restricted by `filter`, then `tail`, with its values
/// bound (`ts` as microseconds).
fn filtered(
    head: &str,
    filter: &BarFilter,
    tail: &str,
) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
    let FilterSql { clause, values } = FilterSql::new(filter, '?');
    let mut q = sqlx::query(AssertSqlSafe(format!("{head}{clause}{tail}")));
    for v in values {
        q = match v {
            FilterValue::Text(s) => q.bind(s),
            FilterValue::Ts(t) => q.bind(t.timestamp_micros()),
        };
    }
    q
}

pub(super) async fn count(pool: &SqlitePool, filter: &BarFilter) -> Result<Vec<(String, i64)>> {
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

pub(super) async fn delete(pool: &SqlitePool, filter: &BarFilter) -> Result<u64> {
    let q = filtered("DELETE FROM market_data", filter, "");
    Ok(q.execute(pool).await?.rows_affected())
}

fn decimal_column(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Decimal> {
    let text: String = row.try_get(name)?;
    Decimal::from_str_exact(&text)
        .map(|d| d.normalize())
        .map_err(|e| {
            Error::corrupt(format!(
                "market_data.{name} holds {text:?}, not a decimal: {e}"
            ))
        })
}

pub(super) async fn read(pool: &SqlitePool, filter: &BarFilter) -> Result<Vec<Bar>> {
    let rows = filtered(SELECT_BARS, filter, ORDER_BARS)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Bar {
                symbol: Symbol::parse(row.try_get("symbol")?)
                    .map_err(|m| Error::corrupt(format!("market_data.symbol: {m}")))?,
                timeframe: Timeframe::parse(row.try_get("timeframe")?)
                    .map_err(|m| Error::corrupt(format!("market_data.timeframe: {m}")))?,
                ts: ts_from_micros(row.try_get("ts")?)?,
                open: decimal_column(row, "open")?,
                high: decimal_column(row, "high")?,
                low: decimal_column(row, "low")?,
                close: decimal_column(row, "close")?,
                volume: decimal_column(row, "volume")?,
            })
        })
        .collect()
}

pub(super) async fn summary(pool: &SqlitePool) -> Result<Vec<SeriesSummary>> {
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
                first: ts_from_micros(r.try_get("first")?)?,
                last: ts_from_micros(r.try_get("last")?)?,
            })
        })
        .collect()
}

pub(super) async fn change_log(pool: &SqlitePool) -> Result<Vec<ChangedDay>> {
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

pub(super) async fn changes_since(pool: &SqlitePool, since: &FeedPosition) -> Result<ChangeBatch> {
    let consumed = match since {
        FeedPosition::Start => 0,
        FeedPosition::Sqlite { epoch } => *epoch,
        other => {
            return Err(Error::invalid(format!(
                "the cache was built from another backend ({other:?}); run `quiver sync --full`"
            )));
        }
    };
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(epoch) FROM market_data_changes")
        .fetch_one(pool)
        .await?;
    if newest.is_none_or(|n| n <= consumed) {
        // Nothing new: report the same position and write nothing (a poll must not wake the
        // file watcher with a write of its own).
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM quiver_clock WHERE id = 1")
            .fetch_one(pool)
            .await?;
        let next = match since {
            FeedPosition::Start => FeedPosition::Sqlite { epoch: epoch - 1 },
            same => same.clone(),
        };
        return Ok(ChangeBatch {
            days: Default::default(),
            next,
        });
    }
    // Close the open epoch. The write lock is taken first, so every transaction that stamped
    // a change with the closed epoch has committed by now. The same step forgets the epochs the
    // position covers: the cache holds them already (the position comes from its commit).
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let closed: i64 = sqlx::query_scalar(
        "UPDATE quiver_clock SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch - 1",
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM market_data_changes WHERE epoch <= ?")
        .bind(consumed)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT symbol, timeframe, day, max(rewrite) AS rewrite, min(min_ts) AS min_ts \
         FROM market_data_changes WHERE epoch > ? AND epoch <= ? \
         GROUP BY symbol, timeframe, day",
    )
    .bind(consumed)
    .bind(closed)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut batch = ChangeBatch {
        days: Default::default(),
        next: FeedPosition::Sqlite { epoch: closed },
    };
    for r in &rows {
        let rewrite: i64 = r.try_get("rewrite")?;
        batch.record(
            ChangedDay {
                symbol: r.try_get("symbol")?,
                timeframe: r.try_get("timeframe")?,
                day: r.try_get("day")?,
            },
            DayChange {
                rewrite: rewrite != 0,
                min_ts: r.try_get("min_ts")?,
            },
        );
    }
    Ok(batch)
}
