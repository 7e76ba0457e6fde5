//! Scans of `market_data` for the sync pass: through rusqlite on a blocking thread with
//! reused read-only connections (several times faster than sqlx's row stream), or through
//! sqlx where no file is at hand.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::{Row, SqlitePool};

use super::filtered;
use crate::db::{ORDER_BARS, SELECT_BARS, Scan, ScanRow, ScanStream, SeriesTracker};
use crate::error::{Error, Result};
use crate::model::fixed8_from_text;

use crate::error::Context;

pub(super) const SCAN_ALL: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data ORDER BY symbol, timeframe, ts";
pub(super) const SCAN_SERIES: &str = "SELECT symbol, timeframe, ts, open, high, low, close, volume \
     FROM market_data WHERE symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts";

pub(in crate::db) fn scan<'a>(
    pool: &'a SqlitePool,
    direct: &Arc<Direct>,
    scan: Scan,
) -> ScanStream<'a> {
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
pub(in crate::db) fn scan_sqlx(pool: &SqlitePool, scan: Scan) -> ScanStream<'_> {
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
pub(in crate::db) struct Direct {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// Idle connections kept for reuse.
pub(super) const DIRECT_IDLE: usize = 2;

impl Direct {
    pub(in crate::db) fn new(pool: &SqlitePool) -> Direct {
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
        )
        .context(|| format!("opening {} to scan", self.file.display()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .context(|| "setting the busy timeout".into())?;
        Ok(conn)
    }

    /// Closes the idle connections (a connection in use closes when its scan ends).
    pub(in crate::db) fn close(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
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
pub(super) const SCAN_CHUNK: usize = 8192;

pub(super) fn read_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Vec<rusqlite::types::Value>],
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ScanRow>>>,
) -> Result<()> {
    let reading = || "scanning market_data".to_string();
    let mut statement = conn.prepare(sql).context(reading)?;
    let mut tracker = SeriesTracker::default();
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    for set in params {
        let mut rows = statement
            .query(rusqlite::params_from_iter(set))
            .context(reading)?;
        while let Some(row) = rows.next().context(reading)? {
            let symbol = row.get_ref(0).context(reading)?;
            let timeframe = row.get_ref(1).context(reading)?;
            let (Ok(symbol), Ok(timeframe)) = (symbol.as_str(), timeframe.as_str()) else {
                return Err(Error::corrupt(format!(
                    "market_data holds a non-text symbol or timeframe: {symbol:?} {timeframe:?}"
                )));
            };
            let series = tracker.next(symbol, timeframe);
            let ts: i64 = row.get(2).context(reading)?;
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
