//! One data file of the table as its `add` describes it, and the fast parse of quiver's own
//! statistics.

use super::*;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// One live data file: which partition, where, how many rows, their `ts` range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// The partition (series and period) it holds rows of.
    pub key: PartitionKey,
    /// Path relative to the table root (a file path; the log holds it as a URI).
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// First `ts` (microseconds).
    pub min_ts: i64,
    /// Last `ts` (microseconds).
    pub max_ts: i64,
    /// When it was written (ms since the epoch).
    pub modified_ms: i64,
}

impl DataFile {
    /// The file's name, without its folders (the plain view links it under this name).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub(super) fn partition_values(&self) -> PartitionValues {
        [
            ("timeframe".to_string(), Some(self.key.timeframe.clone())),
            ("symbol".to_string(), Some(self.key.symbol.clone())),
        ]
        .into()
    }

    /// The `stats` JSON of its `add`: the row count and the exact `ts` range, in microseconds.
    pub(super) fn stats(&self) -> String {
        let ts = |m: i64| {
            DateTime::<Utc>::from_timestamp_micros(m)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        format!(
            "{{\"numRecords\":{},\"minValues\":{{\"ts\":\"{}\"}},\"maxValues\":{{\"ts\":\"{}\"}},\
             \"nullCount\":{{\"ts\":0}}}}",
            self.rows,
            ts(self.min_ts),
            ts(self.max_ts)
        )
    }

    pub(super) fn add_action(&self, data_change: bool) -> Add {
        Add {
            path: delta::path_to_uri(&self.path),
            partition_values: self.partition_values(),
            size: self.bytes as i64,
            modification_time: self.modified_ms,
            data_change,
            stats: Some(self.stats()),
            tags: None,
            deletion_vector: None,
        }
    }

    pub(super) fn remove_action(&self, at_ms: i64, data_change: bool) -> Remove {
        Remove {
            path: delta::path_to_uri(&self.path),
            deletion_timestamp: Some(at_ms),
            data_change,
            extended_file_metadata: Some(true),
            partition_values: Some(self.partition_values()),
            size: Some(self.bytes as i64),
        }
    }

    /// A file of the table from what its `add` says (`at` names the log entry in errors).
    pub(super) fn from_add(
        uri: &str,
        value: &dyn Fn(&str) -> Option<String>,
        size: i64,
        modified_ms: i64,
        stats: Option<&str>,
        parsed: Option<checkpoint::FileStats>,
        at: &str,
    ) -> Result<DataFile> {
        let bad = |message: String| Error::DeltaLog {
            path: at.to_string(),
            message: format!("add {uri}: {message}"),
        };
        let timeframe =
            value("timeframe").ok_or_else(|| bad("no timeframe partition value".into()))?;
        let symbol = value("symbol").ok_or_else(|| bad("no symbol partition value".into()))?;
        // Typed statistics (a quiver checkpoint), else quiver's own JSON, else any JSON.
        let quick = match parsed {
            Some(p) => Some((p.num_records.max(0) as u64, p.min, p.max)),
            None => stats.and_then(quick_stats),
        };
        let (rows, min_ts, max_ts) = match quick {
            Some(q) => q,
            None => {
                let stats = stats.ok_or_else(|| {
                    bad("no statistics (quiver needs numRecords and the ts range)".into())
                })?;
                let stats: Stats<'_> = serde_json::from_str(stats)
                    .map_err(|e| bad(format!("unreadable statistics: {e}")))?;
                let ts = |v: Option<TsStat<'_>>, which: &str| -> Result<i64> {
                    let text = v
                        .and_then(|v| v.ts)
                        .ok_or_else(|| bad(format!("no {which} ts in its statistics")))?;
                    DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.timestamp_micros())
                        .map_err(|e| bad(format!("{which} ts {text:?}: {e}")))
                };
                (
                    stats.num_records,
                    ts(stats.min_values, "min")?,
                    ts(stats.max_values, "max")?,
                )
            }
        };
        let tf = Timeframe::parse(&timeframe).map_err(bad)?;
        Ok(DataFile {
            key: PartitionKey {
                period: Period::for_timeframe(tf).label(min_ts),
                timeframe,
                symbol,
            },
            path: delta::uri_to_path(uri),
            rows,
            bytes: size.max(0) as u64,
            min_ts,
            max_ts,
            modified_ms,
        })
    }
}

/// The statistics quiver writes (`{"numRecords":N,"minValues":{"ts":"…"},"maxValues":{"ts":"…"},…}`
/// with timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`), read without a JSON parser: opening a
/// table of 100k files parses 100k of them. Anything else goes to the general parser.
pub(super) fn quick_stats(s: &str) -> Option<(u64, i64, i64)> {
    let rest = s.strip_prefix("{\"numRecords\":")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let rows = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(",\"minValues\":{\"ts\":\"")?;
    let (min, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix("},\"maxValues\":{\"ts\":\"")?;
    let (max, _) = rest.split_once('"')?;
    Some((rows, quick_micros(min)?, quick_micros(max)?))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as microseconds since the epoch.
pub(super) fn quick_micros(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

#[derive(Deserialize)]
pub(super) struct TsStat<'a> {
    #[serde(borrow, default)]
    pub(super) ts: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Stats<'a> {
    #[serde(rename = "numRecords")]
    pub(super) num_records: u64,
    #[serde(borrow, rename = "minValues", default)]
    pub(super) min_values: Option<TsStat<'a>>,
    #[serde(borrow, rename = "maxValues", default)]
    pub(super) max_values: Option<TsStat<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiver_statistics_parse_without_json_and_agree_with_the_general_parser() {
        let file = DataFile {
            key: PartitionKey {
                timeframe: "1m".into(),
                symbol: "A".into(),
                period: "2024-06".into(),
            },
            path: "p".into(),
            rows: 8190,
            bytes: 1,
            min_ts: 1_717_425_000_000_007,
            max_ts: -62_135_596_800_000_000, // 0001-01-01
            modified_ms: 0,
        };
        let stats = file.stats();
        assert_eq!(
            quick_stats(&stats),
            Some((8190, 1_717_425_000_000_007, -62_135_596_800_000_000))
        );
        for t in [
            "2024-02-29T23:59:59.999999Z",
            "1969-12-31T23:59:59.000001Z",
            "2000-03-01T00:00:00.000000Z",
        ] {
            let general = DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros();
            assert_eq!(quick_micros(t), Some(general), "{t}");
        }
        assert_eq!(quick_micros("2024-13-01T00:00:00.000000Z"), None);
    }
}
