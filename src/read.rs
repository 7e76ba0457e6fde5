//! Reading bars from the cache through DataFusion: range reads with exact warmup, and the
//! latest bar of a series.
//!
//! Every query pins the published version once (the manifest and its folder) and hands
//! DataFusion only the files of that version that can hold the requested bars, as a listing
//! table with the declared `ts` order. A version published after a [`Reader`] was opened is
//! seen by its next query; a query in flight keeps its version.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Decimal128Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;

use crate::cache::{Cache, PartitionEntry, schema};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, Timeframe, decimal_from_fixed8, format_ts, ts_from_micros};

/// A range read: bars of one series from `start` to `end` (inclusive), after `warmup` bars
/// immediately before the first bar of the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarsRequest {
    /// Instrument.
    pub symbol: Symbol,
    /// Bar length.
    pub timeframe: Timeframe,
    /// First instant of the range (inclusive); the series' first bar when `None`.
    pub start: Option<DateTime<Utc>>,
    /// Last instant of the range (inclusive); the series' last bar when `None`.
    pub end: Option<DateTime<Utc>>,
    /// Bars wanted before the range (fewer only where history is shorter).
    pub warmup: usize,
    /// At most this many bars of the range.
    pub limit: Option<usize>,
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
        }
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
            let text = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .ok_or_else(|| Error::invalid("the cache's schema has text symbol/timeframe"))
            };
            let ts = batch
                .column(2)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| Error::invalid("the cache's schema has µs timestamps"))?;
            let dec = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<Decimal128Array>()
                    .ok_or_else(|| Error::invalid("the cache's schema has decimals"))
            };
            let (symbols, timeframes) = (text(0)?, text(1)?);
            let values = [dec(3)?, dec(4)?, dec(5)?, dec(6)?, dec(7)?];
            for r in 0..batch.num_rows() {
                let v = |i: usize| decimal_from_fixed8(values[i].value(r));
                out.push(Bar {
                    symbol: Symbol::parse(symbols.value(r)).map_err(Error::InvalidArgument)?,
                    timeframe: Timeframe::parse(timeframes.value(r))
                        .map_err(Error::InvalidArgument)?,
                    ts: ts_from_micros(ts.value(r))?,
                    open: v(0),
                    high: v(1),
                    low: v(2),
                    close: v(3),
                    volume: v(4),
                });
            }
        }
        Ok(out)
    }

    /// The rows as text, the way `quiver bars` prints them: RFC 3339 UTC times, decimals in
    /// plain notation without trailing zeros.
    pub fn to_text_rows(&self) -> Result<Vec<[String; 8]>> {
        Ok(self
            .to_bars()?
            .into_iter()
            .map(|b| {
                [
                    b.symbol.to_string(),
                    b.timeframe.to_string(),
                    format_ts(&b.ts),
                    b.open.to_string(),
                    b.high.to_string(),
                    b.low.to_string(),
                    b.close.to_string(),
                    b.volume.to_string(),
                ]
            })
            .collect())
    }
}

/// Reads bars from a cache folder.
#[derive(Clone)]
pub struct Reader {
    cache: Cache,
    ctx: SessionContext,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("cache", &self.cache)
            .finish()
    }
}

fn ts_lit(micros: i64) -> datafusion::logical_expr::Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

impl Reader {
    /// A reader of the cache under `cache`.
    pub fn new(cache: Cache) -> Reader {
        Reader {
            cache,
            ctx: SessionContext::new(),
        }
    }

    /// A reader of the configured cache.
    pub fn open(config: &Config) -> Reader {
        Reader::new(Cache::new(&config.cache.dir))
    }

    /// The files of one series in the published version, and that version's folder.
    fn series(
        &self,
        symbol: &Symbol,
        timeframe: Timeframe,
    ) -> Result<(Vec<PartitionEntry>, PathBuf)> {
        let Some((manifest, dir)) = self.cache.snapshot()? else {
            return Err(Error::invalid(format!(
                "the cache in {} is empty; run `quiver sync` first",
                self.cache.root().display()
            )));
        };
        let (symbol, timeframe) = (symbol.as_str(), timeframe.to_string());
        let files: Vec<PartitionEntry> = manifest
            .partitions
            .into_iter()
            .filter(|p| p.key.symbol == symbol && p.key.timeframe == timeframe)
            .collect();
        if files.is_empty() {
            return Err(Error::invalid(format!(
                "no {timeframe} bars of {symbol} in the cache (see `quiver status`)"
            )));
        }
        Ok((files, dir))
    }

