//! W1 (DESIGN.md §5) on a partition of eight files, beside the same partition compacted into
//! one, in the same run: a live feed leaves a month as its big file plus small appended ones
//! until compaction merges them, and the warmup read must stay fast meanwhile.
//!
//! The month (one symbol, June 2024, 1m bars, 7,800 rows) is written in eight steps with a
//! pass after each, cut so that the W1 read (200 warmup bars and 1,000 bars from
//! 2024-06-10T14:30Z) takes rows from every one of the eight files; then `compact` makes it
//! one file and the read is measured again.
//!
//! `cargo bench --bench w1_files`

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver::cache::Cache;
use quiver::config::{CacheConfig, DatabaseConfig};
use quiver::generate::{GenerateOptions, generate_vec};
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;
use quiver::{OnConflict, Store, Symbol};

const FILES: usize = 8;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-10T14:30:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn w1_files(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let database = DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("month.db").display()),
        schema: None,
        max_connections: 4,
    };
    let store = rt.block_on(Store::connect(&database)).expect("connect");
    rt.block_on(store.migrate()).expect("migrate");
    let mut options = GenerateOptions::new(1, 20, "1m".parse().expect("timeframe"), 42);
    options.start = NaiveDate::from_ymd_opt(2024, 6, 1).expect("date");
    let bars = generate_vec(&options).expect("generate");
    let first = bars
        .iter()
        .position(|b| b.ts >= start())
        .expect("the window's first bar");
    // Seven cuts spread over the 1,200 bars the read takes: each file holds some of them.
    let mut cuts: Vec<usize> = (1..FILES).map(|k| first - 200 + k * 1200 / FILES).collect();
    cuts.insert(0, 0);
    cuts.push(bars.len());
    let settings = CacheConfig::new(dir.path().join("cache"));
    let mut syncer = Syncer::new(store.clone(), &settings, None).expect("syncer");
    for part in cuts.windows(2) {
        rt.block_on(store.insert_bars(&bars[part[0]..part[1]], OnConflict::Error))
            .expect("insert");
        rt.block_on(syncer.pass(false)).expect("sync");
    }
    let cache = Cache::new(&settings.dir);
    let files = |cache: &Cache| {
        let state = rt
            .block_on(cache.current())
            .expect("state")
            .expect("a version");
        state.files().count()
    };
    assert_eq!(files(&cache), FILES, "the month is eight files");

    let request = BarsRequest::new(
        Symbol::parse("SYM001").expect("symbol"),
        "1m".parse().expect("timeframe"),
    )
    .with_start(start())
    .with_warmup(200)
    .with_limit(1000);
    let mut group = c.benchmark_group("w1_files");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1200));
    let mut measure = |name: &str| {
        let reader = Reader::new(cache.clone()).expect("reader");
        let got = rt.block_on(reader.bars(&request)).expect("w1");
        assert_eq!((got.len(), got.warmup), (1200, 200));
        let got = got.to_bars().expect("bars");
        assert_eq!(
            got[..],
            bars[first - 200..first + 1000],
            "exact rows, in ts order"
        );
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt)
                .iter(|| async { reader.bars(&request).await.expect("w1").len() })
        });
    };
    measure("eight_files");
    rt.block_on(syncer.compact()).expect("compact");
    assert_eq!(files(&cache), 1, "compacted into one file");
    measure("one_file");
    group.finish();
}

criterion_group!(benches, w1_files);
criterion_main!(benches);
