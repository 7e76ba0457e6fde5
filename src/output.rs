//! Printing results: tables through arrow's pretty printer (the look of psql and
//! datafusion-cli), never hand-aligned.

use std::io::Write;
use std::sync::Arc;

use chrono::DateTime;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::json::writer::{JsonArray, JsonFormat, LineDelimited};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::{pretty_format_batches, pretty_format_batches_with_schema};

use crate::db::SeriesSummary;
use crate::error::{Context, Error, Result};

/// What an Arrow error while printing says it was doing.
fn what() -> String {
    "formatting the output".into()
}
use crate::model::format_ts;
use crate::read::Bars;
use crate::sync::Status;

/// Renders series summaries (`quiver series`, the quickstart) in `format`: symbol,
/// timeframe, first and last bar (RFC 3339 UTC) and the number of bars.
pub fn series(series: &[SeriesSummary], format: BarsFormat) -> Result<String> {
    let strings = |f: &dyn Fn(&SeriesSummary) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(series.iter().map(f)))
    };
    let batch = RecordBatch::try_from_iter([
        ("symbol", strings(&|s| s.symbol.clone())),
        ("timeframe", strings(&|s| s.timeframe.clone())),
        ("first", strings(&|s| format_ts(&s.first))),
        ("last", strings(&|s| format_ts(&s.last))),
        (
            "bars",
            Arc::new(Int64Array::from_iter_values(series.iter().map(|s| s.bars))) as ArrayRef,
        ),
    ])
    .context(what)?;
    render(&batch.schema(), &[batch], format)
}

/// Renders `quiver status` as a two-column table of fields and values.
pub fn status_table(status: &Status) -> Result<String> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let position = status
        .position
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok());
    let when = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .map(|t| format_ts(&t))
            .unwrap_or_else(|| "-".into())
    };
    let h = &status.history;
    let retained = match (h.oldest, h.newest) {
        (Some(a), Some(b)) => format!("{} (versions {a} to {b})", b - a + 1),
        _ => "-".into(),
    };
    let recent = h
        .recent
        .iter()
        .rev()
        .map(|v| {
            format!(
                "{} {} {} (+{} -{} files)",
                v.version,
                when(v.committed_ms),
                v.operation,
                v.added,
                v.removed
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut rows: Vec<(&str, String)> = vec![
        ("backend", status.backend.clone()),
        ("database", status.database.clone()),
        ("cache dir", status.cache_dir.clone()),
        ("delta table", status.table_dir.clone()),
        ("version", or_none(status.version.map(|g| g.to_string()))),
        (
            "committed at",
            or_none(status.committed_at.as_ref().map(format_ts)),
        ),
        ("partitions", status.partitions.to_string()),
        ("files", status.files.to_string()),
        ("rows", status.rows.to_string()),
        ("bytes", status.bytes.to_string()),
        (
            "files per partition",
            format!(
                "{:.2} on average, {} at most; {} partitions due for compaction",
                status.mean_files_per_partition,
                status.max_files_per_partition,
                status.compaction_backlog
            ),
        ),
        (
            "held back",
            if status.held_back.is_empty() {
                "none".to_string()
            } else {
                status
                    .held_back
                    .iter()
                    .map(|(p, why)| match status.held_back_since.get(p) {
                        Some(t) => format!("{p} since {}: {why}", format_ts(t)),
                        None => format!("{p}: {why}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        ("position", or_none(position)),
        ("pending changes", status.pending_changes.to_string()),
        (
            "lag",
            or_none(status.lag_seconds.map(|s| format!("{s:.3} s"))),
        ),
        (
            "retention",
            humantime::format_duration(std::time::Duration::from_secs(status.retention_seconds))
                .to_string(),
        ),
        ("retained versions", retained),
        (
            "last checkpoint",
            or_none(h.checkpoint.map(|c| c.to_string())),
        ),
        (
            "recent versions",
            if recent.is_empty() {
                "-".into()
            } else {
                recent
            },
        ),
        (
            "plain view at",
            or_none(status.view_version.map(|v| format!("version {v}"))),
        ),
    ];
    if let Some(other) = &status.mirrors_other {
        rows.insert(2, ("warning", other.clone()));
    }
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
    ])
    .context(what)?;
    Ok(pretty_format_batches(&[batch]).context(what)?.to_string())
}

/// Output of `quiver bars` and `quiver latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarsFormat {
    /// A table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of objects (decimals as strings, exact).
    Json,
}

/// Renders bars in `format` through the shell's writers ([`write_rows`]): a table, CSV with
/// the header of DESIGN.md §2, or a JSON array of objects; times in RFC 3339 UTC, decimals
/// exact in plain notation (strings in JSON).
pub fn bars(bars: &Bars, format: BarsFormat) -> Result<String> {
    let schema = bars
        .batches
        .first()
        .map(RecordBatch::schema)
        .unwrap_or_else(crate::cache::schema);
    render(&schema, &bars.batches, format)
}

/// Every row of `batches` as one string in `format` (JSON indented, one field a line, in
/// column order).
fn render(schema: &SchemaRef, batches: &[RecordBatch], format: BarsFormat) -> Result<String> {
    let format = match format {
        BarsFormat::Table => SqlFormat::Table,
        BarsFormat::Csv => SqlFormat::Csv,
        BarsFormat::Json => SqlFormat::Json,
    };
    let mut out = Vec::new();
    write_rows(schema, batches, format, usize::MAX, &mut out)?;
    if format == SqlFormat::Json {
        // `quiver bars` has always printed its JSON indented, one field a line.
        let rows: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::internal(format!("arrow's JSON did not parse: {e}")))?;
        return serde_json::to_string_pretty(&rows)
            .map_err(|e| Error::internal(format!("json: {e}")));
    }
    Ok(String::from_utf8_lossy(&out).trim_end().to_string())
}

/// Output of `quiver sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlFormat {
    /// A table, cut at `--maxrows`, with the row count below it (psql, datafusion-cli).
    Table,
    /// CSV with a header, every row.
    Csv,
    /// One JSON array of objects, every row.
    Json,
    /// One JSON object per line, every row.
    Ndjson,
}

impl SqlFormat {
    /// The format named `name` (as in `\format NAME`).
    pub fn parse(name: &str) -> Result<SqlFormat> {
        match name.to_ascii_lowercase().as_str() {
            "table" => Ok(SqlFormat::Table),
            "csv" => Ok(SqlFormat::Csv),
            "json" => Ok(SqlFormat::Json),
            "ndjson" => Ok(SqlFormat::Ndjson),
            _ => Err(Error::invalid(format!(
                "unknown format {name:?}: expected table, csv, json or ndjson"
            ))),
        }
    }
}

impl std::fmt::Display for SqlFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SqlFormat::Table => "table",
            SqlFormat::Csv => "csv",
            SqlFormat::Json => "json",
            SqlFormat::Ndjson => "ndjson",
        })
    }
}

