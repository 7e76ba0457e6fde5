//! Mirroring `market_data` into the cache: one pass ([`Syncer::pass`]), `status` and `verify`.
//!
//! A pass reads the change log from the published position. The first pass, `--full`, and a
//! `TRUNCATE` take a snapshot: the whole table is streamed in key order, cut into partitions and
//! encoded on a second thread while the database keeps reading. Otherwise only the partitions
//! holding a changed `(symbol, timeframe, day)` are read again, each in full, so updates,
//! deletes, late bars and bars moved between partitions all come out exact. Either way the
//! result is published as one new version together with the position (see [`crate::cache`]).
//!
//! Changes that commit while a pass runs may or may not be in what it reads; they are after
//! the position it records, so the next pass applies them again. Applying a partition twice
//! gives the same file, so passes converge.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;

use crate::cache::{
    Cache, Draft, Manifest, PartitionData, PartitionEntry, PartitionKey, Period, Source, read_file,
    write_partition,
};
use crate::db::{FeedPosition, Scan, ScanStream, Store};
use crate::error::{Error, Result};
use crate::model::Timeframe;
use crate::progress;

/// Partitions queued between the database reader and the Parquet encoder.
const QUEUE: usize = 4;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The version published, or `None` when nothing had changed.
    pub generation: Option<u64>,
    /// True when the pass rebuilt the whole cache.
    pub snapshot: bool,
    /// `(symbol, timeframe, day)` entries of the change log applied.
    pub changed_days: usize,
    /// Rows written to new files.
    pub rows: u64,
    /// Partitions written.
    pub written: usize,
    /// Partitions removed (no rows left).
    pub removed: usize,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.generation {
            None => write!(f, "cache is up to date"),
            Some(g) => write!(
                f,
                "published version {g}{}: {} rows in {} partitions written, {} removed, in {:.2?}",
                if self.snapshot { " (snapshot)" } else { "" },
                self.rows,
                self.written,
                self.removed,
                self.elapsed
            ),
        }
    }
}

/// Keeps one cache in step with one database.
#[derive(Debug)]
pub struct Syncer {
    store: Store,
    cache: Cache,
    source: Source,
    published: Option<Manifest>,
    loaded: bool,
    progress: bool,
    background_cleanup: bool,
    _lock: CacheLock,
}

impl Syncer {
    /// A syncer for `store` into `cache`. Takes the cache's lock: one syncer per cache at a time.
    pub fn new(store: Store, cache: Cache, schema: Option<String>) -> Result<Syncer> {
        let lock = CacheLock::acquire(cache.root())?;
        Ok(Syncer {
            source: Source {
                backend: store.backend().to_string(),
                url: store.redacted_url(),
                schema,
            },
            store,
            cache,
            published: None,
            loaded: false,
            progress: false,
            background_cleanup: false,
            _lock: lock,
        })
    }

    /// Shows a progress bar during snapshots when stderr is a terminal.
    pub fn with_progress(mut self, on: bool) -> Syncer {
        self.progress = on;
        self
    }

