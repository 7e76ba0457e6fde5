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
//! Range reads go straight to a DataFusion Parquet scan of the series' files (no SQL
//! planning): the warmup's first page and the limit's last page are found from the page index
//! of `ts`, so a read decodes the pages holding its bars and little else.

mod files;
pub(crate) mod filter;
mod table;
mod versions;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::config::TableParquetOptions;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, col as physical_col, lit as physical_lit,
};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures_util::stream::{BoxStream, Stream, StreamExt};

pub use files::{FileCache, FileCacheStats, OpenFile, TsPage};
pub use table::CacheTable;
pub use versions::{LoadedVersion, Versions};

use crate::cache::{AsOf, Cache, DataFile, TABLE, schema};
use crate::config::{Config, IoMode, ReadConfig};
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, Timeframe, decimal_from_fixed8, format_ts, ts_from_micros};

/// Index of `ts` among the cache's columns.
const TS: usize = 2;
/// Above this many rows a read decodes its files on every core, in order.
const PARALLEL_ROWS: u64 = 32_768;

/// A range read: bars of one series from `start` to `end` (inclusive), after `warmup` bars
/// immediately before the first bar of the range.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BarsRequest {
    /// Instrument.
    pub symbol: Symbol,
    /// Bar length.
    pub timeframe: Timeframe,
    /// First instant of the range (inclusive); the series' first bar when `None`.
    pub start: Option<DateTime<Utc>>,
    /// Last instant of the range (inclusive); the series' last bar when `None`.
    pub end: Option<DateTime<Utc>>,
    /// Bars wanted before the range (fewer only where history is shorter). Needs a `start`.
    pub warmup: usize,
    /// At most this many bars of the range.
    pub limit: Option<usize>,
    /// The version read: the newest, or an older one (time travel).
    pub as_of: AsOf,
}

impl BarsRequest {
    /// The whole series, no warmup.
    pub fn new(symbol: Symbol, timeframe: Timeframe) -> BarsRequest {
        BarsRequest {
            symbol,
            timeframe,
            start: None,
            end: None,
            warmup: 0,
            limit: None,
            as_of: AsOf::Latest,
        }
    }

    /// The range starts at `start` (inclusive).
    pub fn with_start(mut self, start: DateTime<Utc>) -> BarsRequest {
        self.start = Some(start);
        self
    }

    /// The range ends at `end` (inclusive).
    pub fn with_end(mut self, end: DateTime<Utc>) -> BarsRequest {
        self.end = Some(end);
        self
    }

    /// `n` bars before the range.
    pub fn with_warmup(mut self, n: usize) -> BarsRequest {
        self.warmup = n;
        self
    }

    /// At most `n` bars of the range.
    pub fn with_limit(mut self, n: usize) -> BarsRequest {
        self.limit = Some(n);
        self
    }

    /// Reads the version `as_of` names instead of the newest (time travel).
    pub fn with_as_of(mut self, as_of: AsOf) -> BarsRequest {
        self.as_of = as_of;
        self
    }

    fn check(&self) -> Result<()> {
        if let (Some(start), Some(end)) = (self.start, self.end)
            && start > end
        {
            return Err(Error::InvalidRange {
                start: format_ts(&start),
                end: format_ts(&end),
            });
        }
        Ok(())
    }
}

/// Bars read from the cache: the warmup bars first, then the range, in `ts` order, as record
/// batches of the cache's eight columns.
#[derive(Clone, Debug, Default)]
pub struct Bars {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// How many of the first rows are warmup bars.
    pub warmup: usize,
}

