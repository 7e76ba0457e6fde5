//! W9 (DESIGN.md §5): the live minute. 2,000 symbols with two weeks of 1m history (7.8M bars);
//! `quiver sync --watch` runs as its own process (so its CPU time can be read); a feed writes
//! one bar per symbol per burst, the whole burst in one transaction, a burst every 5 s (12x a
//! real minute clock) for 5 minutes; a reader polls the cache. Reported: burst
//! commit-to-visible (p50, p99), the daemon's CPU, the most files any partition had, and
//! `quiver verify` at the end. Then a sustained load: 200 one-bar commits per second for 60 s
//! (200 symbols in turn), commit-to-visible p99.
//!
//! `cargo bench --bench w9_live [sqlite|postgres]` (a bench binary). `QUIVER_W9_SECONDS` and
//! `QUIVER_W9_SUSTAINED_SECONDS` shorten the two phases (defaults 300 and 60).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quiver::cache::Cache;
use quiver::config::{CacheConfig, DatabaseConfig};
use quiver::generate::{GenerateOptions, bar_count, generate_into};
use quiver::read::Reader;
use quiver::sync::Syncer;
use quiver::{Bar, OnConflict, Store, Symbol};
use rust_decimal::Decimal;

const SYMBOLS: usize = 2_000;
const DAYS: usize = 10;
const BURST_EVERY: Duration = Duration::from_secs(5);
const SUSTAINED_SYMBOLS: usize = 200;
const SUSTAINED_RATE: u64 = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn seconds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second
}

fn database(backend: &str) -> DatabaseConfig {
    match backend {
        "sqlite" => DatabaseConfig {
            url: format!("sqlite://{}", common::bench_dir().join("w9.db").display()),
            schema: None,
            max_connections: 4,
        },
        _ => DatabaseConfig {
            schema: Some("quiver_bench_w9".into()),
            ..common::config("postgres")
        },
    }
}

/// The history, built once: `generate --symbols 2000 --days 10 --timeframe 1m`.
async fn dataset(backend: &str) -> Store {
    let store = Store::connect(&database(backend)).await.expect("connect");
    store.migrate().await.expect("migrate");
    let options = GenerateOptions::new(SYMBOLS, DAYS, "1m".parse().unwrap(), 42);
    let expected = bar_count(&options).expect("count");
    if store.count_rows().await.expect("count") != expected {
        eprintln!("building the W9 {backend} dataset ({expected} bars, once)...");
        while store.revert().await.expect("revert").is_some() {}
        store.migrate().await.expect("migrate");
        generate_into(&store, &options, OnConflict::Error)
            .await
            .expect("generate");
    }
    store
}

fn bar(symbol: &Symbol, ts: DateTime<Utc>, cents: i64) -> Bar {
    let p = Decimal::new(cents, 2);
    Bar {
        symbol: symbol.clone(),
        timeframe: "1m".parse().unwrap(),
        ts,
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Decimal::new(15, 1),
    }
}

