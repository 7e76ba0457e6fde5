//! Series reads decoded straight from the open files with the Parquet crate's reader, without
//! a DataFusion plan.
//!
//! Through a DataFusion Parquet scan every file costs its own opener (schema adaptation,
//! pruning predicates, a row filter, an async reader): about 0.25 ms each, measured on W1 over
//! eight files (see docs/BENCHMARKS.md), which a one-symbol year of twelve month files paid twelve
//! times. Here each file costs a row selection, built from the `ts` page index already parsed
//! for planning, and a synchronous decode of the pages it selects from the mapping; a window
//! that starts or ends inside a page decodes `ts` first and the other columns only for the
//! rows within. Small reads decode file after file on the calling task; large ones several
//! files at once on blocking threads, delivered in order. [`Cut`](super::stream::Cut) then
//! trims the rows exactly, as it does behind a scan.

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter, RowSelection, RowSelector,
};
use futures_util::stream::{self, BoxStream, StreamExt};

use super::files::{OpenFile, Shared};
use crate::error::{Context, Result};

/// Index of `ts` among the cache's columns.
const TS: usize = 2;

/// One file of a direct read, its footer as the cache's schema, and the rows of it to decode
/// (`None`: all of them).
#[derive(Clone)]
pub(super) struct DirectFile {
    file: Arc<OpenFile>,
    metadata: ArrowReaderMetadata,
    /// The series the file holds (a file is one partition of one series): its `symbol` and
    /// `timeframe` columns are made from these instead of decoded.
    series: Arc<Series>,
    selection: Option<RowSelection>,
    /// The `ts` bounds rows must be within, when a selected page also holds rows outside them.
    bounds: Option<(i64, i64)>,
    /// The columns to produce (indices into the cache's schema) and their schema; `None`: all.
    projection: Option<(Arc<[usize]>, SchemaRef)>,
}

impl DirectFile {
    /// The file producing only the columns `projection` names (indices into the cache's
    /// schema, in output order): only the value columns among them are decoded.
    pub(super) fn with_projection(mut self, projection: Arc<[usize]>, schema: SchemaRef) -> Self {
        self.projection = Some((projection, schema));
        self
    }
}

/// The files of a series read in `ts` order, each with the pages that can hold a row of
/// `[lo, hi]` selected; `None` when a file's columns are not the cache's schema exactly (a
/// file of another writer: the DataFusion scan adapts it instead).
pub(super) fn plan(
    files: Vec<Arc<OpenFile>>,
    (symbol, timeframe): (&str, &str),
    (lo, hi): (i64, i64),
) -> Result<Option<Vec<DirectFile>>> {
    let mut planned = Vec::with_capacity(files.len());
    for file in files {
        let Some(metadata) = file.arrow_metadata()? else {
            return Ok(None);
        };
        let pages = file.ts_pages()?;
        let mut selectors: Vec<RowSelector> = Vec::with_capacity(pages.len());
        let (mut all, mut partial) = (true, false);
        for page in pages {
            let rows = page.rows as usize;
            let wanted = page.max >= lo && page.min <= hi;
            all &= wanted;
            partial |= wanted && (page.min < lo || page.max > hi);
            match selectors.last_mut() {
                Some(last) if last.skip != wanted => last.row_count += rows,
                _ => selectors.push(if wanted {
                    RowSelector::select(rows)
                } else {
                    RowSelector::skip(rows)
                }),
            }
        }
        let selection = (!all).then(|| RowSelection::from(selectors));
        planned.push((file, metadata, selection, partial.then_some((lo, hi))));
    }
    let series = Arc::new(Series::new(symbol, timeframe));
    Ok(Some(
        planned
            .into_iter()
            .map(|(file, metadata, selection, bounds)| DirectFile {
                file,
                metadata,
                series: series.clone(),
                selection,
                bounds,
                projection: None,
            })
            .collect(),
    ))
}

/// The selected rows of `files`, file after file, in batches of at most `batch_size` rows,
/// decoded on the calling task.
pub(super) fn decode(
    files: Vec<DirectFile>,
    batch_size: usize,
) -> BoxStream<'static, datafusion::error::Result<RecordBatch>> {
    stream::iter(files)
        .flat_map(move |f| match batches(f, batch_size) {
            Ok(batches) => stream::iter(batches.map(|b| b.map_err(DataFusionError::from))).boxed(),
            Err(e) => {
                stream::once(async move { Err(DataFusionError::External(Box::new(e))) }).boxed()
            }
        })
        .boxed()
}

/// [`decode`] with up to `ahead` files decoded at once on blocking threads, delivered in
/// order: a large read uses every core, and holds at most `ahead` decoded files.
pub(super) fn decode_parallel(
    files: Vec<DirectFile>,
    batch_size: usize,
    ahead: usize,
) -> BoxStream<'static, datafusion::error::Result<RecordBatch>> {
    stream::iter(files)
        .map(move |f| async move {
            let decoded = tokio::task::spawn_blocking(move || -> Result<Vec<RecordBatch>> {
                let path = f.file.path().to_path_buf();
                batches(f, batch_size)?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .context(|| format!("decoding {}", path.display()))
            })
            .await;
            match decoded {
                Ok(Ok(batches)) => batches.into_iter().map(Ok).collect(),
                Ok(Err(e)) => vec![Err(DataFusionError::External(Box::new(e)))],
                Err(e) => vec![Err(DataFusionError::External(Box::new(e)))],
            }
        })
        .buffered(ahead.max(1))
        .flat_map(stream::iter)
        .boxed()
}

