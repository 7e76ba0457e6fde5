//! The Parquet cache on disk (DESIGN.md §4): its layout, its manifest, and atomic publication.
//!
//! ```text
//! <cache.dir>/
//!   market_data -> .quiver/v000042          the published version (a symlink)
//!   .quiver/v000042/manifest.json           partitions, row counts and the source position
//!   .quiver/v000042/tf=1m/sym=NVDA/period=2024-06/data.parquet
//!   .quiver/v000041/...                     the version before, kept for readers still on it
//! ```
//!
//! A pass builds a complete new version beside the published one: the partitions it rewrites
//! as new files, every other partition as a hard link to the file already published (files are
//! never modified once written). It writes the manifest, which carries the change-feed
//! position, flushes the file system, and publishes by renaming a new symlink over
//! `market_data`: one atomic, durable step moves the files and the position together. A reader
//! that resolved the old link keeps a consistent old version; the next sees the new one.
//! Anything a crash leaves behind is an unreferenced `.quiver/v*` folder, removed by the next
//! pass.
//!
//! Partitions are `(timeframe, symbol, period)`, with the period sized to the bar length so
//! files hold thousands to a few hundred thousand rows (see [`Period`]).

mod file;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use file::{PartitionData, read as read_file, schema, write as write_file};

use crate::db::FeedPosition;
use crate::error::{Error, Result};
use crate::model::{TimeUnit, Timeframe};

/// Name of the published table under the cache folder.
pub const TABLE: &str = "market_data";
const STATE_DIR: &str = ".quiver";
const MANIFEST: &str = "manifest.json";
/// The one file of a partition. Its name is the same in every version: a reader that listed
/// the folder of an older version and opens the path after a newer one was published gets the
/// newer file, complete, instead of "not found"; a rewritten partition is a new inode, an
/// unchanged one is a hard link to the same inode, which is what caches key on.
const FILE: &str = "data.parquet";
const MANIFEST_FORMAT: u32 = 1;
const DAY_MICROS: i64 = 86_400_000_000;

/// How much time one partition file covers, by bar length: seconds bars by day, minute bars by
/// month, hour bars by year, daily and longer bars in one file per series. With a 6.5-hour
/// session that is 23k, 8k, 1.6k (a year) and a few thousand (decades) rows per file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// One UTC day.
    Day,
    /// One calendar month (UTC).
    Month,
    /// One calendar year (UTC).
    Year,
    /// The whole series.
    All,
}

impl Period {
    /// The period used for bars of `timeframe`.
    pub fn for_timeframe(timeframe: Timeframe) -> Period {
        match timeframe.unit {
            TimeUnit::Second => Period::Day,
            TimeUnit::Minute => Period::Month,
            TimeUnit::Hour => Period::Year,
            TimeUnit::Day | TimeUnit::Week | TimeUnit::Month => Period::All,
        }
    }

    /// The label of the period holding `micros` (`2024-06-03`, `2024-06`, `2024`, `all`).
    pub fn label(self, micros: i64) -> String {
        let date = DateTime::<Utc>::from_timestamp_micros(micros)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        match self {
            Period::Day => date.format("%Y-%m-%d").to_string(),
            Period::Month => date.format("%Y-%m").to_string(),
            Period::Year => date.format("%Y").to_string(),
            Period::All => "all".into(),
        }
    }

    /// The `[start, end)` microseconds of the period labelled `label`; `None` for unbounded.
    pub fn range(self, label: &str) -> Result<(Option<i64>, Option<i64>)> {
        let bad = || Error::invalid(format!("{label:?} is not a {self:?} period label"));
        let micros = |d: NaiveDate| {
            d.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros()
        };
        let (start, end) = match self {
            Period::All => return Ok((None, None)),
            Period::Day => {
                let d = NaiveDate::parse_from_str(label, "%Y-%m-%d").map_err(|_| bad())?;
                (d, d.succ_opt().ok_or_else(bad)?)
            }
            Period::Month => {
                let d = NaiveDate::parse_from_str(&format!("{label}-01"), "%Y-%m-%d")
                    .map_err(|_| bad())?;
                let next = if d.month() == 12 {
                    NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
                };
                (d, next.ok_or_else(bad)?)
            }
            Period::Year => {
                let y: i32 = label.parse().map_err(|_| bad())?;
                (
                    NaiveDate::from_ymd_opt(y, 1, 1).ok_or_else(bad)?,
                    NaiveDate::from_ymd_opt(y + 1, 1, 1).ok_or_else(bad)?,
                )
            }
        };
        Ok((Some(micros(start)), Some(micros(end))))
    }
}

