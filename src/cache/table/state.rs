//! What one version of the table holds: its live files by series, totals, the sync mark of
//! the commit that made it, and (for writers) the tombstones of removed files; built from a
//! checkpoint and the commits after it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Changes;
use super::data_file::DataFile;
use crate::cache::layout::{PartitionKey, SeriesKey};
use crate::delta::checkpoint::{self, AddRef, RemoveRef};
use crate::delta::{self, Action, Metadata, PartitionValues, Protocol, Txn};
use crate::error::Result;
use crate::feed::FeedPosition;

/// The live files of one series, ordered by time. A partition's files are contiguous, and the
/// files of a series never overlap in time: appends follow the last bar, rewrites and
/// compactions replace a partition's files by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub(super) files: Vec<Arc<DataFile>>,
}

impl Series {
    /// The files, oldest first.
    pub fn files(&self) -> &[Arc<DataFile>] {
        &self.files
    }

    pub(super) fn insert(&mut self, file: Arc<DataFile>) {
        let at = self
            .files
            .partition_point(|f| (f.min_ts, &f.path) < (file.min_ts, &file.path));
        self.files.insert(at, file);
    }

    pub(super) fn remove(&mut self, path: &str) -> Option<Arc<DataFile>> {
        let at = self.files.iter().position(|f| f.path == path)?;
        Some(self.files.remove(at))
    }
}

/// Which database a cache mirrors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database URL, password removed.
    pub url: String,
    /// PostgreSQL schema, if configured.
    pub schema: Option<String>,
}

/// What a quiver commit records about the sync that made it (`commitInfo.quiver`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMark {
    /// The change-feed position the version is consistent with.
    pub position: FeedPosition,
    /// The database mirrored.
    pub source: Source,
    /// Who wrote the commit: `quiver <version> on <host> pid <pid>`.
    #[serde(default)]
    pub writer: String,
    /// Partitions held back at their last good version because a row of theirs in the table
    /// cannot be held exactly: partition folder (`tf=…/sym=…/period=…`) → the row and why.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, String>,
    /// When each held partition was first held back (ms since the epoch): from then on it
    /// is behind the table, whatever later passes publish.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held_since: std::collections::BTreeMap<String, i64>,
}

/// A removed file still kept on disk for older versions and the queries reading them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// When it was removed (ms since the epoch).
    pub deleted_ms: i64,
    /// Bytes.
    pub bytes: u64,
    /// Its series, when the `remove` named it.
    pub series: Option<SeriesKey>,
}

/// One version of the table.
#[derive(Clone, Debug)]
pub struct TableState {
    pub(super) version: u64,
    pub(super) committed_ms: i64,
    pub(super) protocol: Protocol,
    pub(super) metadata: Arc<Metadata>,
    pub(super) series: HashMap<Arc<SeriesKey>, Arc<Series>>,
    pub(super) files: usize,
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) sync: Option<Arc<SyncMark>>,
    /// Removed files by path; kept only by writers (checkpoints and vacuum need them).
    pub(super) tombstones: Option<HashMap<String, Tombstone>>,
    pub(super) txns: Vec<Txn>,
}

impl TableState {
    /// The version number (the Delta table's own: what Delta readers time-travel to).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the version was committed (ms since the epoch; 0 when its commit is gone).
    pub fn committed_ms(&self) -> i64 {
        self.committed_ms
    }

    /// When the version was committed.
    pub fn committed_at(&self) -> Option<DateTime<Utc>> {
        (self.committed_ms > 0)
            .then(|| DateTime::from_timestamp_millis(self.committed_ms))
            .flatten()
    }

    /// The table's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The sync that made the newest quiver commit up to this version, if known.
    pub fn sync_mark(&self) -> Option<&SyncMark> {
        self.sync.as_deref()
    }