    /// Deletes retired versions on a background thread instead of within the pass (the
    /// daemon does this: it keeps the next pass from waiting on the file system).
    pub fn set_background_cleanup(&mut self, on: bool) {
        self.background_cleanup = on;
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The manifest published last (by this syncer or found on disk).
    pub fn published(&self) -> Option<&Manifest> {
        self.published.as_ref()
    }

    /// Brings the cache up to date with the table: a snapshot the first time (or with `full`),
    /// otherwise the partitions changed since the last pass.
    pub async fn pass(&mut self, full: bool) -> Result<PassReport> {
        let started = Instant::now();
        if !self.loaded {
            self.published = self.cache.current()?;
            self.loaded = true;
        }
        let base = match &self.published {
            Some(m) if !full && m.source != self.source => {
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
            Some(m) if !full => Some(m.clone()),
            _ => None,
        };
        let mut report = match base {
            None => {
                let batch = self.store.changes_since(&FeedPosition::Start).await?;
                self.snapshot(batch.next).await?
            }
            Some(base) => {
                let batch = self.store.changes_since(&base.position).await?;
                if batch.everything() {
                    self.snapshot(batch.next).await?
                } else if batch.days.is_empty() {
                    PassReport::default()
                } else {
                    let mut keys = BTreeSet::new();
                    for d in &batch.days {
                        if let (Some(s), Some(t), Some(day)) = (&d.symbol, &d.timeframe, d.day) {
                            keys.insert(PartitionKey::of_day(s, t, day)?);
                        }
                    }
                    let mut report = self.apply(&base, keys, batch.next).await?;
                    report.changed_days = batch.days.len();
                    report
                }
            }
        };
        report.elapsed = started.elapsed();
        if let Some(generation) = report.generation {
            tracing::info!(
                generation,
                snapshot = report.snapshot,
                changed_days = report.changed_days,
                rows = report.rows,
                written = report.written,
                removed = report.removed,
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "published"
            );
        } else {
            tracing::debug!(
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "nothing to publish"
            );
        }
        Ok(report)
    }

    /// The whole table into a fresh version.
    async fn snapshot(&mut self, position: FeedPosition) -> Result<PassReport> {
        let mut draft = self.cache.draft(self.published.as_ref())?;
        let bar = if self.progress && std::io::stderr().is_terminal() {
            progress::rows(self.store.count_rows().await?, "snapshot")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let rows = self.store.scan(Scan::All);
        let (entries, written_rows) =
            encode_partitions(&draft, split_partitions(rows), Some(&bar)).await?;
        bar.finish_and_clear();
        for (key, entry) in entries {
            draft.record(key, entry);
        }
        draft.replace_all();
        let mut report = self.publish(draft, position).await?;
        report.snapshot = true;
        report.rows = written_rows;
        Ok(report)
    }

    /// The partitions in `keys`, re-read in full, on top of `base`.
    async fn apply(
        &mut self,
        base: &Manifest,
        keys: BTreeSet<PartitionKey>,
        position: FeedPosition,
    ) -> Result<PassReport> {
        let mut draft = self.cache.draft(Some(base))?;
        let store = self.store.clone();
        let partitions = futures_util::stream::iter(keys).then(move |key| {
            let store = store.clone();
            async move {
                let (start, end) = key.range()?;
                let mut rows = store.scan(Scan::Series {
                    symbol: key.symbol.clone(),
                    timeframe: key.timeframe.clone(),
                    start,
                    end,
                });
                let mut data = PartitionData::default();
                while let Some(row) = rows.next().await {
                    let row = row?;
                    data.push(row.ts, row.values);
                }
                Ok((key, data))
            }
        });
        let (entries, rows) = encode_partitions(&draft, Box::pin(partitions), None).await?;
        for (key, entry) in entries {
            draft.record(key, entry);
        }
        let mut report = self.publish(draft, position).await?;
        report.rows = rows;
        Ok(report)
    }

    async fn publish(&mut self, draft: Draft, position: FeedPosition) -> Result<PassReport> {
        let (written, removed) = draft.counts();
        let manifest = draft.publish(
            &self.cache,
            self.source.clone(),
            position.clone(),
            self.background_cleanup,
        )?;
        let generation = manifest.generation;
        self.published = Some(manifest);
        // Only once the position is durable may the log forget what it covers.
        if let Err(e) = self.store.prune_changes(&position).await {
            tracing::warn!(error = %e, "could not prune the change log (harmless; retried next pass)");
        }
        Ok(PassReport {
            generation: Some(generation),
            written,
            removed,
            ..PassReport::default()
        })
    }
}

type PartitionStream<'a> =
    futures_util::stream::BoxStream<'a, Result<(PartitionKey, PartitionData)>>;

/// Cuts a key-ordered row stream into partitions.
fn split_partitions(rows: ScanStream<'_>) -> PartitionStream<'_> {
    struct State<'a> {
        rows: ScanStream<'a>,
        series: Option<(String, String, Period)>,
        current: Option<(PartitionKey, i64, PartitionData)>,
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
                        Error::invalid(format!(
                            "market_data holds a bad timeframe for {symbol}: {m}"
                        ))
                    })?;
                    st.series = Some((symbol, timeframe, Period::for_timeframe(tf)));
                }
                let Some((symbol, timeframe, period)) = &st.series else {
                    return Err(Error::invalid("a scan's first row names its series"));
                };
                let same = st.current.as_ref().is_some_and(|(key, end, _)| {
                    row.ts < *end && key.symbol == *symbol && key.timeframe == *timeframe
                });
                if same {
                    if let Some((_, _, data)) = st.current.as_mut() {
                        data.push(row.ts, row.values);
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
                if let Some((key, _, data)) = st.current.replace((key, end, data)) {
                    return Ok(Some(((key, data), st)));
                }
            }
            st.done = true;
            Ok(st.current.take().map(|(key, _, data)| ((key, data), st)))
        },
    ))
}

