//! The published version as readers see it: the manifest, parsed once per publication, with
//! the partitions of each series in time order.
//!
//! Every query starts by reading the `market_data` link (one `readlink`); only when it points at
//! a new version is that version's manifest read. So a reader that stays open sees each
//! publication on its next query, with no restart and no directory listing: the file list
//! comes from the manifest the syncer published, never from listing folders (DataFusion's own
//! listing cache would otherwise keep serving the old list).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::cache::{Cache, Manifest, PartitionEntry};
use crate::error::{Error, Result};

/// One published version.
#[derive(Debug)]
pub struct Snapshot {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its folder; partition files are under it.
    pub dir: PathBuf,
    /// `(timeframe, symbol)` → indexes into `manifest.partitions`, ordered by time.
    series: HashMap<(String, String), Vec<usize>>,
}

impl Snapshot {
    fn new(manifest: Manifest, dir: PathBuf) -> Snapshot {
        let mut series: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, p) in manifest.partitions.iter().enumerate() {
            series
                .entry((p.key.timeframe.clone(), p.key.symbol.clone()))
                .or_default()
                .push(i);
        }
        for files in series.values_mut() {
            files.sort_by_key(|&i| manifest.partitions[i].min_ts);
        }
        Snapshot {
            manifest,
            dir,
            series,
        }
    }

    /// The version number.
    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }

    /// The partitions of one series, oldest first; empty when the cache has no such series.
    pub fn series(&self, symbol: &str, timeframe: &str) -> Vec<&PartitionEntry> {
        self.series
            .get(&(timeframe.to_string(), symbol.to_string()))
            .map(|files| {
                files
                    .iter()
                    .map(|&i| &self.manifest.partitions[i])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The timeframes held for `symbol`, sorted.
    pub fn timeframes_of(&self, symbol: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .keys()
            .filter(|(_, s)| s == symbol)
            .map(|(tf, _)| tf.clone())
            .collect();
        out.sort();
        out
    }

    /// The absolute path of a partition's file in this version.
    pub fn path(&self, entry: &PartitionEntry) -> PathBuf {
        self.dir.join(&entry.file)
    }
}

/// Follows the published link of one cache.
#[derive(Debug)]
pub struct Snapshots {
    cache: Cache,
    current: Mutex<Option<(PathBuf, Arc<Snapshot>)>>,
}

impl Snapshots {
    /// Follows the cache under `cache`.
    pub fn new(cache: Cache) -> Snapshots {
        Snapshots {
            cache,
            current: Mutex::new(None),
        }
    }

    /// The cache folder.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The version published now; `None` before the first sync.
    pub fn current(&self) -> Result<Option<Arc<Snapshot>>> {
        let link = self.cache.table_dir();
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // Not a link: let the cache explain what is wrong with it.
            Err(_) => return self.cache.snapshot().map(|_| None),
        };
        {
            let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((seen, snapshot)) = current.as_ref()
                && *seen == target
            {
                return Ok(Some(snapshot.clone()));
            }
        }
        // A new version: read its manifest (outside the lock; readers of the old one go on).
        let Some((manifest, dir)) = self.cache.snapshot()? else {
            return Ok(None);
        };
        let resolved = std::fs::read_link(&link).map_err(|e| Error::io(&link, e))?;
        let snapshot = Arc::new(Snapshot::new(manifest, dir));
        tracing::debug!(
            generation = snapshot.generation(),
            "reader sees a new version"
        );
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // Keyed by the link target the manifest was read under; if the link moved between
        // the two reads, the next query simply reads the newer manifest.
        if self.cache.root().join(&resolved) == snapshot.dir {
            *current = Some((resolved, snapshot.clone()));
        }
        Ok(Some(snapshot))
    }
}
