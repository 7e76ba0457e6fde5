//! W6 (DESIGN.md §5): freshness. With the daemon running over the 4.9M-bar dataset, one bar
//! is committed at a time (the next minute of SYM001, as a live feed would append it) and a
//! `Reader` polls the cache until `latest` returns that bar; p50 and p99 over 100 commits,
//! per backend.
//!
//! `cargo bench --bench w6_freshness` (a bench binary, not criterion: each sample is a
//! commit-to-visible latency, not a loop of identical calls).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quiver::cache::Cache;
use quiver::config::CacheConfig;
use quiver::db::BarFilter;
use quiver::read::Reader;
use quiver::sync::Syncer;
use quiver::{Bar, OnConflict, Symbol};
use rust_decimal::Decimal;

const COMMITS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(backend: &str) {
    let store = common::dataset(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::new(dir.path());
    let schema = common::config(backend).schema;
    let mut syncer =
        Syncer::new(store.clone(), &CacheConfig::new(dir.path()), schema).expect("syncer");
    let started = Instant::now();
    syncer.pass(false).await.expect("snapshot");
    eprintln!("{backend}: initial snapshot in {:.2?}", started.elapsed());

    // Probe bars go after the last bar of SYM001; they are deleted again at the end.
    let symbol = Symbol::parse("SYM001").expect("symbol");
    let last = store
        .read_bars(&BarFilter {
            symbol: Some(symbol.clone()),
            ..BarFilter::default()
        })
        .await
        .expect("read")
        .last()
        .map(|b| b.ts)
        .expect("SYM001 has bars");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(common::daemon_until(syncer, stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = Reader::new(cache.clone()).expect("reader");
    let timeframe = "1m".parse().expect("timeframe");

    let mut latencies = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let ts: DateTime<Utc> = last + chrono::Duration::minutes(i as i64 + 1);
        let price = Decimal::new(10_000 + i as i64, 2);
        let bar = Bar {
            symbol: symbol.clone(),
            timeframe: "1m".parse().expect("timeframe"),
            ts,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Decimal::ONE,
        };
        store
            .insert_bars(&[bar], OnConflict::Error)
            .await
            .expect("commit");
        let committed = Instant::now();
        // The reader: one check for a new commit per poll; the bar is read when one came.
        let mut seen = None;
        loop {
            let version = reader
                .current_version()
                .await
                .expect("snapshot")
                .map(|s| s.version());
            if version != seen {
                seen = version;
                let bars = reader.latest(&symbol, timeframe).await.expect("latest");
                let visible = bars
                    .to_bars()
                    .expect("bars")
                    .last()
                    .is_some_and(|b| b.ts == ts);
                if visible {
                    latencies.push(committed.elapsed());
                    break;
                }
            }
            assert!(
                committed.elapsed() < Duration::from_secs(30),
                "bar {i} never became visible"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // Commits are spaced like a feed, not a bulk load.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    daemon.await.expect("daemon task").expect("daemon");

    let deleted = store
        .delete_bars(&BarFilter {
            symbol: Some(symbol),
            start: Some(last + chrono::Duration::seconds(1)),
            ..BarFilter::default()
        })
        .await
        .expect("clean up");
    assert_eq!(deleted, COMMITS as u64);

    latencies.sort();
    println!(
        "w6_freshness/{backend}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {COMMITS} commits",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn main() {
    // QUIVER_LOG=quiver=debug shows each pass and its publication steps.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes `--bench`; a filter argument picks one backend.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for backend in ["sqlite", "postgres"] {
        if filter.as_deref().is_none_or(|f| backend.contains(f)) {
            rt.block_on(run(backend));
        }
    }
}
