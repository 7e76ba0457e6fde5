//! W7 (DESIGN.md §5): 8 readers doing W1 in a loop while the daemon syncs.
//!
//! The daemon runs in-process over the SQLite dataset's cache; a writer commits one bar every
//! 20 ms (the next minute of a rotating symbol, after the dataset's end), so the daemon keeps
//! publishing new versions throughout. Eight reader threads share one [`Reader`] (as the
//! threads of one backtest process would) and each runs W1 (200 warmup bars + 1000) on a
//! rotating symbol as fast as it can; every read is checked (1200 bars, 200 of them warmup).
//! Prints queries per second, latency percentiles and the publications that happened.
//!
//! `cargo bench --bench w7_concurrency` (`QUIVER_W7_SECONDS`, default 10).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quiver::cache::Cache;
use quiver::config::CacheConfig;
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;
use quiver::{Bar, OnConflict, Symbol};
use rust_decimal::Decimal;

const READERS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let seconds: u64 = std::env::var("QUIVER_W7_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt.block_on(common::dataset("sqlite"));
    let dir = common::bench_dir().join("cache-w7");
    let _ = std::fs::remove_dir_all(&dir);
    let cache = Cache::new(&dir);
    let mut syncer = Syncer::new(store.clone(), &CacheConfig::new(&dir), None).expect("syncer");
    let started = Instant::now();
    rt.block_on(syncer.pass(false)).expect("snapshot");
    eprintln!("initial snapshot in {:.2?}", started.elapsed());
    let first_version = rt
        .block_on(cache.current())
        .expect("table")
        .map(|s| s.version());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = rt.spawn(common::daemon_until(syncer, stop_rx));

    // The writer: one bar per commit after the dataset's last day, rotating over symbols.
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let store = store.clone();
        let running = running.clone();
        rt.spawn(async move {
            let base: DateTime<Utc> = DateTime::parse_from_rfc3339("2025-01-02T14:30:00Z")
                .expect("time")
                .with_timezone(&Utc);
            let mut written = Vec::new();
            let mut i: i64 = 0;
            while running.load(Ordering::Relaxed) {
                let symbol = Symbol::parse(&format!("SYM{:03}", i % 50 + 1)).expect("symbol");
                let price = Decimal::new(10_000 + i, 2);
                let bar = Bar {
                    symbol,
                    timeframe: "1m".parse().expect("timeframe"),
                    ts: base + chrono::Duration::minutes(i / 50),
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: Decimal::ONE,
                };
                store
                    .insert_bars(std::slice::from_ref(&bar), OnConflict::Error)
                    .await
                    .expect("commit");
                written.push(bar);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            written
        })
    };

    let reader = Reader::new(cache.clone()).expect("reader");
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2024-06-03T14:30:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..READERS)
        .map(|t| {
            let reader = reader.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let mut latencies = Vec::new();
                let mut n = t;
                while Instant::now() < deadline {
                    let symbol = Symbol::parse(&format!("SYM{:03}", n % 50 + 1)).expect("symbol");
                    let request = BarsRequest::new(symbol, "1m".parse().expect("timeframe"))
                        .with_start(start)
                        .with_warmup(200)
                        .with_limit(1000);
                    let began = Instant::now();
                    let bars = rt.block_on(reader.bars(&request)).expect("w1");
                    latencies.push(began.elapsed());
                    assert_eq!((bars.len(), bars.warmup), (1200, 200));
                    n += READERS;
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("reader thread"))
        .collect();
    let elapsed = Duration::from_secs(seconds);
    running.store(false, Ordering::Relaxed);
    let written = rt.block_on(writer).expect("writer");
    // Let the daemon publish the last commits, then stop it.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = stop_tx.send(());
    rt.block_on(daemon).expect("daemon").expect("daemon run");
    let last_version = rt
        .block_on(cache.current())
        .expect("table")
        .map(|s| s.version());

    latencies.sort();
    let queries = latencies.len();
    println!(
        "W7: {READERS} readers, {queries} W1 reads in {seconds} s = {:.0} queries/s; \
         latency p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        queries as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    println!(
        "meanwhile: {} bars committed, versions {:?} -> {:?} published by the daemon; reader {:?}",
        written.len(),
        first_version,
        last_version,
        reader.stats()
    );

    // Leave the dataset as it was.
    rt.block_on(async {
        for bar in &written {
            store
                .delete_bars(&quiver::BarFilter {
                    symbol: Some(bar.symbol.clone()),
                    timeframe: Some(bar.timeframe),
                    start: Some(bar.ts),
                    end: Some(bar.ts),
                })
                .await
                .expect("clean up");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
