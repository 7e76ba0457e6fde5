//! W14 (DESIGN.md §5): the large reads of backtests through quiver, then the same reads
//! through Polars, DuckDB and ArcticDB in the same run (`benches/w14_others.py`).
//!
//! - W2: one symbol, all of 2024 (98,280 bars), and W3: daily VWAP, high and low of 50 symbols
//!   over 2024 (4.9M bars), on the DESIGN §5 dataset (built once, see benches/common); W1
//!   beside them, whose goal (10x Polars) the large reads must not cost.
//! - Universe replay: `generate --symbols 500 --days 21 --seed 7` (4.1M bars, its own SQLite
//!   file and cache under the bench folder), every symbol's bars of one day (195k) and of one
//!   week (975k) merged by `ts`, collected (`bars_merged`) and streamed (`stream_merged`,
//!   batch by batch, the largest batch reported).
//!
//! Beside each figure: rows/s, the bytes/s of the Arrow data produced, and the time the same
//! bytes take to copy once in memory on this machine (measured here, a floor no reader can
//! beat: the data has to be written into memory at least once).
//!
//! `cargo bench --bench w14_throughput` (`QUIVER_BENCH_PYTHON=0` skips the other tools;
//! `QUIVER_W14_RUNS`, default 20, sets the runs per workload; `QUIVER_W14_ONLY=w2,day` runs
//! only those of `w1,w2,day,week,day50,w3`).

mod common;

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use quiver::cache::Cache;
use quiver::config::{CacheConfig, DatabaseConfig};
use quiver::generate::{GenerateOptions, bar_count, generate_into};
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;
use quiver::{OnConflict, Store, Symbol};

/// The quiver binary's and the Python package's allocator, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const W3: &str = "SELECT symbol, date_trunc('day', ts) AS day, \
     sum(close * volume) / sum(volume) AS vwap, max(high) AS high, min(low) AS low \
     FROM market_data WHERE timeframe = '1m' \
     AND ts >= TIMESTAMP '2024-01-01T00:00:00Z' AND ts < TIMESTAMP '2025-01-01T00:00:00Z' \
     GROUP BY 1, 2";

/// The universe's day and week: Wednesday 2024-01-10, and Monday 8 to Friday 12 January.
const DAY: (&str, &str) = ("2024-01-10T00:00:00Z", "2024-01-10T23:59:59.999999Z");
const WEEK: (&str, &str) = ("2024-01-08T00:00:00Z", "2024-01-12T23:59:59.999999Z");

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn universe_options() -> GenerateOptions {
    GenerateOptions::new(500, 21, "1m".parse().expect("timeframe"), 7)
}

/// The universe dataset in its own SQLite file, generated once.
async fn universe() -> Store {
    let database = DatabaseConfig {
        url: format!(
            "sqlite://{}",
            common::bench_dir().join("universe.db").display()
        ),
        schema: None,
        max_connections: 4,
    };
    let store = Store::connect(&database).await.expect("connect");
    store.migrate().await.expect("migrate");
    let expected = bar_count(&universe_options()).expect("count");
    if store.count_rows().await.expect("count") != expected {
        eprintln!("building the universe dataset ({expected} bars, once)...");
        while store.revert().await.expect("revert").is_some() {}
        store.migrate().await.expect("migrate");
        generate_into(&store, &universe_options(), OnConflict::Error)
            .await
            .expect("generate");
    }
    store
}

/// The cache of `store` under the bench folder, brought up to date by one pass.
async fn cache_of(store: &Store, name: &str) -> Cache {
    let dir = common::bench_dir().join(name);
    let mut syncer = Syncer::new(store.clone(), &CacheConfig::new(&dir), None).expect("syncer");
    syncer.pass(false).await.expect("sync");
    Cache::new(&dir)
}

/// Median wall time of `runs` runs after one warm-up, and what the last run returned.
async fn measure<F, Fut>(runs: usize, mut f: F) -> (Duration, Output)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Output>,
{
    let mut last = f().await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        last = f().await;
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], last)
}

/// What a read produced: rows, bytes of Arrow buffers, and the largest batch (streams).
#[derive(Clone, Copy, Debug, Default)]
struct Output {
    rows: usize,
    bytes: usize,
    largest_batch: usize,
}

impl Output {
    fn of(batches: &[quiver::datafusion::arrow::array::RecordBatch]) -> Output {
        batches.iter().fold(Output::default(), |o, b| Output {
            rows: o.rows + b.num_rows(),
            bytes: o.bytes
                + b.columns()
                    .iter()
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                    .sum::<usize>(),
            largest_batch: o.largest_batch.max(b.num_rows()),
        })
    }
}

/// Memory bandwidth for one copy: the best of five copies of a 256 MiB buffer, in bytes/s.
fn copy_bandwidth() -> f64 {
    let size = 256 << 20;
    let src = vec![7u8; size];
    let mut dst = vec![0u8; size];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    size as f64 / best
}

fn requests(symbols: usize, (start, end): (&str, &str)) -> Vec<BarsRequest> {
    (1..=symbols)
        .map(|i| {
            BarsRequest::new(
                Symbol::parse(&format!("SYM{i:03}")).expect("symbol"),
                "1m".parse().expect("timeframe"),
            )
            .with_start(time(start))
            .with_end(time(end))
        })
        .collect()
}

