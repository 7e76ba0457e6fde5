//! Small series reads decoded straight from the open files with the Parquet crate's reader,
//! without a DataFusion plan.
//!
//! A warmup read takes a few hundred rows from each of a few files. Through a DataFusion
//! Parquet scan every file costs its own opener (schema adaptation, pruning predicates, a row
//! filter, an async reader): about 0.25 ms each, measured on W1 over eight files (see the
//! README). Here each file costs a row selection, built from the `ts` page index already
//! parsed for planning, and a synchronous decode of the pages it selects from the mapping.
//! [`Cut`](super::stream::Cut) then trims the rows exactly, as it does behind a scan.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use futures_util::stream::{self, BoxStream, StreamExt};

use super::files::{OpenFile, Shared};
use crate::error::{Context, Result};

/// One file of a direct read, its footer as the cache's schema, and the rows of it to decode
/// (`None`: all of them).
pub(super) struct DirectFile {
    file: Arc<OpenFile>,
    metadata: ArrowReaderMetadata,
    selection: Option<RowSelection>,
}

/// The files of a series read in `ts` order, each with the pages that can hold a row of
/// `[lo, hi]` selected; `None` when a file's columns are not the cache's schema exactly (a
/// file of another writer: the DataFusion scan adapts it instead).
pub(super) fn plan(files: Vec<Arc<OpenFile>>, lo: i64, hi: i64) -> Result<Option<Vec<DirectFile>>> {
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let Some(metadata) = file.arrow_metadata()? else {
            return Ok(None);
        };
        let pages = file.ts_pages()?;
        let mut selectors: Vec<RowSelector> = Vec::with_capacity(pages.len());
        let mut all = true;
        for page in pages {
            let rows = page.rows as usize;
            let wanted = page.max >= lo && page.min <= hi;
            all &= wanted;
            match selectors.last_mut() {
                Some(last) if last.skip != wanted => last.row_count += rows,
                _ => selectors.push(if wanted {
                    RowSelector::select(rows)
                } else {
                    RowSelector::skip(rows)
                }),
            }
        }
        out.push(DirectFile {
            file,
            metadata,
            selection: (!all).then(|| RowSelection::from(selectors)),
        });
    }
    Ok(Some(out))
}

/// The selected rows of `files`, file after file, in batches of at most `batch_size` rows.
pub(super) fn decode(
    files: Vec<DirectFile>,
    batch_size: usize,
) -> BoxStream<'static, datafusion::error::Result<RecordBatch>> {
    stream::iter(files)
        .flat_map(move |f| match reader(f, batch_size) {
            Ok(reader) => stream::iter(reader.map(|b| b.map_err(DataFusionError::from))).boxed(),
            Err(e) => {
                stream::once(async move { Err(DataFusionError::External(Box::new(e))) }).boxed()
            }
        })
        .boxed()
}

fn reader(f: DirectFile, batch_size: usize) -> Result<ParquetRecordBatchReader> {
    let path = || format!("decoding {}", f.file.path().display());
    let mut builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(Shared(f.file.clone()), f.metadata)
            .with_batch_size(batch_size);
    if let Some(selection) = f.selection {
        builder = builder.with_row_selection(selection);
    }
    builder.build().context(path)
}
