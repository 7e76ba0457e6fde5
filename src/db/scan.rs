//! What a scan of `market_data` reads and yields: the rows it selects ([`Scan`], [`Window`]),
//! each row in the cache's representation ([`ScanRow`]), and the series tracking that
//! allocates per series instead of per row.

use super::*;

/// Which rows [`Store::scan`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The whole table, ordered by `(symbol, timeframe, ts)`.
    All,
    /// One series, ordered by `ts`, optionally limited to `start <= ts < end` (microseconds).
    Series {
        /// Instrument.
        symbol: String,
        /// Bar length.
        timeframe: String,
        /// First microsecond included.
        start: Option<i64>,
        /// First microsecond excluded.
        end: Option<i64>,
    },
    /// The rows a [`BarFilter`] selects, ordered by `(symbol, timeframe, ts)` (the shell's
    /// `live.market_data`).
    Filter(BarFilter),
    /// The rows in each window, window after window, each window's in `ts` order: what a sync
    /// pass re-reads (whole partitions, or the bars after a partition's last published one).
    Windows(Vec<Window>),
}

/// Rows of one series from `from` (inclusive) until `until` (exclusive), in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Instrument.
    pub symbol: String,
    /// Bar length.
    pub timeframe: String,
    /// First microsecond included.
    pub from: i64,
    /// First microsecond excluded.
    pub until: i64,
}

/// The columns a read of bars selects, in [`ScanRow`] order.
pub(super) const SELECT_BARS: &str =
    "SELECT symbol, timeframe, ts, open, high, low, close, volume FROM market_data";

/// Key order of every filtered read.
pub(super) const ORDER_BARS: &str = " ORDER BY symbol, timeframe, ts";

/// One row of a [`Store::scan`], in the cache's representation: prices and volume as integer
/// counts of 10^-8 (exact), `ts` in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRow {
    /// `(symbol, timeframe)` when it differs from the previous row's (always on the first row);
    /// `None` while the series continues, so a scan allocates per series, not per row.
    pub series: Option<(String, String)>,
    /// Open time, microseconds since the epoch.
    pub ts: i64,
    /// `open, high, low, close, volume` in 10^-8 units.
    pub values: [i128; 5],
    /// Why the row cannot be held exactly (`market_data SYM 1m ts=…: open: reason`), when it
    /// cannot: a value with a ninth decimal, text that is no number, a value out of range.
    /// Its `values` are then zero where the field is bad; the scan goes on.
    pub bad: Option<Box<str>>,
}

/// A stream of [`ScanRow`]s.
pub type ScanStream<'a> = futures_util::stream::BoxStream<'a, Result<ScanRow>>;

/// Names of the value columns, in [`ScanRow::values`] order.
pub const VALUE_COLUMNS: [&str; 5] = ["open", "high", "low", "close", "volume"];

/// Tracks the series of consecutive scanned rows, reporting each change once.
#[derive(Default)]
pub(super) struct SeriesTracker {
    pub(super) symbol: String,
    pub(super) timeframe: String,
    pub(super) started: bool,
}

impl SeriesTracker {
    pub(super) fn next(&mut self, symbol: &str, timeframe: &str) -> Option<(String, String)> {
        if self.started && self.symbol == symbol && self.timeframe == timeframe {
            return None;
        }
        self.started = true;
        symbol.clone_into(&mut self.symbol);
        timeframe.clone_into(&mut self.timeframe);
        Some((self.symbol.clone(), self.timeframe.clone()))
    }

    /// The row's five values, each decoded by `decode(i)` (column `3 + i`); a value that does
    /// not decode leaves a zero and flags the row with the first such field and reason.
    pub(super) fn row(
        &self,
        series: Option<(String, String)>,
        ts: i64,
        mut decode: impl FnMut(usize) -> std::result::Result<i128, String>,
    ) -> ScanRow {
        let mut values = [0i128; 5];
        let mut bad = None;
        for (i, v) in values.iter_mut().enumerate() {
            match decode(i) {
                Ok(x) => *v = x,
                Err(m) => {
                    bad.get_or_insert_with(|| self.bad_value(ts, VALUE_COLUMNS[i], m));
                }
            }
        }
        ScanRow {
            series,
            ts,
            values,
            bad,
        }
    }

    pub(super) fn bad_value(
        &self,
        ts: i64,
        column: &str,
        message: impl std::fmt::Display,
    ) -> Box<str> {
        let at = chrono::DateTime::from_timestamp_micros(ts)
            .map_or_else(|| ts.to_string(), |t| crate::model::format_ts(&t));
        format!(
            "market_data {} {} ts={at}: {column}: {message}",
            self.symbol, self.timeframe
        )
        .into()
    }
}
