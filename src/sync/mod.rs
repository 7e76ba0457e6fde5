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

mod status;
mod verify;

pub use status::{Status, status};
pub use verify::{Difference, VerifyReport, verify};

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cache::{
    Cache, Changes, DataFile, LoadOptions, PartitionData, PartitionKey, Period, PlainView, Source,
    SyncMark, Table, TableState, VacuumReport,
};
use crate::config::CacheConfig;
use crate::db::{Scan, ScanStream, Store, Window};
use crate::error::{Error, Result};
use crate::feed::{DayChange, FeedPosition};
use crate::model::Timeframe;
use crate::progress;

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

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The version committed, or `None` when there was nothing to merge.
    pub version: Option<u64>,
    /// Partitions merged.
    pub partitions: usize,
    /// Files those partitions had.
    pub files_before: usize,
    /// Files they have now.
    pub files_after: usize,
    /// Rows rewritten.
    pub rows: u64,
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            None => write!(f, "nothing to compact"),
            Some(v) => write!(
                f,
                "committed version {v}: {} partitions compacted from {} files to {} ({} rows, \
                 none changed)",
                self.partitions, self.files_before, self.files_after, self.rows
            ),
        }
    }
}

/// Which files of a partition a compaction merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    /// Every file, into one.
    All,
    /// The small files after a partition's first when that one holds at least four times the
    /// rows of the rest (so a live feed's appends do not rewrite the month each time), else
    /// every file.
    Tiered,
}

