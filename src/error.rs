//! The library's one error type.
//!
//! Every fallible call in quiver returns [`Result`]. Variants carry enough context (file, line,
//! field) for the binary to print a one-line cause, and [`Error::exit_code`] maps each variant to
//! the exit status promised in DESIGN.md §2.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in quiver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line argument or API argument is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),

    /// The configuration file or an environment override is invalid.
    #[error("configuration {path}: {message}")]
    Config {
        /// The file (or variable) that holds the bad value.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// A row of an input file is invalid; nothing was written.
    #[error("{file}:{line}: {field}: {message}")]
    Input {
        /// The input file.
        file: PathBuf,
        /// 1-based line number in that file.
        line: u64,
        /// The field (column) at fault, or `row` for the row as a whole.
        field: String,
        /// Why the value was rejected.
        message: String,
    },

    /// A row of a frame (Arrow data from Python, a Parquet file) is invalid; nothing was
    /// written.
    #[error("{origin}: row {row}: {field}: {message}")]
    Row {
        /// Where the rows came from (`frame`, or the file).
        origin: String,
        /// 0-based row index across the frame's batches.
        row: u64,
        /// The column at fault.
        field: String,
        /// Why the value was rejected.
        message: String,
    },

    /// A file could not be understood as a whole (unknown format, unreadable header).
    #[error("{file}: {message}")]
    Format {
        /// The input file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A bar already exists and the conflict policy is `error`; nothing was written.
    #[error(
        "bar {symbol} {timeframe} {ts} already exists (use --on-conflict skip or replace); nothing was written"
    )]
    Conflict {
        /// Symbol of the existing bar.
        symbol: String,
        /// Timeframe of the existing bar.
        timeframe: String,
        /// Timestamp of the existing bar, RFC 3339.
        ts: String,
    },

    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The database rejected a statement or could not be reached, while doing `what` (the
    /// operation of the store that failed, when known).
    #[error("database: {}{source}", what.as_deref().map(|w| format!("{w}: ")).unwrap_or_default())]
    Database {
        /// The store's operation: `reading the change log`, `writing bars`, ...
        what: Option<String>,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// Reading SQLite directly (the sync pass's fast scans) failed while doing `what`.
    #[error("database: {what}: {source}")]
    Sqlite {
        /// What the scan was doing: opening the file, reading market_data.
        what: String,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },

    /// Building or formatting Arrow data failed: what was being built (a partition's rows, a
    /// checkpoint, a result for output), and why.
    #[error("{what}: arrow: {source}")]
    Arrow {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },

    /// A DataFusion query over the cache failed.
    #[error("query: {0}")]
    DataFusion(datafusion::error::DataFusionError),

    /// `quiver sql` was asked to write.
    #[error(
        "quiver sql is read-only: {0} is refused; write to the database (quiver import, \
         quiver delete or its own client) and `quiver sync` mirrors it"
    )]
    ReadOnly(String),

    /// A statement of a script failed: where it starts, and why.
    #[error("{origin}:{line}: {inner}")]
    At {
        /// The script: a file name, `-c` or `<stdin>`.
        origin: String,
        /// Line where the failing statement starts (1-based).
        line: usize,
        /// The error.
        inner: Box<Error>,
    },

    /// The database lacks quiver's tables (or one of their migrations).
    #[error("{database} {detail}; run `quiver migrate` first")]
    NotMigrated {
        /// The database, its password removed.
        database: String,
        /// What is missing.
        detail: String,
    },

    /// The cache has no published version yet.
    #[error("the cache in {} is empty; run `quiver sync` first", dir.display())]
    EmptyCache {
        /// The cache folder.
        dir: PathBuf,
    },

    /// The cache holds no bars of this series.
    #[error("{}", unknown_series(symbol, timeframe, timeframes))]
    UnknownSeries {
        /// The symbol asked for.
        symbol: String,
        /// The timeframe asked for.
        timeframe: String,
        /// The timeframes the cache does hold for the symbol (empty: an unknown symbol).
        timeframes: Vec<String>,
    },

    /// A range whose start is after its end.
    #[error("start {start} is after end {end}")]
    InvalidRange {
        /// The start, RFC 3339.
        start: String,
        /// The end, RFC 3339.
        end: String,
    },

    /// The series has no bar in the requested range.
    #[error("{0}")]
    EmptyRange(Box<EmptyRange>),

    /// Encoding or decoding Parquet failed: the file or partition, and why.
    #[error("{what}: parquet: {source}")]
    Parquet {
        /// The file or partition, and what was being done to it.
        what: String,
        /// The underlying error.
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },

    /// Applying or reverting migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Reading or writing the cache's storage (local disk or an object store) failed.
    #[error("{path}: {source}")]
    Storage {
        /// The object or file, relative to the cache's Delta table.
        path: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },

    /// The Delta log holds something quiver cannot read (a torn or foreign entry, a table
    /// feature it does not support).
    #[error("{path}: {message}")]
    DeltaLog {
        /// The log entry.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// Another writer committed the version this one tried to commit: two syncers on one cache.
    #[error(
        "version {version} of {table} was committed by another writer ({other}); only one \
         `quiver sync` may write a cache: this one stops"
    )]
    CommitConflict {
        /// The Delta table.
        table: String,
        /// The version both tried to commit.
        version: u64,
        /// Who committed it, as its commit says (`quiver on <host> pid <pid>`), when known.
        other: String,
    },

    /// A version asked for by `--as-of` is not (or no longer) in the table.
    #[error("{0}")]
    NoSuchVersion(String),

    /// Data that is not what quiver wrote or accepts: a row of the database (written by another
    /// client), a file of the cache. The message names the row or the file.
    #[error("{0}")]
    Corrupt(String),

    /// An invariant of quiver itself does not hold: a bug, whatever the input.
    #[error("internal error (a bug in quiver; please report it): {0}")]
    Internal(String),
}