/// One partition of the cache: a series and a period.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionKey {
    /// Bar length.
    pub timeframe: String,
    /// Instrument.
    pub symbol: String,
    /// Period label (see [`Period::label`]).
    pub period: String,
}

impl PartitionKey {
    /// The partition holding a bar of `(symbol, timeframe)` opening at `micros`.
    pub fn of(symbol: &str, timeframe: &str, micros: i64) -> Result<PartitionKey> {
        let tf = Timeframe::parse(timeframe).map_err(|m| {
            Error::invalid(format!(
                "market_data holds a bad timeframe for {symbol}: {m}"
            ))
        })?;
        Ok(PartitionKey {
            timeframe: timeframe.to_string(),
            symbol: symbol.to_string(),
            period: Period::for_timeframe(tf).label(micros),
        })
    }

    /// The partition holding UTC day `day` (days since the epoch) of a series.
    pub fn of_day(symbol: &str, timeframe: &str, day: i64) -> Result<PartitionKey> {
        PartitionKey::of(symbol, timeframe, day.saturating_mul(DAY_MICROS))
    }

    /// The partition's `[start, end)` in microseconds; `None` for an unbounded side.
    pub fn range(&self) -> Result<(Option<i64>, Option<i64>)> {
        let tf = Timeframe::parse(&self.timeframe).map_err(Error::InvalidArgument)?;
        Period::for_timeframe(tf).range(&self.period)
    }

    /// The partition's folder under the table, Hive style:
    /// `tf=1m/sym=NVDA/period=2024-06`. Symbol characters outside `A-Z 0-9 . _ -` are
    /// percent-encoded (`^STOXX50E` becomes `%5ESTOXX50E`, `BTC/USDT` becomes `BTC%2FUSDT`).
    pub fn dir(&self) -> String {
        format!(
            "tf={}/sym={}/period={}",
            self.timeframe,
            encode(&self.symbol),
            self.period
        )
    }
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.symbol, self.timeframe, self.period)
    }
}

fn encode(symbol: &str) -> String {
    let mut out = String::with_capacity(symbol.len());
    for b in symbol.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One published partition file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Which partition.
    #[serde(flatten)]
    pub key: PartitionKey,
    /// Path of the file, relative to the table folder.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
    /// First `ts` (microseconds).
    pub min_ts: i64,
    /// Last `ts` (microseconds).
    pub max_ts: i64,
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

/// The published state: what a version holds, and how far into the change feed it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of this file.
    pub format: u32,
    /// Version number, one more for every publication.
    pub generation: u64,
    /// The version this one replaced (kept on disk for readers still using it).
    pub previous: Option<u64>,
    /// When it was published.
    pub published_at: DateTime<Utc>,
    /// The database mirrored.
    pub source: Source,
    /// The change-feed position this version is consistent with.
    pub position: FeedPosition,
    /// Every partition, ordered by key.
    pub partitions: Vec<PartitionEntry>,
}

impl Manifest {
    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    /// Total bytes of the partition files.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
}