impl Merge {
    fn choose(self, files: &[Arc<DataFile>]) -> &[Arc<DataFile>] {
        match (self, files) {
            (Merge::Tiered, [first, rest @ ..]) => {
                let small: u64 = rest.iter().map(|f| f.rows).sum();
                if first.rows >= 4 * small { rest } else { files }
            }
            _ => files,
        }
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

/// What a background maintenance task did.
enum Maintenance {
    Checkpoint {
        version: u64,
        bytes: u64,
        took: Duration,
    },
    Vacuum {
        report: VacuumReport,
        deleted: Vec<String>,
    },
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

    /// The whole table as the next version: every partition written anew, every file of the
    /// version before removed.
    async fn snapshot(&mut self, position: FeedPosition) -> Result<PassReport> {
        let bar = if self.progress && std::io::stderr().is_terminal() {
            progress::rows(self.store.count_rows().await?, "snapshot")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let rows = self.store.scan(Scan::All);
        let written = write_partitions(&self.table, split_partitions(rows), Some(&bar)).await?;
        bar.finish_and_clear();
        let written_rows = written.rows;
        // A held-back partition keeps the files it has; every other old file goes.
        let kept: BTreeSet<&PartitionKey> = written.held.iter().map(|(k, _)| k).collect();
        let mut changes = Changes {
            adds: written
                .files
                .iter()
                .filter_map(|(_, f)| f.clone())
                .collect(),
            removes: self
                .state
                .as_ref()
                .map(|s| {
                    s.files()
                        .filter(|f| !kept.contains(&f.key))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            rearranges_only: false,
        };
        drop(kept);
        let held = self.held_after(None, written.held);
        let old_partitions: BTreeSet<PartitionKey> =
            changes.removes.iter().map(|f| f.key.clone()).collect();
        let new_partitions: BTreeSet<PartitionKey> =
            changes.adds.iter().map(|f| f.key.clone()).collect();
        let removed = old_partitions.difference(&new_partitions).count();
        changes.adds.sort_by(|a, b| a.key.cmp(&b.key));
        let mut report = self.publish(changes, position, removed, held).await?;
        report.snapshot = true;
        report.rows = written_rows;
        Ok(report)
    }

    /// Brings the changed partitions up to date, all read in one scan: a partition that only
    /// had bars inserted after its last published bar gets them as a small new file (an
    /// append); any other change (an update, a delete, a late bar, a partition new to the
    /// cache) rewrites the partition from the table in full.
    async fn apply(
        &mut self,
        partitions: BTreeMap<PartitionKey, DayChange>,
        position: FeedPosition,
    ) -> Result<PassReport> {
        let mut plans: BTreeMap<PartitionKey, Plan> = BTreeMap::new();
        let mut windows = Vec::with_capacity(partitions.len());
        for (key, change) in partitions {
            let files = self
                .state
                .as_ref()
                .map(|s| s.partition(&key))
                .unwrap_or_default();
            let last = files.iter().map(|f| f.max_ts).max();
            let (start, end) = key.range()?;
            // A held-back partition is re-read whole until it comes out clean.
            let plan = match last {
                Some(last) if change.appends_after(last) && !self.is_held(&key) => {
                    Plan::Append { after: last }
                }
                _ => Plan::Rewrite,
            };
            windows.push(Window {
                symbol: key.symbol.clone(),
                timeframe: key.timeframe.clone(),
                from: match plan {
                    Plan::Append { after } => after + 1,
                    Plan::Rewrite => start.unwrap_or(i64::MIN),
                },
                until: end.unwrap_or(i64::MAX),
            });
            plans.insert(key, plan);
        }
        let appends = plans
            .values()
            .filter(|p| matches!(p, Plan::Append { .. }))
            .count();
        let started = Instant::now();
        let rows = self.store.scan(Scan::Windows(windows));
        let Written {
            files: written,
            held: newly_held,
            rows,
        } = write_partitions(&self.table, split_partitions(rows), None).await?;
        tracing::debug!(
            partitions = plans.len(),
            appends,
            rows,
            read_and_write_ms = started.elapsed().as_secs_f64() * 1e3,
            "changed partitions read and written"
        );
        let mut changes = Changes::default();
        let mut removed = 0;
        let mut written: BTreeMap<PartitionKey, Option<DataFile>> = written.into_iter().collect();
        let held_now: BTreeSet<&PartitionKey> = newly_held.iter().map(|(k, _)| k).collect();
        for (key, plan) in &plans {
            if held_now.contains(key) {
                continue; // stays at its last good version
            }
            let file = written.remove(key).flatten();
            if *plan == Plan::Rewrite {
                // A partition the scan found no row of has none left.
                let old = self
                    .state
                    .as_ref()
                    .map(|s| s.partition(key))
                    .unwrap_or_default();
                if file.is_none() && !old.is_empty() {
                    removed += 1;
                }
                changes.removes.extend(old);
            }
            changes.adds.extend(file);
        }
        // Rows of a partition nobody planned cannot come back from the windows; if they do,
        // the window arithmetic is wrong and nothing is committed.
        if let Some((key, _)) = written.into_iter().next() {
            discard(&self.table, changes.adds.iter()).await;
            return Err(Error::internal(format!(
                "a sync scan returned rows of {key}, which no window asked for"
            )));
        }
        drop(held_now);
        let cleared: Vec<&PartitionKey> = plans.keys().collect();
        let held = self.held_after(Some(&cleared), newly_held);
        // Even with no file changed (a day logged but left as it was), the commit moves the
        // position, so the same days are not read again.
        let mut report = self.publish(changes, position, removed, held).await?;
        report.rows = rows;
        report.appended = appends;
        Ok(report)
    }

    /// Commits `changes` with `position`, brings the plain view along, then lets the change
    /// log forget what the position covers.
    async fn publish(
        &mut self,
        changes: Changes,
        position: FeedPosition,
        removed: usize,
        held: BTreeMap<String, String>,
    ) -> Result<PassReport> {
        let held_back = held.len();
        let mark = SyncMark {
            position: position.clone(),
            source: self.source.clone(),
            writer: String::new(),
            held,
        };
        let started = Instant::now();
        let version = match self
            .table
            .commit(&mut self.state, &changes, Some(mark), true)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                // No version references the files written for it: delete them now.
                discard(&self.table, changes.adds.iter()).await;
                return Err(e);
            }
        };
        let commit_ms = started.elapsed().as_secs_f64() * 1e3;
        self.since_checkpoint.0 += 1;
        self.since_checkpoint.1 += (changes.adds.len() + changes.removes.len()) as u64;
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| Error::internal("a committed table has a state"))?;
        let started = Instant::now();
        let partitions = changes.partitions();
        self.view.update(&self.table, state, &partitions)?;
        self.view_at = Some(version);
        let removed_from: BTreeSet<&PartitionKey> =
            changes.removes.iter().map(|f| &f.key).collect();
        self.grown = changes
            .adds
            .iter()
            .map(|f| &f.key)
            .filter(|k| !removed_from.contains(k))
            .cloned()
            .collect();
        self.backlog.extend(self.grown.iter().cloned());
        tracing::debug!(
            version,
            partitions = partitions.len(),
            commit_ms,
            view_ms = started.elapsed().as_secs_f64() * 1e3,
            "committed; plain view updated"
        );
        // Only once the position is durable may the log forget what it covers.
        if let Err(e) = self.store.prune_changes(&position).await {
            tracing::warn!(error = %e, "could not prune the change log (harmless; retried next pass)");
        }
        Ok(PassReport {
            version: Some(version),
            written: changes.adds.len(),
            bytes: changes.adds.iter().map(|f| f.bytes).sum(),
            removed,
            held_back,
            ..PassReport::default()
        })
    }

    /// The partitions held back by the newest version.
    fn held(&self) -> Option<&BTreeMap<String, String>> {
        self.state
            .as_ref()
            .and_then(|s| s.sync_mark())
            .map(|m| &m.held)
            .filter(|h| !h.is_empty())
    }

    fn is_held(&self, key: &PartitionKey) -> bool {
        self.held().is_some_and(|h| h.contains_key(&key.dir()))
    }

    /// The held-back partitions after a pass that re-read `cleared` (each now written or
    /// held again; `None`: a snapshot, which re-read everything) and found `newly` held: logs
    /// each partition that is newly held or held for another reason (once, not at every
    /// pass), and each released.
    fn held_after(
        &self,
        cleared: Option<&[&PartitionKey]>,
        newly: Vec<(PartitionKey, Box<str>)>,
    ) -> BTreeMap<String, String> {
        let before = self.held().cloned().unwrap_or_default();
        let mut held = before.clone();
        match cleared {
            None => held.clear(),
            Some(keys) => {
                for key in keys {
                    held.remove(&key.dir());
                }
            }
        }
        for (key, reason) in newly {
            let dir = key.dir();
            if before.get(&dir).map(String::as_str) != Some(&*reason) {
                tracing::warn!(
                    partition = %dir,
                    reason = %reason,
                    "partition held back at its last good version: a row cannot be held exactly; fix it in SQL and the next pass publishes it"
                );
            }
            held.insert(dir, reason.into());
        }
        for dir in before.keys().filter(|d| !held.contains_key(*d)) {
            tracing::info!(partition = %dir, "partition no longer held back: published");
        }
        held
    }

    /// Writes a checkpoint when one is due, and vacuums once an hour; on a background task for
    /// the daemon, here otherwise.
    async fn maintain(&mut self) -> Result<()> {
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        if self.maintenance.is_some() {
            return Ok(()); // one at a time; the next pass looks again
        }
        let (commits, actions) = self.since_checkpoint;
        let checkpoint_due =
            commits >= self.settings.checkpoint_interval || actions >= CHECKPOINT_ACTIONS;
        let vacuum_due = self.background && Instant::now() >= self.next_vacuum;
        let job = if checkpoint_due {
            Job::Checkpoint
        } else if vacuum_due {
            Job::Vacuum
        } else {
            return Ok(());
        };
        if job == Job::Vacuum {
            self.next_vacuum = Instant::now() + VACUUM_EVERY;
        } else {
            self.since_checkpoint = (0, 0);
        }
        let snapshot = state.clone();
        let table = self.table.clone();
        let cache = self.cache.clone();
        let retention = self.settings.retention;
        let work = async move { run_job(job, &cache, &table, snapshot, retention).await };
        if self.background {
            let handle = tokio::runtime::Handle::current();
            self.maintenance = Some(tokio::task::spawn_blocking(move || handle.block_on(work)));
            Ok(())
        } else {
            let done = work.await?;
            self.record(done);
            Ok(())
        }
    }

    /// Takes the result of a finished background task (all of it when `wait`).
    async fn finish_maintenance(&mut self, wait: bool) -> Result<()> {
        let finished = self.maintenance.as_ref().is_some_and(|h| h.is_finished());
        if !(finished || wait) {
            return Ok(());
        }
        let Some(handle) = self.maintenance.take() else {
            return Ok(());
        };
        match handle.await {
            Ok(Ok(done)) => self.record(done),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache maintenance failed (retried later)");
                // Try again after the next commit.
                self.since_checkpoint.0 = self.settings.checkpoint_interval;
            }
            Err(e) => tracing::warn!(error = %e, "cache maintenance task stopped"),
        }
        Ok(())
    }

    fn record(&mut self, done: Maintenance) {
        match done {
            Maintenance::Checkpoint {
                version,
                bytes,
                took,
            } => {
                self.last_checkpoint = Some(version);
                tracing::info!(
                    version,
                    bytes,
                    elapsed_ms = took.as_secs_f64() * 1e3,
                    "checkpoint written"
                );
            }
            Maintenance::Vacuum { report, deleted } => {
                if let Some(state) = self.state.as_mut() {
                    state.forget_tombstones(&deleted);
                }
                tracing::info!(
                    files = report.files,
                    bytes = report.bytes,
                    orphans = report.orphans,
                    log_entries = report.log_entries,
                    "vacuumed"
                );
            }
        }
    }

    /// Merges the files of every partition that has more than one into one (`quiver
    /// compact`): one commit that rearranges rows without changing any.
    pub async fn compact(&mut self) -> Result<CompactReport> {
        self.finish_maintenance(true).await?;
        if !self.loaded {
            self.load().await?;
        }
        self.catch_up_view()?;
        let keys: Vec<PartitionKey> = self
            .state
            .as_ref()
            .map(|s| {
                s.partitions()
                    .into_iter()
                    .filter(|(_, files)| files.len() > 1)
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        self.compact_partitions(&keys, Merge::All).await
    }

    /// Deletes up to `limit` of the plain view's retired folders whose grace has passed (the
    /// daemon, while idle, and vacuum; updates delete only a few each).
    pub fn tidy_view(&self, limit: usize) -> Result<usize> {
        self.view
            .purge_retired(crate::cache::view::RETIRE_GRACE, limit)
    }

    /// One step of the daemon's compaction between passes: merges the small files of up to
    /// [`IDLE_CHUNK`] partitions holding at least half of `cache.compact_files` files (the
    /// most first) in one commit; `None` when no partition is due. Merging early and a chunk
    /// at a time spreads the work over the quiet time between a live feed's bursts, so no pass
    /// finds thousands of partitions over the threshold at once (a pass still merges any that
    /// are, before it returns).
    pub async fn compact_idle(&mut self) -> Result<Option<CompactReport>> {
        let Some(state) = self.state.as_ref() else {
            return Ok(None);
        };
        let least = (self.settings.compact_files / 2).max(2);
        let mut due: Vec<(usize, PartitionKey)> = Vec::new();
        self.backlog.retain(|key| {
            let files = state.partition(key).len();
            if files >= least {
                due.push((files, key.clone()));
            }
            files > 1
        });
        if due.is_empty() {
            return Ok(None);
        }
        due.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let keys: Vec<PartitionKey> = due.into_iter().take(IDLE_CHUNK).map(|(_, k)| k).collect();
        let report = self.compact_partitions(&keys, Merge::Tiered).await?;
        if report.version.is_none() {
            // Nothing merged (each is one large file and one small): not due after all.
            for key in &keys {
                self.backlog.remove(key);
            }
            return Ok(None);
        }
        self.maintain().await?;
        Ok(Some(report))
    }

    /// Merges the files of `keys` (all of them, or with [`Merge::Tiered`] the small ones) and
    /// commits the result with `dataChange` false. The rows come from the cache's own files,
    /// never from the database, and must come out strictly in `ts` order (the files of a
    /// partition never overlap); anything else stops the compaction before it commits.
    async fn compact_partitions(
        &mut self,
        keys: &[PartitionKey],
        merge: Merge,
    ) -> Result<CompactReport> {
        let started = Instant::now();
        let mut report = CompactReport::default();
        let Some(state) = self.state.as_ref() else {
            return Ok(report);
        };
        let mut inputs: Vec<(PartitionKey, Vec<Arc<DataFile>>)> = Vec::new();
        for key in keys {
            let files = state.partition(key);
            let chosen = merge.choose(&files);
            if chosen.len() > 1 {
                report.files_before += files.len();
                report.files_after += files.len() - chosen.len() + 1;
                inputs.push((key.clone(), chosen.to_vec()));
            }
        }
        if inputs.is_empty() {
            return Ok(report);
        }
        let table = self.table.clone();
        let merged = futures_util::stream::iter(inputs.clone()).map(move |(key, files)| {
            let mut data = PartitionData::default();
            for f in &files {
                let path = table
                    .local_path(&f.path)
                    .ok_or_else(|| Error::invalid("compaction needs the table on a local disk"))?;
                let (series, rows) = crate::cache::read_file(&path)
                    .map_err(|e| Error::corrupt(format!("{}: {e}", path.display())))?;
                if series
                    .iter()
                    .any(|(s, t)| *s != key.symbol || *t != key.timeframe)
                {
                    return Err(Error::Format {
                        file: path,
                        message: format!("holds rows of {series:?}, not of {key}"),
                    });
                }
                if rows.len() as u64 != f.rows {
                    return Err(Error::Format {
                        file: path,
                        message: format!("holds {} rows, the table says {}", rows.len(), f.rows),
                    });
                }
                if let (Some(last), Some(first)) = (data.ts.last(), rows.ts.first())
                    && first <= last
                {
                    return Err(Error::Format {
                        file: path,
                        message: format!("overlaps the file before it in {key}: not compacted"),
                    });
                }
                data.ts.extend(rows.ts);
                for (to, from) in data.values.iter_mut().zip(rows.values) {
                    to.extend(from);
                }
            }
            Ok((key, data, None))
        });
        let Written {
            files: written,
            rows,
            ..
        } = write_partitions(&self.table, Box::pin(merged), None).await?;
        let mut changes = Changes {
            rearranges_only: true,
            ..Changes::default()
        };
        for ((_, files), (_, file)) in inputs.into_iter().zip(written) {
            changes.removes.extend(files);
            changes.adds.extend(file);
        }
        let mark = self.state.as_ref().and_then(|s| s.sync_mark().cloned());
        let version = match self
            .table
            .commit(&mut self.state, &changes, mark, true)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                discard(&self.table, changes.adds.iter()).await;
                return Err(e);
            }
        };
        self.since_checkpoint.0 += 1;
        self.since_checkpoint.1 += (changes.adds.len() + changes.removes.len()) as u64;
        if let Some(state) = self.state.as_ref() {
            self.view
                .update(&self.table, state, &changes.partitions())?;
            self.view_at = Some(version);
        }
        report.partitions = changes.adds.len();
        report.rows = rows;
        report.version = Some(version);
        tracing::info!(
            version,
            partitions = report.partitions,
            files_before = report.files_before,
            files_after = report.files_after,
            rows,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "compacted"
        );
        Ok(report)
    }

    /// Waits for background maintenance to finish (the daemon calls it before it exits).
    pub async fn settle(&mut self) -> Result<()> {
        self.finish_maintenance(true).await
    }

    /// Deletes what no retained version needs (`quiver vacuum`).
    pub async fn vacuum(&mut self) -> Result<VacuumReport> {
        self.finish_maintenance(true).await?;
        if !self.loaded {
            self.load().await?;
        }
        self.tidy_view(usize::MAX)?;
        let Some(state) = self.state.as_mut() else {
            return Ok(VacuumReport::default());
        };
        self.cache
            .vacuum(&self.table, state, self.settings.retention)
            .await
    }
}

/// How often the daemon vacuums (a vacuum lists every file of the table, so not often).
const VACUUM_EVERY: Duration = Duration::from_secs(3600);
/// When the daemon first vacuums after it starts.
const VACUUM_FIRST: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Checkpoint,
    Vacuum,
}