    /// A DataFusion frame over exactly `files` (of the version in `dir`), declared sorted by
    /// `ts`.
    async fn frame(&self, dir: &std::path::Path, files: &[&PartitionEntry]) -> Result<DataFrame> {
        let urls = files
            .iter()
            .map(|p| {
                let path = dir.join(&p.file);
                ListingTableUrl::parse(path.to_string_lossy()).map_err(Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_file_sort_order(vec![vec![col("ts").sort(true, false)]]);
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema());
        let table = ListingTable::try_new(config)?;
        Ok(self.ctx.read_table(Arc::new(table))?)
    }

    /// Bars of a series in a range, after exactly `warmup` bars before it (fewer only where
    /// the series starts later), across partition and year boundaries.
    pub async fn bars(&self, request: &BarsRequest) -> Result<Bars> {
        if let (Some(start), Some(end)) = (request.start, request.end)
            && start > end
        {
            return Err(Error::invalid(format!(
                "start {} is after end {}",
                format_ts(&start),
                format_ts(&end)
            )));
        }
        let (files, dir) = self.series(&request.symbol, request.timeframe)?;
        let start = request.start.map(|t| t.timestamp_micros());
        let end = request.end.map(|t| t.timestamp_micros());
        let in_range: Vec<&PartitionEntry> = files
            .iter()
            .filter(|p| start.is_none_or(|s| p.max_ts >= s) && end.is_none_or(|e| p.min_ts <= e))
            .collect();
        let mut bars = Bars::default();
        if request.warmup > 0
            && let Some(start) = start
        {
            let before: Vec<&PartitionEntry> = files.iter().filter(|p| p.min_ts < start).collect();
            if !before.is_empty() {
                let df = self
                    .frame(&dir, &before)
                    .await?
                    .filter(col("ts").lt(ts_lit(start)))?
                    .sort(vec![col("ts").sort(false, false)])?
                    .limit(0, Some(request.warmup))?;
                let newest_first = df.collect().await?;
                let all = concat_batches(&schema(), &newest_first)?;
                let n = all.num_rows();
                let reversed =
                    datafusion::arrow::array::UInt32Array::from_iter_values((0..n as u32).rev());
                let warm = take_record_batch(&all, &reversed)?;
                bars.warmup = warm.num_rows();
                if bars.warmup > 0 {
                    bars.batches.push(warm);
                }
            }
        }
        if !in_range.is_empty() && request.limit != Some(0) {
            let mut df = self.frame(&dir, &in_range).await?;
            if let Some(start) = start {
                df = df.filter(col("ts").gt_eq(ts_lit(start)))?;
            }
            if let Some(end) = end {
                df = df.filter(col("ts").lt_eq(ts_lit(end)))?;
            }
            df = df.sort(vec![col("ts").sort(true, false)])?;
            if let Some(limit) = request.limit {
                df = df.limit(0, Some(limit))?;
            }
            bars.batches
                .extend(df.collect().await?.into_iter().filter(|b| b.num_rows() > 0));
        }
        Ok(bars)
    }

    /// The latest bar of a series.
    pub async fn latest(&self, symbol: &Symbol, timeframe: Timeframe) -> Result<Bars> {
        let (files, dir) = self.series(symbol, timeframe)?;
        let Some(last) = files.iter().max_by_key(|p| p.max_ts) else {
            return Ok(Bars::default());
        };
        let df = self
            .frame(&dir, &[last])
            .await?
            .sort(vec![col("ts").sort(false, false)])?
            .limit(0, Some(1))?;
        Ok(Bars {
            batches: df.collect().await?,
            warmup: 0,
        })
    }
}
