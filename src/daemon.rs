//! `quiver sync --watch`: a pass whenever the table changes.
//!
//! Wake-ups come from PostgreSQL `LISTEN quiver_market_data` (the triggers `NOTIFY` on commit,
//! with the schema as payload) or, on SQLite, from file events on the database and its WAL.
//! Bursts coalesce: a wake-up that arrives during a pass leaves one pending pass, not one per
//! commit. A poll every `sync.poll_interval` makes a missed notification harmless. When the
//! database goes away, failed passes are retried with exponential backoff (logged once per
//! attempt) and the listener reconnects; the change log keeps everything meanwhile, so
//! nothing is lost. Shutdown waits briefly for a running pass and otherwise abandons it: an
//! unpublished version is never visible and is removed by the next pass.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::SyncConfig;
use crate::db::Store;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::sync::Syncer;

/// The channel the PostgreSQL triggers notify.
pub const CHANNEL: &str = "quiver_market_data";
/// How long shutdown waits for a running pass to publish before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(700);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Runs passes until `shutdown` resolves. Returns an error only for problems that retrying
/// cannot fix (a cache that mirrors another database, a broken cache folder).
pub async fn run(
    syncer: &mut Syncer,
    settings: &SyncConfig,
    shutdown: impl Future<Output = ()>,
    metrics: &Metrics,
) -> Result<()> {
    let poll_interval = settings.poll_interval;
    syncer.set_background_maintenance(true);
    let wake = Arc::new(Notify::new());
    let _watch = Watch::start(syncer.store(), wake.clone()).await?;
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    tracing::info!(
        database = %syncer.store().redacted_url(),
        cache = %syncer.cache().root().display(),
        poll_interval = ?poll_interval,
        "watching for changes"
    );
    loop {
        let outcome = {
            let pass = syncer.pass(false);
            tokio::pin!(pass);
            tokio::select! {
                r = &mut pass => r,
                () = &mut shutdown => {
                    match tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await {
                        Ok(Ok(_)) => tracing::info!("stopped after finishing the pass"),
                        _ => tracing::info!("stopped; the interrupted pass committed nothing"),
                    }
                    return Ok(());
                }
            }
        };
        let delay = match outcome {
            Ok(report) => {
                let state = syncer.state();
                let mark = state.and_then(|s| s.sync_mark());
                metrics.pass_succeeded(
                    &report,
                    mark.map(|m| m.position.clone()),
                    state.map(|s| s.committed_ms()),
                    mark.map(|m| m.held.keys().cloned().collect())
                        .unwrap_or_default(),
                );
                syncer.warn_held(settings.held_warning);
                if failures > 0 {
                    tracing::info!(failures, "database reachable again; cache caught up");
                }
                failures = 0;
                poll_interval
            }
            Err(e) if retryable(&e) => {
                metrics.pass_failed();
                failures += 1;
                let delay = BACKOFF_MIN
                    .saturating_mul(1 << failures.min(10))
                    .min(BACKOFF_MAX);
                tracing::warn!(error = %e, retry_in = ?delay, failures, "sync pass failed");
                delay
            }
            Err(e) => return Err(e),
        };
        if failures == 0 && compact_while_idle(syncer, &wake, &mut shutdown).await {
            return Ok(());
        }
        if failures > 0 {
            // Retry on the backoff clock; notifications cannot help while the database is away.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return Ok(()),
            }
        } else {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// Merges small files a chunk at a time while no change is waiting (a wake-up already
/// received stops it after the chunk in hand, which is never abandoned halfway: its commit
/// must reach the syncer's state). True when shutdown was asked for meanwhile.
async fn compact_while_idle(
    syncer: &mut Syncer,
    wake: &Notify,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    use futures_util::FutureExt;
    loop {
        if wake.notified().now_or_never().is_some() {
            wake.notify_one(); // keep it for the wait that follows
            return false;
        }
        let outcome = {
            let step = syncer.compact_idle();
            tokio::pin!(step);
            tokio::select! {
                r = &mut step => r,
                () = shutdown.as_mut() => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut step).await;
                    return true;
                }
            }
        };
        match outcome {
            Ok(Some(_)) => continue,
            Ok(None) => {
                // A few hundred at a time (about 0.1 s), so a change never waits long.
                if let Err(e) = syncer.tidy_view(512) {
                    tracing::warn!(error = %e, "could not delete retired plain-view folders");
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "compaction failed; the next pass retries it");
                return false;
            }
        }
    }
}

fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Database { .. } | Error::Sqlite { .. } | Error::Io { .. } | Error::Storage { .. }
    )
}

/// Watches SIGINT and SIGTERM from now on (so a signal that comes while the daemon is still
/// starting is not lost to the default action, which would kill it); the future resolves on
/// the first of them.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::Internal(format!("cannot watch {name}: {e}")))
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    })
}

/// The source of wake-ups; stops when dropped.
enum Watch {
    Files(#[allow(dead_code)] notify::RecommendedWatcher),
    Listener(tokio::task::JoinHandle<()>),
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Watch::Listener(task) = self {
            task.abort();
        }
    }
}

impl Watch {
    async fn start(store: &Store, wake: Arc<Notify>) -> Result<Watch> {
        if let Some(file) = store.sqlite_file() {
            return watch_sqlite(file, wake);
        }
        let Some(pool) = store.postgres_pool().cloned() else {
            return Err(Error::invalid("no database to watch"));
        };
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await?;
        Ok(Watch::Listener(tokio::spawn(listen(pool, schema, wake))))
    }
}

/// Wakes on every write to the database file or its WAL (the folder is watched, so the WAL
/// being created or removed by checkpoints is seen too).
fn watch_sqlite(file: PathBuf, wake: Arc<Notify>) -> Result<Watch> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let file = std::path::absolute(&file).map_err(|e| Error::io(&file, e))?;
    let dir = file
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| Error::invalid(format!("{} has no folder", file.display())))?;
    let name = file.file_name().unwrap_or_default().to_os_string();
    let mut wal = name.clone();
    wal.push("-wal");
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == name.as_os_str() || n == wal.as_os_str())
        });
        if ours {
            wake.notify_one();
        }
    })
    .map_err(|e| Error::invalid(format!("cannot watch {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::invalid(format!("cannot watch {}: {e}", dir.display())))?;
    tracing::debug!(dir = %dir.display(), "watching the SQLite files");
    Ok(Watch::Files(watcher))
}

/// `LISTEN`s on [`CHANNEL`], waking on notifications for `schema`. Reconnects with backoff when
/// the server goes away, and wakes once after every (re)connection to catch up on what was
/// missed.
async fn listen(pool: sqlx::PgPool, schema: String, wake: Arc<Notify>) {
    use sqlx::postgres::PgListener;
    let mut delay = BACKOFF_MIN;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?delay, "cannot connect the listener");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %e, retry_in = ?delay, "cannot LISTEN");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
            continue;
        }
        tracing::debug!(channel = CHANNEL, %schema, "listening");
        delay = BACKOFF_MIN;
        wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if n.payload() == schema {
                        wake.notify_one();
                    }
                }
                Ok(None) => {
                    tracing::warn!("lost the notification connection; reconnecting");
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification connection failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}