async fn run_job(
    job: Job,
    cache: &Cache,
    table: &Table,
    mut state: TableState,
    retention: Duration,
) -> Result<Maintenance> {
    let started = Instant::now();
    match job {
        Job::Checkpoint => {
            let bytes = table.checkpoint(&state, retention).await?;
            Ok(Maintenance::Checkpoint {
                version: state.version(),
                bytes,
                took: started.elapsed(),
            })
        }
        Job::Vacuum => {
            let before: BTreeSet<String> = state.tombstones().map(|(p, _)| p.clone()).collect();
            let report = cache.vacuum(table, &mut state, retention).await?;
            let after: BTreeSet<String> = state.tombstones().map(|(p, _)| p.clone()).collect();
            Ok(Maintenance::Vacuum {
                report,
                deleted: before.difference(&after).cloned().collect(),
            })
        }
    }
}

/// One partition cut from a scan: its key, its rows and, when one of its rows cannot be held
/// exactly, why (the first such row). A held-back partition is never written.
pub(crate) type Cut = (PartitionKey, PartitionData, Option<Box<str>>);

type PartitionStream<'a> = futures_util::stream::BoxStream<'a, Result<Cut>>;

/// Cuts a key-ordered row stream into partitions.
pub(crate) fn split_partitions(rows: ScanStream<'_>) -> PartitionStream<'_> {
    struct State<'a> {
        rows: ScanStream<'a>,
        series: Option<(String, String, Period)>,
        current: Option<(PartitionKey, i64, PartitionData, Option<Box<str>>)>,
        done: bool,
    }
    let state = State {
        rows,
        series: None,
        current: None,
        done: false,
    };
    Box::pin(futures_util::stream::try_unfold(
        state,
        |mut st| async move {
            if st.done {
                return Ok(None);
            }
            while let Some(row) = st.rows.next().await {
                let row = row?;
                if let Some((symbol, timeframe)) = row.series {
                    let tf = Timeframe::parse(&timeframe).map_err(|m| {
                        Error::corrupt(format!(
                            "market_data holds a bad timeframe for {symbol}: {m}"
                        ))
                    })?;
                    st.series = Some((symbol, timeframe, Period::for_timeframe(tf)));
                }
                let Some((symbol, timeframe, period)) = &st.series else {
                    return Err(Error::internal("a scan's first row names its series"));
                };
                let same = st.current.as_ref().is_some_and(|(key, end, _, _)| {
                    row.ts < *end && key.symbol == *symbol && key.timeframe == *timeframe
                });
                if same {
                    if let Some((_, _, data, held)) = st.current.as_mut() {
                        data.push(row.ts, row.values);
                        if held.is_none() {
                            *held = row.bad;
                        }
                    }
                    continue;
                }
                let key = PartitionKey {
                    timeframe: timeframe.clone(),
                    symbol: symbol.clone(),
                    period: period.label(row.ts),
                };
                let end = key.range()?.1.unwrap_or(i64::MAX);
                let mut data = PartitionData::default();
                data.push(row.ts, row.values);
                if let Some((key, _, data, held)) = st.current.replace((key, end, data, row.bad)) {
                    return Ok(Some(((key, data, held), st)));
                }
            }
            st.done = true;
            Ok(st
                .current
                .take()
                .map(|(key, _, data, held)| ((key, data, held), st)))
        },
    ))
}

