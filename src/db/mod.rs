//! The SQL store: connecting, migrating, writing and reading `market_data` on SQLite or
//! PostgreSQL.
//!
//! [`Store`] picks the backend from the URL at run time; everything above this module is one
//! code path. The backends differ only where their best bulk path differs: SQLite takes
//! multi-row prepared inserts inside one transaction, PostgreSQL takes `COPY` into a temporary
//! staging table and one merge statement.

mod filter;
mod migrations;
mod postgres;
mod scan;
mod sqlite;

use filter::{FilterSql, FilterValue};
pub use migrations::migrator;
use scan::{ORDER_BARS, SELECT_BARS, SeriesTracker};
pub use scan::{Scan, ScanRow, ScanStream, VALUE_COLUMNS, Window};
pub use sqlite::sqlite_without_memory_statistics;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};

use crate::config::{DatabaseConfig, redact_url};
use crate::error::{Context, Error, Result};
use crate::feed::{ChangeBatch, ChangedDay, FeedPosition};
use crate::model::{Bar, Symbol, Timeframe};

/// Statements slower than this are logged by sqlx, at debug level only: bulk loads and full
/// scans are expected to take longer, and a warning for each would be noise.
const SLOW_STATEMENT: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Error::NotMigrated`] says of a database with none of quiver's migrations.
const NO_TABLES: &str = "has no quiver tables";

/// Which database holds the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (the default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// What to do when a written bar's key `(symbol, timeframe, ts)` already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the whole write; nothing is stored.
    #[default]
    Error,
    /// Keep the stored bar, drop the new one.
    Skip,
    /// Overwrite the stored bar with the new one.
    Replace,
}

/// What a bulk write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Bars handed to the writer.
    pub received: u64,
    /// Bars inserted, or (with [`OnConflict::Replace`]) updated because they differed.
    pub written: u64,
}

impl WriteReport {
    /// Bars that changed nothing: skipped duplicates, or replacements identical to the stored bar.
    pub fn unchanged(&self) -> u64 {
        self.received - self.written
    }
}

/// Selects bars by symbol, and optionally timeframe and an inclusive time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BarFilter {
    /// Only this symbol (all symbols when `None`).
    pub symbol: Option<Symbol>,
    /// Only this timeframe.
    pub timeframe: Option<Timeframe>,
    /// Bars at or after this instant.
    pub start: Option<DateTime<Utc>>,
    /// Bars at or before this instant.
    pub end: Option<DateTime<Utc>>,
}

/// Bars held for one `(symbol, timeframe)` series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesSummary {
    /// Instrument.
    pub symbol: String,
    /// Bar length.
    pub timeframe: String,
    /// Number of bars.
    pub bars: i64,
    /// First bar's open time.
    pub first: DateTime<Utc>,
    /// Last bar's open time.
    pub last: DateTime<Utc>,
}
/// A connection pool to the configured database. Its `Debug` shows the URL without password.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
    url: String,
    schema: Option<String>,
    /// SQLite: direct read-only connections for scans.
    direct: Option<std::sync::Arc<sqlite::Direct>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// How a connection may use the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Read and write; a SQLite file (and its folder) is created when missing.
    Create,
    /// Read and write an existing database; nothing is created.
    Existing,
    /// Read only.
    ReadOnly,
}

#[derive(Clone, Debug)]
enum Inner {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression on whichever pool the store has (for statements whose text and
/// binds are the same on both backends).
macro_rules! on_pool {
    ($inner:expr, $p:ident => $body:expr) => {
        match $inner {
            Inner::Sqlite($p) => $body,
            Inner::Postgres($p) => $body,
        }
    };
}

impl Store {
    /// Connects to the database named by `config.url`; the scheme picks the backend.
    /// A SQLite file and its folder are created on first use (as `migrate` needs).
    pub async fn connect(config: &DatabaseConfig) -> Result<Self> {
        Self::open(config, Access::Create).await
    }

    /// Connects to a database that `quiver migrate` has brought up to date, creating nothing:
    /// [`Error::NotMigrated`] when a SQLite file is not there, or when a migration of this
    /// build is not applied (quiver's tables missing or older).
    pub async fn connect_migrated(config: &DatabaseConfig) -> Result<Self> {
        let store = Self::open(config, Access::Existing).await?;
        let applied = store.applied_migrations().await?;
        let missing: Vec<i64> = migrations::versions(store.backend())
            .into_iter()
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            return Ok(store);
        }
        let detail = if applied.is_empty() {
            NO_TABLES.to_string()
        } else {
            let list: Vec<String> = missing.iter().map(i64::to_string).collect();
            format!("lacks migration {}", list.join(", "))
        };
        store.close().await;
        Err(Error::NotMigrated {
            database: store.described(),
            detail,
        })
    }

    /// `e`, an error of a statement on this database, as [`Error::NotMigrated`] when the
    /// database has none of quiver's migrations applied: a caller that connected with
    /// [`Store::connect`] and wrote before migrating (Python's `Store`) gets the advice the
    /// command line gives before it starts. Any other error is returned as it is.
    pub async fn explain_unmigrated(&self, e: Error) -> Error {
        let from_database = matches!(e, Error::Database { .. } | Error::Sqlite { .. });
        if from_database
            && self
                .applied_migrations()
                .await
                .is_ok_and(|applied| applied.is_empty())
        {
            return Error::NotMigrated {
                database: self.described(),
                detail: NO_TABLES.into(),
            };
        }
        e
    }

    /// Connects for reading only: a SQLite file opened read-only (and `query_only`), PostgreSQL
    /// sessions whose transactions are read-only, so no statement or function can write
    /// through it (the shell's `live.market_data`).
    pub async fn connect_read_only(config: &DatabaseConfig) -> Result<Self> {
        Self::open(config, Access::ReadOnly).await
    }

    async fn open(config: &DatabaseConfig, access: Access) -> Result<Self> {
        let url = config.url.as_str();
        let connecting = || format!("connecting to {}", redact_url(url));
        let inner = if url.starts_with("sqlite:") {
            Inner::Sqlite(sqlite::connect(url, access).await.context(connecting)?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Inner::Postgres(
                postgres::connect(config, access == Access::ReadOnly)
                    .await
                    .context(connecting)?,
            )
        } else {
            return Err(Error::Config {
                path: "database.url".into(),
                message: format!(
                    "{:?} is neither sqlite://… nor postgres://…",
                    redact_url(url)
                ),
            });
        };
        tracing::debug!(url = %redact_url(url), ?access, "connected");
        let direct = match &inner {
            Inner::Sqlite(p) => Some(std::sync::Arc::new(sqlite::Direct::new(p))),
            Inner::Postgres(_) => None,
        };
        Ok(Store {
            inner,
            url: config.url.clone(),
            schema: config.schema.clone(),
            direct,
        })
    }

    /// Closes every connection, waiting for those in use to come back. On SQLite the last
    /// connection to close checkpoints the write-ahead log into the database file, so a copy
    /// of the file alone holds every row; commands and the daemon call this before exiting.
    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite(p) => {
                if let Some(direct) = &self.direct {
                    direct.close();
                }
                p.close().await
            }
            Inner::Postgres(p) => p.close().await,
        }
    }

    /// The database as messages name it: the URL without its password, and the schema.
    pub fn described(&self) -> String {
        match &self.schema {
            Some(schema) => format!("database {} (schema {schema})", self.redacted_url()),
            None => format!("database {}", self.redacted_url()),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// The database URL with the password removed.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The configured PostgreSQL schema, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The database file, when the backend is SQLite (its `-wal` file sits beside it).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        use std::str::FromStr;
        match self.inner {
            Inner::Sqlite(_) => sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
                .ok()
                .map(|o| o.get_filename().to_path_buf()),
            Inner::Postgres(_) => None,
        }
    }

    /// The SQLite pool, when the backend is SQLite.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.inner {
            Inner::Sqlite(p) => Some(p),
            Inner::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when the backend is PostgreSQL.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.inner {
            Inner::Postgres(p) => Some(p),
            Inner::Sqlite(_) => None,
        }
    }

    /// Applies every pending migration; returns the versions applied now (none when up to date).
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let migrator = migrator(self.backend());
        let before = self.applied_migrations().await?;
        match &self.inner {
            Inner::Sqlite(p) => migrator.run(p).await?,
            Inner::Postgres(p) => {
                postgres::ensure_schema(p, self.schema.as_deref()).await?;
                migrator.run(p).await?
            }
        }
        let after = self.applied_migrations().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// Reverts the most recently applied migration; returns its version, or `None` when
    /// nothing is applied.
    pub async fn revert(&self) -> Result<Option<i64>> {
        let applied = self.applied_migrations().await?;
        let Some(&last) = applied.last() else {
            return Ok(None);
        };
        let target = applied.iter().rev().nth(1).copied().unwrap_or(0);
        let migrator = migrator(self.backend());
        match &self.inner {
            Inner::Sqlite(p) => migrator.undo(p, target).await?,
            Inner::Postgres(p) => migrator.undo(p, target).await?,
        }
        Ok(Some(last))
    }

    /// Versions of the migrations applied to this database, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::applied_migrations(p).await,
            Inner::Postgres(p) => postgres::applied_migrations(p).await,
        }
    }

    /// Starts an all-or-nothing bulk write: nothing is visible to others until
    /// [`BarWriter::commit`], and dropping the writer discards everything written through it.
    pub async fn writer(&self, policy: OnConflict) -> Result<BarWriter> {
        let begin = "starting a write";
        Ok(BarWriter {
            inner: match &self.inner {
                Inner::Sqlite(p) => WriterInner::Sqlite(
                    sqlite::Writer::begin(p, policy)
                        .await
                        .context(|| begin.into())?,
                ),
                Inner::Postgres(p) => WriterInner::Postgres(
                    postgres::Writer::begin(p, policy)
                        .await
                        .context(|| begin.into())?,
                ),
            },
            received: 0,
        })
    }

    /// Writes `bars` in one transaction with the given conflict policy.
    pub async fn insert_bars(&self, bars: &[Bar], policy: OnConflict) -> Result<WriteReport> {
        let mut writer = self.writer(policy).await?;
        writer.write(bars).await?;
        writer.commit().await
    }

    /// Deletes the bars matching `filter`; returns how many were deleted.
    pub async fn delete_bars(&self, filter: &BarFilter) -> Result<u64> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::delete(p, filter).await,
            Inner::Postgres(p) => postgres::delete(p, filter).await,
        }
        .context(|| "deleting bars".into())
    }

    /// Counts the bars matching `filter`, per timeframe (ordered by name).
    pub async fn count_bars(&self, filter: &BarFilter) -> Result<Vec<(String, i64)>> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::count(p, filter).await,
            Inner::Postgres(p) => postgres::count(p, filter).await,
        }
        .context(|| "counting bars".into())
    }

    /// Reads the bars matching `filter`, ordered by `(symbol, timeframe, ts)`.
    pub async fn read_bars(&self, filter: &BarFilter) -> Result<Vec<Bar>> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::read(p, filter).await,
            Inner::Postgres(p) => postgres::read(p, filter).await,
        }
        .context(|| "reading bars".into())
    }

    /// Number of bars, first and last open time of every series, ordered by symbol and timeframe.
    pub async fn summary(&self) -> Result<Vec<SeriesSummary>> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::summary(p).await,
            Inner::Postgres(p) => postgres::summary(p).await,
        }
        .context(|| "summarising the series".into())
    }

    /// The changes committed after `since`, and the position that follows them.
    ///
    /// Reading the table afterwards (in any later transaction) and applying what it holds for
    /// these days brings a mirror up to `next` at least; a change that commits meanwhile is
    /// reported again by the next call, never lost. On SQLite this closes the open epoch with a
    /// short write, but only when there is something to close.
    pub async fn changes_since(&self, since: &FeedPosition) -> Result<ChangeBatch> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::changes_since(p, since).await,
            Inner::Postgres(p) => postgres::changes_since(p, since).await,
        }
        .context(|| "reading the change log".into())
    }

    /// Forgets log entries that `position` has consumed (PostgreSQL; SQLite's log keeps one
    /// row per day and needs no pruning). Call it only after the position is durably recorded.
    pub async fn prune_changes(&self, position: &FeedPosition) -> Result<u64> {
        match (&self.inner, position) {
            (Inner::Postgres(p), FeedPosition::Postgres { xmin, .. }) => postgres::prune(p, *xmin)
                .await
                .context(|| "pruning the change log".into()),
            _ => Ok(0),
        }
    }

    /// Streams rows in the cache's representation (see [`Scan`] for the order).
    pub fn scan(&self, scan: Scan) -> ScanStream<'_> {
        match &self.inner {
            Inner::Sqlite(p) => match &self.direct {
                Some(direct) => sqlite::scan(p, direct, scan),
                None => sqlite::scan_sqlx(p, scan),
            },
            Inner::Postgres(p) => postgres::scan(p, scan),
        }
    }

    /// Number of bars in the table.
    pub async fn count_rows(&self) -> Result<u64> {
        const COUNT: &str = "SELECT count(*) FROM market_data";
        let n: i64 = on_pool!(&self.inner, p => sqlx::query_scalar(COUNT).fetch_one(p).await)
            .map_err(Error::from)
            .context(|| "counting market_data".into())?;
        Ok(n.max(0) as u64)
    }

    /// Number of change-log entries committed after `position` (what a mirror at that
    /// position still has to apply), without consuming anything.
    pub async fn pending_changes(&self, position: &FeedPosition) -> Result<u64> {
        let n: Result<i64> = match (&self.inner, position) {
            (Inner::Sqlite(p), FeedPosition::Sqlite { epoch }) => {
                sqlx::query_scalar("SELECT count(*) FROM market_data_changes WHERE epoch > ?")
                    .bind(epoch)
                    .fetch_one(p)
                    .await
                    .map_err(Error::from)
            }
            (Inner::Postgres(p), FeedPosition::Postgres { xmin, done }) => sqlx::query_scalar(
                "SELECT count(*) FROM market_data_changes \
                 WHERE txid >= $1::text::xid8 AND NOT (txid::text::bigint = ANY($2))",
            )
            .bind(xmin)
            .bind(done)
            .fetch_one(p)
            .await
            .map_err(Error::from),
            // No position of this backend yet: everything logged is pending.
            (inner, _) => {
                const ALL: &str = "SELECT count(*) FROM market_data_changes";
                on_pool!(inner, p => sqlx::query_scalar(ALL).fetch_one(p).await)
                    .map_err(Error::from)
            }
        };
        Ok(n.context(|| "counting pending changes".into())?.max(0) as u64)
    }

    /// Every entry of the change log, in no particular order and whatever has been consumed:
    /// what a sync pass would have to look at if it started from nothing.
    pub async fn change_log(&self) -> Result<Vec<ChangedDay>> {
        match &self.inner {
            Inner::Sqlite(p) => sqlite::change_log(p).await,
            Inner::Postgres(p) => postgres::change_log(p).await,
        }
        .context(|| "reading the change log".into())
    }
}

/// An open all-or-nothing bulk write (see [`Store::writer`]).
pub struct BarWriter {
    inner: WriterInner,
    received: u64,
}

enum WriterInner {
    Sqlite(sqlite::Writer),
    Postgres(postgres::Writer),
}

impl BarWriter {
    /// Sends a batch of bars; call as often as needed, then [`BarWriter::commit`]. Every bar
    /// is checked against DESIGN.md §1 first, exactly (the database's own CHECKs compare
    /// floats); a bar that breaks a rule fails the batch before any of it is sent, naming
    /// its row (counted across the writer's batches) and field.
    pub async fn write(&mut self, bars: &[Bar]) -> Result<()> {
        for (i, bar) in bars.iter().enumerate() {
            if let Err(v) = bar.check() {
                return Err(Error::Row {
                    origin: "bars to write".into(),
                    row: self.received + i as u64,
                    field: v.field.into(),
                    message: format!(
                        "{} (bar {} {} {})",
                        v.message,
                        bar.symbol,
                        bar.timeframe,
                        crate::model::format_ts(&bar.ts)
                    ),
                });
            }
        }
        self.received += bars.len() as u64;
        match &mut self.inner {
            WriterInner::Sqlite(w) => w.write(bars).await,
            WriterInner::Postgres(w) => w.write(bars).await,
        }
        .context(|| "writing bars".into())
    }

    /// Makes everything written visible at once.
    pub async fn commit(self) -> Result<WriteReport> {
        let written = match self.inner {
            WriterInner::Sqlite(w) => w.commit().await,
            WriterInner::Postgres(w) => w.commit().await,
        }
        .context(|| "committing bars".into())?;
        Ok(WriteReport {
            received: self.received,
            written,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_every_value_in_placeholder_order() {
        let all = FilterSql::new(&BarFilter::default(), '$');
        assert_eq!((all.clause.as_str(), all.values.len()), (" WHERE true", 0));
        let (t0, t1) = (
            DateTime::from_timestamp(0, 0).unwrap(),
            DateTime::from_timestamp(60, 0).unwrap(),
        );
        let filter = BarFilter {
            symbol: Some(Symbol::parse("AAPL").unwrap()),
            timeframe: None,
            start: Some(t0),
            end: Some(t1),
        };
        let pg = FilterSql::new(&filter, '$');
        assert_eq!(
            pg.clause,
            " WHERE true AND symbol = $1 AND ts >= $2 AND ts <= $3"
        );
        assert_eq!(
            pg.values,
            [
                FilterValue::Text("AAPL".into()),
                FilterValue::Ts(t0),
                FilterValue::Ts(t1)
            ]
        );
        let only_end = BarFilter {
            end: Some(t1),
            ..BarFilter::default()
        };
        assert_eq!(
            FilterSql::new(&only_end, '?').clause,
            " WHERE true AND ts <= ?1"
        );
    }
}
