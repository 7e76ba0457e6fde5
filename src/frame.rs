//! Bars from Arrow record batches made by other tools: a pyarrow, Polars or pandas frame
//! handed to the Python package, or a Parquet file.
//!
//! The checks are the import's (DESIGN.md §1): symbols and timeframes parsed and normalised per
//! row, prices and volumes exact decimals (decimal, integer or decimal-text columns; binary
//! floats only when the caller asks for them to be rounded to 8 decimals), the price relations,
//! timestamps at microsecond precision, no bar given twice. The first bad row fails the whole
//! frame with its 0-based row index and column ([`Error::Row`]); nothing is returned for it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Date64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::model::{
    Bar, EpochUnit, MAX_SCALE, Symbol, Timeframe, localize, parse_decimal, parse_timestamp,
};

/// How to read a frame.
#[derive(Clone, Debug)]
pub struct FrameOptions {
    /// Symbol of every row, for frames without a `symbol` (or `ticker`) column.
    pub symbol: Option<Symbol>,
    /// Timeframe of every row, for frames without a `timeframe` column.
    pub timeframe: Option<Timeframe>,
    /// Accept binary float prices, rounded to 8 decimals (their shortest decimal spelling,
    /// so `0.1` stays `0.1`). Off by default: a float is not a decimal.
    pub floats: bool,
    /// Zone of timestamps without one (naive datetimes, text without an offset).
    pub tz: Tz,
    /// Unit of integer timestamp columns (epoch times).
    pub epoch: EpochUnit,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            symbol: None,
            timeframe: None,
            floats: false,
            tz: Tz::UTC,
            epoch: EpochUnit::Auto,
        }
    }
}

/// Column names each field of a bar is found under (compared case-insensitively).
const SYMBOL: &[&str] = &["symbol", "ticker"];
const TIMEFRAME: &[&str] = &["timeframe", "interval"];
const TS: &[&str] = &[
    "ts",
    "timestamp",
    "datetime",
    "window_start",
    "open_time",
    "date",
    "time",
];
const PRICES: [&str; 5] = ["open", "high", "low", "close", "volume"];

/// Turns record batches into validated bars, row after row across batches.
pub struct FrameReader {
    origin: String,
    options: FrameOptions,
    row: u64,
    seen: HashMap<(Symbol, Timeframe, i64), u64>,
}

/// Where each field sits in a batch.
struct Columns {
    symbol: Option<usize>,
    timeframe: Option<usize>,
    ts: usize,
    prices: [usize; 5],
}

impl FrameReader {
    /// A reader whose errors name `origin` (`frame`, or a file's path).
    pub fn new(origin: impl Into<String>, options: FrameOptions) -> FrameReader {
        FrameReader {
            origin: origin.into(),
            options,
            row: 0,
            seen: HashMap::new(),
        }
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.row
    }

    fn fail(&self, row: u64, field: &str, message: impl Into<String>) -> Error {
        Error::Row {
            origin: self.origin.clone(),
            row,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn whole(&self, message: String) -> Error {
        Error::Format {
            file: self.origin.clone().into(),
            message,
        }
    }

    fn columns(&self, batch: &RecordBatch) -> Result<Columns> {
        let schema = batch.schema();
        let find = |names: &[&str]| {
            names.iter().find_map(|n| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(n))
            })
        };
        let need = |names: &[&str]| {
            find(names).ok_or_else(|| {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                self.whole(format!(
                    "no {} column (columns: {})",
                    names[0],
                    have.join(", ")
                ))
            })
        };
        let symbol = find(SYMBOL);
        if symbol.is_none() && self.options.symbol.is_none() {
            return Err(self.whole("no symbol column; pass a symbol".into()));
        }
        let timeframe = find(TIMEFRAME);
        if timeframe.is_none() && self.options.timeframe.is_none() {
            return Err(self.whole("no timeframe column; pass a timeframe".into()));
        }
        Ok(Columns {
            symbol,
            timeframe,
            ts: need(TS)?,
            prices: [
                need(&[PRICES[0]])?,
                need(&[PRICES[1]])?,
                need(&[PRICES[2]])?,
                need(&[PRICES[3]])?,
                need(&[PRICES[4]])?,
            ],
        })
    }

