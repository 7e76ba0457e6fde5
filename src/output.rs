//! Printing results: tables through arrow's pretty printer (the look of psql and
//! datafusion-cli), never hand-aligned.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::db::SeriesSummary;
use crate::error::{Error, Result};
use crate::model::format_ts;
use crate::read::Bars;
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

/// Output of `quiver bars` and `quiver latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BarsFormat {
    /// A table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects (decimals as strings, exact).
    Json,
}

/// Renders bars in `format`: a table, CSV with the header of DESIGN.md §2, or a JSON array of
/// objects; times in RFC 3339 UTC, decimals exact in plain notation (strings in JSON).
pub fn bars(bars: &Bars, format: BarsFormat) -> Result<String> {
    const HEADER: [&str; 8] = [
        "symbol",
        "timeframe",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ];
    let rows = bars.to_text_rows()?;
    match format {
        BarsFormat::Table => {
            let columns: Vec<(&str, ArrayRef)> = HEADER
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let array: ArrayRef =
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i])));
                    (*name, array)
                })
                .collect();
            let batch = RecordBatch::try_from_iter(columns)?;
            Ok(pretty_format_batches(&[batch])?.to_string())
        }
        BarsFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let io = |e: csv::Error| Error::invalid(format!("csv: {e}"));
            w.write_record(HEADER).map_err(io)?;
            for r in &rows {
                w.write_record(r).map_err(io)?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| Error::invalid(format!("csv: {e}")))?;
            Ok(String::from_utf8_lossy(&bytes).trim_end().to_string())
        }
        BarsFormat::Json => {
            let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .map(|r| {
                    HEADER
                        .iter()
                        .zip(r)
                        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                        .collect()
                })
                .collect();
            serde_json::to_string_pretty(&objects).map_err(|e| Error::invalid(format!("json: {e}")))
        }
    }
}
