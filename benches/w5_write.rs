//! W5 (DESIGN.md §5): bulk insert of 10k and 1M bars into SQLite and PostgreSQL (COPY), beside
//! a row-at-a-time insert loop (one autocommitted INSERT per bar) measured in the same run.
//!
//! `cargo bench --bench w5_write` (PostgreSQL from QUIVER_TEST_PG_URL, default
//! postgres://postgres@127.0.0.1:5432/test; the bench uses its own schema).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver::config::DatabaseConfig;
use quiver::generate::{GenerateOptions, generate_vec};
use quiver::model::decimal_text;
use quiver::{Bar, OnConflict, Store};
use tokio::runtime::Runtime;

fn stores(rt: &Runtime, dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    let pg_url = std::env::var("QUIVER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let configs = [
        (
            "sqlite",
            DatabaseConfig {
                url: format!("sqlite://{}", dir.join("w5.db").display()),
                schema: None,
                max_connections: 4,
            },
        ),
        (
            "postgres",
            DatabaseConfig {
                url: pg_url,
                schema: Some("quiver_bench_w5".into()),
                max_connections: 4,
            },
        ),
    ];
    configs
        .into_iter()
        .map(|(name, c)| {
            let store = rt.block_on(async {
                let s = Store::connect(&c).await.expect("connect");
                s.migrate().await.expect("migrate");
                s
            });
            (name, store)
        })
        .collect()
}

/// An empty table: revert and re-apply the migrations (a DROP, not a million-row DELETE).
fn reset(rt: &Runtime, store: &Store) {
    rt.block_on(async {
        while store.revert().await.expect("revert").is_some() {}
        store.migrate().await.expect("migrate");
    });
}

async fn row_at_a_time(store: &Store, bars: &[Bar]) {
    for b in bars {
        let sql = "INSERT INTO market_data (symbol, timeframe, ts, open, high, low, close, volume) VALUES ";
        if let Some(pool) = store.sqlite_pool() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{sql}(?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(b.symbol.as_str())
            .bind(b.timeframe.to_string())
            .bind(b.ts_micros())
            .bind(decimal_text(&b.open))
            .bind(decimal_text(&b.high))
            .bind(decimal_text(&b.low))
            .bind(decimal_text(&b.close))
            .bind(decimal_text(&b.volume))
            .execute(pool)
            .await
            .expect("insert");
        } else if let Some(pool) = store.postgres_pool() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{sql}($1, $2, $3, $4, $5, $6, $7, $8)"
            )))
            .bind(b.symbol.as_str())
            .bind(b.timeframe.to_string())
            .bind(b.ts)
            .bind(b.open)
            .bind(b.high)
            .bind(b.low)
            .bind(b.close)
            .bind(b.volume)
            .execute(pool)
            .await
            .expect("insert");
        }
    }
}

fn w5(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    // 50 symbols × 52 days × 390 one-minute bars = 1,014,000; the first 1M are used.
    let all = generate_vec(&GenerateOptions::new(50, 52, "1m".parse().expect("tf"), 42))
        .expect("generate");
    let sizes = [("10k", 10_000usize), ("1M", 1_000_000)];
    let mut group = c.benchmark_group("w5");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for (backend, store) in stores(&rt, dir.path()) {
        for (label, n) in sizes {
            let bars = &all[..n];
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(format!("{backend}/bulk"), label), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        reset(&rt, &store);
                        let t = Instant::now();
                        rt.block_on(store.insert_bars(bars, OnConflict::Error))
                            .expect("bulk insert");
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
        let bars = &all[..10_000];
        group.throughput(Throughput::Elements(bars.len() as u64));
        group.bench_function(
            BenchmarkId::new(format!("{backend}/row_at_a_time"), "10k"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        reset(&rt, &store);
                        let t = Instant::now();
                        rt.block_on(row_at_a_time(&store, bars));
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, w5);
criterion_main!(benches);