    /// Live data files.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Rows in the live files.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of the live files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The series held, in no particular order.
    pub fn series_keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.series.keys().map(|k| &**k)
    }

    /// The files of one series, oldest first (empty for an unknown series).
    pub fn series(&self, timeframe: &str, symbol: &str) -> &[Arc<DataFile>] {
        let key = SeriesKey {
            timeframe: timeframe.to_string(),
            symbol: symbol.to_string(),
        };
        self.series.get(&key).map_or(&[], |s| s.files())
    }

    /// Every live file, series by series.
    pub fn files(&self) -> impl Iterator<Item = &Arc<DataFile>> {
        self.series.values().flat_map(|s| s.files.iter())
    }

    /// The live files of one partition, oldest first.
    pub fn partition(&self, key: &PartitionKey) -> Vec<Arc<DataFile>> {
        self.series(&key.timeframe, &key.symbol)
            .iter()
            .filter(|f| f.key.period == key.period)
            .cloned()
            .collect()
    }

    /// The partitions holding files, each with its files, ordered by key.
    pub fn partitions(&self) -> std::collections::BTreeMap<PartitionKey, Vec<Arc<DataFile>>> {
        let mut out: std::collections::BTreeMap<PartitionKey, Vec<Arc<DataFile>>> =
            Default::default();
        for f in self.files() {
            out.entry(f.key.clone()).or_default().push(f.clone());
        }
        out
    }

    /// The timeframes held for `symbol`, sorted.
    pub fn timeframes_of(&self, symbol: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .keys()
            .filter(|k| k.symbol == symbol)
            .map(|k| k.timeframe.clone())
            .collect();
        out.sort();
        out
    }

    /// The tombstones (writers only; empty for a reader's state).
    pub fn tombstones(&self) -> impl Iterator<Item = (&String, &Tombstone)> {
        self.tombstones.iter().flat_map(|t| t.iter())
    }

    pub(super) fn new(protocol: Protocol, metadata: Metadata, tombstones: bool) -> TableState {
        TableState {
            version: 0,
            committed_ms: 0,
            protocol,
            metadata: Arc::new(metadata),
            series: HashMap::new(),
            files: 0,
            rows: 0,
            bytes: 0,
            sync: None,
            tombstones: tombstones.then(HashMap::new),
            txns: Vec::new(),
        }
    }

    /// Adds a live file. `fresh` when the path cannot be live already (a checkpoint lists
    /// each file once): then there is nothing to replace.
    pub(super) fn add_file(&mut self, file: DataFile, fresh: bool) {
        let series = file.key.series();
        if !fresh && self.remove_file(Some(&series), &file.path, None).is_some() {
            // Re-adding a live path replaces its entry (metadata only).
        }
        self.files += 1;
        self.rows += file.rows;
        self.bytes += file.bytes;
        if let Some(t) = self.tombstones.as_mut() {
            t.remove(&file.path);
        }
        let file = Arc::new(file);
        match self.series.get_mut(&series) {
            Some(entry) => Arc::make_mut(entry).insert(file),
            None => {
                self.series
                    .insert(Arc::new(series), Arc::new(Series { files: vec![file] }));
            }
        }
    }

    /// Removes a live file; `deleted_ms` records a tombstone when the state keeps them.
    pub(super) fn remove_file(
        &mut self,
        series: Option<&SeriesKey>,
        path: &str,
        deleted_ms: Option<i64>,
    ) -> Option<Arc<DataFile>> {
        let key = match series {
            Some(s) => s.clone(),
            // A remove without partition values (another writer's): find the file's series.
            None => self
                .series
                .iter()
                .find(|(_, s)| s.files.iter().any(|f| f.path == path))
                .map(|(k, _)| (**k).clone())?,
        };
        let entry = self.series.get_mut(&key)?;
        let removed = Arc::make_mut(entry).remove(path)?;
        if entry.files.is_empty() {
            self.series.remove(&key);
        }
        self.files -= 1;
        self.rows -= removed.rows;
        self.bytes -= removed.bytes;
        if let (Some(t), Some(at)) = (self.tombstones.as_mut(), deleted_ms) {
            t.insert(
                removed.path.clone(),
                Tombstone {
                    deleted_ms: at,
                    bytes: removed.bytes,
                    series: Some(key),
                },
            );
        }
        Some(removed)
    }

    /// Applies the actions of commit `version` (read from `at`).
    pub(super) fn apply(&mut self, version: u64, actions: Vec<Action>, at: &str) -> Result<()> {
        let mut adds = Vec::new();
        for action in actions {
            match action {
                Action::CommitInfo(info) => {
                    self.committed_ms = info
                        .get("timestamp")
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or(0);
                    if let Some(mark) = info
                        .get("quiver")
                        .and_then(|q| serde_json::from_value::<SyncMark>(q.clone()).ok())
                    {
                        self.sync = Some(Arc::new(mark));
                    }
                }
                Action::Protocol(p) => {
                    p.check_readable(at)?;
                    self.protocol = p;
                }
                Action::Metadata(m) => self.metadata = Arc::new(m),
                Action::Remove(r) => {
                    let path = delta::uri_to_path(&r.path);
                    let series = r.partition_values.as_ref().and_then(series_of);
                    let deleted = r.deletion_timestamp.unwrap_or(0);
                    if self
                        .remove_file(series.as_ref(), &path, Some(deleted))
                        .is_none()
                        && let Some(t) = self.tombstones.as_mut()
                    {
                        t.entry(path).or_insert(Tombstone {
                            deleted_ms: deleted,
                            bytes: r.size.unwrap_or(0).max(0) as u64,
                            series,
                        });
                    }
                }
                Action::Add(a) => adds.push(a),
                Action::Txn(t) => {
                    self.txns.retain(|x| x.app_id != t.app_id);
                    self.txns.push(t);
                }
            }
        }
        // Removes first: a commit that removes and re-adds a path keeps it.
        for a in adds {
            let value = |k: &str| a.partition_values.get(k).cloned().flatten();
            let file = DataFile::from_add(
                &a.path,
                &value,
                a.size,
                a.modification_time,
                a.stats.as_deref(),
                None,
                at,
            )?;
            self.add_file(file, false);
        }
        self.version = version;
        Ok(())
    }

    /// Applies changes this process just committed as `version` (no parsing).
    pub(super) fn apply_changes(
        &mut self,
        version: u64,
        changes: &Changes,
        at_ms: i64,
        mark: Option<SyncMark>,
    ) {
        for f in &changes.removes {
            self.remove_file(Some(&f.key.series()), &f.path, Some(at_ms));
        }
        for f in &changes.adds {
            self.add_file(f.clone(), true);
        }
        if let Some(mark) = mark {
            self.sync = Some(Arc::new(mark));
        }
        self.version = version;
        self.committed_ms = at_ms;
    }

    /// Joins a state built from other row groups of the same checkpoint.
    pub(super) fn merge(&mut self, other: TableState) {
        self.files += other.files;
        self.rows += other.rows;
        self.bytes += other.bytes;
        for (key, series) in other.series {
            match self.series.get_mut(&key) {
                Some(entry) => {
                    let entry = Arc::make_mut(entry);
                    for f in series.files.iter().cloned() {
                        entry.insert(f);
                    }
                }
                None => {
                    self.series.insert(key, series);
                }
            }
        }
        if let (Some(mine), Some(theirs)) = (self.tombstones.as_mut(), other.tombstones) {
            mine.extend(theirs);
        }
        self.txns.extend(other.txns);
    }

    /// The same version without tombstones: what a reader keeps.
    pub fn without_tombstones(&self) -> TableState {
        TableState {
            tombstones: None,
            ..self.clone()
        }
    }

    /// Forgets tombstones of files that vacuum deleted.
    pub(crate) fn forget_tombstones<'a>(&mut self, paths: impl IntoIterator<Item = &'a String>) {
        if let Some(t) = self.tombstones.as_mut() {
            for p in paths {
                t.remove(p);
            }
        }
    }
}

