//! Moving `market_data` between databases (`quiver copy`, SQLite to PostgreSQL and back).
//!
//! The source is streamed in `(symbol, timeframe, ts)` order into the target's bulk writer
//! (one transaction: a failed copy leaves the target as it was), after migrating the target.
//! Then both sides are compared series by series: row counts and an order-independent checksum
//! of every value, computed on the exact fixed-point values, so `1.50` and `1.5` are equal and a
//! single changed digit is not.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;

use crate::db::{OnConflict, Scan, ScanRow, Store, WriteReport};
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, Timeframe, decimal_from_fixed8, ts_from_micros};
use crate::progress;

/// Bars handed to the target's writer at a time.
const BATCH: usize = 50_000;

/// What a copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows read from the source.
    pub read: u64,
    /// What the target's writer did with them.
    pub write: WriteReport,
}

/// Copies every row of `source` into `target` (migrated first) in one transaction, resolving
/// bars the target already holds by `policy`.
pub async fn copy_table(source: &Store, target: &Store, policy: OnConflict) -> Result<CopyReport> {
    if source.redacted_url() == target.redacted_url() && source.schema() == target.schema() {
        return Err(Error::invalid(
            "the target is the configured database itself; give another --to (or --to-schema)",
        ));
    }
    target.migrate().await?;
    let total = source.count_rows().await?;
    let bar = progress::rows(total, "copying");
    let mut writer = target.writer(policy).await?;
    let mut rows = source.scan(Scan::All);
    let mut series: Option<(Symbol, Timeframe)> = None;
    let mut chunk = Vec::with_capacity(BATCH.min(total as usize));
    let mut read = 0u64;
    while let Some(row) = rows.try_next().await? {
        if let Some((symbol, timeframe)) = &row.series {
            let bad = |m: String| Error::corrupt(format!("market_data {symbol} {timeframe}: {m}"));
            series = Some((
                Symbol::parse(symbol).map_err(bad)?,
                Timeframe::parse(timeframe).map_err(bad)?,
            ));
        }
        if let Some(why) = &row.bad {
            return Err(Error::corrupt(format!(
                "{why}; fix the row in the source, nothing was copied"
            )));
        }
        let (symbol, timeframe) = series
            .as_ref()
            .ok_or_else(|| Error::internal("scan returned a row before its series"))?;
        let [open, high, low, close, volume] = row.values.map(decimal_from_fixed8);
        chunk.push(Bar {
            symbol: symbol.clone(),
            timeframe: *timeframe,
            ts: ts_from_micros(row.ts)?,
            open,
            high,
            low,
            close,
            volume,
        });
        read += 1;
        if chunk.len() == BATCH {
            writer.write(&chunk).await?;
            bar.inc(chunk.len() as u64);
            chunk.clear();
        }
    }
    writer.write(&chunk).await?;
    let write = writer.commit().await?;
    bar.finish_and_clear();
    Ok(CopyReport { read, write })
}

/// Rows and checksum of one series on one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// Rows held.
    pub rows: u64,
    /// Wrapping sum of a 64-bit hash of each row's `ts` and exact values: independent of the
    /// order rows are read in, changed by any one value.
    pub checksum: u64,
}

/// A series whose two sides differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesDifference {
    /// Instrument.
    pub symbol: String,
    /// Bar length.
    pub timeframe: String,
    /// The source's side (zero rows where it lacks the series).
    pub source: Digest,
    /// The target's side.
    pub target: Digest,
}

/// The comparison of two tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// Series on either side.
    pub series: usize,
    /// Rows in the source.
    pub rows: u64,
    /// Series that differ, in `(symbol, timeframe)` order.
    pub differences: Vec<SeriesDifference>,
}

/// Compares both tables series by series (every series on either side).
pub async fn compare(source: &Store, target: &Store) -> Result<Comparison> {
    let (a, b) = futures_util::try_join!(digests(source), digests(target))?;
    let mut keys: Vec<&(String, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let differences = keys
        .iter()
        .filter_map(|&key| {
            let (source, target) = (
                a.get(key).copied().unwrap_or_default(),
                b.get(key).copied().unwrap_or_default(),
            );
            (source != target).then(|| SeriesDifference {
                symbol: key.0.clone(),
                timeframe: key.1.clone(),
                source,
                target,
            })
        })
        .collect();
    Ok(Comparison {
        series: keys.len(),
        rows: a.values().map(|d| d.rows).sum(),
        differences,
    })
}

/// Rows and checksum per `(symbol, timeframe)` of one table.
async fn digests(store: &Store) -> Result<BTreeMap<(String, String), Digest>> {
    let mut out = BTreeMap::new();
    let mut rows = store.scan(Scan::All);
    let mut current: Option<((String, String), Digest)> = None;
    while let Some(row) = rows.try_next().await? {
        if let Some(series) = &row.series {
            if let Some((key, digest)) = current.take() {
                merge(&mut out, key, digest);
            }
            current = Some((series.clone(), Digest::default()));
        }
        if let Some(why) = &row.bad {
            return Err(Error::corrupt(format!("{why} ({})", store.redacted_url())));
        }
        if let Some((_, digest)) = &mut current {
            digest.rows += 1;
            digest.checksum = digest.checksum.wrapping_add(row_hash(&row));
        }
    }
    if let Some((key, digest)) = current {
        merge(&mut out, key, digest);
    }
    Ok(out)
}

/// Adds a run of rows to its series (a series comes in one run unless the database's order of
/// text differs from byte order; the sum does not mind).
fn merge(out: &mut BTreeMap<(String, String), Digest>, key: (String, String), d: Digest) {
    let e = out.entry(key).or_default();
    e.rows += d.rows;
    e.checksum = e.checksum.wrapping_add(d.checksum);
}

/// FNV-1a over the row's `ts` and values, finished with a SplitMix64 step so that the sum of
/// many hashes keeps every bit mixed.
fn row_hash(row: &ScanRow) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&row.ts.to_le_bytes());
    for v in &row.values {
        feed(&v.to_le_bytes());
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, close: i128) -> ScanRow {
        ScanRow {
            series: None,
            ts,
            values: [1, 2, 1, close, 10],
            bad: None,
        }
    }

    #[test]
    fn checksum_sees_every_value_and_no_order() {
        let a = [row(1, 2), row(2, 2), row(3, 1)];
        let sum = |rows: &[ScanRow]| rows.iter().fold(0u64, |s, r| s.wrapping_add(row_hash(r)));
        let mut b = a.clone();
        b.reverse();
        assert_eq!(sum(&a), sum(&b));
        let mut c = a.clone();
        c[1].values[3] = 1;
        assert_ne!(sum(&a), sum(&c));
        let mut d = a.clone();
        d[2].ts = 4;
        assert_ne!(sum(&a), sum(&d));
    }
}