impl Bars {
    /// Number of rows, warmup included.
    pub fn len(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// True when no bar was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as typed bars (exact decimals), for event loops.
    pub fn to_bars(&self) -> Result<Vec<Bar>> {
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.batches {
            decode_bars(batch, &mut out)?;
        }
        Ok(out)
    }
}

/// Appends the rows of a batch of the cache's schema to `out` as typed bars.
pub fn decode_bars(batch: &RecordBatch, out: &mut Vec<Bar>) -> Result<()> {
    let bad = || Error::corrupt("a cache file without the cache's eight columns");
    if batch.num_columns() != 8 {
        return Err(bad());
    }
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(bad)
    };
    let (symbols, timeframes) = (text(0)?, text(1)?);
    let ts = batch
        .column(TS)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(bad)?;
    let dec = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .ok_or_else(bad)
    };
    let values = [dec(3)?, dec(4)?, dec(5)?, dec(6)?, dec(7)?];
    // Series change rarely within a batch: parse each name once.
    let mut series: Option<(Symbol, Timeframe)> = None;
    out.reserve(batch.num_rows());
    for r in 0..batch.num_rows() {
        let (s, t) = (symbols.value(r), timeframes.value(r));
        let (symbol, timeframe) = match &series {
            Some((symbol, timeframe)) if symbol.as_str() == s && timeframe.to_string() == t => {
                (symbol.clone(), *timeframe)
            }
            _ => {
                let parsed = (
                    Symbol::parse(s)
                        .map_err(|m| Error::corrupt(format!("a cache file's symbol: {m}")))?,
                    Timeframe::parse(t)
                        .map_err(|m| Error::corrupt(format!("a cache file's timeframe: {m}")))?,
                );
                series = Some(parsed.clone());
                parsed
            }
        };
        let v = |i: usize| decimal_from_fixed8(values[i].value(r));
        out.push(Bar {
            symbol,
            timeframe,
            ts: ts_from_micros(ts.value(r))?,
            open: v(0),
            high: v(1),
            low: v(2),
            close: v(3),
            volume: v(4),
        });
    }
    Ok(())
}

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

