//! A Delta table's storage: the `_delta_log` folder and the data files, through
//! `object_store`.
//!
//! Every write goes through the object store: data files and commits with
//! [`PutMode::Create`] (a commit that finds its version taken reports it instead of
//! overwriting; S3's conditional PUT and the local file system's hard link give the same
//! guarantee), checkpoints and `_last_checkpoint` as whole-object puts (a reader sees the old
//! object or the new one, never a part). On a local disk, reads go straight to the file system
//! (a query's check for a new commit is one `stat`), and [`Log::make_durable`] flushes what a
//! commit is about to reference, so a power cut cannot leave a commit pointing at a torn file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Action, LOG_DIR, checkpoint_path, commit_path};
use crate::error::{Error, Result};

/// The pointer to the newest checkpoint (`_delta_log/_last_checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    /// The version the checkpoint holds.
    pub version: u64,
    /// Actions in it.
    pub size: u64,
    /// Bytes of the checkpoint file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_in_bytes: Option<u64>,
    /// `add` actions in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_of_add_files: Option<u64>,
}

/// What a file of the log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogEntryKind {
    /// `<v>.json`
    Commit,
    /// `<v>.checkpoint.parquet`
    Checkpoint,
}

/// One file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The version it belongs to.
    pub version: u64,
    /// Commit or checkpoint.
    pub kind: LogEntryKind,
    /// Its path relative to the table root.
    pub path: String,
    /// Last modified, ms since the epoch.
    pub modified_ms: i64,
}

/// One table's storage.
#[derive(Clone)]
pub struct Log {
    store: Arc<dyn ObjectStore>,
    /// The table root on a local disk, when it is on one.
    local: Option<PathBuf>,
    location: String,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("location", &self.location)
            .finish()
    }
}

fn store_error(path: &str, source: object_store::Error) -> Error {
    Error::Storage {
        path: path.to_string(),
        source,
    }
}