pub(super) fn series_of(values: &PartitionValues) -> Option<SeriesKey> {
    Some(SeriesKey {
        timeframe: values.get("timeframe")?.clone()?,
        symbol: values.get("symbol")?.clone()?,
    })
}

/// Builds a state from a checkpoint.
/// What one thread read of a checkpoint: its files, and the protocol and metadata if its row
/// groups held them.
pub(super) type CheckpointPart = (TableState, Option<Protocol>, Option<Metadata>);

/// Builds (part of) a state from a checkpoint. A checkpoint lists each file once, and quiver's
/// list them series by series, so the files of a run of one series are gathered and joined to
/// the state once per run.
pub(super) struct FromCheckpoint<'a> {
    pub(super) state: TableState,
    pub(super) at: &'a str,
    pub(super) protocol: Option<Protocol>,
    pub(super) metadata: Option<Metadata>,
    pub(super) run: Option<(SeriesKey, Vec<Arc<DataFile>>)>,
}

impl FromCheckpoint<'_> {
    pub(super) fn end_run(&mut self) {
        let Some((key, mut files)) = self.run.take() else {
            return;
        };
        files.sort_by(|a, b| (a.min_ts, &a.path).cmp(&(b.min_ts, &b.path)));
        match self.state.series.get_mut(&key) {
            Some(entry) => {
                let entry = Arc::make_mut(entry);
                for f in files {
                    entry.insert(f);
                }
            }
            None => {
                self.state
                    .series
                    .insert(Arc::new(key), Arc::new(Series { files }));
            }
        }
    }

    pub(super) fn finish(mut self) -> CheckpointPart {
        self.end_run();
        (self.state, self.protocol, self.metadata)
    }
}