/// What [`Error::EmptyRange`] reports: the range asked for and what the cache holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no {timeframe} bars of {symbol} from {start} to {end}; the cache holds them from {first} to {last}"
)]
pub struct EmptyRange {
    /// Instrument.
    pub symbol: String,
    /// Bar length.
    pub timeframe: String,
    /// The range's start as asked (RFC 3339).
    pub start: String,
    /// The range's end as asked (RFC 3339).
    pub end: String,
    /// The series' first bar in the cache.
    pub first: String,
    /// The series' last bar in the cache.
    pub last: String,
}

fn unknown_series(symbol: &str, timeframe: &str, timeframes: &[String]) -> String {
    if timeframes.is_empty() {
        format!(
            "no bars of {symbol} in the cache (unknown symbol; `quiver series` lists what is there)"
        )
    } else {
        format!(
            "no {timeframe} bars of {symbol} in the cache; it holds {symbol} in {}",
            timeframes.join(", ")
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        Error::Database { what: None, source }
    }
}

/// Names what was being done when a call failed: `.context(|| ...)?`. On an Arrow, Parquet or
/// rusqlite error it wraps the error with `what`; on quiver's own result it records `what` as
/// the operation of a database error that has none yet (other errors pass unchanged).
pub(crate) trait Context<T> {
    /// The error, wrapped with `what` (called only on failure).
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            Error::Database { what: None, source } => Error::Database {
                what: Some(what()),
                source,
            },
            other => other,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, datafusion::arrow::error::ArrowError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Arrow {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sqlite {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, datafusion::parquet::errors::ParquetError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Parquet {
            what: what(),
            source,
        })
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    /// Unwraps quiver's own errors that travelled through DataFusion (from inside a table
    /// scan or a stream), so they keep their type.
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError;
        match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::DataFusion(DataFusionError::External(other)),
            },
            other => Error::DataFusion(other),
        }
    }
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}

impl Error {
    /// Builds an [`Error::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this is a write to a closed pipe (`quiver bars … | head`): the reader has
    /// what it wanted, so the command ends quietly.
    pub fn is_broken_pipe(&self) -> bool {
        use datafusion::arrow::error::ArrowError;
        let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
        match self {
            Error::At { inner, .. } => inner.is_broken_pipe(),
            Error::Io { source, .. } => broken(source),
            Error::Arrow {
                source: ArrowError::IoError(_, e),
                ..
            } => broken(e),
            _ => false,
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::Corrupt(message.into())
    }

    /// Builds an [`Error::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// The process exit status for this error (DESIGN.md §2; 1, a failed check, is the
    /// commands' own): 2 for a mistake of the user's (bad usage, bad input, a file or series
    /// that is not there, a query that does not plan), 3 for a fault that no change of the
    /// command line mends (the database or the storage failing, corrupt data, a commit lost
    /// to another writer, a bug).
    pub fn exit_code(&self) -> u8 {
        use datafusion::error::DataFusionError as D;
        match self {
            Error::At { inner, .. } => inner.exit_code(),
            Error::InvalidArgument(_)
            | Error::Config { .. }
            | Error::Input { .. }
            | Error::Row { .. }
            | Error::Format { .. }
            | Error::Conflict { .. }
            | Error::Io { .. }
            | Error::ReadOnly(_)
            | Error::EmptyCache { .. }
            | Error::NotMigrated { .. }
            | Error::UnknownSeries { .. }
            | Error::InvalidRange { .. }
            | Error::EmptyRange(_)
            | Error::NoSuchVersion(_) => 2,
            Error::DataFusion(e) => match e.find_root() {
                D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_) => 2,
                _ => 3,
            },
            Error::Database { .. }
            | Error::Sqlite { .. }
            | Error::Arrow { .. }
            | Error::Parquet { .. }
            | Error::Migrate(_)
            | Error::Storage { .. }
            | Error::DeltaLog { .. }
            | Error::CommitConflict { .. }
            | Error::Corrupt(_)
            | Error::Internal(_) => 3,
        }
    }
}
