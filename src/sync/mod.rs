//! Mirroring `market_data` into the cache: one pass ([`Syncer::pass`]), [`status`] and
//! [`verify`].
//!
//! A pass reads the change log from the position of the table's newest quiver commit. The
//! first pass, `--full` and a `TRUNCATE` take a snapshot: the whole table is streamed in key
//! order, cut into partitions and encoded on a second thread while the database keeps reading.
//! Otherwise only the partitions holding a changed `(symbol, timeframe, day)` are read again,
//! each in full, so updates, deletes, late bars and bars moved between partitions all come out
//! exact. Either way the pass is one Delta commit: the new files, the removal of the files they
//! replace, and the new position, together. The plain view follows, partition by partition.
//!
//! A pass costs what it changed: it touches the changed partitions' files and writes one
//! commit; nothing in it walks the table. Every `cache.checkpoint_interval` commits a
//! checkpoint is written (the daemon writes it on a background thread).
//!
//! Changes that commit while a pass runs may or may not be in what it reads; they are after
//! the position it records, so the next pass applies them again. Applying a partition twice
//! gives the same rows, so passes converge.

mod maintenance;
mod partitions;
mod pass;
mod status;
mod verify;

pub use maintenance::CompactReport;
use maintenance::{Maintenance, Merge, VACUUM_FIRST};
use partitions::split_partitions;
use partitions::{Written, discard, write_partitions};
pub use status::{Status, status};
pub use verify::{Difference, VerifyReport, verify};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cache::{
    Cache, Changes, DataFile, LoadOptions, PartitionData, PartitionKey, Period, PlainView, Source,
    Table, TableState, VacuumReport,
};
use crate::config::CacheConfig;
use crate::db::{ScanStream, Store};
use crate::error::{Error, Result};
use crate::feed::{DayChange, FeedPosition};
use crate::model::Timeframe;

/// Partition files encoded and written at once.
const PARALLEL_WRITES: usize = 8;
/// A commit of more actions than this is followed by a checkpoint at once, so readers never
/// replay a snapshot's commit of every file.
const CHECKPOINT_ACTIONS: u64 = 10_000;
/// Partitions merged per commit by the daemon's idle compaction: about 0.2 s of work, the
/// longest a pass waits for it.
const IDLE_CHUNK: usize = 128;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The version committed, or `None` when nothing had changed.
    pub version: Option<u64>,
    /// True when the pass rebuilt the whole cache.
    pub snapshot: bool,
    /// `(symbol, timeframe, day)` entries of the change log applied.
    pub changed_days: usize,
    /// Rows written to new files.
    pub rows: u64,
    /// Bytes of the new files.
    pub bytes: u64,
    /// Partitions written.
    pub written: usize,
    /// Partitions removed (no rows left).
    pub removed: usize,
    /// Of the partitions written, those that got their new bars as a small new file.
    pub appended: usize,
    /// Partitions compacted after the pass (they had grown past `cache.compact_files`).
    pub compacted: usize,
    /// Partitions held back at their last good version by a row that cannot be held exactly
    /// (all of them, including those held by earlier passes).
    pub held_back: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            None => write!(f, "cache is up to date"),
            Some(v) => {
                write!(
                    f,
                    "committed version {v}{}: {} rows in {} partitions written",
                    if self.snapshot { " (snapshot)" } else { "" },
                    self.rows,
                    self.written,
                )?;
                if self.appended > 0 {
                    write!(f, " ({} as appends)", self.appended)?;
                }
                write!(f, ", {} removed", self.removed)?;
                if self.compacted > 0 {
                    write!(f, ", {} compacted", self.compacted)?;
                }
                if self.held_back > 0 {
                    write!(f, ", {} held back by bad rows", self.held_back)?;
                }
                write!(f, ", in {:.2?}", self.elapsed)
            }
        }
    }
}