/// The cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
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

    /// The table folder readers open: `<dir>/market_data` (a symlink to the current version).
    pub fn table_dir(&self) -> PathBuf {
        self.root.join(TABLE)
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    fn version_dir(&self, generation: u64) -> PathBuf {
        self.state_dir().join(format!("v{generation:06}"))
    }

    /// The published manifest, or `None` before the first sync.
    pub fn current(&self) -> Result<Option<Manifest>> {
        Ok(self.snapshot()?.map(|(m, _)| m))
    }

    /// The published manifest and the folder of its version, resolved once: the files of the
    /// manifest are under that folder, whatever is published meanwhile.
    pub fn snapshot(&self) -> Result<Option<(Manifest, PathBuf)>> {
        let link = self.table_dir();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(Error::Format {
                    file: link,
                    message: "is not a quiver cache (expected a symlink to .quiver/v…); \
                              move it away or choose another cache.dir"
                        .into(),
                });
            }
            Err(e) => return Err(Error::io(&link, e)),
        };
        let dir = self.root.join(target);
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest = serde_json::from_str(&text).map_err(|e| Error::Format {
            file: path,
            message: format!("unreadable manifest: {e}"),
        })?;
        Ok(Some((manifest, dir)))
    }

    /// Starts a new version on top of `base` (the published manifest, or `None` to start from
    /// an empty cache). Leftovers of interrupted passes are removed first.
    pub fn draft(&self, base: Option<&Manifest>) -> Result<Draft> {
        self.remove_unpublished(base, false)?;
        let generation = base.map_or(1, |m| m.generation + 1);
        let dir = self.version_dir(generation);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Draft {
            dir,
            generation,
            base: base
                .map(|m| {
                    m.partitions
                        .iter()
                        .map(|p| (p.key.clone(), p.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            base_generation: base.map(|m| m.generation),
            base_dir: base.map(|m| self.version_dir(m.generation)),
            changed: BTreeMap::new(),
            committed: false,
        })
    }

    /// Deletes every version folder other than the published one and the one it replaced,
    /// and any half-made link; returns how many entries were removed. With `retire`, the
    /// folders are renamed to `.quiver/trash-*` and deleted on a background thread, off the
    /// path of the next pass (deleting a few thousand links takes tens of milliseconds).
    /// Trash that no thread of this process is deleting (left by a killed process) is deleted
    /// here like any leftover.
    fn remove_unpublished(&self, current: Option<&Manifest>, retire: bool) -> Result<usize> {
        let keep: Vec<PathBuf> = current
            .into_iter()
            .flat_map(|m| [Some(m.generation), m.previous])
            .flatten()
            .map(|g| self.version_dir(g))
            .collect();
        let state = self.state_dir();
        let entries = match fs::read_dir(&state) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&state, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&state, e))?;
            let path = entry.path();
            if keep.contains(&path) {
                continue;
            }
            if deleting().contains(&path) {
                continue; // a background thread of ours is deleting it
            }
            if retire && path.is_dir() && !path.is_symlink() {
                let to = state.join(format!("trash-{}", entry.file_name().to_string_lossy()));
                fs::rename(&path, &to).map_err(|e| Error::io(&path, e))?;
                deleting().insert(to.clone());
                std::thread::spawn(move || {
                    if let Err(e) = fs::remove_dir_all(&to) {
                        tracing::warn!(path = %to.display(), error = %e, "could not delete a retired version");
                    }
                    deleting().remove(&to);
                });
                removed += 1;
                continue;
            }
            let result = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, e));
                }
                _ => {}
            }
            tracing::debug!(path = %path.display(), "removed unpublished leftover");
            removed += 1;
        }
        Ok(removed)
    }

    /// Names of the version folders on disk, not counting retired ones being deleted.
    pub fn versions(&self) -> Result<Vec<String>> {
        let state = self.state_dir();
        let mut names = Vec::new();
        match fs::read_dir(&state) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&state, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with("trash-") {
                        names.push(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&state, e)),
        }
        names.sort();
        Ok(names)
    }
}

/// A version being built. Dropping it without [`Draft::publish`] removes its folder.
#[derive(Debug)]
pub struct Draft {
    dir: PathBuf,
    generation: u64,
    base: BTreeMap<PartitionKey, PartitionEntry>,
    base_generation: Option<u64>,
    base_dir: Option<PathBuf>,
    /// Rewritten partitions (`Some`) and removed ones (`None`).
    changed: BTreeMap<PartitionKey, Option<PartitionEntry>>,
    committed: bool,
}

impl Draft {
    /// The version number being built.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records the outcome of [`write_partition`] for `key`.
    pub fn record(&mut self, key: PartitionKey, entry: Option<PartitionEntry>) {
        self.changed.insert(key, entry);
    }

    /// The folder of the version being built.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops every partition of the base that was not rewritten (a full rebuild).
    pub fn replace_all(&mut self) {
        let stale: Vec<PartitionKey> = self
            .base
            .keys()
            .filter(|k| !self.changed.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            self.changed.insert(key, None);
        }
    }

    /// Partitions rewritten and removed so far.
    pub fn counts(&self) -> (usize, usize) {
        let written = self.changed.values().filter(|e| e.is_some()).count();
        (written, self.changed.len() - written)
    }

