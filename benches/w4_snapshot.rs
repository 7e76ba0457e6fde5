//! W4 (DESIGN.md §5): a full snapshot of the 4.9M-bar table into the Parquet cache (rows/s),
//! from SQLite and from PostgreSQL.
//!
//! `cargo bench --bench w4_snapshot` (the dataset is built on first use; see benches/common).

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::config::CacheConfig;
use quiver::sync::Syncer;

fn w4(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("w4_snapshot");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for backend in ["sqlite", "postgres"] {
        let store = rt.block_on(common::dataset(backend));
        let rows = rt.block_on(store.count_rows()).expect("rows");
        group.throughput(Throughput::Elements(rows));
        let dir = tempfile::tempdir().expect("temp dir");
        let schema = common::config(backend).schema;
        let mut syncer = Syncer::new(store, &CacheConfig::new(dir.path()), schema).expect("syncer");
        group.bench_function(backend, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let report = rt.block_on(syncer.pass(true)).expect("snapshot");
                    total += started.elapsed();
                    assert_eq!(report.rows, rows);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, w4);
criterion_main!(benches);
