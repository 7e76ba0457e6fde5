//! Open partition files, shared by every query of a [`Reader`](super::Reader): their bytes
//! (memory-mapped, or read with `pread`), their footers and page indexes, parsed once.
//!
//! Files are keyed by identity (device, inode, size, modification time), not by path: a
//! partition that a publication leaves unchanged is a hard link to the same inode in the next
//! version, so its mapping and parsed metadata survive publications; a rewritten partition is
//! a new inode and gets a new entry. The number of entries is bounded (`read.open_files`);
//! the least recently used one is dropped first. A query holds its files for as long as it
//! runs, so a version deleted meanwhile by the daemon does not disturb it.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileMetrics;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::reader::{ChunkReader, Length};
use datafusion::parquet::file::statistics::Statistics as ParquetStatistics;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::config::IoMode;
use crate::error::{Context, Error, Result};

/// Index of `ts` among the cache's columns.
const TS_COLUMN: usize = 2;

/// What identifies a file's content: a published file is never modified, so the same inode
/// with the same size and modification time has the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// One page of the `ts` column: how many rows it holds and their range. Warmup and limit
/// bounds are computed from these without reading any data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsPage {
    /// Rows in the page.
    pub rows: u64,
    /// Smallest `ts` (microseconds).
    pub min: i64,
    /// Largest `ts` (microseconds).
    pub max: i64,
}

enum Content {
    Mapped(Bytes),
    Plain(File),
}

/// An open partition file.
pub struct OpenFile {
    path: PathBuf,
    len: u64,
    content: Content,
    metadata: OnceLock<Arc<ParquetMetaData>>,
    pages: OnceLock<Vec<TsPage>>,
    /// The footer with its columns as the cache's schema, or `None` if they differ.
    arrow: OnceLock<Option<ArrowReaderMetadata>>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("mapped", &matches!(self.content, Content::Mapped(_)))
            .finish()
    }
}