/// One series' part of a read, planned.
struct SeriesScan {
    plan: Arc<dyn ExecutionPlan>,
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
        let wanted: usize = scans.iter().map(|s| s.limit).fold(0, usize::saturating_add);
        let range_of = (first.clone(), scans[0].first_last);
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
            let table = schema();
            let order = LexOrdering::new(
                ["ts", "symbol", "timeframe"]
                    .into_iter()
                    .map(|c| Ok(PhysicalSortExpr::new_default(physical_col(c, &table)?)))
                    .collect::<Result<Vec<_>>>()?,
            )
            .ok_or_else(|| Error::internal("an ordering has columns"))?;
            let task = self.inner.ctx.task_ctx();
            let metrics = ExecutionPlanMetricsSet::new();
            StreamingMergeBuilder::new()
                .with_streams(streams)
                .with_schema(table)
                .with_expressions(&order)
                .with_metrics(BaselineMetrics::new(&metrics, 0))
                .with_batch_size(task.session_config().batch_size())
                .with_reservation(MemoryConsumer::new("quiver merge").register(task.memory_pool()))
                .build()?
        };
        let checked = require_some_range(merged, start, wanted > 0, range_of);
        Ok(BarStream::new(checked, start, self.clone(), started))
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

    fn series_entries<'s>(
        &self,
        version: &'s LoadedVersion,
        symbol: &Symbol,
        timeframe: Timeframe,
    ) -> Result<&'s [Arc<DataFile>]> {
        let timeframe = timeframe.to_string();
        let entries = version.series(symbol.as_str(), &timeframe);
        if entries.is_empty() {
            return Err(Error::UnknownSeries {
                symbol: symbol.to_string(),
                timeframe,
                timeframes: version.timeframes_of(symbol.as_str()),
            });
        }
        Ok(entries)
    }

    /// Finds the files and the `ts` window a request needs, from the manifest and the page
    /// index, and plans the scan.
    fn plan_series(
        &self,
        version: &LoadedVersion,
        request: &BarsRequest,
        single: bool,
    ) -> Result<SeriesScan> {
        let entries = self.series_entries(version, &request.symbol, request.timeframe)?;
        let first_last = (
            entries.iter().map(|p| p.min_ts).min().unwrap_or(0),
            entries.iter().map(|p| p.max_ts).max().unwrap_or(0),
        );
        let start = request.start.map_or(i64::MIN, |t| t.timestamp_micros());
        let end = request.end.map_or(i64::MAX, |t| t.timestamp_micros());
        let limit = request.limit.unwrap_or(usize::MAX);
        let files = &self.inner.files;
        let open = |p: &DataFile| files.open(&version.path(p));
        // No file overlaps the range: nothing to scan for it.
        let range_files = entries.iter().any(|p| p.max_ts >= start && p.min_ts <= end);
        if single && !range_files && limit > 0 {
            return Err(empty_range(request, first_last));
        }
        // Warmup: walk pages back from the range until they surely hold `warmup` bars.
        let warmup = if start == i64::MIN { 0 } else { request.warmup };
        let mut lo = start;
        if warmup > 0 {
            lo = i64::MIN;
            let mut have = 0u64;
            'files: for p in entries.iter().rev().filter(|p| p.min_ts < start) {
                let file = open(p)?;
                for page in file.ts_pages()?.iter().rev().filter(|pg| pg.min < start) {
                    if page.max < start {
                        have += page.rows;
                    }
                    if have >= warmup as u64 {
                        lo = page.min;
                        break 'files;
                    }
                }
            }
        }
        // Limit: walk pages forward from the range until they surely hold `limit` bars.
        let mut hi = end;
        if limit < usize::MAX && range_files {
            let mut have = 0u64;
            'files: for p in entries
                .iter()
                .filter(|p| p.max_ts >= start && p.min_ts <= end)
            {
                let file = open(p)?;
                for page in file.ts_pages()?.iter().filter(|pg| pg.max >= start) {
                    if page.min >= start {
                        have += page.rows;
                    }
                    if have >= limit as u64 {
                        hi = hi.min(page.max);
                        break 'files;
                    }
                }
            }
        }
        let needed: Vec<&Arc<DataFile>> = entries
            .iter()
            .filter(|p| p.max_ts >= lo && p.min_ts <= hi)
            .collect();
        let rows: u64 = needed.iter().map(|p| p.rows).sum();
        let table = schema();
        let ts = physical_col("ts", &table)?;
        let mut predicate: Option<Arc<dyn PhysicalExpr>> = None;
        for (op, bound) in [(Operator::GtEq, lo), (Operator::LtEq, hi)] {
            if bound == i64::MIN || bound == i64::MAX {
                continue;
            }
            let cmp: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
                ts.clone(),
                op,
                physical_lit(ts_literal(bound)),
            ));
            predicate = Some(match predicate {
                None => cmp,
                Some(p) => Arc::new(BinaryExpr::new(p, Operator::And, cmp)),
            });
        }
        let partitions = if rows > PARALLEL_ROWS {
            self.inner.ctx.state().config().target_partitions()
        } else {
            1
        };
        let spec = table::ScanSpec {
            projection: None,
            predicate,
            limit: None,
            partitions,
            parquet: &self.inner.parquet,
        };
        let plan = table::scan_files(version, &needed, files, spec)?;
        Ok(SeriesScan {
            plan,
            lo,
            start,
            end,
            warmup,
            limit,
            request: request.clone(),
            first_last,
        })
    }

    /// Runs a planned series scan, its partitions decoded concurrently but delivered in
    /// order, and cuts the rows to the warmup and the range.
    fn run_series(
        &self,
        scan: SeriesScan,
        require_range: bool,
        whole: bool,
    ) -> Result<SendableRecordBatchStream> {
        let task = self.inner.ctx.task_ctx();
        let partitions = scan.plan.properties().partitioning.partition_count();
        let input: BoxStream<'static, datafusion::error::Result<RecordBatch>> = if partitions == 1 {
            scan.plan.execute(0, task)?.boxed()
        } else {
            // Each partition is a contiguous run of the series: decode all at once, deliver
            // one after the other. A stream buffers two batches per partition (bounded
            // memory); a collected read lets every partition run to its end meanwhile.
            let capacity = if whole { 1 << 16 } else { 2 };
            let mut receivers = Vec::with_capacity(partitions);
            for i in 0..partitions {
                let mut stream = scan.plan.execute(i, task.clone())?;
                let (tx, rx) = tokio::sync::mpsc::channel(capacity);
                tokio::spawn(async move {
                    while let Some(batch) = stream.next().await {
                        if tx.send(batch).await.is_err() {
                            break;
                        }
                    }
                });
                receivers.push(rx);
            }
            futures_util::stream::iter(receivers)
                .flat_map(|mut rx| futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
                .boxed()
        };
        let cut = Cut {
            input,
            lo: scan.lo,
            start: scan.start,
            end: scan.end,
            warmup: scan.warmup,
            remaining: scan.limit,
            warm: VecDeque::new(),
            warm_rows: 0,
            warm_done: false,
            out: VecDeque::new(),
            range_rows: 0,
            reached_start: false,
            done: false,
            empty: (require_range && scan.limit > 0)
                .then(|| empty_range(&scan.request, scan.first_last)),
        };
        let stream = futures_util::stream::unfold(cut, |mut cut| async move {
            let item = cut.next().await?;
            Some((item, cut))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema(),
            stream.map(|r| r.map_err(datafusion::error::DataFusionError::from)),
        )))
    }

    fn observe(&self, elapsed: Duration, rows: usize) {
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        let ms = elapsed.as_secs_f64() * 1e3;
        if elapsed > self.inner.options.slow_query {
            self.inner.slow_queries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(elapsed_ms = ms, rows, threshold = ?self.inner.options.slow_query, "slow bars query");
        } else {
            tracing::debug!(elapsed_ms = ms, rows, "bars query");
        }
    }
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