impl checkpoint::Visitor for FromCheckpoint<'_> {
    fn add(&mut self, add: AddRef<'_>) -> Result<()> {
        let value = |k: &str| {
            add.partition_values
                .iter()
                .find(|(key, _)| *key == k)
                .and_then(|(_, v)| v.map(str::to_string))
        };
        let file = DataFile::from_add(
            add.path,
            &value,
            add.size,
            add.modification_time,
            add.stats,
            add.parsed,
            self.at,
        )?;
        self.state.files += 1;
        self.state.rows += file.rows;
        self.state.bytes += file.bytes;
        let same = self
            .run
            .as_ref()
            .is_some_and(|(k, _)| k.timeframe == file.key.timeframe && k.symbol == file.key.symbol);
        if !same {
            self.end_run();
            self.run = Some((file.key.series(), Vec::new()));
        }
        if let Some((_, files)) = self.run.as_mut() {
            files.push(Arc::new(file));
        }
        Ok(())
    }

    fn remove(&mut self, remove: RemoveRef<'_>) -> Result<()> {
        if let Some(t) = self.state.tombstones.as_mut() {
            let value = |k: &str| {
                remove
                    .partition_values
                    .iter()
                    .find(|(key, _)| *key == k)
                    .and_then(|(_, v)| v.map(str::to_string))
            };
            let series = value("timeframe")
                .zip(value("symbol"))
                .map(|(timeframe, symbol)| SeriesKey { timeframe, symbol });
            t.insert(
                delta::uri_to_path(remove.path),
                Tombstone {
                    deleted_ms: remove.deletion_timestamp.unwrap_or(0),
                    bytes: remove.size.unwrap_or(0).max(0) as u64,
                    series,
                },
            );
        }
        Ok(())
    }

    fn metadata(&mut self, metadata: Metadata) -> Result<()> {
        self.metadata = Some(metadata);
        Ok(())
    }

    fn protocol(&mut self, protocol: Protocol) -> Result<()> {
        protocol.check_readable(self.at)?;
        self.protocol = Some(protocol);
        Ok(())
    }

    fn txn(&mut self, txn: Txn) -> Result<()> {
        self.state.txns.push(txn);
        Ok(())
    }
}