    /// Links the unchanged partitions, writes the manifest and publishes the version in one
    /// atomic rename; returns the manifest now published.
    /// With `background`, the version this one makes unreachable is deleted on a background
    /// thread (the daemon); otherwise before returning (one-shot passes leave nothing behind).
    pub fn publish(
        mut self,
        cache: &Cache,
        source: Source,
        position: FeedPosition,
        background: bool,
    ) -> Result<Manifest> {
        let started = std::time::Instant::now();
        let mut partitions = Vec::with_capacity(self.base.len() + self.changed.len());
        let base = std::mem::take(&mut self.base);
        let mut changed = std::mem::take(&mut self.changed);
        // Unchanged partitions: hard links to the published files (same inode, never rewritten).
        for (key, entry) in base {
            match changed.remove(&key) {
                Some(replacement) => partitions.extend(replacement),
                None => {
                    let base_dir = self.base_dir.as_ref().ok_or_else(|| {
                        Error::invalid("a draft with base partitions has a base folder")
                    })?;
                    let from = base_dir.join(&entry.file);
                    let to = self.dir.join(&entry.file);
                    create_parent(&to)?;
                    fs::hard_link(&from, &to).map_err(|e| Error::io(&to, e))?;
                    partitions.push(entry);
                }
            }
        }
        partitions.extend(changed.into_values().flatten());
        partitions.sort_by(|a, b| a.key.cmp(&b.key));
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            generation: self.generation,
            previous: self.base_generation,
            published_at: Utc::now(),
            source,
            position,
            partitions,
        };
        let path = self.dir.join(MANIFEST);
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid(format!("manifest: {e}")))?;
        fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        let linked = started.elapsed();
        crate::failpoint::hit("before-publish");
        // Everything of the new version (files, links, folders, manifest) reaches the disk
        // before the link that publishes it.
        sync_filesystem(&self.dir)?;
        let synced = started.elapsed();
        let target = Path::new(STATE_DIR).join(self.dir.file_name().unwrap_or_default());
        let staging_link = cache
            .state_dir()
            .join(format!("link-{:06}", self.generation));
        std::os::unix::fs::symlink(&target, &staging_link)
            .map_err(|e| Error::io(&staging_link, e))?;
        let table = cache.table_dir();
        fs::rename(&staging_link, &table).map_err(|e| Error::io(&table, e))?;
        sync_dir(&cache.root)?;
        self.committed = true;
        crate::failpoint::hit("after-publish");
        // Versions older than the one just replaced are no longer reachable by a new reader.
        cache.remove_unpublished(Some(&manifest), background)?;
        tracing::debug!(
            generation = manifest.generation,
            link_and_manifest_ms = linked.as_secs_f64() * 1e3,
            sync_ms = (synced - linked).as_secs_f64() * 1e3,
            swap_and_cleanup_ms = (started.elapsed() - synced).as_secs_f64() * 1e3,
            "publication steps"
        );
        Ok(manifest)
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes one partition file under `version_dir` (a version being built); `None` when `data`
/// is empty (the partition is removed).
pub fn write_partition(
    version_dir: &Path,
    key: &PartitionKey,
    data: &PartitionData,
) -> Result<Option<PartitionEntry>> {
    if data.is_empty() {
        return Ok(None);
    }
    let relative = format!("{}/{FILE}", key.dir());
    let path = version_dir.join(&relative);
    create_parent(&path)?;
    let bytes = file::write(&path, key, data)?;
    crate::failpoint::hit("after-file");
    Ok(Some(PartitionEntry {
        key: key.clone(),
        file: relative,
        rows: data.len() as u64,
        bytes,
        min_ts: data.ts.first().copied().unwrap_or_default(),
        max_ts: data.ts.last().copied().unwrap_or_default(),
    }))
}

/// Retired version folders that a background thread of this process is deleting.
fn deleting() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    static DELETING: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    DELETING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Flushes the whole file system holding `path`: one call instead of an fsync per new file,
/// link and folder of a version.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = fs::File::open(path).map_err(|e| Error::io(path, e))?;
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

    #[test]
    fn periods_cover_their_labels() {
        let tf = |s: &str| Timeframe::parse(s).unwrap();
        let ts = DateTime::parse_from_rfc3339("2024-12-31T23:59:00Z")
            .unwrap()
            .timestamp_micros();
        assert_eq!(Period::for_timeframe(tf("1m")).label(ts), "2024-12");
        assert_eq!(Period::for_timeframe(tf("30s")).label(ts), "2024-12-31");
        assert_eq!(Period::for_timeframe(tf("1h")).label(ts), "2024");
        assert_eq!(Period::for_timeframe(tf("1d")).label(ts), "all");
        for (p, label) in [
            (Period::Month, "2024-12"),
            (Period::Day, "2024-12-31"),
            (Period::Year, "2024"),
        ] {
            let (start, end) = p.range(label).unwrap();
            assert!(start.unwrap() <= ts && ts < end.unwrap(), "{label}");
            assert_eq!(p.label(start.unwrap()), label);
            assert_ne!(p.label(end.unwrap()), label);
        }
        assert_eq!(Period::All.range("all").unwrap(), (None, None));
    }

    #[test]
    fn symbols_are_encoded_in_paths() {
        let key = PartitionKey {
            timeframe: "5m".into(),
            symbol: "^STOXX50E".into(),
            period: "2024-06".into(),
        };
        assert_eq!(key.dir(), "tf=5m/sym=%5ESTOXX50E/period=2024-06");
        assert_eq!(encode("BTC/USDT:X=Y"), "BTC%2FUSDT%3AX%3DY");
    }
}
