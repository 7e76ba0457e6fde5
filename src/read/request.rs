//! What a range read asks for ([`BarsRequest`]) and what it returns ([`Bars`]), with the
//! decoding of the cache's batches into typed bars.

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

use super::TS;
use crate::cache::AsOf;
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, Timeframe, decimal_from_fixed8, format_ts, ts_from_micros};

/// A range read: bars of one series from `start` to `end` (inclusive), after `warmup` bars
/// immediately before the first bar of the range.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BarsRequest {
    /// Instrument.
    pub symbol: Symbol,
    /// Bar length.
    pub timeframe: Timeframe,
    /// First instant of the range (inclusive); the series' first bar when `None`.
    pub start: Option<DateTime<Utc>>,
    /// Last instant of the range (inclusive); the series' last bar when `None`.
    pub end: Option<DateTime<Utc>>,
    /// Bars wanted before the range (fewer only where history is shorter). Needs a `start`.
    pub warmup: usize,
    /// At most this many bars of the range.
    pub limit: Option<usize>,
    /// The version read: the newest, or an older one (time travel).
    pub as_of: AsOf,
}

impl BarsRequest {
    /// The whole series, no warmup.
    pub fn new(symbol: Symbol, timeframe: Timeframe) -> BarsRequest {
        BarsRequest {
            symbol,
            timeframe,
            start: None,
            end: None,
            warmup: 0,
            limit: None,
            as_of: AsOf::Latest,
        }
    }

    /// The range starts at `start` (inclusive).
    pub fn with_start(mut self, start: DateTime<Utc>) -> BarsRequest {
        self.start = Some(start);
        self
    }

    /// The range ends at `end` (inclusive).
    pub fn with_end(mut self, end: DateTime<Utc>) -> BarsRequest {
        self.end = Some(end);
        self
    }

    /// `n` bars before the range.
    pub fn with_warmup(mut self, n: usize) -> BarsRequest {
        self.warmup = n;
        self
    }

    /// At most `n` bars of the range.
    pub fn with_limit(mut self, n: usize) -> BarsRequest {
        self.limit = Some(n);
        self
    }

    /// Reads the version `as_of` names instead of the newest (time travel).
    pub fn with_as_of(mut self, as_of: AsOf) -> BarsRequest {
        self.as_of = as_of;
        self
    }

    pub(super) fn check(&self) -> Result<()> {
        if let (Some(start), Some(end)) = (self.start, self.end)
            && start > end
        {
            return Err(Error::InvalidRange {
                start: format_ts(&start),
                end: format_ts(&end),
            });
        }
        Ok(())
    }
}

/// Bars read from the cache: the warmup bars first, then the range, in `ts` order, as record
/// batches of the cache's eight columns.
#[derive(Clone, Debug, Default)]
pub struct Bars {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// How many of the first rows are warmup bars.
    pub warmup: usize,
}

impl Bars {
    /// Number of rows, warmup included.
    pub fn len(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// True when no bar was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as typed bars (exact decimals), for event loops.
    pub fn to_bars(&self) -> Result<Vec<Bar>> {
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.batches {
            decode_bars(batch, &mut out)?;
        }
        Ok(out)
    }
}

/// Appends the rows of a batch of the cache's schema to `out` as typed bars.
pub fn decode_bars(batch: &RecordBatch, out: &mut Vec<Bar>) -> Result<()> {
    let bad = || Error::corrupt("a cache file without the cache's eight columns");
    if batch.num_columns() != 8 {
        return Err(bad());
    }
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(bad)
    };
    let (symbols, timeframes) = (text(0)?, text(1)?);
    let ts = batch
        .column(TS)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(bad)?;
    let dec = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .ok_or_else(bad)
    };
    let values = [dec(3)?, dec(4)?, dec(5)?, dec(6)?, dec(7)?];
    // Series change rarely within a batch: parse each name once.
    let mut series: Option<(Symbol, Timeframe)> = None;
    out.reserve(batch.num_rows());
    for r in 0..batch.num_rows() {
        let (s, t) = (symbols.value(r), timeframes.value(r));
        let (symbol, timeframe) = match &series {
            Some((symbol, timeframe)) if symbol.as_str() == s && timeframe.to_string() == t => {
                (symbol.clone(), *timeframe)
            }
            _ => {
                let parsed = (
                    Symbol::parse(s)
                        .map_err(|m| Error::corrupt(format!("a cache file's symbol: {m}")))?,
                    Timeframe::parse(t)
                        .map_err(|m| Error::corrupt(format!("a cache file's timeframe: {m}")))?,
                );
                series = Some(parsed.clone());
                parsed
            }
        };
        let v = |i: usize| decimal_from_fixed8(values[i].value(r));
        out.push(Bar {
            symbol,
            timeframe,
            ts: ts_from_micros(ts.value(r))?,
            open: v(0),
            high: v(1),
            low: v(2),
            close: v(3),
            volume: v(4),
        });
    }
    Ok(())
}