/// The `symbol` and `timeframe` columns of one series read's batches: one array of each, as
/// long as the longest batch so far, shared by the read's files and sliced for each batch (no
/// copy per batch).
struct Series {
    symbol: String,
    timeframe: String,
    columns: Mutex<Option<(StringArray, StringArray)>>,
}

impl Series {
    fn new(symbol: &str, timeframe: &str) -> Series {
        Series {
            symbol: symbol.to_string(),
            timeframe: timeframe.to_string(),
            columns: Mutex::new(None),
        }
    }

    fn columns(&self, rows: usize) -> (ArrayRef, ArrayRef) {
        let mut columns = self.columns.lock().unwrap_or_else(PoisonError::into_inner);
        let (symbol, timeframe) = match columns.take() {
            Some((s, t)) if s.len() >= rows => (s, t),
            _ => {
                let repeat = |v: &str| StringArray::from_iter_values(std::iter::repeat_n(v, rows));
                (repeat(&self.symbol), repeat(&self.timeframe))
            }
        };
        let sliced: (ArrayRef, ArrayRef) = (
            Arc::new(symbol.slice(0, rows)),
            Arc::new(timeframe.slice(0, rows)),
        );
        *columns = Some((symbol, timeframe));
        sliced
    }
}

/// The selected rows of one file as batches of the cache's schema: `ts` and the five values
/// decoded, `symbol` and `timeframe` made from the series.
fn batches(
    f: DirectFile,
    batch_size: usize,
) -> Result<impl Iterator<Item = std::result::Result<RecordBatch, ArrowError>>> {
    let series = f.series;
    // The value columns decoded, in the file's order: those projected, else all of them
    // (`ts` alone when only the series' columns are wanted: it gives the row count).
    let leaves: Vec<usize> = match &f.projection {
        None => (TS..8).collect(),
        Some((p, _)) => {
            let mut leaves: Vec<usize> = p.iter().copied().filter(|&i| i >= TS).collect();
            leaves.sort_unstable();
            leaves.dedup();
            if leaves.is_empty() {
                leaves.push(TS);
            }
            leaves
        }
    };
    let decoded = reader(
        f.file,
        f.metadata,
        f.selection,
        f.bounds,
        batch_size,
        &leaves,
    )?;
    let projection = f.projection;
    Ok(decoded.map(move |batch| {
        let batch = batch?;
        let rows = batch.num_rows();
        let Some((projection, schema)) = &projection else {
            let (symbol, timeframe) = series.columns(rows);
            let mut columns = Vec::with_capacity(8);
            columns.extend([symbol, timeframe]);
            columns.extend(batch.columns().iter().cloned());
            return RecordBatch::try_new(crate::cache::schema(), columns);
        };
        let constant = projection
            .iter()
            .any(|&i| i < TS)
            .then(|| series.columns(rows));
        let columns = projection
            .iter()
            .map(|&i| match (i, &constant) {
                (0, Some((symbol, _))) => Ok(symbol.clone()),
                (1, Some((_, timeframe))) => Ok(timeframe.clone()),
                _ => leaves
                    .iter()
                    .position(|&l| l == i)
                    .map(|at| batch.column(at).clone())
                    .ok_or_else(|| ArrowError::SchemaError(format!("no column {i} decoded"))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }))
}

fn reader(
    file: Arc<OpenFile>,
    metadata: ArrowReaderMetadata,
    selection: Option<RowSelection>,
    bounds: Option<(i64, i64)>,
    batch_size: usize,
    leaves: &[usize],
) -> Result<ParquetRecordBatchReader> {
    let path = || format!("decoding {}", file.path().display());
    let mut builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(Shared(file.clone()), metadata)
            .with_batch_size(batch_size);
    // `ts` and the values asked for; the series' columns are constant (see `Series`).
    let values = ProjectionMask::leaves(builder.parquet_schema(), leaves.iter().copied());
    builder = builder.with_projection(values);
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    if let Some((lo, hi)) = bounds {
        // Pages at the ends of the window also hold rows outside it: `ts` is decoded first
        // and only the rows within are decoded in the other columns (a day of a month file
        // decodes its ~400 rows, not the 2,048 of each page it touches).
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [TS]);
        let within = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let ts = batch
                .column(0)
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| ArrowError::SchemaError("ts is not a timestamp".into()))?
                .values();
            Ok(BooleanArray::new(
                BooleanBuffer::collect_bool(ts.len(), |i| ts[i] >= lo && ts[i] <= hi),
                None,
            ))
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(within)]));
    }
    builder.build().context(path)
}
