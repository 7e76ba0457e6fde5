//! W8 (DESIGN.md §5): scale. Caches of 1k, 10k and 100k partitions, made by the real sync from
//! sparse data (one 1m bar in each symbol-month: 10, 100 and 1,000 symbols over 100 months),
//! then, with the daemon running: the commit-to-visible latency of one-bar commits (a late
//! bar in an existing partition, so the partition is rewritten), reader open time and memory,
//! a one-symbol-month read, and the time of a checkpoint of the whole table.
//!
//! `cargo bench --bench w8_scale [sqlite|postgres] [1000|10000|100000]` (a bench binary). The
//! databases are built once under `$QUIVER_BENCH_DIR` (SQLite) and in PostgreSQL schemas
//! `quiver_bench_w8_<n>`; each run syncs a fresh cache.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use quiver::cache::Cache;
use quiver::config::{CacheConfig, DatabaseConfig};
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;
use quiver::{Bar, OnConflict, Store, Symbol};
use rust_decimal::Decimal;

/// Counts live heap bytes, so the memory a reader keeps is measured exactly (the resident size
/// hides it: freed memory of earlier sizes is reused).
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on as is.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_add(
                new as isize - layout.size() as isize,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1 << 20) as f64
}

const COMMITS: usize = 60;
const MONTHS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn month_start(m: usize) -> DateTime<Utc> {
    let (y, mo) = (2016 + (m / 12) as i32, (m % 12) as u32 + 1);
    Utc.with_ymd_and_hms(y, mo, 1, 0, 0, 0).unwrap()
}

fn bar(symbol: &str, ts: DateTime<Utc>, cents: i64) -> Bar {
    let p = Decimal::new(cents, 2);
    Bar {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: "1m".parse().unwrap(),
        ts,
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Decimal::ONE,
    }
}

async fn dataset(backend: &str, partitions: usize) -> (Store, DatabaseConfig) {
    let symbols = partitions / MONTHS;
    let config = match backend {
        "sqlite" => DatabaseConfig {
            url: format!(
                "sqlite://{}",
                common::bench_dir()
                    .join(format!("w8-{partitions}.db"))
                    .display()
            ),
            schema: None,
            max_connections: 4,
        },
        _ => DatabaseConfig {
            schema: Some(format!("quiver_bench_w8_{partitions}")),
            ..common::config("postgres")
        },
    };
    let store = Store::connect(&config).await.expect("connect");
    store.migrate().await.expect("migrate");
    if store.count_rows().await.expect("count") != partitions as u64 {
        while store.revert().await.expect("revert").is_some() {}
        store.migrate().await.expect("migrate");
        let mut bars = Vec::with_capacity(partitions);
        for s in 0..symbols {
            for m in 0..MONTHS {
                let ts = month_start(m) + chrono::Duration::hours(14 + (s % 6) as i64);
                bars.push(bar(&format!("S{s:05}"), ts, 10_000 + (s * 7 + m) as i64));
            }
        }
        store
            .insert_bars(&bars, OnConflict::Error)
            .await
            .expect("insert");
    }
    (store, config)
}

