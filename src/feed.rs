//! The change feed: what the database's triggers record and how far a mirror has consumed it.
//!
//! The store ([`crate::db`]) reads the feed; the cache records the [`FeedPosition`] in the same
//! commit as the files it wrote, so position and data always advance together. Both depend on
//! this module, and it depends on neither.

use std::collections::BTreeSet;

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
    /// The `(symbol, timeframe, day)`s touched since the previous position, without repeats.
    pub days: BTreeSet<ChangedDay>,
    /// The position after these changes.
    pub next: FeedPosition,
}

impl ChangeBatch {
    /// True when the table was truncated: everything must be re-read.
    pub fn everything(&self) -> bool {
        self.days.iter().any(|d| d.symbol.is_none())
    }
}

/// Whole UTC days since the epoch of a timestamp, as the change log records them.
pub fn day_of(ts: &chrono::DateTime<chrono::Utc>) -> i64 {
    ts.timestamp_micros().div_euclid(86_400_000_000)
}
