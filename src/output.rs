//! Printing results: tables through arrow's pretty printer (the look of psql and
//! datafusion-cli), never hand-aligned.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::db::SeriesSummary;
use crate::error::Result;
use crate::model::format_ts;
use crate::sync::Status;

/// Renders series summaries as a table: symbol, timeframe, bars, first, last.
pub fn series_table(series: &[SeriesSummary]) -> Result<String> {
    let strings = |f: &dyn Fn(&SeriesSummary) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(series.iter().map(f)))
    };
    let batch = RecordBatch::try_from_iter([
        ("symbol", strings(&|s| s.symbol.clone())),
        ("timeframe", strings(&|s| s.timeframe.clone())),
        (
            "bars",
            Arc::new(Int64Array::from_iter_values(series.iter().map(|s| s.bars))) as ArrayRef,
        ),
        ("first", strings(&|s| format_ts(&s.first))),
        ("last", strings(&|s| format_ts(&s.last))),
    ])?;
    Ok(pretty_format_batches(&[batch])?.to_string())
}

/// Renders `quiver status` as a two-column table of fields and values.
pub fn status_table(status: &Status) -> Result<String> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let position = status
        .position
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok());
    let rows: Vec<(&str, String)> = vec![
        ("backend", status.backend.clone()),
        ("database", status.database.clone()),
        ("cache dir", status.cache_dir.clone()),
        ("version", or_none(status.generation.map(|g| g.to_string()))),
        ("partitions", status.partitions.to_string()),
        ("files", status.files.to_string()),
        ("rows", status.rows.to_string()),
        ("bytes", status.bytes.to_string()),
        (
            "published at",
            or_none(status.published_at.as_ref().map(format_ts)),
        ),
        ("position", or_none(position)),
        ("pending changes", status.pending_changes.to_string()),
        (
            "lag",
            or_none(status.lag_seconds.map(|s| format!("{s:.3} s"))),
        ),
    ];
    let batch = RecordBatch::try_from_iter([
        (
            "field",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "value",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )) as ArrayRef,
        ),
    ])?;
    Ok(pretty_format_batches(&[batch])?.to_string())
}
