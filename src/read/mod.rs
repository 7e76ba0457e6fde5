//! Reading bars from the cache: the library API backtests call, and `market_data` as a
//! DataFusion table for SQL.
//!
//! A [`Reader`] is cheap to clone and meant to live as long as the program: it keeps the
//! table's newest version (its live files and their statistics), the open partition files (memory-mapped by default) and their
//! parsed footers and page indexes, and a DataFusion session with `market_data` registered.
//! Every query takes the version published at that moment, so a reader sees what the daemon
//! publishes on its next query; a query in flight keeps its own version to the end.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> quiver::Result<()> {
//! use quiver::model::parse_time_arg;
//! use quiver::read::{BarsRequest, Reader};
//! # use quiver::{Config, OnConflict, Store, Syncer};
//! # // A cache to read: five days of one symbol's minute bars, synced from SQLite.
//! # let dir = tempfile::tempdir().map_err(|e| quiver::Error::io("temp dir", e))?;
//! # let mut config = Config::default();
//! # config.database.url = format!("sqlite://{}", dir.path().join("market.db").display());
//! # config.cache.dir = dir.path().join("cache");
//! # let store = Store::connect(&config.database).await?;
//! # store.migrate().await?;
//! # let options = quiver::generate::GenerateOptions::new(1, 5, "1m".parse()?, 42);
//! # store.insert_bars(&quiver::generate::generate_vec(&options)?, OnConflict::Error).await?;
//! # Syncer::new(store, &config.cache, None)?.pass(false).await?;
//!
//! // `config` as `Config::load(None)?` gives it: config.toml, QUIVER_* variables.
//! let reader = Reader::open(&config)?;
//! // The 200 bars before 2024-01-03T14:30Z, then the next 1000: a strategy's warmup and run.
//! let request = BarsRequest::new("SYM001".parse()?, "1m".parse()?)
//!     .with_start(parse_time_arg("2024-01-03T14:30:00Z", false)?)
//!     .with_warmup(200)
//!     .with_limit(1000);
//! let bars = reader.bars(&request).await?;
//! assert_eq!((bars.warmup, bars.len()), (200, 1200));
//! for bar in bars.to_bars()?.iter().skip(bars.warmup).take(3) {
//!     println!("{} {} close {}", bar.symbol, bar.ts, bar.close);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Range reads need no SQL planning: the warmup's first page and the limit's last page are
//! found from the page index of `ts`, so a read decodes the pages holding its bars and little
//! else, with the Parquet crate's reader: a small read file after file, a large one several
//! files at once on every core. Merged reads decode each series on a task of its own and merge
//! them by `ts` (see `merge`).

mod direct;
mod files;
pub(crate) mod filter;
mod merge;
mod plan;
mod request;
mod scan;
mod stream;
mod table;
mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::config::TableParquetOptions;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures_util::stream::StreamExt;

pub use files::{FileCache, FileCacheStats, OpenFile, TsPage};
pub use request::{Bars, BarsRequest, decode_bars};
pub use stream::BarStream;
use stream::require_some_range;
pub use table::CacheTable;
pub use versions::{LoadedVersion, Versions};

use crate::cache::{AsOf, Cache, TABLE, schema};
use crate::config::{Config, IoMode, ReadConfig};
use crate::db::SeriesSummary;
use crate::error::{Error, Result};
use crate::model::{Symbol, Timeframe, format_ts, ts_from_micros};

/// Index of `ts` among the cache's columns.
const TS: usize = 2;
/// Above this many rows a read decodes its files on every core, delivered in order; up to it,
/// file after file on the calling task (a thread hand-off costs more than a small read).
const PARALLEL_ROWS: u64 = 32_768;

/// How a [`Reader`] reads (the `[read]` section of the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Memory maps or plain reads.
    pub io: IoMode,
    /// Partition files kept open (with their parsed metadata) between queries.
    pub open_files: usize,
    /// Queries slower than this are logged at warn level.
    pub slow_query: Duration,
    /// Parallel partitions of a scan; 0 for one per core.
    pub target_partitions: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions::from(&ReadConfig::default())
    }
}

impl From<&ReadConfig> for ReadOptions {
    fn from(c: &ReadConfig) -> Self {
        ReadOptions {
            io: c.io,
            open_files: c.open_files,
            slow_query: c.slow_query,
            target_partitions: 0,
        }
    }
}

