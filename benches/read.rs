//! W1, W2 and W3 (DESIGN.md §5) through quiver's reader, beside the same workloads read
//! straight from the SQL databases with sqlx, on the 4.9M-bar dataset (built once, see
//! benches/common), then DuckDB and Polars on the same cache files (benches/duckdb_polars.py,
//! which installs them with pip into a virtual environment under the bench folder).
//!
//! `cargo bench --bench read` (set `QUIVER_BENCH_PYTHON=0` to skip DuckDB and Polars).
//!
//! Also measured here, to decide what to cache: W1 repeated with the same window (what a
//! result cache would serve), a result-cache hit (an upper bound of what one could give), and
//! W1 over a different window every time (what a backtest sweeping dates issues).

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver::Symbol;
use quiver::cache::Cache;
use quiver::config::IoMode;
use quiver::read::{Bars, BarsRequest, ReadOptions, Reader};
use quiver::sync::Syncer;
use sqlx::Row;

pub const W1_SQL: [&str; 2] = [
    "SELECT * FROM market_data WHERE symbol = 'SYM007' AND timeframe = '1m' \
     AND ts < TIMESTAMP '2024-06-03T14:30:00Z' ORDER BY ts DESC LIMIT 200",
    "SELECT * FROM market_data WHERE symbol = 'SYM007' AND timeframe = '1m' \
     AND ts >= TIMESTAMP '2024-06-03T14:30:00Z' ORDER BY ts LIMIT 1000",
];
/// W3 on the cache (DataFusion SQL): exact decimal VWAP, high and low per symbol and day.
const W3_CACHE: &str = "SELECT symbol, date_trunc('day', ts) AS day, \
     sum(close * volume) / sum(volume) AS vwap, max(high) AS high, min(low) AS low \
     FROM market_data WHERE timeframe = '1m' \
     AND ts >= TIMESTAMP '2024-01-01T00:00:00Z' AND ts < TIMESTAMP '2025-01-01T00:00:00Z' \
     GROUP BY 1, 2";
/// W3 on PostgreSQL (exact NUMERIC).
const W3_POSTGRES: &str = "SELECT symbol, date_trunc('day', ts) AS day, \
     sum(close * volume) / sum(volume) AS vwap, max(high) AS high, min(low) AS low \
     FROM market_data WHERE timeframe = '1m' \
     AND ts >= '2024-01-01T00:00:00Z' AND ts < '2025-01-01T00:00:00Z' GROUP BY 1, 2";
/// W3 on SQLite: prices are decimal text, so SQLite's arithmetic (and comparisons, after a
/// cast) go through floating point; the best SQLite can do.
const W3_SQLITE: &str = "SELECT symbol, ts / 86400000000 AS day, \
     sum(close * volume) / sum(volume) AS vwap, max(CAST(high AS REAL)) AS high, \
     min(CAST(low AS REAL)) AS low FROM market_data WHERE timeframe = '1m' \
     AND ts >= 1704067200000000 AND ts < 1735689600000000 GROUP BY symbol, day";

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

/// W2 straight from SQL: every 2024 bar of SYM007 decoded into typed bars.
async fn w2_sql(store: &quiver::Store) -> usize {
    let filter = quiver::BarFilter {
        symbol: Some(Symbol::parse("SYM007").expect("symbol")),
        timeframe: Some("1m".parse().expect("timeframe")),
        ..Default::default()
    };
    store.read_bars(&filter).await.expect("read").len()
}

/// W3 straight from SQL: the aggregated rows fetched.
async fn w3_sql(store: &quiver::Store) -> usize {
    if let Some(pool) = store.sqlite_pool() {
        sqlx::query(W3_SQLITE)
            .fetch_all(pool)
            .await
            .expect("w3")
            .len()
    } else if let Some(pool) = store.postgres_pool() {
        sqlx::query(W3_POSTGRES)
            .fetch_all(pool)
            .await
            .expect("w3")
            .len()
    } else {
        0
    }
}

async fn sql_rows(reader: &Reader, sql: &str) -> usize {
    common::sql_rows(reader.context(), sql).await
}

/// The cache of the SQLite dataset, synced once.
pub fn bench_cache(rt: &tokio::runtime::Runtime, sqlite: &quiver::Store) -> Cache {
    let dir = common::bench_dir().join("cache-sqlite");
    let cache = Cache::new(&dir);
    let settings = quiver::config::CacheConfig::new(&dir);
    let mut syncer = Syncer::new(sqlite.clone(), &settings, None).expect("syncer");
    rt.block_on(syncer.pass(false)).expect("sync");
    cache
}

