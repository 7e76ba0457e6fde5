//! The cache on disk (DESIGN.md §4): a Delta Lake table and the plain view of it.
//!
//! ```text
//! <cache.dir>/
//!   delta/market_data/                       the Delta table
//!     _delta_log/00000000000000000042.json   one commit per sync pass
//!     _delta_log/00000000000000000000.checkpoint.parquet, _last_checkpoint
//!     timeframe=1m/symbol=NVDA/2024-06_<uuid>.parquet   data files, written once
//!   market_data/                             the plain view: the current files, hard-linked
//!     tf=1m/sym=NVDA/period=2024-06/2024-06_<uuid>.parquet
//!   .quiver/                                 the view's staging and retired folders, marker
//! ```
//!
//! [`layout`] names partitions and files, [`file`] encodes them, [`table`] reads and commits
//! versions of the Delta table, [`view`] keeps the plain view in step, and [`Cache::vacuum`]
//! deletes what no retained version needs.

mod file;
pub mod layout;
pub mod table;
pub mod view;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{PartitionData, batch_of, encode as encode_file, read as read_file, schema};
pub use layout::{PartitionKey, Period, SeriesKey};
pub use table::{
    AsOf, Changes, DataFile, History, LoadOptions, Source, SyncMark, Table, TableState, now_ms,
};
pub use view::PlainView;

use crate::delta::{self, LogEntryKind};
use crate::error::{Error, Result};

/// Name of the table, of the plain view's folder and of the table's folder under `delta/`.
pub const TABLE: &str = "market_data";
const DELTA_DIR: &str = "delta";
const STATE_DIR: &str = ".quiver";

/// The cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// What a vacuum deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VacuumReport {
    /// Data files deleted (removed from the table longer ago than the retention).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files no version ever referenced (left by interrupted passes, and staging files of
    /// interrupted writes), deleted.
    pub orphans: usize,
    /// Log entries (commits and checkpoints) older than every retained version, deleted.
    pub log_entries: usize,
}