/// Encodes partitions on a blocking thread while the stream keeps reading; returns what was
/// written (or removed) per partition and the rows written.
async fn encode_partitions(
    draft: &Draft,
    mut partitions: PartitionStream<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(Vec<(PartitionKey, Option<PartitionEntry>)>, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(PartitionKey, PartitionData)>(QUEUE);
    let dir = draft.dir().to_path_buf();
    let encoder = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut out = Vec::new();
        let mut rows = 0u64;
        while let Some((key, data)) = rx.blocking_recv() {
            rows += data.len() as u64;
            let entry = write_partition(&dir, &key, &data)?;
            out.push((key, entry));
        }
        Ok((out, rows))
    });
    let mut failure = None;
    while let Some(item) = partitions.next().await {
        match item {
            Ok((key, data)) => {
                if let Some(bar) = bar {
                    bar.inc(data.len() as u64);
                }
                if tx.send((key, data)).await.is_err() {
                    break; // the encoder stopped: its error is reported below
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let encoded = encoder
        .await
        .map_err(|e| Error::invalid(format!("the Parquet encoder stopped: {e}")))?;
    match failure {
        Some(e) => Err(e),
        None => encoded,
    }
}

/// An exclusive lock on a cache folder, held while a syncer lives (an advisory `flock` on
/// `<dir>/.quiver.lock`, released by the kernel even if the process is killed).
#[derive(Debug)]
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn acquire(root: &Path) -> Result<CacheLock> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let path = root.join(".quiver.lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: `flock` only uses the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(Error::invalid(format!(
                    "another quiver sync is running on {}",
                    root.display()
                )));
            }
            return Err(Error::io(&path, err));
        }
        Ok(CacheLock { _file: file })
    }
}

/// What `quiver status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Database URL, password removed.
    pub database: String,
    /// The cache folder.
    pub cache_dir: String,
    /// Published version, if any.
    pub generation: Option<u64>,
    /// Partitions in the published version.
    pub partitions: usize,
    /// Parquet files under the table folder.
    pub files: usize,
    /// Rows in the published version.
    pub rows: u64,
    /// Bytes of the Parquet files.
    pub bytes: u64,
    /// When the version was published.
    pub published_at: Option<DateTime<Utc>>,
    /// The change-feed position it is consistent with.
    pub position: Option<crate::db::FeedPosition>,
    /// Change-log entries committed since (0: the cache is current).
    pub pending_changes: u64,
    /// Seconds the cache is behind: 0 when current, else the age of the published version.
    pub lag_seconds: Option<f64>,
}

