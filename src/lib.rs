//! # quiver
//!
//! quiver keeps an SQL `market_data` table of OHLCV bars (SQLite or PostgreSQL, the source of
//! truth for every write and migration) mirrored as a columnar cache of partitioned Parquet
//! files, so backtests and analysts read years of bars in milliseconds.
//!
//! The library is the product; the `quiver` binary is a thin shell over it:
//!
//! - [`config`]: layered configuration (defaults, `config.toml`, `QUIVER_*`, flags).
//! - [`model`]: symbols, timeframes, bars, exact decimals and timestamps, with validation.
//! - [`db`]: the SQL store: migrations, bulk writes with conflict policies, deletes, reads and
//!   the change log that the sync daemon consumes.
//! - [`import`]: Yahoo, backtrader, Binance and CSV files, all-or-nothing; [`frame`]: bars
//!   from Arrow data of other tools (Python frames), with the same checks.
//! - [`generate`]: deterministic synthetic bars for benchmarks and tests.
//! - [`feed`]: the change feed's types: changed days and positions.
//! - [`delta`]: the Delta Lake log: actions, create-only commits, checkpoints.
//! - [`cache`]: the cache on disk: `market_data` as a Delta table, and the plain view.
//! - [`read`]: range reads with exact warmup, streams, merged series and the latest bar, and
//!   `market_data` as a DataFusion table; [`functions`]: SQL functions for bar work.
//! - [`sql`]: the `quiver sql` shell: SQL over the cache and, read-only, the live table.
//! - [`sync`]: one sync pass, `status` and `verify`; [`daemon`]: `sync --watch`.
//!
//! ```no_run
//! # async fn demo() -> quiver::Result<()> {
//! use quiver::{Config, Store, OnConflict};
//! let config = Config::load(None)?;
//! let store = Store::connect(&config.database).await?;
//! store.migrate().await?;
//! let bars = quiver::generate::generate_vec(&quiver::generate::GenerateOptions::new(
//!     1, 5, "1m".parse()?, 42,
//! ))?;
//! let report = store.insert_bars(&bars, OnConflict::Skip).await?;
//! println!("{} bars written", report.written);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod cache;
pub mod cli;
pub mod config;
pub mod copy;
pub mod daemon;
pub mod db;
pub mod delta;
pub mod error;
mod failpoint;
pub mod feed;
pub mod frame;
pub mod functions;
pub mod generate;
pub mod import;
pub mod metrics;
pub mod model;
pub mod output;
pub mod progress;
pub mod quickstart;
pub mod read;
pub mod sql;
pub mod sync;

pub use config::Config;
pub use db::{BarFilter, OnConflict, SeriesSummary, Store, WriteReport};
pub use error::{Error, Result};
pub use model::{Bar, Symbol, Timeframe};
pub use sync::Syncer;

/// The Arrow, Parquet and DataFusion versions quiver is built with, so users never align
/// versions by hand.
pub use datafusion::{self, arrow, parquet};
