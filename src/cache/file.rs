//! One partition as a Parquet file: the eight columns of DESIGN.md §1, sorted by `ts`,
//! `Decimal128(28, 8)` prices, `ts` delta-encoded, LZ4, page-level statistics and the page
//! index.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, Encoding};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::layout::PartitionKey;
use crate::error::{Context, Error, Result};
use crate::model::{CACHE_PRECISION, CACHE_SCALE};

/// Rows per data page: small enough that the page index lets a one-week read of a month file
/// skip most pages, large enough to keep the index small.
const PAGE_ROWS: usize = 2048;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let decimal = DataType::Decimal128(CACHE_PRECISION, CACHE_SCALE);
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("timeframe", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("open", decimal.clone(), false),
        Field::new("high", decimal.clone(), false),
        Field::new("low", decimal.clone(), false),
        Field::new("close", decimal.clone(), false),
        Field::new("volume", decimal, false),
    ]))
});

/// The Arrow schema of `market_data` in the cache: exactly the eight columns, in order.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The rows of one partition, columnar, in `ts` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionData {
    /// Open times, microseconds since the epoch, ascending.
    pub ts: Vec<i64>,
    /// `open, high, low, close, volume` in 10^-8 units.
    pub values: [Vec<i128>; 5],
}

impl PartitionData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when the partition holds no row.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends one row.
    pub fn push(&mut self, ts: i64, values: [i128; 5]) {
        self.ts.push(ts);
        for (column, v) in self.values.iter_mut().zip(values) {
            column.push(v);
        }
    }

    /// The rows as one record batch of [`schema`].
    pub fn to_batch(&self, key: &PartitionKey) -> Result<RecordBatch> {
        let n = self.len();
        batch_of(
            StringArray::from_iter_values(std::iter::repeat_n(&key.symbol, n).map(String::as_str)),
            StringArray::from_iter_values(
                std::iter::repeat_n(&key.timeframe, n).map(String::as_str),
            ),
            TimestampMicrosecondArray::from(self.ts.clone()),
            self.values.clone().map(Decimal128Array::from),
        )
        .context(|| format!("building the rows of partition {key}"))
    }
}

/// A batch of [`schema`] from its columns: `ts` in microseconds (UTC is set here), the five
/// values in 10^-8 units (their precision and scale are set here). The one place the cache's
/// eight-column batch is assembled, for its files and for `live.market_data`.
pub fn batch_of(
    symbol: StringArray,
    timeframe: StringArray,
    ts: TimestampMicrosecondArray,
    values: [Decimal128Array; 5],
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(symbol),
        Arc::new(timeframe),
        Arc::new(ts.with_timezone("UTC")),
    ];
    for v in values {
        columns.push(Arc::new(
            v.with_precision_and_scale(CACHE_PRECISION, CACHE_SCALE)?,
        ));
    }
    RecordBatch::try_new(schema(), columns)
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        // LZ4: decompresses several times faster than zstd, and parquet-rs builds a zstd
        // context per column chunk it reads, which cost 0.3 ms of a 1,200-bar read (W1
        // 1.09 ms with zstd, 0.69 ms with LZ4; files 118 MB and 156 MB for 4.9M bars).
        // Dictionaries stay on: prices repeat within a month, and decoding 12-byte decimals
        // through a dictionary made W2 and W3 20-30% faster than plain pages.
        .set_compression(Compression::LZ4_RAW)
        // `ts` is unique within a file: its dictionary only added a page to decompress per
        // read (W1 0.63 -> 0.60 ms, W7 ~2,000 -> ~2,100 queries/s; files 156 -> 149 MB).
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        // Bars are evenly spaced, so `ts` deltas pack into almost nothing: a symbol-year 18%
        // smaller, its decode 6% and a day's read out of a month file 22% faster than PLAIN
        // (`cargo bench --bench file_format`, which also measured what was not taken).
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_sorting_columns(Some(
            (0..3)
                .map(|column_idx| SortingColumn {
                    column_idx,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .set_created_by(concat!("quiver ", env!("CARGO_PKG_VERSION")).into())
        .build()
}

/// The Parquet file of `data`, in memory: the table writes it through its object store.
pub fn encode(key: &PartitionKey, data: &PartitionData) -> Result<Vec<u8>> {
    let batch = data.to_batch(key)?;
    let mut out = Vec::with_capacity(64 + data.len() * 40);
    let what = || format!("encoding partition {key}");
    let mut writer =
        ArrowWriter::try_new(&mut out, schema(), Some(writer_properties())).context(what)?;
    writer.write(&batch).context(what)?;
    writer.close().context(what)?;
    Ok(out)
}

/// Reads a partition file back: its `(symbol, timeframe)` values and rows. Used by `verify`
/// and compaction; readers of the cache go through DataFusion. A file that is not a Parquet
/// file of the cache's schema is an error naming it.
pub fn read(path: &Path) -> Result<(Vec<(String, String)>, PartitionData)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let unreadable = |e: &dyn std::fmt::Display| Error::Format {
        file: path.into(),
        message: format!("unreadable Parquet file: {e}"),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| unreadable(&e))?
        .build()
        .map_err(|e| unreadable(&e))?;
    let mut series = Vec::new();
    let mut data = PartitionData::default();
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&e))?;
        if batch.schema().fields() != schema().fields() {
            return Err(Error::Format {
                file: path.into(),
                message: format!("unexpected schema {:?}", batch.schema()),
            });
        }
        let text = |i: usize| -> Result<&StringArray> {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::internal("schema checked above"))
        };
        let (symbols, timeframes) = (text(0)?, text(1)?);
        for row in 0..batch.num_rows() {
            let pair = (symbols.value(row), timeframes.value(row));
            if series
                .last()
                .is_none_or(|(s, t): &(String, String)| (s.as_str(), t.as_str()) != pair)
            {
                series.push((pair.0.to_string(), pair.1.to_string()));
            }
        }
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| Error::internal("schema checked above"))?;
        data.ts.extend(ts.values().iter().copied());
        for (i, column) in data.values.iter_mut().enumerate() {
            let values = batch
                .column(3 + i)
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .ok_or_else(|| Error::internal("schema checked above"))?;
            column.extend(values.values().iter().copied());
        }
        debug_assert_eq!(ts.null_count(), 0);
    }
    Ok((series, data))
}
