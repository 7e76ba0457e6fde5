//! `quiver status`: the cache's version, size and history, and how far behind the database
//! it is.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cache::{Cache, History, LoadOptions, Source};
use crate::config::CacheConfig;
use crate::db::Store;
use crate::error::Result;
use crate::feed::FeedPosition;

/// Versions of the history shown in detail.
const RECENT: usize = 5;

/// What `quiver status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Database URL, password removed.
    pub database: String,
    /// The cache folder.
    pub cache_dir: String,
    /// The Delta table's folder.
    pub table_dir: String,
    /// The newest version of the table, if any.
    pub version: Option<u64>,
    /// When it was committed.
    pub committed_at: Option<DateTime<Utc>>,
    /// Partitions (series and period) in it.
    pub partitions: usize,
    /// Data files in it.
    pub files: usize,
    /// Rows in it.
    pub rows: u64,
    /// Bytes of its data files.
    pub bytes: u64,
    /// The most files a partition has (appends add files; compaction merges them).
    pub max_files_per_partition: usize,
    /// Files per partition on average.
    pub mean_files_per_partition: f64,
    /// Partitions with more files than `cache.compact_files`: compaction's backlog.
    pub compaction_backlog: usize,
    /// Partitions held back at their last good version by a row the cache cannot hold
    /// exactly: partition folder → the row and why.
    pub held_back: std::collections::BTreeMap<String, String>,
    /// When each held-back partition was first held: it is behind the table since then.
    pub held_back_since: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// Set when the cache mirrors another database than the one configured: which one, and
    /// what to do (`quiver sync` refuses until `--full` rebuilds it).
    pub mirrors_other: Option<String>,
    /// The change-feed position it is consistent with.
    pub position: Option<FeedPosition>,
    /// Change-log entries committed since (0: the cache is current).
    pub pending_changes: u64,
    /// Seconds the cache is behind: 0 when current, else the age of the newest version, or
    /// since a partition was first held back when that is longer.
    pub lag_seconds: Option<f64>,
    /// How long replaced versions stay readable, in seconds.
    pub retention_seconds: u64,
    /// The versions still readable, the newest checkpoint and the last few commits.
    pub history: History,
    /// The version the plain view shows.
    pub view_version: Option<u64>,
}

/// Reads the state of the cache and how far behind the database it is.
pub async fn status(store: &Store, cache: &Cache, settings: &CacheConfig) -> Result<Status> {
    let table = cache.existing_table()?;
    let state = match &table {
        Some(t) => {
            t.load(LoadOptions {
                tombstones: false,
                sync_mark: true,
            })
            .await?
        }
        None => None,
    };
    let history = match &table {
        Some(t) => t.history(RECENT).await?,
        None => History::default(),
    };
    let position = state
        .as_ref()
        .and_then(|s| s.sync_mark().map(|m| m.position.clone()));
    let pending = store
        .pending_changes(position.as_ref().unwrap_or(&FeedPosition::Start))
        .await?;
    let now = Utc::now().timestamp_millis();
    let mark = state.as_ref().and_then(|s| s.sync_mark());
    let held_since = mark.map(|m| m.held_since.clone()).unwrap_or_default();
    let lag = state.as_ref().map(|s| {
        let behind_since = held_since
            .values()
            .copied()
            .chain((pending > 0).then(|| s.committed_ms()))
            .min();
        behind_since.map_or(0.0, |since| (now - since).max(0) as f64 / 1e3)
    });
    let here = Source {
        backend: store.backend().to_string(),
        url: store.redacted_url(),
        schema: store.schema().map(str::to_string),
    };
    let mirrors_other = mark.filter(|m| m.source != here).map(|m| {
        format!(
            "the cache mirrors {} ({}{}), not the configured database; `quiver sync --full` \
             rebuilds it from this one",
            m.source.url,
            m.source.backend,
            m.source
                .schema
                .as_deref()
                .map(|s| format!(", schema {s}"))
                .unwrap_or_default()
        )
    });
    let partitions = state.as_ref().map(|s| s.partitions()).unwrap_or_default();
    let counts: Vec<usize> = partitions.values().map(Vec::len).collect();
    Ok(Status {
        backend: store.backend().to_string(),
        database: store.redacted_url(),
        cache_dir: cache.root().display().to_string(),
        table_dir: cache.table_dir().display().to_string(),
        version: state.as_ref().map(|s| s.version()),
        committed_at: state.as_ref().and_then(|s| s.committed_at()),
        partitions: partitions.len(),
        files: state.as_ref().map_or(0, |s| s.file_count()),
        rows: state.as_ref().map_or(0, |s| s.rows()),
        bytes: state.as_ref().map_or(0, |s| s.bytes()),
        max_files_per_partition: counts.iter().copied().max().unwrap_or(0),
        mean_files_per_partition: if counts.is_empty() {
            0.0
        } else {
            counts.iter().sum::<usize>() as f64 / counts.len() as f64
        },
        compaction_backlog: counts
            .iter()
            .filter(|&&n| n > settings.compact_files)
            .count(),
        held_back: mark.map(|m| m.held.clone()).unwrap_or_default(),
        held_back_since: held_since
            .iter()
            .filter_map(|(p, &ms)| Some((p.clone(), DateTime::from_timestamp_millis(ms)?)))
            .collect(),
        mirrors_other,
        position,
        pending_changes: pending,
        lag_seconds: lag,
        retention_seconds: settings.retention.as_secs(),
        history,
        view_version: cache.view().version(),
    })
}
