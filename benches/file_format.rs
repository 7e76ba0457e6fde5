//! The file format's levers for large reads, measured before choosing (issue: bulk and
//! universe reads): one symbol-year of minute bars (the W2 shape: twelve month files, 98k
//! bars of `generate --seed 42`) written with each candidate's writer settings, then
//! - bytes on disk,
//! - W2's decode: all twelve files with the Parquet crate's reader on one thread, into the
//!   cache's Arrow schema (exact Decimal128 prices), and on a thread per core,
//! - a universe read's share: one day (390 bars) out of a month file, with the page index
//!   selecting its pages and a `ts` row filter, as the reader does.
//!
//! `cargo bench --bench file_format` (no database; about a minute).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Datelike;
use quiver::cache::{PartitionData, PartitionKey, schema};
use quiver::datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use quiver::datafusion::arrow::buffer::BooleanBuffer;
use quiver::datafusion::arrow::datatypes::TimestampMicrosecondType;
use quiver::datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection, RowSelector,
};
use quiver::datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use quiver::datafusion::parquet::basic::{Compression, Encoding};
use quiver::datafusion::parquet::file::metadata::PageIndexPolicy;
use quiver::datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use quiver::datafusion::parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use quiver::datafusion::parquet::schema::types::ColumnPath;
use quiver::generate::{GenerateOptions, generate_vec};
use quiver::model::fixed8_from_decimal;

const PRICES: [&str; 5] = ["open", "high", "low", "close", "volume"];

fn base() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(2048)
        .set_write_batch_size(2048)
}

fn variants() -> Vec<(&'static str, WriterProperties)> {
    let delta_ts = |b: WriterPropertiesBuilder| {
        b.set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
    };
    let split = |mut b: WriterPropertiesBuilder| {
        for c in PRICES {
            b = b
                .set_column_dictionary_enabled(ColumnPath::from(c), false)
                .set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT);
        }
        b
    };
    let plain = |mut b: WriterPropertiesBuilder| {
        for c in PRICES {
            b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
        }
        b
    };
    vec![
        ("lz4, dict prices, plain ts, 2k pages (was)", base().build()),
        ("+ ts DELTA_BINARY_PACKED", delta_ts(base()).build()),
        ("+ ts delta, prices plain", plain(delta_ts(base())).build()),
        (
            "+ ts delta, prices BYTE_STREAM_SPLIT",
            split(delta_ts(base())).build(),
        ),
        (
            "+ ts delta, uncompressed",
            delta_ts(base())
                .set_compression(Compression::UNCOMPRESSED)
                .build(),
        ),
        (
            "+ ts delta, zstd(1)",
            delta_ts(base())
                .set_compression(Compression::ZSTD(Default::default()))
                .build(),
        ),
        (
            "+ ts delta, 512-row pages",
            delta_ts(base())
                .set_data_page_row_count_limit(512)
                .set_write_batch_size(512)
                .build(),
        ),
        (
            "+ ts delta, 8k-row pages",
            delta_ts(base())
                .set_data_page_row_count_limit(8192)
                .set_write_batch_size(8192)
                .build(),
        ),
    ]
}

/// The symbol-year as twelve month batches of the cache's schema.
fn months() -> Vec<RecordBatch> {
    let bars = generate_vec(&GenerateOptions::new(
        1,
        252,
        "1m".parse().expect("timeframe"),
        42,
    ))
    .expect("generate");
    let mut out: Vec<(PartitionKey, PartitionData)> = Vec::new();
    for bar in bars {
        let period = format!("{:04}-{:02}", bar.ts.year(), bar.ts.month());
        if out.last().is_none_or(|(k, _)| k.period != period) {
            out.push((
                PartitionKey {
                    timeframe: bar.timeframe.to_string(),
                    symbol: bar.symbol.to_string(),
                    period,
                },
                PartitionData::default(),
            ));
        }
        let v = |d| fixed8_from_decimal(d).expect("exact");
        if let Some((_, data)) = out.last_mut() {
            data.push(
                bar.ts.timestamp_micros(),
                [
                    v(bar.open),
                    v(bar.high),
                    v(bar.low),
                    v(bar.close),
                    v(bar.volume),
                ],
            );
        }
    }
    out.iter()
        .map(|(k, d)| d.to_batch(k).expect("batch"))
        .collect()
}

fn encode(batch: &RecordBatch, props: &WriterProperties) -> Bytes {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props.clone())).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    Bytes::from(out)
}

fn metadata(file: &Bytes) -> ArrowReaderMetadata {
    ArrowReaderMetadata::load(
        file,
        ArrowReaderOptions::new()
            .with_schema(schema())
            .with_page_index_policy(PageIndexPolicy::Required),
    )
    .expect("metadata")
}

