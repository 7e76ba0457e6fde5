//! The plain view, `<cache.dir>/market_data/`: the table's current files as hard links under
//! Hive folders `tf=<timeframe>/sym=<symbol>/period=<period>/`, for tools that glob Parquet
//! files (`read_parquet('…/market_data/**/*.parquet', hive_partitioning = true)`).
//!
//! After each commit the partitions it changed are brought to the new version one at a time,
//! each in one atomic step: a partition's new folder is built beside the view (in
//! `.quiver/staging/`, which no glob of the view lists) and swapped with the old one by
//! `renameat2(RENAME_EXCHANGE)`; a single appended file is linked in place. So while a pass
//! runs a reader sees every partition whole, at the old version or the new one, never mixed,
//! never a partial file, never a row twice. `.quiver/view.json` records the version the view
//! reached; a writer that finds it behind the table (a crash mid-update) rebuilds the view.
//!
//! A replaced or removed folder is not deleted at once: a reader may have opened it just
//! before the swap and be listing it. It moves to `.quiver/retired/` and is deleted by a later
//! update once it has been retired for [`RETIRE_GRACE`].
//!
//! The view is a local-disk convenience: hard links need the table on the same file system.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout::PartitionKey;
use super::table::{DataFile, Table, TableState};
use crate::error::{Error, Result};

/// How long a replaced partition folder stays readable by a reader that listed it before the
/// swap.
pub const RETIRE_GRACE: Duration = Duration::from_secs(60);
/// Retired folders an update deletes at most, so that a compaction that swapped thousands of
/// folders a minute ago does not slow the pass after it; the daemon deletes the rest while
/// idle.
const PURGE_PER_UPDATE: usize = 64;

/// The plain view of one cache.
#[derive(Clone, Debug)]
pub struct PlainView {
    root: PathBuf,
    staging: PathBuf,
    retired: PathBuf,
    marker: PathBuf,
}

impl PlainView {
    /// The view at `root`, staging its changes in `state_dir`.
    pub fn new(root: PathBuf, state_dir: &Path) -> PlainView {
        PlainView {
            root,
            staging: state_dir.join("staging"),
            retired: state_dir.join("retired"),
            marker: state_dir.join("view.json"),
        }
    }

    /// The view's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The table version the view was last brought to, if recorded.
    pub fn version(&self) -> Option<u64> {
        let text = fs::read(&self.marker).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
        value.get("version")?.as_u64()
    }

