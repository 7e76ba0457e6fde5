//! SQLite: WAL, `synchronous=NORMAL`, a busy timeout; bulk writes as multi-row prepared inserts
//! in one transaction.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use futures_util::StreamExt;

use super::{
    BarFilter, FilterSql, FilterValue, ORDER_BARS, OnConflict, SELECT_BARS, SeriesSummary,
};
use super::{SLOW_STATEMENT, Scan, ScanRow, ScanStream, SeriesTracker};
use crate::error::{Error, Result};
use crate::feed::{ChangeBatch, ChangedDay, DayChange, FeedPosition};
use crate::model::{
    Bar, Symbol, Timeframe, decimal_text, fixed8_from_text, format_ts, ts_from_micros,
};

/// Rows per multi-row INSERT: 8 parameters each stays under SQLite's 32766 limit while
/// amortising the per-statement round trip to sqlx's worker thread.
const ROWS_PER_STATEMENT: usize = 4000;

pub(super) async fn connect(url: &str, read_only: bool) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?;
    let options = if read_only {
        options.read_only(true).pragma("query_only", "ON")
    } else {
        options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
    };
    let options = options
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-65536")
        .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
    let file = options.get_filename();
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !read_only)
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
    policy: OnConflict,
    full_sql: String,
    written: u64,
    /// The `(symbol, timeframe, day)`s written with their earliest bar, logged at commit in
    /// place of the trigger.
    days: BTreeMap<(Symbol, Timeframe, i64), i64>,
}