/// Keeps one cache in step with one database. Several syncers may be started on one cache,
/// but only one can commit each version: a syncer that finds its version taken stops with
/// [`Error::CommitConflict`].
pub struct Syncer {
    store: Store,
    cache: Cache,
    table: Table,
    view: PlainView,
    source: Source,
    settings: CacheConfig,
    /// The newest version, with tombstones; `None` before the table's first commit.
    state: Option<TableState>,
    loaded: bool,
    progress: bool,
    background: bool,
    last_checkpoint: Option<u64>,
    /// Commits, and actions in them, since the last checkpoint.
    since_checkpoint: (u64, u64),
    maintenance: Option<tokio::task::JoinHandle<Result<Maintenance>>>,
    /// When the daemon vacuums next.
    next_vacuum: Instant,
    /// The version the plain view was last brought to by this syncer.
    view_at: Option<u64>,
    /// Partitions the last pass appended to (they may now be due for compaction).
    grown: BTreeSet<PartitionKey>,
    /// Partitions that may hold more than one file: what idle compaction looks at.
    backlog: BTreeSet<PartitionKey>,
    /// When the held-back partitions were last warned about (`None`: none held).
    held_warned: Option<Instant>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("database", &self.source.url)
            .field("cache", &self.cache.root())
            .field("version", &self.state.as_ref().map(TableState::version))
            .finish()
    }
}

/// How a pass brings a changed partition up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Re-read it in full and replace its files.
    Rewrite,
    /// Add the bars after `after` (its last published bar) as a new file.
    Append { after: i64 },
}
impl Syncer {
    /// A syncer for `store` into the cache described by `settings`.
    pub fn new(store: Store, settings: &CacheConfig, schema: Option<String>) -> Result<Syncer> {
        let cache = Cache::new(&settings.dir);
        std::fs::create_dir_all(cache.root()).map_err(|e| Error::io(cache.root(), e))?;
        cache.retire_old_layout()?;
        let table = cache.table()?;
        Ok(Syncer {
            source: Source {
                backend: store.backend().to_string(),
                url: store.redacted_url(),
                schema,
            },
            view: cache.view(),
            table,
            cache,
            store,
            settings: settings.clone(),
            state: None,
            loaded: false,
            progress: false,
            background: false,
            last_checkpoint: None,
            since_checkpoint: (0, 0),
            maintenance: None,
            next_vacuum: Instant::now() + VACUUM_FIRST,
            held_warned: None,
            view_at: None,
            grown: BTreeSet::new(),
            backlog: BTreeSet::new(),
        })
    }

    /// Shows a progress bar during snapshots when stderr is a terminal.
    pub fn with_progress(mut self, on: bool) -> Syncer {
        self.progress = on;
        self
    }

    /// Writes checkpoints and vacuums on a background task instead of within the pass (the
    /// daemon does this, so the next pass never waits on them).
    pub fn set_background_maintenance(&mut self, on: bool) {
        self.background = on;
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The Delta table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The newest version committed (by this syncer or found on disk).
    pub fn state(&self) -> Option<&TableState> {
        self.state.as_ref()
    }

    /// Reads the table's newest version and brings the plain view to it if a crash left it
    /// behind.
    async fn load(&mut self) -> Result<()> {
        let options = LoadOptions {
            tombstones: true,
            sync_mark: true,
        };
        self.state = self.table.load(options).await?;
        self.last_checkpoint = self.table.last_checkpoint().await?;
        if let Some(state) = &self.state {
            let commits = match self.last_checkpoint {
                Some(c) if c >= state.version() => 0,
                Some(c) => state.version() - c,
                None => state.version() + 1,
            };
            self.since_checkpoint = (commits, 0);
            self.view_at = self.view.version();
            self.backlog = state
                .partitions()
                .into_iter()
                .filter(|(_, files)| files.len() > 1)
                .map(|(k, _)| k)
                .collect();
        }
        self.view.clean_staging()?;
        self.loaded = true;
        Ok(())
    }

    /// Rebuilds the plain view when it is not at the table's version: after a crash, or an
    /// update that failed (a full disk) after its commit.
    fn catch_up_view(&mut self) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if self.view_at != Some(state.version()) {
            let changed = self.view.rebuild(&self.table, state)?;
            tracing::info!(
                version = state.version(),
                partitions = changed,
                "plain view was behind the table; rebuilt"
            );
            self.view_at = Some(state.version());
        }
        Ok(())
    }

