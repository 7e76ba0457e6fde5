//! `quiver verify`: the table against the cache, partition by partition, value by value,
//! through the files of the Delta table's newest version and the plain view's links to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use super::split_partitions;
use crate::cache::{Cache, DataFile, PartitionData, PartitionKey, Table, read_file};
use crate::db::{Scan, Store};
use crate::error::{Error, Result};

/// A partition where the cache and the table differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The partition's folder in the plain view (`tf=1m/sym=NVDA/period=2024-06`).
    pub partition: String,
    /// Rows the table holds for it.
    pub database_rows: u64,
    /// Rows the cache holds for it.
    pub cache_rows: u64,
    /// What differs.
    pub detail: String,
}

/// What `quiver verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Partitions compared.
    pub partitions: usize,
    /// Rows in the table.
    pub rows: u64,
    /// The version compared.
    pub version: Option<u64>,
    /// Every differing partition.
    pub differences: Vec<Difference>,
}

/// Compares the table with the cache's newest version, partition by partition and value by
/// value, and checks that the plain view links exactly that version's files.
pub async fn verify(store: &Store, cache: &Cache) -> Result<VerifyReport> {
    let table = cache.existing_table()?;
    let state = match &table {
        Some(t) => t.load(Default::default()).await?,
        None => None,
    };
    let mut cached = state.as_ref().map(|s| s.partitions()).unwrap_or_default();
    let mut report = VerifyReport {
        version: state.as_ref().map(|s| s.version()),
        ..VerifyReport::default()
    };
    let view = cache.view();
    let mut view_dirs: std::collections::BTreeSet<String> =
        view.partition_dirs()?.into_iter().collect();
    let mut partitions = split_partitions(store.scan(Scan::All));
    while let Some(item) = partitions.next().await {
        let (key, data, held) = item?;
        report.partitions += 1;
        report.rows += data.len() as u64;
        let files = cached.remove(&key).unwrap_or_default();
        view_dirs.remove(&key.dir());
        let found = match held {
            // The cache cannot hold it: the partition stays at its last good version.
            Some(reason) => Some(format!("held back: {reason}")),
            None => compare(table.as_ref(), &key, &data, &files)?,
        };
        let found = match found {
            Some(d) => Some(d),
            None => compare_view(table.as_ref(), cache, &key, &files)?,
        };
        if let Some(detail) = found {
            report.differences.push(Difference {
                partition: key.dir(),
                database_rows: data.len() as u64,
                cache_rows: files.iter().map(|f| f.rows).sum(),
                detail,
            });
        }
    }
    for (key, files) in cached {
        view_dirs.remove(&key.dir());
        report.partitions += 1;
        report.differences.push(Difference {
            partition: key.dir(),
            database_rows: 0,
            cache_rows: files.iter().map(|f| f.rows).sum(),
            detail: "not in the table".into(),
        });
    }
    for dir in view_dirs {
        report.differences.push(Difference {
            partition: dir,
            database_rows: 0,
            cache_rows: 0,
            detail: "in the plain view but in no version of the cache".into(),
        });
    }
    Ok(report)
}

/// What differs between a partition's rows in the database and in its files, if anything.
fn compare(
    table: Option<&Table>,
    key: &PartitionKey,
    data: &PartitionData,
    files: &[Arc<DataFile>],
) -> Result<Option<String>> {
    let mut all = PartitionData::default();
    for f in files {
        let Some(path) = table.and_then(|t| t.local_path(&f.path)) else {
            return Err(Error::invalid("verify needs the table on a local disk"));
        };
        // A file that does not read is a difference of its partition, named, not an abort.
        let (series, rows) = match read_file(&path) {
            Ok(read) => read,
            Err(e) => return Ok(Some(format!("{} does not read: {e}", f.path))),
        };
        if series
            .iter()
            .any(|(s, t)| *s != key.symbol || *t != key.timeframe)
        {
            return Ok(Some(format!("{} holds rows of {series:?}", f.path)));
        }
        if rows.len() as u64 != f.rows {
            return Ok(Some(format!(
                "{} holds {} rows, its statistics say {}",
                f.path,
                rows.len(),
                f.rows
            )));
        }
        all.ts.extend(rows.ts);
        for (to, from) in all.values.iter_mut().zip(rows.values) {
            to.extend(from);
        }
    }
    Ok(if all.len() != data.len() {
        Some("row counts differ".into())
    } else if all.ts != data.ts {
        Some("timestamps differ".into())
    } else if all.values != data.values {
        Some("prices or volumes differ".into())
    } else {
        None
    })
}

/// Whether the plain view's folder of the partition links exactly its files.
fn compare_view(
    table: Option<&Table>,
    cache: &Cache,
    key: &PartitionKey,
    files: &[Arc<DataFile>],
) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let have: BTreeMap<String, u64> = cache.view().files(key)?.into_iter().collect();
    let mut wanted = BTreeMap::new();
    for f in files {
        let Some(path) = table.and_then(|t| t.local_path(&f.path)) else {
            return Ok(None);
        };
        let ino = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .ino();
        wanted.insert(f.name().to_string(), ino);
    }
    Ok((have != wanted).then(|| {
        format!(
            "the plain view links {} files, the table's version has {}",
            have.len(),
            wanted.len()
        )
    }))
}