/// The type a column is printed as: decimals and timestamps become text, exactly as
/// `quiver bars` prints them; everything else keeps its type.
fn printable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
        | DataType::Timestamp(..) => DataType::Utf8,
        other => other.clone(),
    }
}

/// The schema of [`printable`] batches.
pub fn printable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), printable_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// Decimals in plain notation without trailing zeros (`712345.12`, never an exponent, never
/// rounded); timestamps in RFC 3339, in UTC with `Z` when they carry a time zone, fractional
/// seconds only when present. The text of `quiver bars`, for any query result.
pub fn printable(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = printable_schema(batch.schema_ref());
    let columns = batch
        .columns()
        .iter()
        .map(printable_column)
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .context(what)
}

fn printable_column(array: &ArrayRef) -> Result<ArrayRef> {
    let text = |f: &dyn Fn(usize) -> Result<String>| -> Result<ArrayRef> {
        let values = (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    Ok(None)
                } else {
                    f(i).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(StringArray::from(values)))
    };
    match array.data_type() {
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let formatter =
                ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).context(what)?;
            text(&|i| Ok(trim_decimal(formatter.value(i).to_string())))
        }
        DataType::Timestamp(unit, tz) => {
            let utc = tz.is_some();
            let values = cast(array, &DataType::Int64).context(what)?;
            let values = values.as_primitive::<Int64Type>();
            text(&|i| {
                let v = values.value(i);
                let ts = match unit {
                    TimeUnit::Second => DateTime::from_timestamp(v, 0),
                    TimeUnit::Millisecond => DateTime::from_timestamp_millis(v),
                    TimeUnit::Microsecond => DateTime::from_timestamp_micros(v),
                    TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(v)),
                }
                .ok_or_else(|| Error::invalid(format!("timestamp {v} is out of range")))?;
                // A timestamp without a zone is wall-clock time: the same text without `Z`.
                let text = format_ts(&ts);
                Ok(if utc {
                    text
                } else {
                    text.trim_end_matches('Z').to_string()
                })
            })
        }
        _ => Ok(array.clone()),
    }
}