    /// Brings the cache up to date with the table: a snapshot the first time (or with `full`),
    /// otherwise the partitions changed since the last pass.
    pub async fn pass(&mut self, full: bool) -> Result<PassReport> {
        let started = Instant::now();
        self.finish_maintenance(false).await?;
        if !self.loaded {
            self.load().await?;
        }
        self.catch_up_view()?;
        let mark = self.state.as_ref().and_then(|s| s.sync_mark().cloned());
        if let Some(m) = &mark
            && !full
            && m.source != self.source
        {
            return Err(Error::invalid(format!(
                "the cache in {} mirrors {} ({}), not {} ({}); run `quiver sync --full` to \
                 rebuild it from this database",
                self.cache.root().display(),
                m.source.url,
                m.source.backend,
                self.source.url,
                self.source.backend,
            )));
        }
        let mut report = match mark.filter(|_| !full) {
            None => {
                let batch = self.store.changes_since(&FeedPosition::Start).await?;
                self.snapshot(batch.next).await?
            }
            Some(mark) => {
                let batch = self.store.changes_since(&mark.position).await?;
                tracing::debug!(
                    days = batch.days.len(),
                    changes_ms = started.elapsed().as_secs_f64() * 1e3,
                    "change log read"
                );
                if batch.everything() {
                    self.snapshot(batch.next).await?
                } else if batch.days.is_empty() {
                    PassReport::default()
                } else {
                    // What happened to each partition: the merge of its days' changes.
                    let mut partitions: BTreeMap<PartitionKey, DayChange> = BTreeMap::new();
                    for (d, change) in &batch.days {
                        if let (Some(s), Some(t), Some(day)) = (&d.symbol, &d.timeframe, d.day) {
                            partitions
                                .entry(PartitionKey::of_day(s, t, day)?)
                                .and_modify(|c| c.merge(*change))
                                .or_insert(*change);
                        }
                    }
                    let mut report = self.apply(partitions, batch.next).await?;
                    report.changed_days = batch.days.len();
                    report
                }
            }
        };
        if report.version.is_some() && !self.grown.is_empty() {
            let grown = std::mem::take(&mut self.grown);
            let threshold = self.settings.compact_files;
            let due: Vec<PartitionKey> = grown
                .into_iter()
                .filter(|k| {
                    self.state
                        .as_ref()
                        .is_some_and(|s| s.partition(k).len() > threshold)
                })
                .collect();
            if !due.is_empty() {
                let compacted = self.compact_partitions(&due, Merge::Tiered).await?;
                report.compacted = compacted.partitions;
            }
        }
        report.elapsed = started.elapsed();
        if let Some(version) = report.version {
            tracing::info!(
                version,
                snapshot = report.snapshot,
                changed_days = report.changed_days,
                rows = report.rows,
                written = report.written,
                removed = report.removed,
                appended = report.appended,
                compacted = report.compacted,
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "published"
            );
            self.maintain().await?;
        } else {
            tracing::debug!(
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "nothing to publish"
            );
        }
        Ok(report)
    }
}

/// The cache state a one-shot command reads: the newest version with the position.
pub async fn load_state(cache: &Cache) -> Result<Option<TableState>> {
    match cache.existing_table()? {
        Some(table) => {
            table
                .load(LoadOptions {
                    tombstones: false,
                    sync_mark: true,
                })
                .await
        }
        None => Ok(None),
    }
}
