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

    /// The database rejected a statement or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// Reading SQLite directly (the fast full-table scan) failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// Building or formatting Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// A DataFusion query over the cache failed.
    #[error("query: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Writing or reading a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// Applying or reverting migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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

    /// The process exit status for this error: 2 (bad usage, bad input, or failure to run).
    pub fn exit_code(&self) -> u8 {
        2
    }
}