/// `12.50000000` → `12.5`, `100.00000000` → `100`, `-0.00000000` → `0`.
fn trim_decimal(mut s: String) -> String {
    if s.contains('.') {
        let kept = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(kept);
    }
    if s == "-0" { "0".into() } else { s }
}

/// Writes a query result in `format`. The table shows at most `maxrows` rows (all when
/// `None`) and then the row count, as psql does; the machine formats print every row and
/// nothing else. Returns the number of rows.
pub fn write_result(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: SqlFormat,
    maxrows: Option<usize>,
    out: &mut dyn Write,
) -> Result<usize> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if schema.fields().is_empty() {
        // SET, CREATE VIEW and the like: nothing to show.
        return Ok(rows);
    }
    let shown = match format {
        SqlFormat::Table => maxrows.unwrap_or(usize::MAX).min(rows),
        _ => rows,
    };
    write_rows(schema, batches, format, shown, out)?;
    if format == SqlFormat::Table {
        write_count(rows, shown, out)?;
    }
    Ok(rows)
}

/// The line under a table: how many rows, and how many of them were shown (psql's footer).
fn write_count(rows: usize, shown: usize, out: &mut dyn Write) -> Result<()> {
    let noun = if rows == 1 { "row" } else { "rows" };
    let text = if shown < rows {
        format!("({rows} {noun}, first {shown} shown; --maxrows or \\maxrows shows more)")
    } else {
        format!("({rows} {noun})")
    };
    writeln!(out, "{text}").map_err(|e| Error::io("<stdout>", e))
}

/// Writes a query result as psql's expanded display: each row a `-[ RECORD n ]-` header and
/// one `column | value` line per column; at most `maxrows` rows (all when `None`), then the
/// row count.
pub fn write_expanded(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    maxrows: Option<usize>,
    out: &mut dyn Write,
) -> Result<usize> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if schema.fields().is_empty() {
        return Ok(rows);
    }
    let shown = maxrows.unwrap_or(usize::MAX).min(rows);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let options = FormatOptions::default().with_null("");
    let mut record = 0usize;
    for batch in batches {
        if record == shown {
            break;
        }
        let batch = printable(batch)?;
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .context(what)?;
        for row in 0..batch.num_rows().min(shown - record) {
            record += 1;
            let values: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            let value_width = values.iter().map(|v| v.chars().count()).max().unwrap_or(0);
            let head = format!("-[ RECORD {record} ]");
            let width = (name_width + 3 + value_width).max(head.len() + 1);
            writeln!(out, "{head}{}", "-".repeat(width - head.len())).map_err(io)?;
            for (name, value) in names.iter().zip(&values) {
                writeln!(out, "{name:<name_width$} | {value}").map_err(io)?;
            }
        }
    }
    write_count(rows, shown, out)?;
    Ok(rows)
}

/// Writes the first `shown` rows of `batches` in `format` as [`printable`] text: the one
/// pipeline of `quiver sql`'s results and `quiver bars`' output.
pub fn write_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: SqlFormat,
    shown: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    let mut printable_batches = Vec::with_capacity(batches.len());
    let mut left = shown;
    for b in batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        printable_batches.push(printable(&b.slice(0, take))?);
        left -= take;
    }
    let schema = printable_schema(schema);
    match format {
        SqlFormat::Table => {
            let table =
                pretty_format_batches_with_schema(schema, &printable_batches).context(what)?;
            writeln!(out, "{table}").map_err(io)?;
        }
        SqlFormat::Csv => {
            let mut w = WriterBuilder::new().with_header(true).build(&mut *out);
            if printable_batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema)).context(what)?;
            }
            for b in &printable_batches {
                w.write(b).context(what)?;
            }
        }
        SqlFormat::Json => {
            write_json::<JsonArray>(&printable_batches, out)?;
            // The array ends without a line break; a terminal prompt should not follow it.
            writeln!(out).map_err(io)?;
        }
        SqlFormat::Ndjson => write_json::<LineDelimited>(&printable_batches, out)?,
    }
    Ok(())
}

/// Writes batches with arrow's JSON writer in layout `F`, nulls written out as `null`.
fn write_json<F: JsonFormat>(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let mut w = JsonWriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(out);
    for b in batches {
        w.write(b).context(what)?;
    }
    w.finish().context(what)?;
    Ok(())
}