fn read(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sqlite = rt.block_on(common::dataset("sqlite"));
    let postgres = rt.block_on(common::dataset("postgres"));
    let cache = bench_cache(&rt, &sqlite);
    let reader = Reader::new(cache.clone()).expect("reader");
    let pread = Reader::with_options(
        cache.clone(),
        ReadOptions {
            io: IoMode::Pread,
            ..ReadOptions::default()
        },
    )
    .expect("reader");
    let symbol = Symbol::parse("SYM007").expect("symbol");
    let w1 = BarsRequest::new(symbol.clone(), "1m".parse().expect("timeframe"))
        .with_start(w1_start())
        .with_warmup(200)
        .with_limit(1000);
    let w2 = BarsRequest::new(symbol, "1m".parse().expect("timeframe"));
    let got = rt.block_on(reader.bars(&w1)).expect("w1");
    assert_eq!((got.len(), got.warmup), (1200, 200));
    assert_eq!(rt.block_on(w1_sql(&sqlite)), 1200);
    assert_eq!(rt.block_on(w1_sql(&postgres)), 1200);
    let w2_rows = rt.block_on(reader.bars(&w2)).expect("w2").len();
    assert_eq!(rt.block_on(w2_sql(&sqlite)), w2_rows);
    let w3_rows = rt.block_on(sql_rows(&reader, W3_CACHE));
    assert_eq!(rt.block_on(w3_sql(&sqlite)), w3_rows);
    assert_eq!(rt.block_on(w3_sql(&postgres)), w3_rows);
    eprintln!("W1 1200 bars, W2 {w2_rows} bars, W3 {w3_rows} rows");

    let mut group = c.benchmark_group("w1");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1200));
    for (name, r) in [("quiver_mmap", &reader), ("quiver_pread", &pread)] {
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt)
                .iter(|| async { r.bars(&w1).await.expect("w1").len() })
        });
    }
    group.bench_function(BenchmarkId::new("read", "quiver_sql"), |b| {
        b.to_async(&rt).iter(|| async {
            sql_rows(&reader, W1_SQL[0]).await + sql_rows(&reader, W1_SQL[1]).await
        })
    });
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt).iter(|| w1_sql(store))
        });
    }
    group.finish();

    // Would a result cache pay? Same window again, a hit in such a cache, and a window that
    // moves every call (a backtest walking forward, or a parameter sweep over dates).
    let mut group = c.benchmark_group("w1_caching");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("same_window", |b| {
        b.to_async(&rt)
            .iter(|| async { reader.bars(&w1).await.expect("w1").len() })
    });
    let results: Mutex<HashMap<BarsRequest, Arc<Bars>>> = Mutex::new(HashMap::new());
    results
        .lock()
        .expect("lock")
        .insert(w1.clone(), Arc::new(got.clone()));
    group.bench_function("result_cache_hit", |b| {
        b.iter(|| {
            let hit = results.lock().expect("lock").get(black_box(&w1)).cloned();
            hit.map(|bars| bars.len())
        })
    });
    let windows: Vec<BarsRequest> = (0..200)
        .map(|day| {
            w1.clone()
                .with_start(w1_start() - chrono::Duration::days(100) + chrono::Duration::days(day))
        })
        .collect();
    let mut next = 0usize;
    group.bench_function("moving_window", |b| {
        b.to_async(&rt).iter(|| {
            next = (next + 1) % windows.len();
            let request = &windows[next];
            let reader = &reader;
            async move { reader.bars(request).await.expect("w1").len() }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("w2");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(w2_rows as u64));
    for (name, r) in [("quiver_mmap", &reader), ("quiver_pread", &pread)] {
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt)
                .iter(|| async { r.bars(&w2).await.expect("w2").len() })
        });
    }
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt).iter(|| w2_sql(store))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("w3");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(BenchmarkId::new("read", "quiver"), |b| {
        b.to_async(&rt).iter(|| sql_rows(&reader, W3_CACHE))
    });
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt).iter(|| w3_sql(store))
        });
    }
    group.finish();

    if std::env::var("QUIVER_BENCH_PYTHON").as_deref() != Ok("0") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_polars.py");
        let status = Command::new("python3")
            .arg(script)
            .arg(cache.view_dir())
            .env("QUIVER_BENCH_DIR", common::bench_dir())
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => eprintln!("DuckDB/Polars comparison did not run: {other:?}"),
        }
    }
}

criterion_group!(benches, read);
criterion_main!(benches);
