//! SQL scans of quiver's own files that read values, decoded directly (see `direct`) instead
//! of through DataFusion's Parquet scan.
//!
//! DataFusion's scan costs an opener per file (schema adaptation, pruning, an async reader:
//! about 0.25 ms each), which a scan of the whole table (W3: 600 month files) paid for every
//! file, and decodes the `symbol` and `timeframe` columns that each file holds as a constant.
//! Here the files are dealt into one group per core as DataFusion's scan deals them, each
//! group decodes its files one after the other from the mapped files (footers and page
//! indexes already parsed), only the value columns the query reads, and the series' columns
//! are made once and sliced.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::direct::{self, DirectFile};
use super::files::FileCache;
use super::table::{groups, one_series, output_orderings, sorted};
use super::versions::LoadedVersion;
use crate::cache::{DataFile, schema};
use crate::error::{Context, Result};

/// One partition of a direct scan: its files, decoded one after the other.
struct DirectPartition {
    schema: SchemaRef,
    files: Vec<DirectFile>,
}

impl std::fmt::Debug for DirectPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectPartition")
            .field("files", &self.files.len())
            .finish()
    }
}

impl PartitionStream for DirectPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch_size = ctx.session_config().batch_size();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            direct::decode(self.files.clone(), batch_size),
        ))
    }
}

/// Every row of `entries` (files of `version` wholly inside the query's `ts` filters) in
/// the columns `projection` names, in at most `partitions` partitions; `None` when a file is
/// not exactly of the cache's schema (another writer's: DataFusion's scan adapts it).
pub(super) fn direct_scan(
    version: &LoadedVersion,
    entries: &[&Arc<DataFile>],
    files: &FileCache,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let table = schema();
    let columns: Arc<[usize]> = match projection {
        Some(p) => p.as_slice().into(),
        None => (0..table.fields().len()).collect(),
    };
    let projected: SchemaRef = Arc::new(
        table
            .project(&columns)
            .context(|| "projecting market_data".into())?,
    );
    let sorted = sorted(entries);
    // Each series' files planned together: they share the series' constant columns.
    let mut planned: Vec<Option<DirectFile>> = Vec::with_capacity(sorted.len());
    let mut start = 0;
    while start < sorted.len() {
        let key = &sorted[start].key;
        let end = sorted[start..]
            .iter()
            .position(|e| e.key.symbol != key.symbol || e.key.timeframe != key.timeframe)
            .map_or(sorted.len(), |n| start + n);
        let opened = sorted[start..end]
            .iter()
            .map(|e| files.open(&version.path(e)))
            .collect::<Result<Vec<_>>>()?;
        let Some(series) =
            direct::plan(opened, (&key.symbol, &key.timeframe), (i64::MIN, i64::MAX))?
        else {
            return Ok(None);
        };
        planned.extend(
            series
                .into_iter()
                .map(|f| Some(f.with_projection(columns.clone(), projected.clone()))),
        );
        start = end;
    }
    let streams: Vec<Arc<dyn PartitionStream>> = groups(&sorted, partitions)
        .into_iter()
        .map(|group| {
            Arc::new(DirectPartition {
                schema: projected.clone(),
                files: group
                    .into_iter()
                    .filter_map(|i| planned[i].take())
                    .collect(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let orderings = output_orderings(one_series(&sorted), &projected)?;
    Ok(Some(Arc::new(StreamingTableExec::try_new(
        projected, streams, None, orderings, false, limit,
    )?)))
}