/// What a reader has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    /// Range and latest-bar reads served.
    pub queries: u64,
    /// Of those, slower than `read.slow_query`.
    pub slow_queries: u64,
    /// The open-file cache.
    pub files: FileCacheStats,
}

struct Inner {
    versions: Arc<Versions>,
    files: Arc<FileCache>,
    ctx: SessionContext,
    parquet: TableParquetOptions,
    options: ReadOptions,
    queries: AtomicU64,
    slow_queries: AtomicU64,
}

/// Reads bars from a cache folder. Clones share everything (files, metadata, session).
#[derive(Clone)]
pub struct Reader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("cache", self.inner.versions.cache())
            .field("options", &self.inner.options)
            .finish()
    }
}

fn ts_literal(micros: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

/// One series' part of a read, planned: where its batches come from and what to keep of them.
struct SeriesScan {
    source: SeriesSource,
    window: SeriesWindow,
}

/// The rows a series scan keeps: its warmup, range and limit.
struct SeriesWindow {
    /// Rows below this are not wanted (before the warmup).
    lo: i64,
    /// First instant of the range.
    start: i64,
    /// Last instant of the range (inclusive).
    end: i64,
    warmup: usize,
    limit: usize,
    /// For the error when the range holds no bar.
    request: BarsRequest,
    first_last: (i64, i64),
}

/// Where a series scan's batches come from.
enum SeriesSource {
    /// A DataFusion Parquet scan (large reads, decoded on every core; files of other types).
    Plan(Arc<dyn ExecutionPlan>),
    /// The Parquet crate's reader on the cache's own files: file after file on the calling
    /// task, or `parallel`, several files at once on blocking threads.
    Direct {
        files: Vec<direct::DirectFile>,
        parallel: bool,
    },
}

impl Reader {
    /// A reader of the cache under `cache` with default options.
    pub fn new(cache: Cache) -> Result<Reader> {
        Reader::with_options(cache, ReadOptions::default())
    }

    /// A reader of the configured cache, with the configured `[read]` options.
    pub fn open(config: &Config) -> Result<Reader> {
        Reader::with_options(
            Cache::new(&config.cache.dir),
            ReadOptions::from(&config.read),
        )
    }

    /// A reader of the cache under `cache`.
    pub fn with_options(cache: Cache, options: ReadOptions) -> Result<Reader> {
        let versions = Arc::new(Versions::new(cache));
        let files = Arc::new(FileCache::new(options.open_files, options.io));
        let mut config = SessionConfig::new().with_information_schema(true);
        // quiver writes no bloom filters: looking for them cost 25 µs per file and query.
        config.options_mut().execution.parquet.bloom_filter_on_read = false;
        if options.target_partitions > 0 {
            config = config.with_target_partitions(options.target_partitions);
        }
        let ctx = SessionContext::new_with_config(config);
        crate::functions::register(&ctx);
        let table = CacheTable::new(versions.clone(), files.clone());
        ctx.register_udtf(
            "market_data_as_of",
            Arc::new(table::AsOfFunction::new(table.as_of(AsOf::Latest))),
        );
        ctx.register_table(TABLE, Arc::new(table))?;
        let parquet = ctx.state().table_options().parquet.clone();
        Ok(Reader {
            inner: Arc::new(Inner {
                versions,
                files,
                ctx,
                parquet,
                options,
                queries: AtomicU64::new(0),
                slow_queries: AtomicU64::new(0),
            }),
        })
    }

    /// The DataFusion session, with the cache registered as `market_data`: run any SQL on it.
    pub fn context(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// The cache folder.
    pub fn cache(&self) -> &Cache {
        self.inner.versions.cache()
    }

    /// The options in use.
    pub fn options(&self) -> &ReadOptions {
        &self.inner.options
    }

    /// The newest version (`None` before the first sync).
    pub async fn current_version(&self) -> Result<Option<Arc<LoadedVersion>>> {
        self.inner.versions.current().await
    }

    /// The version `as_of` names (time travel), or the newest.
    pub async fn version_at(&self, as_of: AsOf) -> Result<Arc<LoadedVersion>> {
        self.inner
            .versions
            .at(as_of)
            .await?
            .ok_or_else(|| Error::EmptyCache {
                dir: self.cache().root().to_path_buf(),
            })
    }

    /// Counters since the reader was opened.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            queries: self.inner.queries.load(Ordering::Relaxed),
            slow_queries: self.inner.slow_queries.load(Ordering::Relaxed),
            files: self.inner.files.stats(),
        }
    }

    /// Bars of a series in a range, after exactly `warmup` bars before it (fewer only where
    /// the series starts later), across partition and year boundaries.
    ///
    /// Errors: [`Error::InvalidRange`] when `start > end`, [`Error::UnknownSeries`] when the
    /// cache holds no such series, [`Error::EmptyRange`] when the range holds no bar,
    /// [`Error::EmptyCache`] before the first sync.
    pub async fn bars(&self, request: &BarsRequest) -> Result<Bars> {
        self.open_stream(request, true).await?.collect_bars().await
    }

    /// [`Reader::bars`] as a stream of record batches that never holds the range in memory:
    /// the warmup bars (at most `warmup` rows are buffered), then the range as it is decoded.
    pub async fn stream(&self, request: &BarsRequest) -> Result<BarStream> {
        self.open_stream(request, false).await
    }

    /// A series read; `whole` when the caller collects everything anyway, so every partition
    /// may decode ahead instead of waiting for the one before it to be consumed.
    async fn open_stream(&self, request: &BarsRequest, whole: bool) -> Result<BarStream> {
        let started = Instant::now();
        request.check()?;
        let version = self.version_at(request.as_of).await?;
        let scan = self.plan_series(&version, request, true)?;
        let start = request.start.map(|t| t.timestamp_micros());
        let stream = self.run_series(scan, true, whole)?;
        Ok(BarStream::new(stream, start, self.clone(), started))
    }

    /// Several series merged into one stream in `(ts, symbol, timeframe)` order, each with its
    /// own warmup and limit: what a portfolio backtest replays. A series with no bar in its
    /// range contributes only its warmup; the read fails with [`Error::EmptyRange`] only when
    /// no series has a bar in range.
    pub async fn bars_merged(&self, requests: &[BarsRequest]) -> Result<Bars> {
        self.stream_merged(requests).await?.collect_bars().await
    }

    /// [`Reader::bars_merged`] as a stream.
    pub async fn stream_merged(&self, requests: &[BarsRequest]) -> Result<BarStream> {
        let started = Instant::now();
        let Some(first) = requests.first() else {
            return Err(Error::invalid("a merged read needs at least one series"));
        };
        let version = self.version_at(first.as_of).await?;
        if let Some(other) = requests.iter().find(|r| r.as_of != first.as_of) {
            return Err(Error::invalid(format!(
                "a merged read is of one version: {:?} and {:?} differ",
                first.as_of, other.as_of
            )));
        }
        let mut streams = Vec::with_capacity(requests.len());
        let mut scans = Vec::with_capacity(requests.len());
        for request in requests {
            request.check()?;
            scans.push(self.plan_series(&version, request, false)?);
        }
        let wanted: usize = scans
            .iter()
            .map(|s| s.window.limit)
            .fold(0, usize::saturating_add);
        let range_of = (first.clone(), scans[0].window.first_last);
        for scan in scans {
            streams.push(self.run_series(scan, false, false)?);
        }
        let start = requests
            .iter()
            .map(|r| r.start.map(|t| t.timestamp_micros()))
            .min()
            .flatten();
        let merged = if streams.len() == 1 {
            streams.remove(0)
        } else {
            // Each series decodes ahead on its own task, so the merge waits on none of them
            // and the series decode on every core.
            let inputs = streams.into_iter().map(|s| prefetch(s, 2)).collect();
            let batch_size = self.inner.ctx.task_ctx().session_config().batch_size();
            Box::pin(merge::Merge::new(
                schema(),
                inputs,
                series_ranks(requests),
                batch_size,
            ))
        };
        let checked = require_some_range(merged, start, wanted > 0, range_of);
        Ok(BarStream::new(checked, start, self.clone(), started))
    }

    /// The series the cache holds at `as_of`, ordered by symbol and then by bar length:
    /// each with its first and last bar and its number of bars, from the table's manifest
    /// (no data file is read).
    pub async fn series(&self, as_of: AsOf) -> Result<Vec<SeriesSummary>> {
        let version = self.version_at(as_of).await?;
        let mut out = Vec::new();
        for key in version.state.series_keys() {
            let files = version.series(&key.symbol, &key.timeframe);
            let (Some(first), Some(last)) = (
                files.iter().map(|f| f.min_ts).min(),
                files.iter().map(|f| f.max_ts).max(),
            ) else {
                continue;
            };
            out.push(SeriesSummary {
                symbol: key.symbol.clone(),
                timeframe: key.timeframe.clone(),
                bars: files.iter().map(|f| f.rows).sum::<u64>() as i64,
                first: ts_from_micros(first)?,
                last: ts_from_micros(last)?,
            });
        }
        // By symbol, then by bar length (1m before 1h before 1d), then by name.
        out.sort_by_cached_key(|s| {
            let length = Timeframe::parse(&s.timeframe)
                .map(|t| (t.fixed_micros().unwrap_or(i64::MAX), t.count))
                .unwrap_or((i64::MAX, u32::MAX));
            (s.symbol.clone(), length, s.timeframe.clone())
        });
        Ok(out)
    }

    /// The latest bar of a series.
    pub async fn latest(&self, symbol: &Symbol, timeframe: Timeframe) -> Result<Bars> {
        let version = self.version_at(AsOf::Latest).await?;
        let entries = self.series_entries(&version, symbol, timeframe)?;
        let last = entries.iter().map(|p| p.max_ts).max().unwrap_or(i64::MIN);
        let at = ts_from_micros(last)?;
        let request = BarsRequest::new(symbol.clone(), timeframe)
            .with_start(at)
            .with_end(at);
        self.bars(&request).await
    }

    fn observe(&self, elapsed: Duration, rows: usize) {
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        if log_query(&self.inner.options, elapsed, rows, None) {
            self.inner.slow_queries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Logs a finished query: at warn level when slower than `read.slow_query` (returns true),
/// else at debug. `sql` is the statement's text for the shell's statements, `None` for a bars
/// read. The one place slow queries are logged.
pub(crate) fn log_query(
    options: &ReadOptions,
    elapsed: Duration,
    rows: usize,
    sql: Option<&str>,
) -> bool {
    let ms = elapsed.as_secs_f64() * 1e3;
    let threshold = options.slow_query;
    let slow = elapsed > threshold;
    match (slow, sql) {
        (true, Some(sql)) => {
            tracing::warn!(elapsed_ms = ms, rows, ?threshold, sql, "slow SQL statement")
        }
        (true, None) => tracing::warn!(elapsed_ms = ms, rows, ?threshold, "slow bars query"),
        (false, Some(sql)) => tracing::debug!(elapsed_ms = ms, rows, sql, "SQL statement"),
        (false, None) => tracing::debug!(elapsed_ms = ms, rows, "bars query"),
    }
    slow
}

/// Each request's place in `(symbol, timeframe)` order, the order of a merged read's rows of
/// equal `ts`; the same series asked twice has one rank.
fn series_ranks(requests: &[BarsRequest]) -> Vec<u32> {
    let keys: Vec<(&str, String)> = requests
        .iter()
        .map(|r| (r.symbol.as_str(), r.timeframe.to_string()))
        .collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let mut ranks = vec![0u32; keys.len()];
    let mut rank = 0u32;
    for (i, pair) in order.windows(2).enumerate() {
        if keys[pair[0]] != keys[pair[1]] {
            rank = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
        ranks[pair[1]] = rank;
    }
    ranks
}

/// `input` run on a task of its own, up to `ahead` batches ahead of its consumer; the task
/// stops when the consumer drops the stream.
pub(super) fn prefetch(
    mut input: SendableRecordBatchStream,
    ahead: usize,
) -> SendableRecordBatchStream {
    let schema = input.schema();
    let (tx, mut rx) = tokio::sync::mpsc::channel(ahead.max(1));
    tokio::spawn(async move {
        while let Some(batch) = input.next().await {
            if tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    ))
}

fn empty_range(request: &BarsRequest, (first, last): (i64, i64)) -> Error {
    let show =
        |t: Option<DateTime<Utc>>, default: &str| t.map_or(default.to_string(), |t| format_ts(&t));
    let when = |m: i64| ts_from_micros(m).map(|t| format_ts(&t)).unwrap_or_default();
    Error::EmptyRange(Box::new(crate::error::EmptyRange {
        symbol: request.symbol.to_string(),
        timeframe: request.timeframe.to_string(),
        start: show(request.start, "the first bar"),
        end: show(request.end, "the last bar"),
        first: when(first),
        last: when(last),
    }))
}