    /// Records that the view shows `version`.
    pub fn mark(&self, version: u64) -> Result<()> {
        let dir = self.marker.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = self.marker.with_extension("json.tmp");
        fs::write(&tmp, format!("{{\"version\":{version}}}\n")).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &self.marker).map_err(|e| Error::io(&self.marker, e))
    }

    /// Removes what an interrupted update left in the staging folder.
    pub fn clean_staging(&self) -> Result<()> {
        match fs::remove_dir_all(&self.staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.staging, e)),
        }
    }

    /// Brings the partitions `keys` to `state` (the table's newest version) and records it.
    pub fn update<'a>(
        &self,
        table: &Table,
        state: &TableState,
        keys: impl IntoIterator<Item = &'a PartitionKey>,
    ) -> Result<usize> {
        self.purge_retired(RETIRE_GRACE, PURGE_PER_UPDATE)?;
        let mut changed = 0;
        for key in keys {
            if self.update_partition(table, key, &state.partition(key))? {
                changed += 1;
                crate::failpoint::hit("view-partition");
            }
        }
        self.mark(state.version())?;
        Ok(changed)
    }

    /// Brings the whole view to `state`: every partition of the table, and no folder that is
    /// not one. Used after a crash left the view behind the table, and by `--full`.
    pub fn rebuild(&self, table: &Table, state: &TableState) -> Result<usize> {
        self.clean_staging()?;
        self.purge_retired(RETIRE_GRACE, usize::MAX)?;
        let partitions = state.partitions();
        let mut changed = 0;
        for dir in self.partition_dirs()? {
            let known = partitions.keys().any(|k| k.dir() == dir);
            if !known {
                self.remove_partition(&self.root.join(&dir))?;
                changed += 1;
            }
        }
        for (key, files) in &partitions {
            if self.update_partition(table, key, files)? {
                changed += 1;
            }
        }
        self.mark(state.version())?;
        Ok(changed)
    }

    /// Every partition folder of the view (`tf=…/sym=…/period=…`), relative to its root.
    pub fn partition_dirs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for tf in list_dirs(&self.root)? {
            for sym in list_dirs(&self.root.join(&tf))? {
                for period in list_dirs(&self.root.join(&tf).join(&sym))? {
                    out.push(format!("{tf}/{sym}/{period}"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The Parquet files in a partition's folder, by name, with their inode numbers.
    pub fn files(&self, key: &PartitionKey) -> Result<Vec<(String, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.root.join(key.dir());
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") {
                let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
                out.push((name, meta.ino()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Makes the partition's folder hold exactly links to `files`; true when it changed.
    fn update_partition(
        &self,
        table: &Table,
        key: &PartitionKey,
        files: &[Arc<DataFile>],
    ) -> Result<bool> {
        let dir = self.root.join(key.dir());
        let have: BTreeSet<String> = self.files(key)?.into_iter().map(|(n, _)| n).collect();
        let wanted: BTreeSet<&str> = files.iter().map(|f| f.name()).collect();
        let exists = dir.is_dir();
        if exists && have.iter().map(String::as_str).eq(wanted.iter().copied()) {
            return Ok(false);
        }
        if files.is_empty() {
            if exists {
                self.remove_partition(&dir)?;
            }
            return Ok(true);
        }
        let source = |f: &DataFile| {
            table
                .local_path(&f.path)
                .ok_or_else(|| Error::invalid("the plain view needs the table on a local disk"))
        };
        let added: Vec<&Arc<DataFile>> =
            files.iter().filter(|f| !have.contains(f.name())).collect();
        if exists && added.len() == 1 && have.iter().all(|n| wanted.contains(n.as_str())) {
            // One appended file: linking it in is one atomic step already.
            let f = added[0];
            link(&source(f)?, &dir.join(f.name()))?;
            return Ok(true);
        }
        let staged = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        fs::create_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
        for f in files {
            link(&source(f)?, &staged.join(f.name()))?;
        }
        if exists {
            exchange(&staged, &dir)?;
            self.retire(&staged)?;
        } else {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            fs::rename(&staged, &dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(true)
    }

    /// Takes a partition's folder out of the view in one step (into the retired folders), and
    /// removes the symbol and timeframe folders above it if they are left empty.
    fn remove_partition(&self, dir: &Path) -> Result<()> {
        self.retire(dir)?;
        let mut parent = dir.parent();
        while let Some(p) = parent {
            if p == self.root || fs::remove_dir(p).is_err() {
                break; // not empty, or the view's root
            }
            parent = p.parent();
        }
        Ok(())
    }
}

impl PlainView {
    /// Moves a folder that left the view to the retired folders, named by when it left.
    fn retire(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(&self.retired).map_err(|e| Error::io(&self.retired, e))?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{millis}-{}", uuid::Uuid::new_v4().simple());
        let to = self.retired.join(name);
        fs::rename(dir, &to).map_err(|e| Error::io(dir, e))
    }

    /// Deletes up to `limit` of the folders retired more than `grace` ago (all of them for a
    /// zero grace); returns how many it deleted.
    pub fn purge_retired(&self, grace: Duration, limit: usize) -> Result<usize> {
        let entries = match fs::read_dir(&self.retired) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&self.retired, e)),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut purged = 0;
        for entry in entries {
            if purged >= limit {
                break;
            }
            let entry = entry.map_err(|e| Error::io(&self.retired, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let since: u128 = name
                .split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if now.saturating_sub(since) >= grace.as_millis() {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_dir()
        {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

fn link(from: &Path, to: &Path) -> Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(Error::io(
            to,
            std::io::Error::other(
                "the plain view must be on the same file system as the Delta table (hard links)",
            ),
        )),
        Err(e) => Err(Error::io(to, e)),
    }
}

/// Swaps two folders in one atomic step (Linux `renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::invalid(format!("{} has a NUL byte", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(Error::io(b, std::io::Error::last_os_error()));
    }
    Ok(())
}