impl Cache {
    /// The cache under `dir` (the configured `cache.dir`); nothing is created yet.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { root: dir.into() }
    }

    /// The configured cache folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Delta table's root: `<dir>/delta/market_data`.
    pub fn table_dir(&self) -> PathBuf {
        self.root.join(DELTA_DIR).join(TABLE)
    }

    /// The plain view's folder: `<dir>/market_data`.
    pub fn view_dir(&self) -> PathBuf {
        self.root.join(TABLE)
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// The Delta table, or `None` when the cache holds none yet (nothing is created).
    pub fn existing_table(&self) -> Result<Option<Table>> {
        self.refuse_old_layout()?;
        let log = self.table_dir().join(delta::LOG_DIR);
        if !log.is_dir() {
            return Ok(None);
        }
        Table::local(&self.table_dir()).map(Some)
    }

    /// The Delta table, its folder created if needed (for writers).
    pub fn table(&self) -> Result<Table> {
        Table::local(&self.table_dir())
    }

    /// The plain view.
    pub fn view(&self) -> PlainView {
        PlainView::new(self.view_dir(), &self.state_dir())
    }

    /// The newest version of the table, as a reader sees it (`None` before the first sync).
    pub async fn current(&self) -> Result<Option<TableState>> {
        match self.existing_table()? {
            Some(t) => t.load(LoadOptions::default()).await,
            None => Ok(None),
        }
    }

    /// True when the folder holds a cache of the layout before the Delta table (the plain
    /// view's folder was a symlink to `.quiver/v<N>/`, next to a `manifest.json`).
    pub fn has_old_layout(&self) -> bool {
        self.view_dir().is_symlink()
    }

    fn refuse_old_layout(&self) -> Result<()> {
        if self.has_old_layout() && !self.table_dir().join(delta::LOG_DIR).is_dir() {
            return Err(Error::Format {
                file: self.view_dir(),
                message: "is a cache of quiver's earlier layout; run `quiver sync` once to \
                          convert it to the Delta table"
                    .into(),
            });
        }
        Ok(())
    }

    /// Removes a cache of the earlier layout (the symlinked version folders, their manifests
    /// and the lock file) so the next pass rebuilds it as a Delta table from the database.
    /// Returns whether there was one.
    pub fn retire_old_layout(&self) -> Result<bool> {
        if !self.has_old_layout() {
            return Ok(false);
        }
        let link = self.view_dir();
        std::fs::remove_file(&link).map_err(|e| Error::io(&link, e))?;
        let state = self.state_dir();
        if let Ok(entries) = std::fs::read_dir(&state) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old = name.starts_with('v')
                    || name.starts_with("trash-")
                    || name.starts_with("link-");
                if old {
                    let path = entry.path();
                    let result = if path.is_dir() && !path.is_symlink() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    result.map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        let lock = self.root.join(".quiver.lock");
        match std::fs::remove_file(&lock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(lock, e)),
        }
        tracing::info!(cache = %self.root.display(), "converting a cache of the earlier layout: it is rebuilt as a Delta table");
        Ok(true)
    }

    /// Deletes what no version younger than `retention` needs: data files removed from the
    /// table longer ago than that, files no version ever referenced that are older than that
    /// (left by an interrupted pass), and log entries older than the oldest retained version
    /// (keeping the checkpoint it is rebuilt from). `state` is the writer's newest state, with
    /// its tombstones; the deleted files' tombstones are forgotten. A query planned on a
    /// retained version holds its files open, so deleting the others never disturbs it.
    pub async fn vacuum(
        &self,
        table: &Table,
        state: &mut TableState,
        retention: Duration,
    ) -> Result<VacuumReport> {
        let now = now_ms();
        let cutoff = now - retention.as_millis() as i64;
        let mut report = VacuumReport::default();
        let live: std::collections::HashSet<&str> =
            state.files().map(|f| f.path.as_str()).collect();
        let expired: Vec<(String, u64)> = state
            .tombstones()
            .filter(|(path, t)| t.deleted_ms < cutoff && !live.contains(path.as_str()))
            .map(|(path, t)| (path.clone(), t.bytes))
            .collect();
        let tombstoned: std::collections::HashSet<&String> =
            state.tombstones().map(|(p, _)| p).collect();
        let mut orphans = Vec::new();
        for (path, _, modified) in table.log().list("").await? {
            let data = !path.starts_with(delta::LOG_DIR) && path.ends_with(".parquet");
            if data
                && !live.contains(path.as_str())
                && !tombstoned.contains(&path)
                && modified < cutoff
            {
                orphans.push(path);
            }
        }
        drop(live);
        drop(tombstoned);
        for (path, bytes) in &expired {
            table.log().delete(path).await?;
            report.files += 1;
            report.bytes += bytes;
            crate::failpoint::hit("vacuum-file");
        }
        for path in &orphans {
            table.log().delete(path).await?;
            report.orphans += 1;
            crate::failpoint::hit("vacuum-file");
        }
        for path in table.log().stale_uploads(cutoff)? {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            report.orphans += 1;
        }
        state.forget_tombstones(expired.iter().map(|(p, _)| p));
        report.log_entries = self.clean_log(table, cutoff).await?;
        Ok(report)
    }

    /// Deletes commits and checkpoints older than the newest checkpoint that is itself no
    /// newer than the newest commit before `cutoff` (the protocol's metadata cleanup), so
    /// every version from that commit on can still be rebuilt.
    async fn clean_log(&self, table: &Table, cutoff: i64) -> Result<usize> {
        let entries = table.log().entries().await?;
        let cutoff_commit = entries
            .iter()
            .filter(|e| e.kind == LogEntryKind::Commit && e.modified_ms < cutoff)
            .map(|e| e.version)
            .max();
        let Some(cutoff_commit) = cutoff_commit else {
            return Ok(0);
        };
        let keep_from = entries
            .iter()
            .filter(|e| e.kind == LogEntryKind::Checkpoint && e.version <= cutoff_commit)
            .map(|e| e.version)
            .max();
        let Some(keep_from) = keep_from else {
            return Ok(0);
        };
        let mut deleted = 0;
        for e in entries.iter().filter(|e| e.version < keep_from) {
            table.log().delete(&e.path).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