fn decode_all(file: &Bytes, meta: &ArrowReaderMetadata) -> usize {
    ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), meta.clone())
        .with_batch_size(8192)
        .build()
        .expect("reader")
        .map(|b| b.expect("batch").num_rows())
        .sum()
}

/// The rows of `[lo, hi]`: pages chosen from the page index of `ts`, rows by a filter on it.
fn decode_window(file: &Bytes, meta: &ArrowReaderMetadata, lo: i64, hi: i64) -> usize {
    let parquet = meta.metadata();
    let mut selectors = Vec::new();
    for (rg, group) in parquet.row_groups().iter().enumerate() {
        let Some(ColumnIndexMetaData::INT64(index)) = parquet
            .column_index()
            .and_then(|c| c.get(rg))
            .and_then(|c| c.get(2))
        else {
            panic!("no page index");
        };
        let pages = parquet.offset_index().expect("offsets")[rg][2].page_locations();
        for (i, page) in pages.iter().enumerate() {
            let next = pages
                .get(i + 1)
                .map_or(group.num_rows(), |p| p.first_row_index);
            let rows = (next - page.first_row_index) as usize;
            let (min, max) = (
                *index.min_value(i).expect("min"),
                *index.max_value(i).expect("max"),
            );
            selectors.push(if max >= lo && min <= hi {
                RowSelector::select(rows)
            } else {
                RowSelector::skip(rows)
            });
        }
    }
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), meta.clone())
        .with_batch_size(8192)
        .with_row_selection(RowSelection::from(selectors));
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [2]);
    let filter = ArrowPredicateFn::new(mask, move |b: RecordBatch| {
        let ts = b
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        Ok(BooleanArray::new(
            BooleanBuffer::collect_bool(ts.len(), |i| ts[i] >= lo && ts[i] <= hi),
            None,
        ))
    });
    builder
        .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        .build()
        .expect("reader")
        .map(|b| b.expect("batch").num_rows())
        .sum()
}

fn median(mut f: impl FnMut() -> usize, runs: usize) -> (Duration, usize) {
    let mut rows = f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            rows = std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], rows)
}

fn main() {
    let months = months();
    let rows: usize = months.iter().map(RecordBatch::num_rows).sum();
    // The day: 2024-06-12, in the June file.
    let june = months
        .iter()
        .position(|b| {
            let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
            chrono::DateTime::from_timestamp_micros(ts.value(0)).map(|t| t.month()) == Some(6)
        })
        .expect("June");
    let lo = chrono::DateTime::parse_from_rfc3339("2024-06-12T00:00:00Z")
        .expect("time")
        .timestamp_micros();
    let hi = lo + 86_400_000_000 - 1;
    println!(
        "one symbol-year, {rows} bars in {} month files",
        months.len()
    );
    println!(
        "{:<40} {:>10} {:>14} {:>14} {:>16} {:>16}",
        "writer settings", "bytes", "W2 decode", "rows/s", "W2, every core", "one day of June"
    );
    for (name, props) in variants() {
        let files: Vec<Bytes> = months.iter().map(|b| encode(b, &props)).collect();
        let metas: Vec<ArrowReaderMetadata> = files.iter().map(metadata).collect();
        let bytes: usize = files.iter().map(Bytes::len).sum();
        let (w2, n) = median(
            || {
                files
                    .iter()
                    .zip(&metas)
                    .map(|(f, m)| decode_all(f, m))
                    .sum()
            },
            31,
        );
        assert_eq!(n, rows);
        // The same on every core: files handed out one at a time to a thread per core.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (w2_cores, n) = median(
            || {
                let next = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..cores)
                        .map(|_| {
                            scope.spawn(|| {
                                let mut rows = 0;
                                loop {
                                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let (Some(f), Some(m)) = (files.get(i), metas.get(i)) else {
                                        return rows;
                                    };
                                    rows += decode_all(f, m);
                                }
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().expect("worker")).sum()
                })
            },
            31,
        );
        assert_eq!(n, rows);
        let (day, n) = median(|| decode_window(&files[june], &metas[june], lo, hi), 201);
        assert_eq!(n, 390);
        println!(
            "{name:<40} {bytes:>10} {:>11.2} ms {:>12.1}M {:>13.2} ms {:>13.1} µs",
            w2.as_secs_f64() * 1e3,
            rows as f64 / w2.as_secs_f64() / 1e6,
            w2_cores.as_secs_f64() * 1e3,
            day.as_secs_f64() * 1e6
        );
    }
}
