//! `market_data` as a Delta table: what one version holds ([`TableState`]), how a version is
//! loaded (the newest checkpoint, then the commits after it) and followed (only the new
//! commits are applied), and how a set of changes becomes the next version ([`Table::commit`]).
//!
//! The table is partitioned by `timeframe` and `symbol` (a Delta partition is a series); every
//! data file holds one period of one series, sorted by `ts`, and carries the eight columns
//! (partition columns included, so the plain view's files are complete on their own). Every
//! `add` has statistics (`numRecords`, exact min/max `ts`), which readers use to choose files
//! and pages without opening them. quiver's commits carry the change-feed position in their
//! `commitInfo` (`"quiver": {"position": …}`), so files and position advance in one atomic
//! step; a checkpoint drops `commitInfo`, so the position is read from the newest quiver commit
//! at or after it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::file::{PartitionData, encode};
use super::layout::{PartitionKey, Period, SeriesKey};
use crate::delta::checkpoint::{self, AddRef, RemoveRef};
use crate::delta::{
    self, Action, Add, Format, LastCheckpoint, Log, LogEntryKind, Metadata, PartitionValues,
    Protocol, Remove, Txn,
};
use crate::error::{Error, Result};
use crate::feed::FeedPosition;
use crate::model::Timeframe;

/// The table's partition columns, in folder order.
pub const PARTITION_COLUMNS: [&str; 2] = ["timeframe", "symbol"];
/// The table property that makes checkpoints carry `stats_parsed`.
const STATS_AS_STRUCT: &str = "delta.checkpoint.writeStatsAsStruct";

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// One live data file: which partition, where, how many rows, their `ts` range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// The partition (series and period) it holds rows of.
    pub key: PartitionKey,
    /// Path relative to the table root (a file path; the log holds it as a URI).
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// First `ts` (microseconds).
    pub min_ts: i64,
    /// Last `ts` (microseconds).
    pub max_ts: i64,
    /// When it was written (ms since the epoch).
    pub modified_ms: i64,
}

impl DataFile {
    /// The file's name, without its folders (the plain view links it under this name).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    fn partition_values(&self) -> PartitionValues {
        [
            ("timeframe".to_string(), Some(self.key.timeframe.clone())),
            ("symbol".to_string(), Some(self.key.symbol.clone())),
        ]
        .into()
    }

    /// The `stats` JSON of its `add`: the row count and the exact `ts` range, in microseconds.
    fn stats(&self) -> String {
        let ts = |m: i64| {
            DateTime::<Utc>::from_timestamp_micros(m)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        format!(
            "{{\"numRecords\":{},\"minValues\":{{\"ts\":\"{}\"}},\"maxValues\":{{\"ts\":\"{}\"}},\
             \"nullCount\":{{\"ts\":0}}}}",
            self.rows,
            ts(self.min_ts),
            ts(self.max_ts)
        )
    }

    fn add_action(&self, data_change: bool) -> Add {
        Add {
            path: delta::path_to_uri(&self.path),
            partition_values: self.partition_values(),
            size: self.bytes as i64,
            modification_time: self.modified_ms,
            data_change,
            stats: Some(self.stats()),
            tags: None,
            deletion_vector: None,
        }
    }

    fn remove_action(&self, at_ms: i64, data_change: bool) -> Remove {
        Remove {
            path: delta::path_to_uri(&self.path),
            deletion_timestamp: Some(at_ms),
            data_change,
            extended_file_metadata: Some(true),
            partition_values: Some(self.partition_values()),
            size: Some(self.bytes as i64),
        }
    }

    /// A file of the table from what its `add` says (`at` names the log entry in errors).
    fn from_add(
        uri: &str,
        value: &dyn Fn(&str) -> Option<String>,
        size: i64,
        modified_ms: i64,
        stats: Option<&str>,
        parsed: Option<checkpoint::FileStats>,
        at: &str,
    ) -> Result<DataFile> {
        let bad = |message: String| Error::DeltaLog {
            path: at.to_string(),
            message: format!("add {uri}: {message}"),
        };
        let timeframe =
            value("timeframe").ok_or_else(|| bad("no timeframe partition value".into()))?;
        let symbol = value("symbol").ok_or_else(|| bad("no symbol partition value".into()))?;
        // Typed statistics (a quiver checkpoint), else quiver's own JSON, else any JSON.
        let quick = match parsed {
            Some(p) => Some((p.num_records.max(0) as u64, p.min, p.max)),
            None => stats.and_then(quick_stats),
        };
        let (rows, min_ts, max_ts) = match quick {
            Some(q) => q,
            None => {
                let stats = stats.ok_or_else(|| {
                    bad("no statistics (quiver needs numRecords and the ts range)".into())
                })?;
                let stats: Stats<'_> = serde_json::from_str(stats)
                    .map_err(|e| bad(format!("unreadable statistics: {e}")))?;
                let ts = |v: Option<TsStat<'_>>, which: &str| -> Result<i64> {
                    let text = v
                        .and_then(|v| v.ts)
                        .ok_or_else(|| bad(format!("no {which} ts in its statistics")))?;
                    DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.timestamp_micros())
                        .map_err(|e| bad(format!("{which} ts {text:?}: {e}")))
                };
                (
                    stats.num_records,
                    ts(stats.min_values, "min")?,
                    ts(stats.max_values, "max")?,
                )
            }
        };
        let tf = Timeframe::parse(&timeframe).map_err(bad)?;
        Ok(DataFile {
            key: PartitionKey {
                period: Period::for_timeframe(tf).label(min_ts),
                timeframe,
                symbol,
            },
            path: delta::uri_to_path(uri),
            rows,
            bytes: size.max(0) as u64,
            min_ts,
            max_ts,
            modified_ms,
        })
    }
}

