//! The daemon's Prometheus metrics (`quiver sync --watch --metrics ADDR`).
//!
//! A small HTTP/1.1 endpoint on the daemon's runtime, no framework: `GET /metrics` answers the
//! Prometheus text format (version 0.0.4), `GET /healthz` answers 200 while the last pass
//! succeeded and 503 while passes fail, for a supervisor or a load balancer. The counters are
//! updated by the daemon after each pass; the pending changes and the lag are read from the
//! database at each scrape, so they are right even while a pass is stuck.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::db::Store;
use crate::error::{Error, Result};
use crate::feed::FeedPosition;
use crate::sync::PassReport;

/// Upper bounds of the pass-duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the daemon has done, shared with the endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    passes: AtomicU64,
    failures: AtomicU64,
    /// Failed passes since the last good one (0: healthy).
    failing: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    /// The partitions the newest version holds back (their folders).
    held_back: Mutex<Vec<String>>,
    /// When the newest version was committed (ms since the epoch; 0: none yet).
    committed_ms: AtomicI64,
    position: Mutex<Option<FeedPosition>>,
    durations: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// A pass that succeeded, with the position and commit time of the version it leaves.
    pub fn pass_succeeded(
        &self,
        report: &PassReport,
        position: Option<FeedPosition>,
        committed_ms: Option<i64>,
        held_back: Vec<String>,
    ) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.failing.store(0, Ordering::Relaxed);
        self.rows.fetch_add(report.rows, Ordering::Relaxed);
        self.bytes.fetch_add(report.bytes, Ordering::Relaxed);
        if report.version.is_some() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut held) = self.held_back.lock() {
            *held = held_back;
        }
        if let Some(ms) = committed_ms {
            self.committed_ms.store(ms, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.position.lock() {
            *p = position;
        }
        let secs = report.elapsed.as_secs_f64();
        if let Ok(mut h) = self.durations.lock() {
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter_mut()) {
                if secs <= *bound {
                    *count += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// A pass that failed (and will be retried).
    pub fn pass_failed(&self) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failing.fetch_add(1, Ordering::Relaxed);
    }

    fn healthy(&self) -> bool {
        self.failing.load(Ordering::Relaxed) == 0
    }

    /// The partitions the newest version holds back.
    fn held(&self) -> Vec<String> {
        self.held_back.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The body of a healthy `/healthz`: `ok`, and the held-back partitions when there are
    /// any (the daemon is alive and publishing; those partitions wait for a fix in SQL).
    fn health(&self) -> String {
        let held = self.held();
        if held.is_empty() {
            return "ok\n".into();
        }
        let mut body = format!("ok; partitions held back: {}\n", held.len());
        for p in held {
            let _ = writeln!(body, "{p}");
        }
        body
    }

    /// The text exposition, with the pending changes and lag read from `store` now.
    pub async fn render(&self, store: &Store) -> String {
        let position = self.position.lock().ok().and_then(|p| p.clone());
        let pending = store
            .pending_changes(position.as_ref().unwrap_or(&FeedPosition::Start))
            .await;
        let committed = self.committed_ms.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "quiver_sync_passes_total",
            "counter",
            "Sync passes run, failed ones included.",
            n(&self.passes),
        );
        metric(
            "quiver_sync_failures_total",
            "counter",
            "Sync passes that failed (each is retried with backoff).",
            n(&self.failures),
        );
        metric(
            "quiver_sync_commits_total",
            "counter",
            "Versions committed to the Delta table.",
            n(&self.commits),
        );
        metric(
            "quiver_sync_rows_published_total",
            "counter",
            "Rows written to new data files by sync passes.",
            n(&self.rows),
        );
        metric(
            "quiver_sync_bytes_published_total",
            "counter",
            "Bytes of the data files sync passes wrote.",
            n(&self.bytes),
        );
        metric(
            "quiver_sync_held_back_partitions",
            "gauge",
            "Partitions held at their last good version by a row the cache cannot hold.",
            self.held().len().to_string(),
        );
        metric(
            "quiver_sync_up",
            "gauge",
            "1 while the last pass succeeded, 0 while passes fail.",
            u8::from(self.healthy()).to_string(),
        );
        match pending {
            Ok(pending) => {
                metric(
                    "quiver_sync_pending_changes",
                    "gauge",
                    "Change-log entries the newest version does not cover yet.",
                    pending.to_string(),
                );
                if committed > 0 {
                    let lag = if pending == 0 {
                        0.0
                    } else {
                        (chrono::Utc::now().timestamp_millis() - committed).max(0) as f64 / 1e3
                    };
                    metric(
                        "quiver_sync_lag_seconds",
                        "gauge",
                        "Age of the newest version while changes wait for it (0 when none wait).",
                        format!("{lag}"),
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "metrics: pending changes unavailable"),
        }
        if let Ok(h) = self.durations.lock() {
            let name = "quiver_sync_pass_duration_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Wall time of successful sync passes.\n# TYPE {name} histogram"
            );
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        out
    }
}

/// Serves the endpoint on `addr` until the returned task is aborted; returns the address
/// bound (so port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Store,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid(format!("--metrics {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::invalid(format!("--metrics {addr}: {e}")))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, store) = (metrics.clone(), store.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(conn, &metrics, &store).await {
                    tracing::debug!(error = %e, "metrics request");
                }
            });
        }
    });
    Ok((bound, task))
}

/// Reads one request (its head, at most 8 KiB, within 5 s) and answers it.
async fn answer(mut conn: TcpStream, metrics: &Metrics, store: &Store) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return Ok(());
    }
    let request = String::from_utf8_lossy(&head);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", metrics.render(store).await),
        ("GET", "/healthz") if metrics.healthy() => ("200 OK", metrics.health()),
        ("GET", "/healthz") => (
            "503 Service Unavailable",
            "sync passes are failing\n".into(),
        ),
        ("GET", _) => ("404 Not Found", "try /metrics or /healthz\n".into()),
        _ => ("405 Method Not Allowed", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