/// Fails a merged stream at its end when no series had a bar in range.
fn require_some_range(
    input: SendableRecordBatchStream,
    start: Option<i64>,
    wanted: bool,
    (request, first_last): (BarsRequest, (i64, i64)),
) -> SendableRecordBatchStream {
    let start = start.unwrap_or(i64::MIN);
    let state = (input, 0u64, false);
    let stream = futures_util::stream::unfold(state, move |(mut input, mut in_range, done)| {
        let request = request.clone();
        async move {
            if done {
                return None;
            }
            match input.next().await {
                Some(Ok(batch)) => {
                    in_range += ts_values(&batch)
                        .map(|ts| ts.iter().filter(|&&t| t >= start).count() as u64)
                        .unwrap_or(0);
                    Some((Ok(batch), (input, in_range, false)))
                }
                Some(Err(e)) => Some((Err(e), (input, in_range, true))),
                None if wanted && in_range == 0 => Some((
                    Err(datafusion::error::DataFusionError::from(empty_range(
                        &request, first_last,
                    ))),
                    (input, in_range, true),
                )),
                None => None,
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema(), stream))
}

fn ts_values(batch: &RecordBatch) -> Result<&[i64]> {
    Ok(batch
        .column(TS)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::corrupt("a cache file without the cache's ts column"))?
        .values())
}

/// Cuts a series' ordered batches to the last `warmup` rows before `start` and the first
/// `remaining` rows of `[start, end]`, holding at most the warmup in memory.
struct Cut {
    input: BoxStream<'static, datafusion::error::Result<RecordBatch>>,
    lo: i64,
    start: i64,
    end: i64,
    warmup: usize,
    remaining: usize,
    warm: VecDeque<RecordBatch>,
    warm_rows: usize,
    warm_done: bool,
    out: VecDeque<RecordBatch>,
    range_rows: u64,
    /// A row at or after `start` was seen: the warmup is complete.
    reached_start: bool,
    done: bool,
    /// The error to end with if the range held no bar.
    empty: Option<Error>,
}

impl Cut {
    fn push_warm(&mut self, batch: RecordBatch) {
        if self.warmup == 0 || batch.num_rows() == 0 {
            return;
        }
        self.warm_rows += batch.num_rows();
        self.warm.push_back(batch);
        while let Some(front) = self.warm.front() {
            if self.warm_rows - front.num_rows() >= self.warmup {
                self.warm_rows -= front.num_rows();
                self.warm.pop_front();
            } else {
                break;
            }
        }
    }

    fn flush_warm(&mut self) {
        if self.warm_done {
            return;
        }
        self.warm_done = true;
        let excess = self.warm_rows.saturating_sub(self.warmup);
        if let Some(front) = self.warm.front_mut()
            && excess > 0
        {
            *front = front.slice(excess, front.num_rows() - excess);
        }
        self.out.extend(self.warm.drain(..));
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.out.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                if self.range_rows == 0 {
                    return self.empty.take().map(Err);
                }
                return None;
            }
            if self.remaining == 0 && self.reached_start {
                self.flush_warm();
                self.done = true;
                continue;
            }
            let batch = match self.input.next().await {
                None => {
                    self.flush_warm();
                    self.done = true;
                    continue;
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.empty = None;
                    return Some(Err(e.into()));
                }
                Some(Ok(batch)) => batch,
            };
            let ts = match ts_values(&batch) {
                Ok(ts) => ts,
                Err(e) => {
                    self.done = true;
                    self.empty = None;
                    return Some(Err(e));
                }
            };
            let (lo, start, end) = (self.lo, self.start, self.end);
            let a = ts.partition_point(|&t| t < lo);
            let s = ts.partition_point(|&t| t < start).max(a);
            let e = ts.partition_point(|&t| t <= end).max(s);
            let past_end = e < ts.len();
            self.reached_start |= s < ts.len();
            if s > a && !self.warm_done {
                self.push_warm(batch.slice(a, s - a));
            }
            let take = (e - s).min(self.remaining);
            if take > 0 {
                self.flush_warm();
                self.out.push_back(batch.slice(s, take));
                self.remaining -= take;
                self.range_rows += take as u64;
            }
            if past_end {
                self.flush_warm();
                self.done = true;
            }
        }
    }
}