    /// Appends the bars of `batch` to `out`, or fails at its first bad row.
    pub fn push(&mut self, batch: &RecordBatch, out: &mut Vec<Bar>) -> Result<()> {
        let first = self.row;
        let cols = self.columns(batch)?;
        let name = |i: usize| batch.schema().field(i).name().clone();
        let text = |i: usize| -> Result<Option<ArrayRef>> {
            Ok(Some(cast(batch.column(i), &DataType::Utf8).map_err(
                |e| self.whole(format!("column {}: {e}", name(i))),
            )?))
        };
        let symbols = match cols.symbol {
            Some(i) => text(i)?,
            None => None,
        };
        let timeframes = match cols.timeframe {
            Some(i) => text(i)?,
            None => None,
        };
        let ts = self.timestamps(batch.column(cols.ts), &name(cols.ts), first)?;
        let mut prices: [Vec<Decimal>; 5] = Default::default();
        for (k, &i) in cols.prices.iter().enumerate() {
            prices[k] = self.decimals(batch.column(i), &name(i), first)?;
        }
        out.reserve(batch.num_rows());
        for r in 0..batch.num_rows() {
            let row = first + r as u64;
            let cell = |a: &Option<ArrayRef>, i: Option<usize>| -> Result<Option<String>> {
                let Some(a) = a else { return Ok(None) };
                let a = a.as_string::<i32>();
                if a.is_null(r) {
                    return Err(self.fail(row, &name(i.unwrap_or(0)), "missing value"));
                }
                Ok(Some(a.value(r).to_string()))
            };
            let symbol = match cell(&symbols, cols.symbol)? {
                Some(s) => Symbol::parse(&s)
                    .map_err(|m| self.fail(row, &name(cols.symbol.unwrap_or(0)), m))?,
                None => self.options.symbol.clone().ok_or_else(|| {
                    self.fail(row, "symbol", "no symbol column and no symbol given")
                })?,
            };
            let timeframe = match cell(&timeframes, cols.timeframe)? {
                Some(s) => Timeframe::parse(&s)
                    .map_err(|m| self.fail(row, &name(cols.timeframe.unwrap_or(0)), m))?,
                None => self.options.timeframe.ok_or_else(|| {
                    self.fail(
                        row,
                        "timeframe",
                        "no timeframe column and no timeframe given",
                    )
                })?,
            };
            let bar = Bar {
                symbol,
                timeframe,
                ts: ts[r],
                open: prices[0][r],
                high: prices[1][r],
                low: prices[2][r],
                close: prices[3][r],
                volume: prices[4][r],
            };
            if let Err(v) = bar.check() {
                let column = PRICES.iter().position(|p| *p == v.field).unwrap_or(4);
                return Err(self.fail(row, &name(cols.prices[column]), v.message));
            }
            let key = (bar.symbol.clone(), bar.timeframe, bar.ts_micros());
            if let Some(earlier) = self.seen.get(&key) {
                return Err(self.fail(
                    row,
                    &name(cols.ts),
                    format!(
                        "duplicate bar {} {} {} (first at row {earlier})",
                        bar.symbol,
                        bar.timeframe,
                        crate::model::format_ts(&bar.ts)
                    ),
                ));
            }
            self.seen.insert(key, row);
            out.push(bar);
        }
        self.row += batch.num_rows() as u64;
        Ok(())
    }