/// The statistics quiver writes (`{"numRecords":N,"minValues":{"ts":"…"},"maxValues":{"ts":"…"},…}`
/// with timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`), read without a JSON parser: opening a
/// table of 100k files parses 100k of them. Anything else goes to the general parser.
fn quick_stats(s: &str) -> Option<(u64, i64, i64)> {
    let rest = s.strip_prefix("{\"numRecords\":")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let rows = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(",\"minValues\":{\"ts\":\"")?;
    let (min, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix("},\"maxValues\":{\"ts\":\"")?;
    let (max, _) = rest.split_once('"')?;
    Some((rows, quick_micros(min)?, quick_micros(max)?))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as microseconds since the epoch.
fn quick_micros(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

#[derive(Deserialize)]
struct TsStat<'a> {
    #[serde(borrow, default)]
    ts: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Stats<'a> {
    #[serde(rename = "numRecords")]
    num_records: u64,
    #[serde(borrow, rename = "minValues", default)]
    min_values: Option<TsStat<'a>>,
    #[serde(borrow, rename = "maxValues", default)]
    max_values: Option<TsStat<'a>>,
}

/// The live files of one series, ordered by time. A partition's files are contiguous, and the
/// files of a series never overlap in time: appends follow the last bar, rewrites and
/// compactions replace a partition's files by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    files: Vec<Arc<DataFile>>,
}

impl Series {
    /// The files, oldest first.
    pub fn files(&self) -> &[Arc<DataFile>] {
        &self.files
    }

    fn insert(&mut self, file: Arc<DataFile>) {
        let at = self
            .files
            .partition_point(|f| (f.min_ts, &f.path) < (file.min_ts, &file.path));
        self.files.insert(at, file);
    }

    fn remove(&mut self, path: &str) -> Option<Arc<DataFile>> {
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
    version: u64,
    committed_ms: i64,
    protocol: Protocol,
    metadata: Arc<Metadata>,
    series: HashMap<Arc<SeriesKey>, Arc<Series>>,
    files: usize,
    rows: u64,
    bytes: u64,
    sync: Option<Arc<SyncMark>>,
    /// Removed files by path; kept only by writers (checkpoints and vacuum need them).
    tombstones: Option<HashMap<String, Tombstone>>,
    txns: Vec<Txn>,
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

    fn new(protocol: Protocol, metadata: Metadata, tombstones: bool) -> TableState {
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
    fn add_file(&mut self, file: DataFile, fresh: bool) {
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
    fn remove_file(
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
    fn apply(&mut self, version: u64, actions: Vec<Action>, at: &str) -> Result<()> {
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
    fn apply_changes(
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
    fn merge(&mut self, other: TableState) {
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

fn series_of(values: &PartitionValues) -> Option<SeriesKey> {
    Some(SeriesKey {
        timeframe: values.get("timeframe")?.clone()?,
        symbol: values.get("symbol")?.clone()?,
    })
}

/// Builds a state from a checkpoint.
/// What one thread read of a checkpoint: its files, and the protocol and metadata if its row
/// groups held them.
type CheckpointPart = (TableState, Option<Protocol>, Option<Metadata>);

/// Builds (part of) a state from a checkpoint. A checkpoint lists each file once, and quiver's
/// list them series by series, so the files of a run of one series are gathered and joined to
/// the state once per run.
struct FromCheckpoint<'a> {
    state: TableState,
    at: &'a str,
    protocol: Option<Protocol>,
    metadata: Option<Metadata>,
    run: Option<(SeriesKey, Vec<Arc<DataFile>>)>,
}

impl FromCheckpoint<'_> {
    fn end_run(&mut self) {
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

    fn finish(mut self) -> CheckpointPart {
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

/// Which version to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AsOf {
    /// The newest.
    #[default]
    Latest,
    /// A version number (the Delta table's own).
    Version(u64),
    /// The newest version committed at or before this instant.
    Time(DateTime<Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = Error;

    /// A version number (`42`), or a time as `--start` takes it (RFC 3339 or a date).
    fn from_str(s: &str) -> Result<AsOf> {
        if let Ok(v) = s.trim().parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        crate::model::parse_time_arg(s, false)
            .map(AsOf::Time)
            .map_err(|_| {
                Error::invalid(format!(
                    "--as-of {s:?} is neither a version number nor a time (RFC 3339 or a date)"
                ))
            })
    }
}

/// What a reader or writer loads besides the live files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep tombstones (writers: checkpoints and vacuum need them).
    pub tombstones: bool,
    /// Find the newest quiver commit's position even when it is older than the checkpoint.
    pub sync_mark: bool,
}

/// One version in the table's history (`quiver status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version.
    pub version: u64,
    /// When it was committed (ms since the epoch).
    pub committed_ms: i64,
    /// `WRITE` (a sync pass), `OPTIMIZE` (compaction), `CREATE TABLE`.
    pub operation: String,
    /// Files added.
    pub added: usize,
    /// Files removed.
    pub removed: usize,
}

/// The table's history: every version still readable (by time travel), and what
/// the retention setting keeps of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct History {
    /// The oldest version whose log entries are still on disk.
    pub oldest: Option<u64>,
    /// The newest version.
    pub newest: Option<u64>,
    /// The newest checkpoint.
    pub checkpoint: Option<u64>,
    /// The last versions, newest last.
    pub recent: Vec<VersionInfo>,
}

/// What one commit changes: files joining and files leaving.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Files written for this commit (already in storage).
    pub adds: Vec<DataFile>,
    /// Live files leaving the table.
    pub removes: Vec<Arc<DataFile>>,
    /// False when the commit only rearranges rows already in the table (compaction).
    pub rearranges_only: bool,
}

impl Changes {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }

    /// The partitions whose files change.
    pub fn partitions(&self) -> std::collections::BTreeSet<PartitionKey> {
        self.adds
            .iter()
            .map(|f| f.key.clone())
            .chain(self.removes.iter().map(|f| f.key.clone()))
            .collect()
    }
}

/// The cache's Delta table.
#[derive(Clone, Debug)]
pub struct Table {
    log: Log,
}

fn taken(path: &str) -> Error {
    Error::internal(format!("{path}: a new data file's name is taken"))
}

/// Who writes: `quiver 0.1.0 on <host> pid <pid>`.
fn writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "quiver {} on {host} pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// The Spark JSON schema of the table's eight columns.
fn schema_string() -> String {
    let field = |name: &str, t: &str| {
        format!("{{\"name\":\"{name}\",\"type\":\"{t}\",\"nullable\":false,\"metadata\":{{}}}}")
    };
    let decimal = format!(
        "decimal({},{})",
        crate::model::CACHE_PRECISION,
        crate::model::CACHE_SCALE
    );
    let mut fields = vec![
        field("symbol", "string"),
        field("timeframe", "string"),
        field("ts", "timestamp"),
    ];
    for c in ["open", "high", "low", "close", "volume"] {
        fields.push(field(c, &decimal));
    }
    format!("{{\"type\":\"struct\",\"fields\":[{}]}}", fields.join(","))
}

impl Table {
    /// The table with its root on a local disk.
    pub fn local(root: &std::path::Path) -> Result<Table> {
        Ok(Table {
            log: Log::local(root)?,
        })
    }

    /// Its storage.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The local path of a data file (`path` relative to the root), on a local table.
    pub fn local_path(&self, path: &str) -> Option<std::path::PathBuf> {
        self.log.local_path(path)
    }

    /// The newest version; `None` when the table has no commit yet.
    pub async fn load(&self, options: LoadOptions) -> Result<Option<TableState>> {
        self.load_at(AsOf::Latest, options).await
    }

    /// A version of the table; `None` when the table has no commit yet.
    pub async fn load_at(&self, as_of: AsOf, options: LoadOptions) -> Result<Option<TableState>> {
        let target = match as_of {
            AsOf::Latest => None,
            AsOf::Version(v) => Some(v),
            AsOf::Time(t) => Some(self.version_at(t).await?),
        };
        let pointer = self.log.last_checkpoint().await?;
        let mut start = pointer
            .map(|p| p.version)
            .filter(|v| target.is_none_or(|t| *v <= t));
        if start.is_none() && (target.is_some() || !self.log.has_commit(0).await?) {
            // Time travel before the newest checkpoint, or a log whose first commits were
            // cleaned up: the newest checkpoint at or before the target.
            start = self
                .log
                .entries()
                .await?
                .into_iter()
                .filter(|e| e.kind == LogEntryKind::Checkpoint)
                .map(|e| e.version)
                .filter(|v| target.is_none_or(|t| *v <= t))
                .max();
        }
        let mut state: Option<TableState> = None;
        if let Some(v) = start {
            let path = delta::checkpoint_path(v);
            if let Some(bytes) = self.log.get(&path).await? {
                state = Some(self.read_checkpoint(&path, bytes, v, options)?);
            } else {
                start = None;
            }
        }
        let mut next = start.map_or(0, |v| v + 1);
        loop {
            if target.is_some_and(|t| next > t) {
                break;
            }
            let Some(actions) = self.log.read_commit(next).await? else {
                break;
            };
            let path = delta::commit_path(next);
            match state.as_mut() {
                Some(s) => s.apply(next, actions, &path)?,
                None => state = Some(self.first_state(actions, &path, options)?),
            }
            next += 1;
        }
        let Some(mut state) = state else {
            return match target {
                Some(t) => Err(Error::NoSuchVersion(format!(
                    "version {t} is not in the table at {}",
                    self.log.location()
                ))),
                None => Ok(None),
            };
        };
        if let Some(t) = target
            && state.version != t
        {
            return Err(Error::NoSuchVersion(format!(
                "version {t} is not in the table at {} (it has versions up to {})",
                self.log.location(),
                state.version
            )));
        }
        if start == Some(state.version) || (options.sync_mark && state.sync.is_none()) {
            self.read_marks(&mut state, options.sync_mark).await?;
        }
        Ok(Some(state))
    }

    /// Version 0 (or the first commit after a missing checkpoint): it must carry the protocol
    /// and the metadata.
    fn first_state(
        &self,
        actions: Vec<Action>,
        path: &str,
        options: LoadOptions,
    ) -> Result<TableState> {
        let protocol = actions.iter().find_map(|a| match a {
            Action::Protocol(p) => Some(p.clone()),
            _ => None,
        });
        let metadata = actions.iter().find_map(|a| match a {
            Action::Metadata(m) => Some(m.clone()),
            _ => None,
        });
        let (Some(protocol), Some(metadata)) = (protocol, metadata) else {
            return Err(Error::DeltaLog {
                path: path.into(),
                message: "the first commit has no protocol or metadata".into(),
            });
        };
        let version = path_version(path);
        let mut state = TableState::new(protocol, metadata, options.tombstones);
        state.apply(version, actions, path)?;
        Ok(state)
    }

    fn read_checkpoint(
        &self,
        path: &str,
        bytes: Bytes,
        version: u64,
        options: LoadOptions,
    ) -> Result<TableState> {
        let placeholder = Metadata {
            id: String::new(),
            name: None,
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: Default::default(),
            },
            schema_string: String::new(),
            partition_columns: Vec::new(),
            configuration: Default::default(),
            created_time: None,
        };
        let empty = TableState::new(
            Protocol {
                min_reader_version: delta::READER_VERSION,
                min_writer_version: delta::WRITER_VERSION,
                reader_features: None,
                writer_features: None,
            },
            placeholder,
            options.tombstones,
        );
        let started = std::time::Instant::now();
        // Row groups are decoded and turned into files on every core, then joined.
        let groups = checkpoint::row_groups(path, &bytes)?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(groups)
            .max(1);
        let chunks: Vec<Vec<usize>> = (0..threads)
            .map(|t| (0..groups).filter(|g| g % threads == t).collect())
            .collect();
        let parts: Vec<Result<CheckpointPart>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let (bytes, empty) = (bytes.clone(), empty.clone());
                    scope.spawn(move || {
                        let mut visitor = FromCheckpoint {
                            state: empty,
                            at: path,
                            protocol: None,
                            metadata: None,
                            run: None,
                        };
                        checkpoint::read(
                            path,
                            bytes,
                            options.tombstones,
                            Some(&chunk),
                            &mut visitor,
                        )?;
                        Ok(visitor.finish())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::internal("a checkpoint reading thread panicked"))
                    })
                })
                .collect()
        });
        let mut state = empty;
        let (mut protocol, mut metadata) = (None, None);
        for part in parts {
            let (part, p, m) = part?;
            protocol = protocol.or(p);
            metadata = metadata.or(m);
            state.merge(part);
        }
        tracing::debug!(
            path,
            files = state.files,
            threads,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint read"
        );
        let (Some(protocol), Some(metadata)) = (protocol, metadata) else {
            return Err(Error::DeltaLog {
                path: path.into(),
                message: "the checkpoint has no protocol or metadata".into(),
            });
        };
        state.protocol = protocol;
        state.metadata = Arc::new(metadata);
        state.version = version;
        Ok(state)
    }

    /// The commit time of the state's version, and (with `sync_mark`) the position of the
    /// newest quiver commit at or before it: checkpoints keep neither.
    async fn read_marks(&self, state: &mut TableState, sync_mark: bool) -> Result<()> {
        if let Some(info) = self.commit_info(state.version).await? {
            state.committed_ms = info
                .get("timestamp")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
        }
        let mut v = state.version;
        while sync_mark && state.sync.is_none() {
            if let Some(info) = self.commit_info(v).await?
                && let Some(mark) = info
                    .get("quiver")
                    .and_then(|q| serde_json::from_value::<SyncMark>(q.clone()).ok())
            {
                state.sync = Some(Arc::new(mark));
                break;
            }
            if v == 0 || state.version - v >= 10_000 {
                break; // no quiver commit left in the log: the next pass rebuilds
            }
            v -= 1;
        }
        Ok(())
    }

    /// The `commitInfo` of a commit (its first line, as quiver writes it), if it has one.
    async fn commit_info(
        &self,
        version: u64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let path = delta::commit_path(version);
        let Some(first) = self.log.first_line(&path).await? else {
            return Ok(None);
        };
        Ok(Action::parse_commit(&path, &first)
            .ok()
            .and_then(|actions| {
                actions.into_iter().find_map(|a| match a {
                    Action::CommitInfo(i) => Some(i),
                    _ => None,
                })
            }))
    }

    /// Applies the commits after `state`'s version; `None` when there is none. With
    /// `check_pointer`, also notices a log cleaned up past `state` (the next commit gone, a
    /// newer checkpoint there) and reloads from that checkpoint.
    pub async fn refresh(
        &self,
        state: &TableState,
        check_pointer: bool,
    ) -> Result<Option<TableState>> {
        let mut next = state.version + 1;
        if !self.log.has_commit(next).await? {
            if check_pointer
                && let Some(p) = self.log.last_checkpoint().await?
                && p.version > state.version
                && !self.log.has_commit(next).await?
            {
                let options = LoadOptions {
                    tombstones: state.tombstones.is_some(),
                    sync_mark: false,
                };
                return self.load(options).await;
            }
            return Ok(None);
        }
        let mut new = state.clone();
        while let Some(actions) = self.log.read_commit(next).await? {
            new.apply(next, actions, &delta::commit_path(next))?;
            next += 1;
        }
        Ok(Some(new))
    }

    /// Encodes one partition's rows as a new data file with a new name: the CPU half of
    /// [`Table::encode_and_write_local`].
    pub fn encode_file(
        &self,
        key: &PartitionKey,
        data: &PartitionData,
    ) -> Result<(DataFile, Bytes)> {
        let path = key.new_file();
        let bytes = encode(key, data)?;
        let file = DataFile {
            key: key.clone(),
            path,
            rows: data.len() as u64,
            bytes: bytes.len() as u64,
            min_ts: data.ts.first().copied().unwrap_or_default(),
            max_ts: data.ts.last().copied().unwrap_or_default(),
            modified_ms: now_ms(),
        };
        Ok((file, Bytes::from(bytes)))
    }

    /// Encodes one partition's rows as a new data file and, on a local disk, writes it, all
    /// on the calling (blocking) thread; on an object store the bytes come back for
    /// [`Table::store_file`].
    pub fn encode_and_write_local(
        &self,
        key: &PartitionKey,
        data: &PartitionData,
    ) -> Result<(DataFile, Option<Bytes>)> {
        let (file, bytes) = self.encode_file(key, data)?;
        match self.log.write_new_local(&file.path, &bytes) {
            None => Ok((file, Some(bytes))),
            Some(Ok(true)) => {
                crate::failpoint::hit("after-file");
                Ok((file, None))
            }
            Some(Ok(false)) => Err(taken(&file.path)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Puts an encoded data file on an object store (after [`Table::encode_and_write_local`]).
    pub async fn store_file(&self, file: &DataFile, bytes: Bytes) -> Result<()> {
        if !self.log.put_new(&file.path, bytes).await? {
            return Err(taken(&file.path));
        }
        crate::failpoint::hit("after-file");
        Ok(())
    }

    /// Commits `changes` as the version after `base` (version 0, creating the table, when
    /// `base` is `None`), with `mark` in its `commitInfo`; applies them to `base` and returns
    /// the new version. The files added are flushed to the device first. When another writer
    /// committed that version meanwhile, nothing is committed and the error names it.
    pub async fn commit(
        &self,
        base: &mut Option<TableState>,
        changes: &Changes,
        mark: Option<SyncMark>,
        tombstones: bool,
    ) -> Result<u64> {
        let paths: Vec<&str> = changes.adds.iter().map(|f| f.path.as_str()).collect();
        self.log.make_durable(&paths)?;
        let at = now_ms();
        let version = base.as_ref().map_or(0, |s| s.version + 1);
        let operation = match (base.is_none(), changes.rearranges_only) {
            (true, _) => "CREATE TABLE",
            (false, true) => "OPTIMIZE",
            (false, false) => "WRITE",
        };
        let mut info = serde_json::Map::new();
        info.insert("timestamp".into(), at.into());
        info.insert("operation".into(), operation.into());
        info.insert(
            "operationParameters".into(),
            serde_json::json!({ "mode": "Append" }),
        );
        info.insert(
            "engineInfo".into(),
            concat!("quiver/", env!("CARGO_PKG_VERSION")).into(),
        );
        info.insert(
            "isBlindAppend".into(),
            (changes.removes.is_empty() && !changes.rearranges_only).into(),
        );
        let mark = mark.map(|mut m| {
            m.writer = writer_name();
            m
        });
        if let Some(m) = &mark {
            info.insert(
                "quiver".into(),
                serde_json::to_value(m)
                    .map_err(|e| Error::internal(format!("a sync mark does not serialize: {e}")))?,
            );
        }
        let mut actions = Vec::with_capacity(3 + changes.adds.len() + changes.removes.len());
        actions.push(Action::CommitInfo(info));
        let mut created = None;
        if base.is_none() {
            let protocol = Protocol {
                min_reader_version: delta::READER_VERSION,
                min_writer_version: delta::WRITER_VERSION,
                reader_features: None,
                writer_features: None,
            };
            let metadata = Metadata {
                id: uuid::Uuid::new_v4().to_string(),
                name: Some("market_data".into()),
                description: Some(
                    "OHLCV bars mirrored by quiver from its SQL market_data table".into(),
                ),
                format: Format {
                    provider: "parquet".into(),
                    options: Default::default(),
                },
                schema_string: schema_string(),
                partition_columns: PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect(),
                // Checkpoints also hold the statistics and partition values as typed columns:
                // a reader opening 100k files decodes three integers per file, not JSON.
                configuration: [(STATS_AS_STRUCT.to_string(), Some("true".to_string()))].into(),
                created_time: Some(at),
            };
            actions.push(Action::Protocol(protocol.clone()));
            actions.push(Action::Metadata(metadata.clone()));
            created = Some(TableState::new(protocol, metadata, tombstones));
        }
        let data_change = !changes.rearranges_only;
        for f in &changes.removes {
            actions.push(Action::Remove(f.remove_action(at, data_change)));
        }
        for f in &changes.adds {
            actions.push(Action::Add(f.add_action(data_change)));
        }
        if !self.log.write_commit(version, &actions).await? {
            let other = self
                .commit_info(version)
                .await
                .ok()
                .flatten()
                .and_then(|i| {
                    i.get("quiver")
                        .and_then(|q| q.get("writer"))
                        .and_then(|w| w.as_str().map(str::to_string))
                        .or_else(|| {
                            i.get("engineInfo")
                                .and_then(|w| w.as_str().map(str::to_string))
                        })
                })
                .unwrap_or_else(|| "another program".into());
            return Err(Error::CommitConflict {
                table: self.log.location().to_string(),
                version,
                other,
            });
        }
        crate::failpoint::hit("after-commit");
        if let Some(c) = created {
            *base = Some(c);
        }
        if let Some(state) = base.as_mut() {
            state.apply_changes(version, changes, at, mark);
        }
        Ok(version)
    }

    /// Writes a checkpoint of `state` (a writer's state, with its tombstones): every live file,
    /// and the tombstones removed less than `retention` ago. Returns its size in bytes.
    pub async fn checkpoint(
        &self,
        state: &TableState,
        retention: std::time::Duration,
    ) -> Result<u64> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        // In series and time order, so a reader builds each series by appending.
        let mut files: Vec<&Arc<DataFile>> = state.files().collect();
        files.sort_by(|a, b| {
            (&a.key.timeframe, &a.key.symbol, a.min_ts).cmp(&(
                &b.key.timeframe,
                &b.key.symbol,
                b.min_ts,
            ))
        });
        let adds: Vec<Add> = files.iter().map(|f| f.add_action(true)).collect();
        let stats: Vec<checkpoint::FileStats> = files
            .iter()
            .map(|f| checkpoint::FileStats {
                num_records: f.rows as i64,
                min: f.min_ts,
                max: f.max_ts,
            })
            .collect();
        let as_struct = state
            .metadata
            .configuration
            .get(STATS_AS_STRUCT)
            .and_then(|v| v.as_deref())
            == Some("true");
        let parsed = as_struct.then_some(checkpoint::Parsed {
            partition_columns: &state.metadata.partition_columns,
            ts_column: "ts",
            stats: &stats,
        });
        let removes: Vec<Remove> = state
            .tombstones()
            .filter(|(_, t)| t.deleted_ms >= cutoff)
            .map(|(path, t)| Remove {
                path: delta::path_to_uri(path),
                deletion_timestamp: Some(t.deleted_ms),
                data_change: true,
                extended_file_metadata: Some(t.series.is_some()),
                partition_values: t.series.as_ref().map(|s| {
                    [
                        ("timeframe".to_string(), Some(s.timeframe.clone())),
                        ("symbol".to_string(), Some(s.symbol.clone())),
                    ]
                    .into()
                }),
                size: Some(t.bytes as i64),
            })
            .collect();
        let (bytes, size) = checkpoint::write(
            &state.protocol,
            &state.metadata,
            &state.txns,
            &adds,
            &removes,
            parsed,
        )?;
        let len = bytes.len() as u64;
        let pointer = LastCheckpoint {
            version: state.version,
            size,
            size_in_bytes: Some(len),
            num_of_add_files: Some(adds.len() as u64),
        };
        self.log.write_checkpoint(&pointer, bytes).await?;
        Ok(len)
    }

    /// The version of the newest checkpoint, if any.
    pub async fn last_checkpoint(&self) -> Result<Option<u64>> {
        Ok(self.log.last_checkpoint().await?.map(|p| p.version))
    }

    /// The newest version committed at or before `time`.
    pub async fn version_at(&self, time: DateTime<Utc>) -> Result<u64> {
        let wanted = time.timestamp_millis();
        let commits: Vec<u64> = self
            .log
            .entries()
            .await?
            .into_iter()
            .filter(|e| e.kind == LogEntryKind::Commit)
            .map(|e| e.version)
            .collect();
        // Commit times grow with versions: binary search on the commits' own timestamps.
        let (mut lo, mut hi) = (0usize, commits.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = self
                .commit_info(commits[mid])
                .await?
                .and_then(|i| i.get("timestamp").and_then(serde_json::Value::as_i64))
                .unwrap_or(i64::MAX);
            if at <= wanted {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Err(Error::NoSuchVersion(format!(
                "no version of the table at {} was committed at or before {} (the oldest \
                 still kept is newer)",
                self.log.location(),
                crate::model::format_ts(&time)
            )));
        }
        Ok(commits[lo - 1])
    }

    /// The versions still in the log, and the last `recent` of them in detail.
    pub async fn history(&self, recent: usize) -> Result<History> {
        let entries = self.log.entries().await?;
        let commits: Vec<u64> = entries
            .iter()
            .filter(|e| e.kind == LogEntryKind::Commit)
            .map(|e| e.version)
            .collect();
        let checkpoint = self.last_checkpoint().await?;
        let mut out = History {
            // The oldest version that can be rebuilt: commit 0, or the oldest checkpoint.
            oldest: if commits.first() == Some(&0) {
                Some(0)
            } else {
                entries
                    .iter()
                    .filter(|e| e.kind == LogEntryKind::Checkpoint)
                    .map(|e| e.version)
                    .min()
            },
            newest: commits.last().copied(),
            checkpoint,
            recent: Vec::new(),
        };
        for &v in commits.iter().rev().take(recent).rev() {
            let Some(actions) = self.log.read_commit(v).await? else {
                continue;
            };
            let mut info = VersionInfo {
                version: v,
                committed_ms: 0,
                operation: String::new(),
                added: 0,
                removed: 0,
            };
            for a in actions {
                match a {
                    Action::CommitInfo(i) => {
                        info.committed_ms = i
                            .get("timestamp")
                            .and_then(serde_json::Value::as_i64)
                            .unwrap_or(0);
                        info.operation = i
                            .get("operation")
                            .and_then(|o| o.as_str())
                            .unwrap_or_default()
                            .to_string();
                    }
                    Action::Add(_) => info.added += 1,
                    Action::Remove(_) => info.removed += 1,
                    _ => {}
                }
            }
            out.recent.push(info);
        }
        Ok(out)
    }
}

fn path_version(path: &str) -> u64 {
    path.rsplit('/')
        .next()
        .and_then(|n| n.split('.').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// The Parquet bytes of a file of the table, on a local disk, for `verify` and compaction.
pub fn read_local(
    table: &Table,
    file: &DataFile,
) -> Result<(Vec<(String, String)>, PartitionData)> {
    let path = table
        .local_path(&file.path)
        .ok_or_else(|| Error::invalid("reading a file of a table that is not on a local disk"))?;
    super::file::read(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiver_statistics_parse_without_json_and_agree_with_the_general_parser() {
        let file = DataFile {
            key: PartitionKey {
                timeframe: "1m".into(),
                symbol: "A".into(),
                period: "2024-06".into(),
            },
            path: "p".into(),
            rows: 8190,
            bytes: 1,
            min_ts: 1_717_425_000_000_007,
            max_ts: -62_135_596_800_000_000, // 0001-01-01
            modified_ms: 0,
        };
        let stats = file.stats();
        assert_eq!(
            quick_stats(&stats),
            Some((8190, 1_717_425_000_000_007, -62_135_596_800_000_000))
        );
        for t in [
            "2024-02-29T23:59:59.999999Z",
            "1969-12-31T23:59:59.000001Z",
            "2000-03-01T00:00:00.000000Z",
        ] {
            let general = DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros();
            assert_eq!(quick_micros(t), Some(general), "{t}");
        }
        assert_eq!(quick_micros("2024-13-01T00:00:00.000000Z"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_of_many_row_groups_loads_back_file_for_file() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::local(dir.path()).unwrap();
        let files: Vec<DataFile> = (0..70_000i64)
            .map(|i| {
                let (symbol, month) = (format!("S{:04}", i / 100), i % 100);
                let min_ts = 1_451_606_400_000_000 + month * 2_678_400_000_000 + i;
                DataFile {
                    key: PartitionKey::of(&symbol, "1m", min_ts).unwrap(),
                    path: format!("timeframe=1m/symbol={symbol}/f{i}.parquet"),
                    rows: 1 + (i % 7) as u64,
                    bytes: 100 + i as u64,
                    min_ts,
                    max_ts: min_ts + 60_000_000,
                    modified_ms: 5,
                }
            })
            .collect();
        let changes = Changes {
            adds: files,
            ..Changes::default()
        };
        let mut state = None;
        table
            .commit(&mut state, &changes, None, true)
            .await
            .unwrap();
        let written = state.unwrap();
        table
            .checkpoint(&written, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let bytes = table
            .log()
            .get(&delta::checkpoint_path(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checkpoint::row_groups("cp", &bytes).unwrap(), 3);
        // Commit 0 read back, and the checkpoint read back on two threads: the same files.
        let loaded = table.load(LoadOptions::default()).await.unwrap().unwrap();
        assert_eq!(loaded.version(), 0);
        assert_eq!(
            (loaded.file_count(), loaded.rows(), loaded.bytes()),
            (written.file_count(), written.rows(), written.bytes())
        );
        for key in written.series_keys() {
            let a: Vec<&DataFile> = written
                .series(&key.timeframe, &key.symbol)
                .iter()
                .map(|f| &**f)
                .collect();
            let b: Vec<&DataFile> = loaded
                .series(&key.timeframe, &key.symbol)
                .iter()
                .map(|f| &**f)
                .collect();
            assert_eq!(a, b, "{key:?}");
        }
        assert_eq!(
            quick_stats("{\"numRecords\":3}"),
            None,
            "others take the general path"
        );
    }
}
