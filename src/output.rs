//! Printing results: tables through arrow's pretty printer (the look of psql and
//! datafusion-cli), never hand-aligned.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::db::SeriesSummary;
use crate::error::Result;
use crate::model::format_ts;

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