impl Log {
    /// The table whose root is `root` on a local disk (created if missing).
    pub fn local(root: &Path) -> Result<Log> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let absolute = std::path::absolute(root).map_err(|e| Error::io(root, e))?;
        let store = LocalFileSystem::new_with_prefix(&absolute)
            .map_err(|e| store_error(&absolute.display().to_string(), e))?;
        Ok(Log {
            store: Arc::new(store),
            location: absolute.display().to_string(),
            local: Some(absolute),
        })
    }

    /// Where the table is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The table root, when it is on a local disk.
    pub fn local_root(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// The local file of `relative` (a path relative to the root), on a local table.
    pub fn local_path(&self, relative: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|root| root.join(relative))
    }

    fn object(&self, relative: &str) -> Result<ObjectPath> {
        ObjectPath::parse(relative).map_err(|e| Error::Storage {
            path: relative.to_string(),
            source: e.into(),
        })
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>> {
        if let Some(path) = self.local_path(relative) {
            return match std::fs::read(&path) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(path, e)),
            };
        }
        match self.store.get(&self.object(relative)?).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| store_error(relative, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(relative, e)),
        }
    }

    /// The first line of an object (a commit's `commitInfo`, as quiver writes it), without
    /// reading the rest: a snapshot's commit can hold a hundred thousand `add`s.
    pub async fn first_line(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        const HEAD: u64 = 64 * 1024;
        let bytes = if let Some(path) = self.local_path(relative) {
            use std::io::Read;
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(path, e)),
            };
            let mut buf = Vec::with_capacity(4096);
            file.take(HEAD)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(&path, e))?;
            buf
        } else {
            let object = self.object(relative)?;
            let size = match self.store.head(&object).await {
                Ok(meta) => meta.size,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(store_error(relative, e)),
            };
            self.store
                .get_range(&object, 0..size.min(HEAD))
                .await
                .map_err(|e| store_error(relative, e))?
                .to_vec()
        };
        let end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
        Ok(Some(bytes[..end].to_vec()))
    }

    /// Whether the object exists: one `stat` on a local disk, a HEAD request elsewhere.
    pub async fn exists(&self, relative: &str) -> Result<bool> {
        if let Some(path) = self.local_path(relative) {
            return match std::fs::metadata(&path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io(path, e)),
            };
        }
        match self.store.head(&self.object(relative)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(relative, e)),
        }
    }

    /// Writes a new object; `false` when one already has that name (nothing is overwritten).
    pub async fn put_new(&self, relative: &str, bytes: Bytes) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.object(relative)?, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(relative, e)),
        }
    }

    /// On a local disk, writes a new object straight under its name from a blocking thread
    /// (false when the name is taken); `None` on an object store, where [`Log::put_new`]
    /// does it. For data files, whose names are new UUIDs: a crash mid-write leaves a file no
    /// version references (vacuum deletes it), so the staging file and link of a create-only
    /// put (two more system calls and a thread hop per file, a third of a live pass's cost
    /// when it writes thousands of one-bar files) buy nothing there. Commits never take this
    /// path.
    pub fn write_new_local(&self, relative: &str, bytes: &[u8]) -> Option<Result<bool>> {
        use std::io::Write;
        let path = self.local_path(relative)?;
        let write = || -> std::io::Result<bool> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            };
            file.write_all(bytes)?;
            Ok(true)
        };
        Some(write().map_err(|e| Error::io(&path, e)))
    }

    /// Writes an object whole, replacing any with that name.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.object(relative)?, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| store_error(relative, e))
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, relative: &str) -> Result<()> {
        match self.store.delete(&self.object(relative)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(relative, e)),
        }
    }

    /// Every object under `prefix` (relative to the root; empty for all): path, bytes and last
    /// modification (ms since the epoch). Staging files of puts in progress are not listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64, i64)>> {
        use futures_util::TryStreamExt;
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(self.object(prefix)?)
        };
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| store_error(&self.location, e))?;
        Ok(objects
            .into_iter()
            .map(|o| {
                (
                    o.location.to_string(),
                    o.size,
                    o.last_modified.timestamp_millis(),
                )
            })
            .collect())
    }

    /// Flushes the named objects (and the folders holding them) to the device, on a local
    /// disk; object stores acknowledge a put once it is durable, so there it is a no-op. Many
    /// files are flushed with one `syncfs` of their file system instead of one `fsync` each.
    pub fn make_durable<S: AsRef<str>>(&self, relatives: &[S]) -> Result<()> {
        let Some(root) = &self.local else {
            return Ok(());
        };
        if relatives.len() > SYNCFS_ABOVE {
            return sync_filesystem(root);
        }
        let mut dirs = std::collections::BTreeSet::new();
        for relative in relatives {
            let path = root.join(relative.as_ref());
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            let mut dir = path.parent();
            // Every folder a put may have created, up to the root.
            while let Some(d) = dir {
                if !d.starts_with(root) || !dirs.insert(d.to_path_buf()) {
                    break;
                }
                dir = d.parent();
            }
        }
        for dir in dirs {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// Staging files that puts interrupted by a crash left behind (`<name>#<n>`, which
    /// listings hide), last modified before `before_ms`, on a local disk.
    pub fn stale_uploads(&self, before_ms: i64) -> Result<Vec<PathBuf>> {
        let Some(root) = &self.local else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let staged = name
                    .rsplit_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i64::MAX, |d| d.as_millis() as i64);
                if staged && modified < before_ms {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    /// The actions of commit `version`, or `None` when there is no such commit.
    pub async fn read_commit(&self, version: u64) -> Result<Option<Vec<Action>>> {
        let path = commit_path(version);
        match self.get(&path).await? {
            Some(bytes) => Ok(Some(Action::parse_commit(&path, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Whether commit `version` exists.
    pub async fn has_commit(&self, version: u64) -> Result<bool> {
        self.exists(&commit_path(version)).await
    }

    /// Commits `actions` as `version`, durably; `false` when another writer already committed
    /// that version (nothing is written then).
    pub async fn write_commit(&self, version: u64, actions: &[Action]) -> Result<bool> {
        let path = commit_path(version);
        let text = Action::serialize_commit(actions)?;
        if !self.put_new(&path, Bytes::from(text)).await? {
            return Ok(false);
        }
        self.make_durable(&[path])?;
        Ok(true)
    }

    /// The `_last_checkpoint` pointer, if any.
    pub async fn last_checkpoint(&self) -> Result<Option<LastCheckpoint>> {
        let path = format!("{LOG_DIR}/_last_checkpoint");
        match self.get(&path).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::DeltaLog {
                    path,
                    message: format!("unreadable: {e}"),
                }),
        }
    }

    /// Writes checkpoint `version` (`bytes`: the Parquet file), then points `_last_checkpoint`
    /// at it. A crash between the two leaves a checkpoint nobody points at yet, which readers
    /// may use or ignore: it holds the same state as the commits.
    pub async fn write_checkpoint(&self, pointer: &LastCheckpoint, bytes: Bytes) -> Result<()> {
        let path = checkpoint_path(pointer.version);
        self.put(&path, bytes).await?;
        self.make_durable(&[&path])?;
        crate::failpoint::hit("checkpoint-before-pointer");
        let text = serde_json::to_vec(pointer)
            .map_err(|e| Error::invalid(format!("_last_checkpoint: {e}")))?;
        let pointer_path = format!("{LOG_DIR}/_last_checkpoint");
        self.put(&pointer_path, Bytes::from(text)).await?;
        self.make_durable(&[pointer_path])
    }

    /// The commits and checkpoints in the log, by version.
    pub async fn entries(&self) -> Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        for (path, _, modified_ms) in self.list(LOG_DIR).await? {
            let Some(name) = path.strip_prefix(&format!("{LOG_DIR}/")) else {
                continue;
            };
            let (digits, kind) = if let Some(d) = name.strip_suffix(".checkpoint.parquet") {
                (d, LogEntryKind::Checkpoint)
            } else if let Some(d) = name.strip_suffix(".json") {
                (d, LogEntryKind::Commit)
            } else {
                continue;
            };
            if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(version) = digits.parse() else {
                continue;
            };
            out.push(LogEntry {
                version,
                kind,
                path,
                modified_ms,
            });
        }
        out.sort_by_key(|e| (e.version, e.kind));
        Ok(out)
    }
}

/// Above this many files, one `syncfs` flushes them faster than an `fsync` each.
const SYNCFS_ABOVE: usize = 64;

/// Flushes the whole file system holding `path`.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: `syncfs` only reads the descriptor, which `dir` keeps open for the whole call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_create_only_and_names_keep_their_percent_signs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::local(dir.path()).unwrap();
        let relative = "timeframe=1m/symbol=BTC%2FUSDT/2024-06_x.parquet";
        assert!(
            log.put_new(relative, Bytes::from_static(b"x"))
                .await
                .unwrap()
        );
        assert!(
            !log.put_new(relative, Bytes::from_static(b"y"))
                .await
                .unwrap()
        );
        assert!(
            dir.path().join(relative).is_file(),
            "the file's name is the path as given"
        );
        log.make_durable(&[relative]).unwrap();
        assert_eq!(log.list("").await.unwrap().len(), 1);
        assert!(log.write_commit(0, &[]).await.unwrap());
        assert!(!log.write_commit(0, &[]).await.unwrap());
        assert!(log.has_commit(0).await.unwrap());
        assert!(!log.has_commit(1).await.unwrap());
        let entries = log.entries().await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].version, 0);
    }
}
