//! The versions readers see: the Delta table's newest version, followed commit by commit, and
//! older versions for time travel.
//!
//! Opening reads the newest checkpoint and the commits after it. Then every query makes one
//! cheap check, whether the next commit exists (one `stat` on a local disk), and only when it
//! does are the new commits read and applied to a copy of the version it has: the log is never
//! replayed. A query keeps the version it started on to its end. Every second the check also
//! reads `_last_checkpoint`, so a reader left idle while old commits were cleaned up reloads
//! from the newer checkpoint instead of waiting for a commit that is gone.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::{AsOf, Cache, DataFile, LoadOptions, Table, TableState};
use crate::error::Result;

/// How often a reader also looks at `_last_checkpoint`.
const POINTER_CHECK: Duration = Duration::from_secs(1);
/// Older versions kept loaded for time travel.
const PINNED: usize = 4;

/// One version of the table as a reader uses it.
#[derive(Debug)]
pub struct LoadedVersion {
    /// The version.
    pub state: TableState,
    root: PathBuf,
}

impl LoadedVersion {
    /// The version number (the Delta table's own).
    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// The files of one series, oldest first; empty when the cache has no such series.
    pub fn series(&self, symbol: &str, timeframe: &str) -> &[Arc<DataFile>] {
        self.state.series(timeframe, symbol)
    }

    /// The timeframes held for `symbol`, sorted.
    pub fn timeframes_of(&self, symbol: &str) -> Vec<String> {
        self.state.timeframes_of(symbol)
    }

    /// The absolute path of a data file.
    pub fn path(&self, file: &DataFile) -> PathBuf {
        self.root.join(&file.path)
    }
}

/// Follows the Delta table of one cache.
#[derive(Debug)]
pub struct Versions {
    cache: Cache,
    table: Mutex<Option<Table>>,
    current: Mutex<Option<Arc<LoadedVersion>>>,
    refreshing: tokio::sync::Mutex<()>,
    pointer_checked: Mutex<Instant>,
    pinned: Mutex<lru::LruCache<u64, Arc<LoadedVersion>>>,
}

impl Versions {
    /// Follows the cache under `cache`.
    pub fn new(cache: Cache) -> Versions {
        Versions {
            cache,
            table: Mutex::new(None),
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            pointer_checked: Mutex::new(Instant::now()),
            pinned: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(PINNED).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    /// The cache folder.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn table(&self) -> Result<Option<Table>> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.is_none() {
            *table = self.cache.existing_table()?;
        }
        Ok(table.clone())
    }

    fn wrap(&self, table: &Table, state: TableState) -> Arc<LoadedVersion> {
        Arc::new(LoadedVersion {
            state,
            root: table.local_path("").unwrap_or_default(),
        })
    }

    fn seen(&self) -> Option<Arc<LoadedVersion>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The newest version; `None` before the first sync.
    pub async fn current(&self) -> Result<Option<Arc<LoadedVersion>>> {
        let Some(table) = self.table()? else {
            return Ok(None);
        };
        let check_pointer = {
            let mut at = self
                .pointer_checked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = at.elapsed() >= POINTER_CHECK;
            if due {
                *at = Instant::now();
            }
            due
        };
        if let Some(seen) = self.seen()
            && !check_pointer
            && !table.log().has_commit(seen.version() + 1).await?
        {
            return Ok(Some(seen));
        }
        // Something to read: one query reads it, the others wait for its result.
        let _one = self.refreshing.lock().await;
        let updated = match self.seen() {
            None => table
                .load(LoadOptions::default())
                .await?
                .map(|s| self.wrap(&table, s)),
            Some(seen) => match table.refresh(&seen.state, check_pointer).await? {
                Some(newer) => Some(self.wrap(&table, newer)),
                None => Some(seen),
            },
        };
        if let Some(s) = &updated {
            tracing::debug!(version = s.version(), "reader at version");
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = updated.clone();
        Ok(updated)
    }

    /// The version `as_of` names; `None` only for [`AsOf::Latest`] before the first sync.
    pub async fn at(&self, as_of: AsOf) -> Result<Option<Arc<LoadedVersion>>> {
        let Some(table) = self.table()? else {
            return Ok(None);
        };
        let version = match as_of {
            AsOf::Latest => return self.current().await,
            AsOf::Version(v) => v,
            AsOf::Time(t) => table.version_at(t).await?,
        };
        if let Some(current) = self.current().await?
            && current.version() == version
        {
            return Ok(Some(current));
        }
        if let Some(s) = self
            .pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
        {
            return Ok(Some(s.clone()));
        }
        let state = table
            .load_at(AsOf::Version(version), LoadOptions::default())
            .await?;
        let loaded = state.map(|s| self.wrap(&table, s));
        if let Some(s) = &loaded {
            self.pinned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(version, s.clone());
        }
        Ok(loaded)
    }
}