/// The result of a read as a stream of record batches (the cache's eight columns, in `ts`
/// order): warmup bars first, then the range.
pub struct BarStream {
    inner: SendableRecordBatchStream,
    start: Option<i64>,
    reader: Reader,
    started: Instant,
    rows: usize,
    observed: bool,
}

impl BarStream {
    fn new(
        inner: SendableRecordBatchStream,
        start: Option<i64>,
        reader: Reader,
        started: Instant,
    ) -> BarStream {
        BarStream {
            inner,
            start,
            reader,
            started,
            rows: 0,
            observed: false,
        }
    }

    /// The schema of every batch: the cache's eight columns.
    pub fn schema(&self) -> SchemaRef {
        schema()
    }

    /// Reads the whole stream; the warmup count is the number of bars before the range.
    pub async fn collect_bars(mut self) -> Result<Bars> {
        let mut bars = Bars::default();
        while let Some(batch) = self.next().await {
            let batch = batch?;
            if let Some(start) = self.start {
                bars.warmup += ts_values(&batch)?.partition_point(|&t| t < start);
            }
            bars.batches.push(batch);
        }
        Ok(bars)
    }

    /// The stream as typed bars, one at a time.
    pub fn into_bars(self) -> impl Stream<Item = Result<Bar>> + Send {
        self.flat_map(|batch| {
            let bars = batch.and_then(|b| {
                let mut out = Vec::new();
                decode_bars(&b, &mut out)?;
                Ok(out)
            });
            match bars {
                Ok(bars) => {
                    futures_util::stream::iter(bars.into_iter().map(Ok).collect::<Vec<_>>())
                }
                Err(e) => futures_util::stream::iter(vec![Err(e)]),
            }
        })
    }
}

impl Stream for BarStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => self.rows += batch.num_rows(),
            Poll::Ready(None) if !self.observed => {
                self.observed = true;
                self.reader.observe(self.started.elapsed(), self.rows);
            }
            _ => {}
        }
        polled.map(|item| item.map(|r| r.map_err(Error::from)))
    }
}