async fn run(backend: &str, partitions: usize) {
    let (store, database) = dataset(backend, partitions).await;
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let settings = CacheConfig::new(dir.path());
    let mut syncer =
        Syncer::new(store.clone(), &settings, database.schema.clone()).expect("syncer");
    let started = Instant::now();
    syncer.pass(false).await.expect("snapshot");
    let snapshot = started.elapsed();

    // A checkpoint of the whole table, timed (the daemon writes these in the background).
    let cache = Cache::new(dir.path());
    let table = cache.existing_table().unwrap().unwrap();
    let state = syncer.state().unwrap().clone();
    let started = Instant::now();
    let checkpoint_bytes = table
        .checkpoint(&state, settings.retention)
        .await
        .expect("checkpoint");
    let checkpoint = started.elapsed();

    // Reader open: the checkpoint and the commits after it (median of 5); memory it holds.
    let mut opens = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let reader = Reader::new(cache.clone()).expect("reader");
        reader
            .current_version()
            .await
            .expect("open")
            .expect("a version");
        opens.push(started.elapsed());
    }
    let before = live_mib();
    let started = Instant::now();
    let reader = Reader::new(cache.clone()).expect("reader");
    let opened = reader
        .current_version()
        .await
        .expect("open")
        .expect("a version");
    opens.push(started.elapsed());
    let reader_mib = live_mib() - before;
    opens.sort();
    let open = opens[opens.len() / 2];
    assert_eq!(opened.state.file_count(), partitions);
    drop(opened);
    // A writer's state of the same version (with tombstones and the position).
    let before = live_mib();
    let written = table
        .load(quiver::cache::LoadOptions {
            tombstones: true,
            sync_mark: true,
        })
        .await
        .expect("load");
    let writer_mib = live_mib() - before;
    drop(written);

    // A one-symbol-month read (one partition), warm.
    let month = month_start(MONTHS / 2);
    let request = BarsRequest::new("S00000".parse().unwrap(), "1m".parse().unwrap())
        .with_start(month)
        .with_end(month_start(MONTHS / 2 + 1) - chrono::Duration::microseconds(1));
    let mut reads = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let bars = reader.bars(&request).await.expect("read");
        reads.push(started.elapsed());
        assert_eq!(bars.len(), 1);
    }
    reads.sort();

    // One-bar commits with the daemon running: each a late bar in an existing partition.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(common::daemon_until(syncer, stop_rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let symbols = partitions / MONTHS;
    let mut latencies = Vec::with_capacity(COMMITS);
    let timeframe = "1m".parse().unwrap();
    for i in 0..COMMITS {
        let symbol = format!("S{:05}", (i * 7919) % symbols);
        let m = (i * 31) % MONTHS;
        // Early in the month, before the bar already there: a late bar, not an append.
        let ts = month_start(m) + chrono::Duration::minutes(1 + i as i64);
        store
            .insert_bars(&[bar(&symbol, ts, 20_000 + i as i64)], OnConflict::Error)
            .await
            .expect("commit");
        let committed = Instant::now();
        let request = BarsRequest::new(symbol.parse().unwrap(), timeframe)
            .with_start(ts)
            .with_end(ts);
        let mut seen = None;
        loop {
            let version = reader
                .current_version()
                .await
                .expect("snapshot")
                .map(|s| s.version());
            if version != seen {
                seen = version;
                if reader.bars(&request).await.is_ok_and(|b| b.len() == 1) {
                    latencies.push(committed.elapsed());
                    break;
                }
            }
            assert!(
                committed.elapsed() < Duration::from_secs(30),
                "never visible"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    daemon.await.expect("daemon task").expect("daemon");
    // Put the dataset back as it was.
    for i in 0..COMMITS {
        let symbol = Symbol::parse(&format!("S{:05}", (i * 7919) % symbols)).unwrap();
        let ts = month_start((i * 31) % MONTHS) + chrono::Duration::minutes(1 + i as i64);
        store
            .delete_bars(&quiver::BarFilter {
                symbol: Some(symbol),
                timeframe: None,
                start: Some(ts),
                end: Some(ts),
            })
            .await
            .expect("clean up");
    }
    latencies.sort();
    let delta_rs = delta_rs(&cache);
    println!(
        "w8_scale/{backend}/{partitions}: one-bar commit-to-visible p50 {:.1} ms, p99 {:.1} ms \
         ({COMMITS} commits); reader open {:.1} ms, {:.1} MiB (a writer's state {:.1} MiB); \
         one-symbol-month read p50 {:.2} ms; checkpoint {:.0} ms ({:.1} MB); snapshot {:.1} s",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(open),
        reader_mib,
        writer_mib,
        ms(percentile(&reads, 0.5)),
        ms(checkpoint),
        checkpoint_bytes as f64 / 1e6,
        snapshot.as_secs_f64(),
    );
    if let Some(line) = delta_rs {
        println!("w8_scale/{backend}/{partitions}: {line}");
    }
}

/// delta-rs's commit path on the same table (`benches/delta_rs_commit.py`), unless
/// `QUIVER_BENCH_PYTHON=0`.
fn delta_rs(cache: &Cache) -> Option<String> {
    if std::env::var("QUIVER_BENCH_PYTHON").as_deref() == Ok("0") {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/delta_rs_commit.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(cache.table_dir())
        .env("QUIVER_BENCH_DIR", common::bench_dir())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        other => {
            eprintln!("the delta-rs comparison did not run: {other:?}");
            None
        }
    }
}

fn main() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes --bench; other arguments pick backends and sizes.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let names: Vec<&String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for backend in ["sqlite", "postgres"] {
        if !names.is_empty() && !names.iter().any(|n| backend.contains(n.as_str())) {
            continue;
        }
        for partitions in [1_000, 10_000, 100_000] {
            if sizes.is_empty() || sizes.contains(&partitions) {
                rt.block_on(run(backend, partitions));
            }
        }
    }
}
