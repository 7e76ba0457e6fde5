//! W1 and W2 (DESIGN.md §5) through quiver's reader, beside the same reads straight from the
//! SQL database with sqlx, on the 4.9M-bar dataset (built once, see benches/common).
//!
//! `cargo bench --bench read`. W3, W7 and the DuckDB/Polars comparison are not here yet.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quiver::Symbol;
use quiver::cache::Cache;
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;
use sqlx::Row;

fn w1_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-03T14:30:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

/// W1 straight from SQL: the 200 bars before, then the next 1000, rows decoded.
async fn w1_sql(store: &quiver::Store) -> usize {
    let start = w1_start();
    let mut n = 0;
    if let Some(pool) = store.sqlite_pool() {
        for sql in [
            "SELECT * FROM market_data WHERE symbol = ? AND timeframe = '1m' AND ts < ? ORDER BY ts DESC LIMIT 200",
            "SELECT * FROM market_data WHERE symbol = ? AND timeframe = '1m' AND ts >= ? ORDER BY ts LIMIT 1000",
        ] {
            let rows = sqlx::query(sql)
                .bind("SYM007")
                .bind(start.timestamp_micros())
                .fetch_all(pool)
                .await
                .expect("query");
            for r in &rows {
                let _: &str = r.try_get(3).expect("open");
            }
            n += rows.len();
        }
    } else if let Some(pool) = store.postgres_pool() {
        for sql in [
            "SELECT * FROM market_data WHERE symbol = $1 AND timeframe = '1m' AND ts < $2 ORDER BY ts DESC LIMIT 200",
            "SELECT * FROM market_data WHERE symbol = $1 AND timeframe = '1m' AND ts >= $2 ORDER BY ts LIMIT 1000",
        ] {
            let rows = sqlx::query(sql)
                .bind("SYM007")
                .bind(start)
                .fetch_all(pool)
                .await
                .expect("query");
            for r in &rows {
                let _: rust_decimal::Decimal = r.try_get(3).expect("open");
            }
            n += rows.len();
        }
    }
    n
}

async fn w2_sql(store: &quiver::Store) -> usize {
    let filter = quiver::BarFilter {
        symbol: Some(Symbol::parse("SYM007").expect("symbol")),
        timeframe: Some("1m".parse().expect("timeframe")),
        ..Default::default()
    };
    store.read_bars(&filter).await.expect("read").len()
}

fn read(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sqlite = rt.block_on(common::dataset("sqlite"));
    let postgres = rt.block_on(common::dataset("postgres"));
    let cache = Cache::new(common::bench_dir().join("cache-sqlite"));
    let mut syncer = Syncer::new(sqlite.clone(), cache.clone(), None).expect("syncer");
    rt.block_on(syncer.pass(false)).expect("sync");
    drop(syncer);
    let reader = Reader::new(cache).expect("reader");
    let symbol = Symbol::parse("SYM007").expect("symbol");
    let w1 = BarsRequest {
        start: Some(w1_start()),
        warmup: 200,
        limit: Some(1000),
        ..BarsRequest::new(symbol.clone(), "1m".parse().expect("timeframe"))
    };
    let w2 = BarsRequest::new(symbol, "1m".parse().expect("timeframe"));
    assert_eq!(rt.block_on(reader.bars(&w1)).expect("w1").len(), 1200);
    assert_eq!(rt.block_on(w1_sql(&sqlite)), 1200);

    let mut group = c.benchmark_group("read");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("w1", "quiver"), |b| {
        b.to_async(&rt)
            .iter(|| async { reader.bars(&w1).await.expect("w1").len() })
    });
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        group.bench_function(BenchmarkId::new("w1", name), |b| {
            b.to_async(&rt).iter(|| w1_sql(store))
        });
    }
    group.bench_function(BenchmarkId::new("w2", "quiver"), |b| {
        b.to_async(&rt)
            .iter(|| async { reader.bars(&w2).await.expect("w2").len() })
    });
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        group.bench_function(BenchmarkId::new("w2", name), |b| {
            b.to_async(&rt).iter(|| w2_sql(store))
        });
    }
    group.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
