//! The change feed: what the database's triggers record and how far a mirror has consumed it.
//!
//! The store ([`crate::db`]) reads the feed; the cache records the [`FeedPosition`] in the same
//! commit as the files it wrote, so position and data always advance together. Both depend on
//! this module, and it depends on neither.

use std::collections::BTreeMap;

/// A `(symbol, timeframe, UTC day)` that the change log says was touched; `None` for the symbol
/// means the whole table (PostgreSQL `TRUNCATE`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangedDay {
    /// Instrument, or `None` for "everything".
    pub symbol: Option<String>,
    /// Bar length.
    pub timeframe: Option<String>,
    /// Whole UTC days since the Unix epoch.
    pub day: Option<i64>,
}

/// What happened to a day: whether an update or a delete touched it (`rewrite`), and the
/// earliest bar an insert wrote there. A pass publishes bars inserted after a partition's last
/// published bar as a small new file (an append) and rewrites the partition otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayChange {
    /// An update or a delete (or a change of unknown kind) touched the day.
    pub rewrite: bool,
    /// The earliest `ts` (microseconds) an insert wrote in the day, if any.
    pub min_ts: Option<i64>,
}

impl DayChange {
    /// A change that needs the day's partition rewritten.
    pub const REWRITE: DayChange = DayChange {
        rewrite: true,
        min_ts: None,
    };

    /// Inserts only, the earliest at `ts`.
    pub fn insert(ts: i64) -> DayChange {
        DayChange {
            rewrite: false,
            min_ts: Some(ts),
        }
    }

    /// Both changes happened.
    pub fn merge(&mut self, other: DayChange) {
        self.rewrite |= other.rewrite;
        self.min_ts = match (self.min_ts, other.min_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// True when the day only had inserts, all of bars after `after`: what a partition whose
    /// last published bar is at `after` can take as an append. In doubt, false.
    pub fn appends_after(&self, after: i64) -> bool {
        !self.rewrite && self.min_ts.is_some_and(|t| t > after)
    }
}

/// How far a consumer has read the change log. It is stored with the published cache, so the
/// cache and its source position always advance together.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum FeedPosition {
    /// Nothing consumed yet: the next batch reports every day ever logged.
    #[default]
    Start,
    /// SQLite: every change stamped with an epoch at or below `epoch` is consumed.
    Sqlite {
        /// Last closed epoch consumed.
        epoch: i64,
    },
    /// PostgreSQL: every transaction below `xmin` is consumed, and so are the transactions in
    /// `done` (which committed above that horizon before the last read).
    Postgres {
        /// All transaction ids below this one had finished when the log was last read.
        xmin: i64,
        /// Finished transactions at or above `xmin` whose changes were already consumed.
        done: Vec<i64>,
    },
}

/// Changes read from the log, and the position to record once they are applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The `(symbol, timeframe, day)`s touched since the previous position, each with what
    /// happened to it.
    pub days: BTreeMap<ChangedDay, DayChange>,
    /// The position after these changes.
    pub next: FeedPosition,
}

impl ChangeBatch {
    /// True when the table was truncated: everything must be re-read.
    pub fn everything(&self) -> bool {
        self.days.keys().any(|d| d.symbol.is_none())
    }

    /// Records a change of `day`, merged with what the batch already holds for it.
    pub fn record(&mut self, day: ChangedDay, change: DayChange) {
        self.days
            .entry(day)
            .and_modify(|c| c.merge(change))
            .or_insert(change);
    }
}

/// Whole UTC days since the epoch of a timestamp, as the change log records them.
pub fn day_of(ts: &chrono::DateTime<chrono::Utc>) -> i64 {
    ts.timestamp_micros().div_euclid(86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inserts_after_the_last_bar_are_appends() {
        let mut c = DayChange::insert(100);
        assert!(c.appends_after(99));
        assert!(
            !c.appends_after(100),
            "a bar at the last published one is a replace"
        );
        c.merge(DayChange::insert(50));
        assert_eq!(c.min_ts, Some(50));
        assert!(!c.appends_after(99), "a late bar");
        c.merge(DayChange::REWRITE);
        assert!(c.rewrite && !c.appends_after(0));
        assert!(
            !DayChange {
                rewrite: false,
                min_ts: None
            }
            .appends_after(0),
            "unknown: rewrite"
        );
    }
}