impl Writer {
    pub(super) async fn begin(pool: &SqlitePool, policy: OnConflict) -> Result<Self> {
        // IMMEDIATE takes the write lock now, so a concurrent writer waits on the busy timeout
        // instead of failing our transaction half-way.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // The insert trigger stands aside for this transaction; commit() logs the days instead.
        sqlx::query("UPDATE quiver_clock SET bulk = 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(Writer {
            tx,
            policy,
            full_sql: insert_sql(ROWS_PER_STATEMENT, policy),
            written: 0,
            days: BTreeMap::new(),
        })
    }

    pub(super) async fn write(&mut self, bars: &[Bar]) -> Result<()> {
        for chunk in bars.chunks(ROWS_PER_STATEMENT) {
            let sql = if chunk.len() == ROWS_PER_STATEMENT {
                self.full_sql.clone()
            } else {
                insert_sql(chunk.len(), self.policy)
            };
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for bar in chunk {
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
                query = query
                    .bind(bar.symbol.as_str().to_owned())
                    .bind(bar.timeframe.to_string())
                    .bind(bar.ts_micros())
                    .bind(decimal_text(&bar.open))
                    .bind(decimal_text(&bar.high))
                    .bind(decimal_text(&bar.low))
                    .bind(decimal_text(&bar.close))
                    .bind(decimal_text(&bar.volume));
            }
            match query.execute(&mut *self.tx).await {
                Ok(done) => self.written += done.rows_affected(),
                Err(e) if is_unique_violation(&e) => {
                    return Err(self.conflict_in(chunk).await?.unwrap_or(Error::from(e)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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
        sqlx::query("UPDATE quiver_clock SET bulk = 0 WHERE id = 1")
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(self.written)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
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

const SCAN_ALL: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data ORDER BY symbol, timeframe, ts";
const SCAN_SERIES: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data WHERE symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts";

pub(super) fn scan<'a>(pool: &'a SqlitePool, direct: &Arc<Direct>, scan: Scan) -> ScanStream<'a> {
    match scan {
        Scan::All if direct.file.is_file() => direct.scan(SCAN_ALL, vec![Vec::new()]),
        Scan::Series {
            symbol,
            timeframe,
            start,
            end,
        } if direct.file.is_file() => direct.scan(
            SCAN_SERIES,
            vec![vec![
                symbol.into(),
                timeframe.into(),
                start.unwrap_or(i64::MIN).into(),
                end.unwrap_or(i64::MAX).into(),
            ]],
        ),
        // One prepared statement stepped once per window, on one connection and thread.
        Scan::Windows(windows) if direct.file.is_file() => direct.scan(
            SCAN_SERIES,
            windows
                .into_iter()
                .map(|w| {
                    vec![
                        w.symbol.into(),
                        w.timeframe.into(),
                        w.from.into(),
                        w.until.into(),
                    ]
                })
                .collect(),
        ),
        other => scan_sqlx(pool, other),
    }
}

/// Scans through sqlx: filtered scans (`live.market_data`), and in-memory databases.
pub(super) fn scan_sqlx(pool: &SqlitePool, scan: Scan) -> ScanStream<'_> {
    if let Scan::Windows(windows) = scan {
        // One series scan after another (in-memory databases only; files go through Direct).
        let streams = windows.into_iter().map(move |w| {
            scan_sqlx(
                pool,
                Scan::Series {
                    symbol: w.symbol,
                    timeframe: w.timeframe,
                    start: Some(w.from),
                    end: Some(w.until),
                },
            )
        });
        return Box::pin(futures_util::stream::iter(streams).flatten());
    }
    let query = match scan {
        Scan::All => sqlx::query(SCAN_ALL),
        Scan::Series {
            symbol,
            timeframe,
            start,
            end,
        } => sqlx::query(SCAN_SERIES)
            .bind(symbol)
            .bind(timeframe)
            .bind(start.unwrap_or(i64::MIN))
            .bind(end.unwrap_or(i64::MAX)),
        Scan::Filter(filter) => filtered(SELECT_BARS, &filter, ORDER_BARS),
        Scan::Windows(_) => unreachable!("handled above"),
    };
    let mut tracker = SeriesTracker::default();
    Box::pin(query.fetch(pool).map(move |row| {
        let row = row?;
        let series = tracker.next(row.try_get(0)?, row.try_get(1)?);
        let ts: i64 = row.try_get(2)?;
        Ok(
            tracker.row(series, ts, |i| match row.try_get::<&str, _>(3 + i) {
                Ok(text) => fixed8_from_text(text),
                Err(e) => Err(format!("not text: {e}")),
            }),
        )
    }))
}

/// Read-only rusqlite connections to the database file, reused across scans.
///
/// sqlx moves each row through its worker's channel as a boxed value set, which caps a scan
/// near 270k rows/s; stepping the statement directly on a blocking thread reads several times
/// faster. The sync pass scans through these: the snapshot, and every changed partition it
/// re-reads. One statement is one read transaction, so each scan is one consistent view
/// of what it reads.
#[derive(Debug)]
pub(super) struct Direct {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// Idle connections kept for reuse.
const DIRECT_IDLE: usize = 2;

impl Direct {
    pub(super) fn new(pool: &SqlitePool) -> Direct {
        Direct {
            file: pool.connect_options().get_filename().to_path_buf(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn connection(&self) -> Result<rusqlite::Connection> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(c) = reused {
            return Ok(c);
        }
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < DIRECT_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `sql` once per parameter set, in order, on a blocking thread, streaming the rows
    /// in chunks; the connection goes back to the idle list when the scan ends.
    fn scan(
        self: &Arc<Direct>,
        sql: &'static str,
        params: Vec<Vec<rusqlite::types::Value>>,
    ) -> ScanStream<'static> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<ScanRow>>>(4);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = this.connection().and_then(|conn| {
                let read = read_rows(&conn, sql, &params, &tx);
                this.give_back(conn);
                read
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        Box::pin(chunks.flat_map(|chunk| {
            let rows: Vec<Result<ScanRow>> = match chunk {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(rows)
        }))
    }
}

/// Rows handed from the reading thread to the stream at a time.
const SCAN_CHUNK: usize = 8192;

fn read_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Vec<rusqlite::types::Value>],
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ScanRow>>>,
) -> Result<()> {
    let mut statement = conn.prepare(sql)?;
    let mut tracker = SeriesTracker::default();
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    for set in params {
        let mut rows = statement.query(rusqlite::params_from_iter(set))?;
        while let Some(row) = rows.next()? {
            let symbol = row.get_ref(0)?;
            let timeframe = row.get_ref(1)?;
            let (Ok(symbol), Ok(timeframe)) = (symbol.as_str(), timeframe.as_str()) else {
                return Err(Error::corrupt(format!(
                    "market_data holds a non-text symbol or timeframe: {symbol:?} {timeframe:?}"
                )));
            };
            let series = tracker.next(symbol, timeframe);
            let ts: i64 = row.get(2)?;
            chunk.push(tracker.row(series, ts, |i| match row.get_ref(3 + i) {
                Ok(raw) => match raw.as_str() {
                    Ok(s) => fixed8_from_text(s),
                    Err(_) => Err(format!("{raw:?} is not text")),
                },
                Err(e) => Err(e.to_string()),
            }));
            if chunk.len() == SCAN_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                if tx.blocking_send(Ok(full)).is_err() {
                    return Ok(()); // the reader went away
                }
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}