/// Reads the state of the cache and how far behind the database it is.
pub async fn status(store: &Store, cache: &Cache) -> Result<Status> {
    let manifest = cache.current()?;
    let (files, bytes) = if manifest.is_some() {
        walk_parquet(&cache.table_dir())?
            .values()
            .flatten()
            .try_fold((0usize, 0u64), |(n, b), path| {
                let len = std::fs::metadata(path)
                    .map_err(|e| Error::io(path, e))?
                    .len();
                Ok::<_, Error>((n + 1, b + len))
            })?
    } else {
        (0, 0)
    };
    let pending = match &manifest {
        Some(m) => store.pending_changes(&m.position).await?,
        None => store.pending_changes(&FeedPosition::Start).await?,
    };
    let lag = manifest.as_ref().map(|m| {
        if pending == 0 {
            0.0
        } else {
            (Utc::now() - m.published_at).num_milliseconds().max(0) as f64 / 1e3
        }
    });
    Ok(Status {
        backend: store.backend().to_string(),
        database: store.redacted_url(),
        cache_dir: cache.root().display().to_string(),
        generation: manifest.as_ref().map(|m| m.generation),
        partitions: manifest.as_ref().map_or(0, |m| m.partitions.len()),
        files,
        rows: manifest.as_ref().map_or(0, Manifest::rows),
        bytes,
        published_at: manifest.as_ref().map(|m| m.published_at),
        position: manifest.map(|m| m.position),
        pending_changes: pending,
        lag_seconds: lag,
    })
}

/// A partition where the cache and the table differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The partition folder, relative to the table (`tf=1m/sym=NVDA/period=2024-06`).
    pub partition: String,
    /// Rows the table holds for it.
    pub database_rows: u64,
    /// Rows the cache holds for it.
    pub cache_rows: u64,
    /// What differs when the counts agree.
    pub detail: String,
}

/// What `quiver verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Partitions compared.
    pub partitions: usize,
    /// Rows in the table.
    pub rows: u64,
    /// Every differing partition.
    pub differences: Vec<Difference>,
}

/// Compares the table with the cache as any reader sees it (the files under
/// `<dir>/market_data`), partition by partition, value by value.
pub async fn verify(store: &Store, cache: &Cache) -> Result<VerifyReport> {
    let mut files = if cache.current()?.is_some() {
        walk_parquet(&cache.table_dir())?
    } else {
        BTreeMap::new()
    };
    let mut report = VerifyReport::default();
    let mut partitions = split_partitions(store.scan(Scan::All));
    while let Some(item) = partitions.next().await {
        let (key, data) = item?;
        report.partitions += 1;
        report.rows += data.len() as u64;
        let dir = key.dir();
        let paths = files.remove(&dir).unwrap_or_default();
        let (series, cached) = read_partition(&paths)?;
        let detail = if cached.len() != data.len() {
            "row counts differ".to_string()
        } else if series
            .iter()
            .any(|(s, t)| *s != key.symbol || *t != key.timeframe)
        {
            format!("holds rows of {series:?}")
        } else if cached.ts != data.ts {
            "timestamps differ".to_string()
        } else if cached.values != data.values {
            "prices or volumes differ".to_string()
        } else {
            continue;
        };
        report.differences.push(Difference {
            partition: dir,
            database_rows: data.len() as u64,
            cache_rows: cached.len() as u64,
            detail,
        });
    }
    for (dir, paths) in files {
        let (_, cached) = read_partition(&paths)?;
        report.partitions += 1;
        report.differences.push(Difference {
            partition: dir,
            database_rows: 0,
            cache_rows: cached.len() as u64,
            detail: "not in the table".into(),
        });
    }
    Ok(report)
}

fn read_partition(paths: &[std::path::PathBuf]) -> Result<(Vec<(String, String)>, PartitionData)> {
    let mut series = Vec::new();
    let mut all = PartitionData::default();
    for path in paths {
        let (s, data) = read_file(path)?;
        series.extend(s);
        all.ts.extend(data.ts);
        for (to, from) in all.values.iter_mut().zip(data.values) {
            to.extend(from);
        }
    }
    Ok((series, all))
}

/// Every `*.parquet` file under `table`, grouped by folder relative to it.
fn walk_parquet(table: &Path) -> Result<BTreeMap<String, Vec<std::path::PathBuf>>> {
    let mut out: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    let mut stack = vec![table.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let relative = dir
                    .strip_prefix(table)
                    .unwrap_or(&dir)
                    .to_string_lossy()
                    .into_owned();
                out.entry(relative).or_default().push(path);
            }
        }
    }
    for paths in out.values_mut() {
        paths.sort();
    }
    Ok(out)
}