    /// A timestamp column as UTC instants: Arrow timestamps of any unit (naive ones in the
    /// configured zone), dates (midnight), epoch integers, or text.
    fn timestamps(&self, a: &ArrayRef, field: &str, first: u64) -> Result<Vec<DateTime<Utc>>> {
        let n = a.len();
        let null = |r: usize| {
            if a.is_null(r) {
                Err(self.fail(first + r as u64, field, "missing value"))
            } else {
                Ok(())
            }
        };
        let mut out = Vec::with_capacity(n);
        let from_micros = |r: usize, micros: Option<i64>| -> Result<DateTime<Utc>> {
            micros
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| self.fail(first + r as u64, field, "timestamp out of range"))
        };
        match a.data_type() {
            DataType::Timestamp(unit, zone) => {
                let naive = zone.is_none();
                for r in 0..n {
                    null(r)?;
                    let micros = match unit {
                        TimeUnit::Second => a
                            .as_primitive::<TimestampSecondType>()
                            .value(r)
                            .checked_mul(1_000_000),
                        TimeUnit::Millisecond => a
                            .as_primitive::<TimestampMillisecondType>()
                            .value(r)
                            .checked_mul(1_000),
                        TimeUnit::Microsecond => {
                            Some(a.as_primitive::<TimestampMicrosecondType>().value(r))
                        }
                        TimeUnit::Nanosecond => {
                            let ns = a.as_primitive::<TimestampNanosecondType>().value(r);
                            if ns % 1_000 != 0 {
                                return Err(self.fail(
                                    first + r as u64,
                                    field,
                                    "has nanoseconds; the cache keeps microseconds",
                                ));
                            }
                            Some(ns / 1_000)
                        }
                    };
                    let t = from_micros(r, micros)?;
                    out.push(if naive && self.options.tz != Tz::UTC {
                        localize(t.naive_utc(), &self.options.tz)
                            .map_err(|m| self.fail(first + r as u64, field, m))?
                    } else {
                        t
                    });
                }
            }
            DataType::Date32 | DataType::Date64 => {
                for r in 0..n {
                    null(r)?;
                    let days = match a.data_type() {
                        DataType::Date32 => i64::from(
                            a.as_any()
                                .downcast_ref::<Date32Array>()
                                .map_or(0, |d| d.value(r)),
                        ),
                        _ => {
                            let ms = a
                                .as_any()
                                .downcast_ref::<Date64Array>()
                                .map_or(0, |d| d.value(r));
                            ms.div_euclid(86_400_000)
                        }
                    };
                    let t = from_micros(r, days.checked_mul(86_400_000_000))?;
                    out.push(if self.options.tz == Tz::UTC {
                        t
                    } else {
                        localize(t.naive_utc(), &self.options.tz)
                            .map_err(|m| self.fail(first + r as u64, field, m))?
                    });
                }
            }
            DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
                let n64 = cast(a, &DataType::Int64)
                    .map_err(|e| self.whole(format!("column {field}: {e}")))?;
                let n64 = n64.as_primitive::<Int64Type>();
                for r in 0..n {
                    null(r)?;
                    out.push(
                        self.options
                            .epoch
                            .instant(n64.value(r))
                            .map_err(|m| self.fail(first + r as u64, field, m))?,
                    );
                }
            }
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => {
                let s = cast(a, &DataType::Utf8)
                    .map_err(|e| self.whole(format!("column {field}: {e}")))?;
                let s: &StringArray = s.as_string();
                for r in 0..n {
                    null(r)?;
                    out.push(
                        parse_timestamp(s.value(r).trim(), &self.options.tz)
                            .map_err(|m| self.fail(first + r as u64, field, m))?,
                    );
                }
            }
            other => {
                return Err(self.whole(format!(
                    "column {field} is {other}; timestamps must be an Arrow timestamp, a date, an epoch integer or text"
                )));
            }
        }
        Ok(out)
    }

    /// A price or volume column as exact decimals.
    fn decimals(&self, a: &ArrayRef, field: &str, first: u64) -> Result<Vec<Decimal>> {
        let n = a.len();
        let mut out = Vec::with_capacity(n);
        let at = |r: usize| first + r as u64;
        let check = |r: usize, d: Decimal| -> Result<Decimal> {
            // The import's rules (8 fractional digits, 18 significant), on the exact value.
            parse_decimal(&d.to_string()).map_err(|m| self.fail(at(r), field, m))
        };
        macro_rules! each {
            ($arr:expr, |$r:ident, $v:ident| $make:expr) => {{
                let arr = $arr;
                for $r in 0..n {
                    if arr.is_null($r) {
                        return Err(self.fail(at($r), field, "missing value"));
                    }
                    let $v = arr.value($r);
                    let d: Result<Decimal> = $make;
                    out.push(check($r, d?)?);
                }
            }};
        }
        let scaled = |r: usize, v: i128, scale: i8| -> Result<Decimal> {
            if scale < 0 {
                let factor = 10i128
                    .checked_pow(u32::from(scale.unsigned_abs()))
                    .and_then(|f| v.checked_mul(f));
                return factor
                    .and_then(|v| Decimal::try_from_i128_with_scale(v, 0).ok())
                    .ok_or_else(|| self.fail(at(r), field, "out of range"));
            }
            let scale = scale as u32;
            // Drop trailing zeros beyond the cache's 8 digits before building the decimal.
            let (mut v, mut s) = (v, scale);
            while s > MAX_SCALE && v % 10 == 0 {
                v /= 10;
                s -= 1;
            }
            if s > MAX_SCALE {
                return Err(self.fail(
                    at(r),
                    field,
                    format!("has {s} fractional digits; at most {MAX_SCALE} are kept exactly"),
                ));
            }
            Decimal::try_from_i128_with_scale(v, s)
                .map_err(|_| self.fail(at(r), field, "out of range"))
        };
        let int = |r: usize, v: i128| {
            Decimal::try_from_i128_with_scale(v, 0)
                .map_err(|_| self.fail(at(r), field, "out of range"))
        };
        let float = |r: usize, v: f64| -> Result<Decimal> {
            if !v.is_finite() {
                return Err(self.fail(at(r), field, format!("{v} is not a number")));
            }
            // Rust prints the shortest spelling that reads back as the same float.
            let text = format!("{v}");
            Decimal::from_str_exact(&text)
                .map(|d| d.round_dp(MAX_SCALE))
                .map_err(|_| self.fail(at(r), field, format!("{text} is out of range")))
        };
        match a.data_type() {
            DataType::Decimal128(_, scale) => {
                let scale = *scale;
                each!(a.as_primitive::<Decimal128Type>(), |r, v| scaled(
                    r, v, scale
                ))
            }
            DataType::Decimal256(_, scale) => {
                let scale = *scale;
                each!(a.as_primitive::<Decimal256Type>(), |r, v| v
                    .to_i128()
                    .ok_or_else(|| self.fail(at(r), field, "out of range"))
                    .and_then(|v| scaled(r, v, scale)))
            }
            DataType::Int8 => each!(a.as_primitive::<Int8Type>(), |r, v| int(r, v.into())),
            DataType::Int16 => each!(a.as_primitive::<Int16Type>(), |r, v| int(r, v.into())),
            DataType::Int32 => each!(a.as_primitive::<Int32Type>(), |r, v| int(r, v.into())),
            DataType::Int64 => each!(a.as_primitive::<Int64Type>(), |r, v| int(r, v.into())),
            DataType::UInt8 => each!(a.as_primitive::<UInt8Type>(), |r, v| int(r, v.into())),
            DataType::UInt16 => each!(a.as_primitive::<UInt16Type>(), |r, v| int(r, v.into())),
            DataType::UInt32 => each!(a.as_primitive::<UInt32Type>(), |r, v| int(r, v.into())),
            DataType::UInt64 => each!(a.as_primitive::<UInt64Type>(), |r, v| int(r, v.into())),
            DataType::Float32 | DataType::Float64 if !self.options.floats => {
                return Err(self.whole(format!(
                    "column {field} holds binary floats, which are not exact decimals; pass \
                     decimals, integers or decimal text, or have them rounded to {MAX_SCALE} \
                     decimals with --round-floats (quiver import) or floats=True (Python)"
                )));
            }
            // A float32 widens exactly; its shortest spelling is then the float64's.
            DataType::Float32 => each!(a.as_primitive::<Float32Type>(), |r, v| float(
                r,
                f64::from(v)
            )),
            DataType::Float64 => each!(a.as_primitive::<Float64Type>(), |r, v| float(r, v)),
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => {
                let s = cast(a, &DataType::Utf8)
                    .map_err(|e| self.whole(format!("column {field}: {e}")))?;
                each!(s.as_string::<i32>(), |r, v| parse_decimal(v)
                    .map_err(|m| self.fail(at(r), field, m)))
            }
            other => {
                return Err(self.whole(format!(
                    "column {field} is {other}; prices and volumes must be decimals, integers or \
                     decimal text"
                )));
            }
        }
        Ok(out)
    }
}

/// Reads every batch of a frame into bars; see [`FrameReader`].
pub fn bars_from_batches(
    origin: &str,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
    options: FrameOptions,
) -> Result<Vec<Bar>> {
    let mut reader = FrameReader::new(origin, options);
    let mut out = Vec::new();
    for batch in batches {
        reader.push(&batch?, &mut out)?;
    }
    Ok(out)
}