impl OpenFile {
    fn open(path: &Path, file: File, len: u64, mode: IoMode) -> Result<OpenFile> {
        let content = match mode {
            IoMode::Mmap if len > 0 => {
                // SAFETY: a mapping is undefined behaviour if the file changes underneath it.
                // Cache files are written once into a new inode, flushed, and only then
                // published by a rename; quiver never writes to or truncates a published file
                // (a rewritten partition is a new file, removed versions are unlinked, which
                // keeps the inode alive for this mapping). Another program modifying files
                // inside the cache folder is outside that contract.
                let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
                Content::Mapped(Bytes::from_owner(map))
            }
            IoMode::Mmap => Content::Mapped(Bytes::new()),
            IoMode::Pread => Content::Plain(file),
        };
        Ok(OpenFile {
            path: path.to_path_buf(),
            len,
            content,
            metadata: OnceLock::new(),
            pages: OnceLock::new(),
            arrow: OnceLock::new(),
        })
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file (never a valid Parquet file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in `range`: a slice of the mapping, or a fresh buffer read with `pread`.
    pub fn bytes(&self, range: Range<u64>) -> std::result::Result<Bytes, ParquetError> {
        if range.start > range.end || range.end > self.len {
            return Err(ParquetError::EOF(format!(
                "{}: range {range:?} is outside the file's {} bytes",
                self.path.display(),
                self.len
            )));
        }
        match &self.content {
            Content::Mapped(bytes) => Ok(bytes.slice(range.start as usize..range.end as usize)),
            Content::Plain(file) => {
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                file.read_exact_at(&mut buf, range.start)
                    .map_err(|e| ParquetError::External(Box::new(e)))?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// The footer with the page index, parsed on first use.
    pub fn metadata(&self) -> std::result::Result<Arc<ParquetMetaData>, ParquetError> {
        if let Some(m) = self.metadata.get() {
            return Ok(m.clone());
        }
        let parsed = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(self)
            .map_err(|e| ParquetError::General(format!("{}: {e}", self.path.display())))?;
        Ok(self.metadata.get_or_init(|| Arc::new(parsed)).clone())
    }

    /// The pages of the `ts` column in order, from the page index (or, without one, one
    /// entry per row group from its statistics).
    pub fn ts_pages(&self) -> Result<&[TsPage]> {
        if let Some(p) = self.pages.get() {
            return Ok(p);
        }
        let meta = self
            .metadata()
            .context(|| format!("reading the footer of {}", self.path.display()))?;
        let pages = ts_pages(&meta).ok_or_else(|| Error::Format {
            file: self.path.clone(),
            message: "no statistics on the ts column; rebuild the cache with `quiver sync --full`"
                .into(),
        })?;
        Ok(self.pages.get_or_init(|| pages))
    }

    /// The footer ready for the Parquet crate's reader, its columns read as the cache's
    /// schema; `None` when they are not of the cache's types (see [`super::direct`]).
    pub(super) fn arrow_metadata(&self) -> Result<Option<ArrowReaderMetadata>> {
        if let Some(m) = self.arrow.get() {
            return Ok(m.clone());
        }
        let meta = self
            .metadata()
            .context(|| format!("reading the footer of {}", self.path.display()))?;
        let options = ArrowReaderOptions::new()
            .with_schema(crate::cache::schema())
            .with_page_index_policy(PageIndexPolicy::Optional);
        let arrow = ArrowReaderMetadata::try_new(meta, options).ok();
        Ok(self.arrow.get_or_init(|| arrow).clone())
    }
}

/// An open file shared with a reader that owns its input.
pub(super) struct Shared(pub(super) Arc<OpenFile>);

impl Length for Shared {
    fn len(&self) -> u64 {
        self.0.len
    }
}

impl ChunkReader for Shared {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        self.0.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        self.0.get_bytes(start, length)
    }
}

impl Length for OpenFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// Lets the footer parser read only the footer and the page index, in either I/O mode.
impl ChunkReader for OpenFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.bytes(start..self.len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        self.bytes(start..start.saturating_add(length as u64))
    }
}

fn ts_pages(meta: &ParquetMetaData) -> Option<Vec<TsPage>> {
    let mut out = Vec::new();
    for (rg, group) in meta.row_groups().iter().enumerate() {
        let index = meta
            .column_index()
            .and_then(|c| c.get(rg))
            .and_then(|c| c.get(TS_COLUMN));
        let offsets = meta
            .offset_index()
            .and_then(|o| o.get(rg))
            .and_then(|o| o.get(TS_COLUMN));
        if let (Some(ColumnIndexMetaData::INT64(index)), Some(offsets)) = (index, offsets) {
            let locations = offsets.page_locations();
            for (i, page) in locations.iter().enumerate() {
                let next = locations
                    .get(i + 1)
                    .map_or(group.num_rows(), |p| p.first_row_index);
                out.push(TsPage {
                    rows: u64::try_from(next - page.first_row_index).ok()?,
                    min: *index.min_value(i)?,
                    max: *index.max_value(i)?,
                });
            }
        } else {
            match group.column(TS_COLUMN).statistics()? {
                ParquetStatistics::Int64(s) => out.push(TsPage {
                    rows: u64::try_from(group.num_rows()).ok()?,
                    min: *s.min_opt()?,
                    max: *s.max_opt()?,
                }),
                _ => return None,
            }
        }
    }
    Some(out)
}

/// Counters of the open-file cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileCacheStats {
    /// Files found open.
    pub hits: u64,
    /// Files opened (and mapped).
    pub misses: u64,
    /// Files dropped to stay within the bound.
    pub evictions: u64,
    /// Files open now.
    pub open: usize,
}

/// The bounded set of open files (see the module documentation).
pub struct FileCache {
    mode: IoMode,
    open: Mutex<lru::LruCache<FileId, Arc<OpenFile>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("mode", &self.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

impl FileCache {
    /// At most `capacity` files kept open between queries, read through `mode`.
    pub fn new(capacity: usize, mode: IoMode) -> FileCache {
        FileCache {
            mode,
            open: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// How bytes are read.
    pub fn mode(&self) -> IoMode {
        self.mode
    }

    /// The file at `path`, from the cache when its identity is known.
    pub fn open(&self, path: &Path) -> Result<Arc<OpenFile>> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let id = FileId::of(&meta);
        if let Some(f) = self.lock().get(&id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(f.clone());
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // The identity of what was opened, in case the path changed since the stat.
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let id = FileId::of(&meta);
        let opened = Arc::new(OpenFile::open(path, file, meta.len(), self.mode)?);
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut open = self.lock();
        if let Some(f) = open.get(&id) {
            return Ok(f.clone()); // another query opened it meanwhile
        }
        if open.push(id, opened.clone()).is_some_and(|(k, _)| k != id) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(opened)
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            open: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<FileId, Arc<OpenFile>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands DataFusion's Parquet scan the [`OpenFile`] attached to each [`PartitionedFile`] it
/// reads, so bytes come from the mapping and metadata from the parsed copy.
#[derive(Debug, Default)]
pub struct OpenFileReaderFactory;

impl ParquetFileReaderFactory for OpenFileReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let open = file.extension::<Arc<OpenFile>>().cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!(
                "{} was planned without its open file",
                file.object_meta.location
            ))
        })?;
        let metrics =
            ParquetFileMetrics::new(partition_index, file.object_meta.location.as_ref(), metrics);
        Ok(Box::new(OpenFileReader {
            file: open,
            metrics,
        }))
    }
}

struct OpenFileReader {
    file: Arc<OpenFile>,
    metrics: ParquetFileMetrics,
}

impl AsyncFileReader for OpenFileReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        self.metrics
            .bytes_scanned
            .add((range.end.saturating_sub(range.start)) as usize);
        futures_util::future::ready(self.file.bytes(range)).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        self.metrics.bytes_scanned.add(total as usize);
        let out = ranges.into_iter().map(|r| self.file.bytes(r)).collect();
        futures_util::future::ready(out).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        futures_util::future::ready(self.file.metadata()).boxed()
    }
}
