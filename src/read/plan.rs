//! Planning one series' read: the files and the `ts` window it needs, found from the version's
//! statistics and the page index of `ts`, then the scan run with its rows cut to the warmup
//! and the range.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, col as physical_col, lit as physical_lit,
};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures_util::stream::{BoxStream, StreamExt};

use super::stream::Cut;
use super::{
    LoadedVersion, PARALLEL_ROWS, Reader, SeriesScan, SeriesSource, SeriesWindow, direct,
    empty_range, prefetch, table, ts_literal,
};
use crate::cache::{DataFile, schema};
use crate::error::{Error, Result};
use crate::model::{Symbol, Timeframe};
use crate::read::BarsRequest;

impl Reader {
    pub(super) fn series_entries<'s>(
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
    pub(super) fn plan_series(
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
        // In `ts` order: the state keeps each series' files by their first bar.
        let needed: Vec<&Arc<DataFile>> = entries
            .iter()
            .filter(|p| p.max_ts >= lo && p.min_ts <= hi)
            .collect();
        let rows: u64 = needed.iter().map(|p| p.rows).sum();
        let scan = |source| SeriesScan {
            source,
            window: SeriesWindow {
                lo,
                start,
                end,
                warmup,
                limit,
                request: request.clone(),
                first_last,
            },
        };
        // Files of the cache's own types are decoded with the Parquet crate's reader, in
        // parallel when large; others (another writer's types) go through a DataFusion scan,
        // which adapts them.
        let opened = needed.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
        // A file holds one partition of one series: these are its symbol and timeframe.
        let series = (
            entries[0].key.symbol.as_str(),
            entries[0].key.timeframe.as_str(),
        );
        if let Some(files) = direct::plan(opened, series, (lo, hi))? {
            let parallel = rows > PARALLEL_ROWS && files.len() > 1;
            return Ok(scan(SeriesSource::Direct { files, parallel }));
        }
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
        Ok(scan(SeriesSource::Plan(plan)))
    }

    /// Runs a planned series scan, its partitions decoded concurrently but delivered in
    /// order, and cuts the rows to the warmup and the range.
    pub(super) fn run_series(
        &self,
        scan: SeriesScan,
        require_range: bool,
        whole: bool,
    ) -> Result<SendableRecordBatchStream> {
        let task = self.inner.ctx.task_ctx();
        let SeriesScan { source, window } = scan;
        let plan = match source {
            SeriesSource::Plan(plan) => plan,
            SeriesSource::Direct { files, parallel } => {
                let batch_size = task.session_config().batch_size();
                let input = if parallel {
                    // A collected read decodes a file more than there are cores, so a core
                    // never waits for the next file; a stream holds at most one per core.
                    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                    let ahead = if whole { cores + 1 } else { cores };
                    direct::decode_parallel(files, batch_size, ahead)
                } else {
                    direct::decode(files, batch_size)
                };
                return Ok(cut(input, window, require_range));
            }
        };
        let partitions = plan.properties().partitioning.partition_count();
        let input: BoxStream<'static, datafusion::error::Result<RecordBatch>> = if partitions == 1 {
            plan.execute(0, task)?.boxed()
        } else {
            // Each partition is a contiguous run of the series: decode all at once, deliver
            // one after the other. A stream buffers two batches per partition (bounded
            // memory); a collected read lets every partition run to its end meanwhile.
            let capacity = if whole { 1 << 16 } else { 2 };
            let partitions = (0..partitions)
                .map(|i| Ok(prefetch(plan.execute(i, task.clone())?, capacity)))
                .collect::<Result<Vec<_>>>()?;
            futures_util::stream::iter(partitions).flatten().boxed()
        };
        Ok(cut(input, window, require_range))
    }
}

/// The rows of a series' ordered batches cut to its warmup and range.
fn cut(
    input: BoxStream<'static, datafusion::error::Result<RecordBatch>>,
    window: SeriesWindow,
    require_range: bool,
) -> SendableRecordBatchStream {
    let cut = Cut {
        input,
        lo: window.lo,
        start: window.start,
        end: window.end,
        warmup: window.warmup,
        remaining: window.limit,
        warm: VecDeque::new(),
        warm_rows: 0,
        warm_done: false,
        out: VecDeque::new(),
        range_rows: 0,
        reached_start: false,
        done: false,
        empty: (require_range && window.limit > 0)
            .then(|| empty_range(&window.request, window.first_last)),
    };
    let stream = futures_util::stream::unfold(cut, |mut cut| async move {
        let item = cut.next().await?;
        Some((item, cut))
    });
    Box::pin(RecordBatchStreamAdapter::new(
        schema(),
        stream.map(|r| r.map_err(datafusion::error::DataFusionError::from)),
    ))
}