/// What [`write_partitions`] did.
#[derive(Default)]
struct Written {
    /// The new file per partition (`None`: the partition has no rows left).
    files: Vec<(PartitionKey, Option<DataFile>)>,
    /// Partitions not written because a row cannot be held exactly, with the reason.
    held: Vec<(PartitionKey, Box<str>)>,
    /// Rows written.
    rows: u64,
}

/// Encodes and writes partitions while the stream keeps reading, several at a time (encoding
/// on the blocking pool, the puts concurrent): a live feed's burst is thousands of one-row
/// files. On an error, the files already written are deleted.
async fn write_partitions(
    table: &Table,
    partitions: PartitionStream<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<Written> {
    enum Outcome {
        File(Option<DataFile>, u64),
        Held(Box<str>),
    }
    let mut writes = partitions
        .map(|item| {
            let table = table.clone();
            async move {
                let (key, data, held) = item?;
                if let Some(bar) = bar {
                    bar.inc(data.len() as u64);
                }
                if let Some(reason) = held {
                    return Ok((key, Outcome::Held(reason)));
                }
                if data.is_empty() {
                    return Ok((key, Outcome::File(None, 0)));
                }
                let rows = data.len() as u64;
                let (encoder, k) = (table.clone(), key.clone());
                let (file, bytes) =
                    tokio::task::spawn_blocking(move || encoder.encode_and_write_local(&k, &data))
                        .await
                        .map_err(|e| {
                            Error::internal(format!("the Parquet encoder stopped: {e}"))
                        })??;
                if let Some(bytes) = bytes {
                    table.store_file(&file, bytes).await?;
                }
                Ok::<_, Error>((key, Outcome::File(Some(file), rows)))
            }
        })
        .buffer_unordered(PARALLEL_WRITES);
    let mut out = Written::default();
    while let Some(written) = writes.next().await {
        match written {
            Ok((key, Outcome::File(file, n))) => {
                out.rows += n;
                out.files.push((key, file));
            }
            Ok((key, Outcome::Held(reason))) => out.held.push((key, reason)),
            Err(e) => {
                drop(writes);
                discard(table, out.files.iter().filter_map(|(_, f)| f.as_ref())).await;
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Deletes files a failed pass wrote (best effort: vacuum deletes any it misses).
async fn discard(table: &Table, files: impl Iterator<Item = &DataFile>) {
    for f in files {
        if let Err(e) = table.log().delete(&f.path).await {
            tracing::debug!(path = %f.path, error = %e, "could not delete an uncommitted file");
        }
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
