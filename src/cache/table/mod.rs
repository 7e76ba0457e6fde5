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

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::file::{PartitionData, encode};
use super::layout::{PartitionKey, Period};
use crate::delta::checkpoint;
use crate::delta::{
    self, Action, Add, Format, LastCheckpoint, Log, LogEntryKind, Metadata, PartitionValues,
    Protocol, Remove,
};
use crate::error::{Error, Result};
use crate::model::Timeframe;

/// The table's partition columns, in folder order.
pub const PARTITION_COLUMNS: [&str; 2] = ["timeframe", "symbol"];
/// The table property that makes checkpoints carry `stats_parsed`.
const STATS_AS_STRUCT: &str = "delta.checkpoint.writeStatsAsStruct";

mod commit;
mod data_file;
mod load;
mod state;

pub use data_file::{DataFile, now_ms};
use state::{CheckpointPart, FromCheckpoint};
pub use state::{Series, Source, SyncMark, TableState, Tombstone};

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
    use super::data_file::quick_stats;
    use super::*;

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
