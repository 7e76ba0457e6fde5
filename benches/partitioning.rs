//! The partitioning decision (DESIGN.md §4), measured: the 4.9M-bar dataset written in three
//! layouts, and W1–W3 run on each through DataFusion (a listing table over the folder, stock
//! settings), with the file counts each layout makes.
//!
//! - `symbol_month`: one file per (timeframe, symbol, month), what quiver writes for minute bars;
//! - `month`: one file per month holding every symbol, sorted by (symbol, ts);
//! - `symbol_year`: one file per (timeframe, symbol, year).
//!
//! `cargo bench --bench partitioning` (no database needed: bars come from the generator).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quiver::cache::{PartitionData, PartitionKey, schema};
use quiver::datafusion::parquet::arrow::ArrowWriter;
use quiver::datafusion::prelude::{ParquetReadOptions, SessionContext};
use quiver::generate::by_symbol;
use quiver::model::fixed8_from_decimal;

const LAYOUTS: [&str; 3] = ["symbol_month", "month", "symbol_year"];

/// Writes the dataset in `layout` under `dir`; returns the number of files.
fn write_layout(layout: &str, dir: &Path) -> usize {
    // (file path) -> [(key, rows)] in write order.
    let mut files: BTreeMap<String, Vec<(PartitionKey, PartitionData)>> = BTreeMap::new();
    let options = common::options();
    for bars in by_symbol(&options).expect("generator") {
        let bars = bars.expect("bars");
        for b in bars {
            let ts = b.ts_micros();
            let month = PartitionKey::of(b.symbol.as_str(), "1m", ts).expect("key");
            let path = match layout {
                "symbol_month" => format!("{}/part.parquet", month.dir()),
                "month" => format!("tf=1m/period={}/part.parquet", month.period),
                _ => format!(
                    "tf=1m/sym={}/period={}/part.parquet",
                    month.symbol,
                    &month.period[..4]
                ),
            };
            let parts = files.entry(path).or_default();
            if parts.last().is_none_or(|(k, _)| k.symbol != month.symbol) {
                parts.push((month.clone(), PartitionData::default()));
            }
            let values = [b.open, b.high, b.low, b.close, b.volume]
                .map(|d| fixed8_from_decimal(d).expect("exact"));
            if let Some((_, data)) = parts.last_mut() {
                data.push(ts, values);
            }
        }
    }
    let props = quiver::datafusion::parquet::file::properties::WriterProperties::builder()
        .set_compression(quiver::datafusion::parquet::basic::Compression::ZSTD(
            Default::default(),
        ))
        .set_statistics_enabled(
            quiver::datafusion::parquet::file::properties::EnabledStatistics::Page,
        )
        .set_data_page_row_count_limit(2048)
        .set_write_batch_size(2048)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    for (path, parts) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let file = std::fs::File::create(&path).expect("create");
        let mut w = ArrowWriter::try_new(file, schema(), Some(props.clone())).expect("writer");
        for (key, data) in parts {
            w.write(&data.to_batch(key).expect("batch")).expect("write");
        }
        w.close().expect("close");
    }
    files.len()
}

const W1: [&str; 2] = [
    "SELECT * FROM market_data WHERE symbol = 'SYM007' AND timeframe = '1m' \
     AND ts < TIMESTAMP '2024-06-03T14:30:00Z' ORDER BY ts DESC LIMIT 200",
    "SELECT * FROM market_data WHERE symbol = 'SYM007' AND timeframe = '1m' \
     AND ts >= TIMESTAMP '2024-06-03T14:30:00Z' ORDER BY ts LIMIT 1000",
];
const W2: &str = "SELECT * FROM market_data WHERE symbol = 'SYM007' AND timeframe = '1m'";
const W3: &str = "SELECT symbol, date_trunc('day', ts) AS day, sum(close * volume) / sum(volume) AS vwap, \
     max(high) AS high, min(low) AS low FROM market_data WHERE timeframe = '1m' GROUP BY 1, 2";

/// The files a reader that knows the layout (from quiver's manifest) hands to DataFusion:
/// only those that can hold SYM007's bars of the W1 window, or of 2024 for W2.
fn selected(dir: &Path, layout: &str, w1: bool) -> Vec<String> {
    let periods: Vec<&str> = if w1 {
        vec!["2024-05", "2024-06"]
    } else {
        vec![]
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let path = p.to_string_lossy().into_owned();
            let symbol_ok = layout == "month" || path.contains("sym=SYM007/");
            let period_ok = periods.is_empty()
                || layout == "symbol_year"
                || periods
                    .iter()
                    .any(|m| path.contains(&format!("period={m}/")));
            if symbol_ok && period_ok {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Runs `sqls` on a table made of exactly `files`, as a manifest-driven reader would.
async fn rows_in(files: &[String], sqls: &[&str]) -> usize {
    let ctx = SessionContext::new();
    let df = ctx
        .read_parquet(files.to_vec(), ParquetReadOptions::default())
        .await
        .expect("read");
    ctx.register_table("market_data", df.into_view())
        .expect("register");
    let mut n = 0;
    for sql in sqls {
        n += common::sql_rows(&ctx, sql).await;
    }
    n
}

fn partitioning(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let root = common::bench_dir().join("layouts");
    let mut contexts = Vec::new();
    for layout in LAYOUTS {
        let dir = root.join(layout);
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_layout(layout, &dir);
        let ctx = SessionContext::new();
        rt.block_on(ctx.register_parquet(
            "market_data",
            dir.to_str().expect("utf-8 path"),
            ParquetReadOptions::default(),
        ))
        .expect("register");
        let w1: usize = W1
            .iter()
            .map(|q| rt.block_on(common::sql_rows(&ctx, q)))
            .sum();
        assert_eq!(w1, 1200);
        let (f1, f2) = (selected(&dir, layout, true), selected(&dir, layout, false));
        assert_eq!(rt.block_on(rows_in(&f1, &W1)), 1200);
        eprintln!(
            "layout {layout}: {files} files; W1 reads {}, W2 reads {}",
            f1.len(),
            f2.len()
        );
        contexts.push((layout, ctx, f1, f2));
    }
    let mut group = c.benchmark_group("partitioning");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (layout, ctx, f1, f2) in &contexts {
        group.bench_with_input(BenchmarkId::new("w1_selected", layout), f1, |b, f| {
            b.to_async(&rt).iter(|| rows_in(f, &W1))
        });
        group.bench_with_input(BenchmarkId::new("w2_selected", layout), f2, |b, f| {
            b.to_async(&rt).iter(|| rows_in(f, &[W2]))
        });
        group.bench_with_input(BenchmarkId::new("w1", layout), ctx, |b, ctx| {
            b.to_async(&rt).iter(|| async {
                common::sql_rows(ctx, W1[0]).await + common::sql_rows(ctx, W1[1]).await
            })
        });
        group.bench_with_input(BenchmarkId::new("w2", layout), ctx, |b, ctx| {
            b.to_async(&rt).iter(|| common::sql_rows(ctx, W2))
        });
        group.bench_with_input(BenchmarkId::new("w3", layout), ctx, |b, ctx| {
            b.to_async(&rt).iter(|| common::sql_rows(ctx, W3))
        });
    }
    group.finish();
}

criterion_group!(benches, partitioning);
criterion_main!(benches);