fn report(name: &str, (median, out): (Duration, Output), bandwidth: f64) {
    let secs = median.as_secs_f64();
    println!(
        "{name:<34} {:>9.2} ms {:>9} rows {:>7.1}M rows/s {:>7.2} GB/s  copy floor {:>6.2} ms{}",
        secs * 1e3,
        out.rows,
        out.rows as f64 / secs / 1e6,
        out.bytes as f64 / secs / 1e9,
        out.bytes as f64 / bandwidth * 1e3,
        if out.largest_batch > 0 {
            format!("  largest batch {} rows", out.largest_batch)
        } else {
            String::new()
        }
    );
}

/// Whether the workload `name` runs: all of them, unless `QUIVER_W14_ONLY` lists some
/// (`w1,w2,day,week,day50,w3`).
fn wanted(name: &str) -> bool {
    std::env::var("QUIVER_W14_ONLY").map_or(true, |only| only.split(',').any(|w| w.trim() == name))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runs: usize = std::env::var("QUIVER_W14_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (design, universe) = rt.block_on(async {
        let (design, universe) = (common::dataset("sqlite").await, universe().await);
        let caches = (
            cache_of(&design, "cache-sqlite").await,
            cache_of(&universe, "cache-universe").await,
        );
        // The databases are not read from here on: their pools' threads go.
        for store in [&design, &universe] {
            if let Some(pool) = store.sqlite_pool() {
                pool.close().await;
            }
        }
        caches
    });
    let bandwidth = copy_bandwidth();
    println!(
        "W14, quiver {} ({runs} runs each, median; memory copy {:.1} GB/s on this machine)",
        env!("CARGO_PKG_VERSION"),
        bandwidth / 1e9
    );
    let reader = Reader::new(design.clone()).expect("reader");
    let wide = Reader::new(universe.clone()).expect("reader");
    let w2 = BarsRequest::new(
        Symbol::parse("SYM007").expect("symbol"),
        "1m".parse().expect("timeframe"),
    );
    let w1 = w2
        .clone()
        .with_start(time("2024-06-03T14:30:00Z"))
        .with_warmup(200)
        .with_limit(1000);
    rt.block_on(async {
        if wanted("w1") {
            let m = measure(runs * 10, || async {
                Output::of(&reader.bars(&w1).await.expect("w1").batches)
            })
            .await;
            assert_eq!(m.1.rows, 1200);
            report("W1 200 warmup + 1000 bars", m, bandwidth);
        }
        if wanted("w2") {
            let m = measure(runs, || async {
                Output::of(&reader.bars(&w2).await.expect("w2").batches)
            })
            .await;
            assert_eq!(m.1.rows, 98_280);
            report("W2 one symbol-year", m, bandwidth);
        }

        for (label, window, rows) in [("day", DAY, 195_000), ("week", WEEK, 975_000)] {
            if !wanted(label) {
                continue;
            }
            let all = requests(500, window);
            let m = measure(runs, || async {
                Output::of(&wide.bars_merged(&all).await.expect("merged").batches)
            })
            .await;
            assert_eq!(m.1.rows, rows);
            report(&format!("universe {label}, 500 merged"), m, bandwidth);
            let m = measure(runs, || async {
                let mut stream = wide.stream_merged(&all).await.expect("stream");
                let mut out = Output::default();
                let mut last_ts = i64::MIN;
                while let Some(batch) = stream.next().await {
                    let batch = batch.expect("batch");
                    let ts = batch
                        .column(2)
                        .as_any()
                        .downcast_ref::<quiver::datafusion::arrow::array::TimestampMicrosecondArray>()
                        .expect("ts");
                    assert!(ts.value(0) >= last_ts, "streamed in ts order");
                    last_ts = ts.value(ts.len() - 1);
                    let one = Output::of(std::slice::from_ref(&batch));
                    out.rows += one.rows;
                    out.bytes += one.bytes;
                    out.largest_batch = out.largest_batch.max(one.rows);
                }
                out
            })
            .await;
            assert_eq!(m.1.rows, rows);
            report(&format!("universe {label}, 500 streamed"), m, bandwidth);
        }
        if wanted("day50") {
            let fifty = requests(50, DAY);
            let m = measure(runs, || async {
                Output::of(&wide.bars_merged(&fifty).await.expect("merged").batches)
            })
            .await;
            report("universe day, 50 merged", m, bandwidth);
        }
        if !wanted("w3") {
            return;
        }
        let m = measure(runs.min(10), || async {
            let batches = reader
                .context()
                .sql(W3)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("w3");
            Output::of(&batches)
        })
        .await;
        assert_eq!(m.1.rows, 12_600);
        report("W3 daily VWAP, 50 symbols", m, bandwidth);
    });

    if std::env::var("QUIVER_BENCH_PYTHON").as_deref() != Ok("0") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/w14_others.py");
        let status = Command::new("python3")
            .arg(script)
            .arg(design.root().join("market_data"))
            .arg(universe.root().join("market_data"))
            .arg("--runs")
            .arg(runs.to_string())
            .status()
            .expect("python3");
        assert!(status.success(), "benches/w14_others.py failed");
    }
}
