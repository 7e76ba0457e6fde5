//! Where bars go in the cache: partitions of `(timeframe, symbol, period)`, the period sized by
//! bar length, and the names of their folders and files in the Delta table and the plain view.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{TimeUnit, Timeframe};

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
        let (y, m, d) = (date.year(), date.month(), date.day());
        match self {
            Period::Day => format!("{y:04}-{m:02}-{d:02}"),
            Period::Month => format!("{y:04}-{m:02}"),
            Period::Year => format!("{y:04}"),
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
            Error::corrupt(format!(
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
        let tf = Timeframe::parse(&self.timeframe)
            .map_err(|m| Error::corrupt(format!("partition {}: {m}", self.dir())))?;
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

    /// The series this partition belongs to.
    pub fn series(&self) -> SeriesKey {
        SeriesKey {
            timeframe: self.timeframe.clone(),
            symbol: self.symbol.clone(),
        }
    }

    /// A new, unique data file of this partition in the Delta table:
    /// `timeframe=1m/symbol=NVDA/2024-06_<uuid>.parquet`. The folders are exactly the table's
    /// partition columns (Polars rejects a Hive folder that is not one); the period leads the
    /// file name so a listing reads in time order.
    pub fn new_file(&self) -> String {
        format!(
            "{}/{}_{}.parquet",
            self.series().dir(),
            self.period,
            uuid::Uuid::new_v4().simple()
        )
    }
}

/// One series: a symbol's bars of one timeframe, a Delta partition of the table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Bar length.
    pub timeframe: String,
    /// Instrument.
    pub symbol: String,
}

impl SeriesKey {
    /// The series' folder in the Delta table, Hive style with the partition columns' names:
    /// `timeframe=1m/symbol=BTC%2FUSDT`.
    pub fn dir(&self) -> String {
        format!(
            "timeframe={}/symbol={}",
            self.timeframe,
            encode(&self.symbol)
        )
    }
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.symbol, self.timeframe, self.period)
    }
}

/// Percent-encodes a symbol for a folder name: every byte but `A-Z a-z 0-9 . _ -`.
pub fn encode(symbol: &str) -> String {
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
        assert_eq!(key.series().dir(), "timeframe=5m/symbol=%5ESTOXX50E");
        let file = key.new_file();
        assert!(
            file.starts_with("timeframe=5m/symbol=%5ESTOXX50E/2024-06_"),
            "{file}"
        );
        assert_ne!(file, key.new_file(), "file names are unique");
        assert_eq!(encode("BTC/USDT:X=Y"), "BTC%2FUSDT%3AX%3DY");
    }
}