/// The most files any partition has in the reader's current version, and whether every
/// symbol in `symbols` has a bar at or after `ts`.
fn look(version: &quiver::read::LoadedVersion, symbols: &[Symbol], ts: i64) -> (usize, bool) {
    let mut most = 0;
    for p in version.state.partitions().values() {
        most = most.max(p.len());
    }
    let visible = symbols.iter().all(|s| {
        version
            .series(s.as_str(), "1m")
            .last()
            .is_some_and(|f| f.max_ts >= ts)
    });
    (most, visible)
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(backend: &str) {
    let store = dataset(backend).await;
    let database = database(backend);
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    let settings = CacheConfig::new(dir.path());
    let started = Instant::now();
    Syncer::new(store.clone(), &settings, database.schema.clone())
        .expect("syncer")
        .pass(false)
        .await
        .expect("version");
    eprintln!("{backend}: initial snapshot in {:.1?}", started.elapsed());

    let env = |c: &mut std::process::Command| {
        c.env("QUIVER_DATABASE_URL", &database.url)
            .env("QUIVER_CACHE_DIR", dir.path())
            .env_remove("QUIVER_DATABASE_SCHEMA")
            .current_dir(dir.path());
        if let Some(s) = &database.schema {
            c.env("QUIVER_DATABASE_SCHEMA", s);
        }
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .args(["sync", "--watch", "-q"])
        .stdout(std::process::Stdio::null());
    env(&mut command);
    let mut daemon = Daemon(command.spawn().expect("start the daemon"));
    let pid = daemon.0.id();

    let reader = Reader::new(Cache::new(dir.path())).expect("reader");
    let symbols: Vec<Symbol> = quiver::generate::symbol_names(SYMBOLS)
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    let last = reader
        .latest(&symbols[0], "1m".parse().unwrap())
        .await
        .expect("latest")
        .to_bars()
        .unwrap()[0]
        .ts;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Bursts: one bar per symbol, one transaction, every 5 s.
    let phase = Duration::from_secs(seconds("QUIVER_W9_SECONDS", 300));
    let bursts = (phase.as_secs() / BURST_EVERY.as_secs()).max(1) as usize;
    let cpu_before = cpu_seconds(pid);
    let phase_started = Instant::now();
    let mut latencies = Vec::with_capacity(bursts);
    let mut most_files = 0;
    // The slowest burst and its number (counted from 0), to tell a cold start from a stall.
    let mut slowest: Option<(usize, Duration)> = None;
    for b in 0..bursts {
        let due = phase_started + BURST_EVERY * b as u32;
        tokio::time::sleep_until(due.into()).await;
        let ts = last + chrono::Duration::minutes(1 + b as i64);
        let burst: Vec<Bar> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| bar(s, ts, 10_000 + (i + b) as i64))
            .collect();
        store
            .insert_bars(&burst, OnConflict::Error)
            .await
            .expect("burst");
        let committed = Instant::now();
        let mut seen = None;
        loop {
            let version = reader
                .current_version()
                .await
                .expect("version")
                .expect("a version");
            if Some(version.version()) != seen {
                seen = Some(version.version());
                let (most, visible) = look(&version, &symbols, ts.timestamp_micros());
                most_files = most_files.max(most);
                if visible {
                    let latency = committed.elapsed();
                    if latency > Duration::from_secs(1) {
                        // Dated, to find the daemon's pass in its debug log.
                        eprintln!(
                            "{backend}: burst {b} visible after {} ms (committed at {})",
                            latency.as_millis(),
                            Utc::now() - chrono::Duration::from_std(latency).unwrap_or_default()
                        );
                    }
                    latencies.push(latency);
                    if latencies.last() > slowest.as_ref().map(|(_, l)| l) {
                        slowest = latencies.last().map(|l| (b, *l));
                    }
                    break;
                }
            }
            assert!(
                committed.elapsed() < Duration::from_secs(60),
                "burst {b} never visible"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let wall = phase_started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    latencies.sort();

    // Sustained: 200 one-bar commits per second, over 200 symbols in turn.
    let sustained = Duration::from_secs(seconds("QUIVER_W9_SUSTAINED_SECONDS", 60));
    let total = (sustained.as_secs() * SUSTAINED_RATE) as usize;
    let base = last + chrono::Duration::minutes(1 + bursts as i64);
    let writer_store = store.clone();
    let writer_symbols = symbols[..SUSTAINED_SYMBOLS].to_vec();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..total {
            let due = started + Duration::from_micros(i as u64 * 1_000_000 / SUSTAINED_RATE);
            tokio::time::sleep_until(due.into()).await;
            let s = &writer_symbols[i % SUSTAINED_SYMBOLS];
            let ts = base + chrono::Duration::minutes((i / SUSTAINED_SYMBOLS) as i64);
            writer_store
                .insert_bars(&[bar(s, ts, 20_000 + i as i64)], OnConflict::Error)
                .await
                .expect("commit");
            let _ = tx.send((i, Instant::now()));
        }
        started.elapsed()
    });
    let mut committed: Vec<Option<Instant>> = vec![None; total];
    let mut visible: Vec<Option<Duration>> = vec![None; total];
    let mut seen = None;
    let mut pending = 0usize;
    // Waits for every commit to show, until 60 s after the writer's last one (a writer that
    // cannot keep the rate takes longer than the phase).
    let mut deadline = None;
    while visible.iter().any(Option::is_none) && deadline.is_none_or(|d| Instant::now() < d) {
        if deadline.is_none() && writer.is_finished() {
            deadline = Some(Instant::now() + Duration::from_secs(60));
        }
        while let Ok((i, at)) = rx.try_recv() {
            committed[i] = Some(at);
            pending += 1;
        }
        let version = reader
            .current_version()
            .await
            .expect("version")
            .expect("a version");
        if Some(version.version()) != seen && pending > 0 {
            seen = Some(version.version());
            let now = Instant::now();
            for (j, s) in writer_symbols_iter(&symbols).enumerate() {
                let newest = version.series(s.as_str(), "1m").last().map(|f| f.max_ts);
                let Some(newest) = newest else { continue };
                // Bars of symbol j are commits j, j + 200, …; the k-th is at base + k minutes.
                let mut i = j;
                while i < total {
                    let ts = (base + chrono::Duration::minutes((i / SUSTAINED_SYMBOLS) as i64))
                        .timestamp_micros();
                    if ts > newest {
                        break;
                    }
                    if let (Some(at), None) = (committed[i], visible[i]) {
                        visible[i] = Some(now - at);
                        pending -= 1;
                    }
                    i += SUSTAINED_SYMBOLS;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let writing = writer.await.expect("writer");
    let mut sustained_latencies: Vec<Duration> = visible.into_iter().flatten().collect();
    sustained_latencies.sort();

    // Stop the daemon, then check the cache against the table.
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    // Let it finish (a SIGKILL here could land between a commit and the plain view's update,
    // which the next pass repairs but verify would report).
    let _ = daemon.0.wait();
    drop(daemon);
    let mut verify = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
    verify.arg("verify");
    env(&mut verify);
    let out = verify.output().expect("verify");
    let verified = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // What the retention costs: bytes of files removed in this run (kept for
    // `cache.retention`) beside the live ones.
    let table = Cache::new(dir.path())
        .existing_table()
        .expect("table")
        .expect("a table");
    let state = table
        .load(quiver::cache::LoadOptions {
            tombstones: true,
            sync_mark: false,
        })
        .await
        .expect("load")
        .expect("a version");
    let live_mb = state.files().map(|f| f.bytes).sum::<u64>() as f64 / 1e6;
    let removed_mb = state.tombstones().map(|(_, t)| t.bytes).sum::<u64>() as f64 / 1e6;
    let run_s = phase.as_secs() + sustained.as_secs();

    // Put the dataset back as it was.
    for s in &symbols {
        store
            .delete_bars(&quiver::BarFilter {
                symbol: Some(s.clone()),
                timeframe: None,
                start: Some(last + chrono::Duration::seconds(1)),
                end: None,
            })
            .await
            .expect("clean up");
    }

    println!(
        "w9_live/{backend}: {bursts} bursts of {SYMBOLS} bars: commit-to-visible p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms (burst {}); daemon CPU {:.2} cores on average ({cpu:.1} s in {wall:.0} s); \
         at most {most_files} files in a partition (threshold {}); sustained {SUSTAINED_RATE} \
         one-bar commits/s for {} s (written in {:.1} s): p50 {:.0} ms, p99 {:.0} ms ({} of {total} seen); verify: {} \
         (exit {:?}); files removed in the {run_s} s run and kept for the retention: \
         {removed_mb:.1} MB beside {live_mb:.1} MB live",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        slowest.map_or(0, |(b, _)| b),
        cpu / wall,
        settings.compact_files,
        sustained.as_secs(),
        writing.as_secs_f64(),
        ms(percentile(&sustained_latencies, 0.5)),
        ms(percentile(&sustained_latencies, 0.99)),
        sustained_latencies.len(),
        verified,
        out.status.code(),
    );
}

fn writer_symbols_iter(symbols: &[Symbol]) -> impl Iterator<Item = &Symbol> {
    symbols[..SUSTAINED_SYMBOLS].iter()
}

fn main() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for backend in ["sqlite", "postgres"] {
        if filter.as_deref().is_none_or(|f| backend.contains(f)) {
            rt.block_on(run(backend));
        }
    }
}
