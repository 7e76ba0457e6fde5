//! SQL functions for bar work that DataFusion lacks or does slowly, registered in every
//! session a [`Reader`](crate::read::Reader) opens (the `quiver sql` shell included).
//!
//! - `time_bucket(interval, ts [, origin])`: the start of the fixed-width bucket holding `ts`,
//!   as in TimescaleDB. Buckets are aligned to `origin`, by default `2000-01-03T00:00:00Z` (a
//!   Monday, so weekly buckets start on Mondays); intervals of whole months (`'1 month'`,
//!   `'3 months'`, `'1 year'`) are calendar months counted from `2000-01-01`. The interval may
//!   be an `INTERVAL` or a string such as `'5 minutes'`. `date_bin` needs an explicit origin
//!   for weeks and cannot bucket by months; `time_bucket` does both.
//! - `date_trunc(unit, ts)`: DataFusion's function, with a fast path for the cache's UTC
//!   timestamps at `second`, `minute`, `hour`, `day` and `week`: plain integer arithmetic.
//!   DataFusion converts every value through the time-zone database there (and formats an
//!   error message per value it does not use), which made `date_trunc('day', ts)` 60% of a
//!   year-long daily aggregation. Every other case is DataFusion's own code.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, IntervalMonthDayNano, IntervalUnit, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers quiver's functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(TimeBucket::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc {
        inner: datafusion::functions::datetime::date_trunc(),
    }));
}

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;
/// 2000-01-03T00:00:00Z, a Monday, in microseconds: TimescaleDB's default origin.
const ORIGIN: i64 = 946_857_600_000_000;

fn is_utc(tz: Option<&str>) -> bool {
    matches!(tz, Some("UTC" | "+00:00" | "Z" | "Etc/UTC" | "+00"))
}

/// The multiplier from microseconds to a timestamp unit (1 for µs, 1000 for ns), or the
/// divisor for coarser units.
fn per_micro(unit: &TimeUnit) -> (i64, i64) {
    match unit {
        TimeUnit::Second => (1, 1_000_000),
        TimeUnit::Millisecond => (1, 1_000),
        TimeUnit::Microsecond => (1, 1),
        TimeUnit::Nanosecond => (1_000, 1),
    }
}

/// Applies `f` (on microseconds) to every value of a timestamp array of any unit, keeping
/// its type and time zone.
fn map_micros(array: &ArrayRef, f: &dyn Fn(i64) -> Option<i64>) -> DfResult<ArrayRef> {
    fn go<T: ArrowTimestampType>(
        array: &ArrayRef,
        mul: i64,
        div: i64,
        f: &dyn Fn(i64) -> Option<i64>,
    ) -> DfResult<ArrayRef> {
        let input = array.as_primitive::<T>();
        let tz = match array.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let out: PrimitiveArray<T> = input.try_unary(|v| {
            let micros = if mul > 1 {
                v.div_euclid(mul)
            } else {
                v.saturating_mul(div)
            };
            f(micros)
                .and_then(|m| {
                    if mul > 1 {
                        m.checked_mul(mul)
                    } else {
                        Some(m / div)
                    }
                })
                .ok_or_else(|| {
                    datafusion::arrow::error::ArrowError::ComputeError(format!(
                        "timestamp {v} is out of range"
                    ))
                })
        })?;
        Ok(Arc::new(out.with_timezone_opt(tz)))
    }
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return exec_err!("expected a timestamp, got {}", array.data_type());
    };
    let (mul, div) = per_micro(unit);
    match unit {
        TimeUnit::Second => go::<TimestampSecondType>(array, mul, div, f),
        TimeUnit::Millisecond => go::<TimestampMillisecondType>(array, mul, div, f),
        TimeUnit::Microsecond => go::<TimestampMicrosecondType>(array, mul, div, f),
        TimeUnit::Nanosecond => go::<TimestampNanosecondType>(array, mul, div, f),
    }
}

/// Runs an array function on a scalar by way of a one-row array.
fn on_columnar(
    value: &ColumnarValue,
    f: &dyn Fn(&ArrayRef) -> DfResult<ArrayRef>,
) -> DfResult<ColumnarValue> {
    match value {
        ColumnarValue::Array(a) => Ok(ColumnarValue::Array(f(a)?)),
        ColumnarValue::Scalar(s) => {
            let out = f(&s.to_array_of_size(1)?)?;
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
    }
}

fn floor_to(v: i64, width: i64, origin: i64) -> Option<i64> {
    let offset = v.checked_sub(origin)?;
    origin.checked_add(offset.div_euclid(width).checked_mul(width)?)
}

/// `date_trunc` with integer arithmetic for UTC timestamps (see the module documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    /// The truncation as a width and origin in microseconds, when the fast path applies.
    fn fast(args: &ScalarFunctionArgs) -> Option<(i64, i64)> {
        let unit = match &args.args[0] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(u))
                | ScalarValue::Utf8View(Some(u))
                | ScalarValue::LargeUtf8(Some(u)),
            ) => u.to_ascii_lowercase(),
            _ => return None,
        };
        let DataType::Timestamp(_, tz) = args.args[1].data_type() else {
            return None;
        };
        if !is_utc(tz.as_deref()) {
            return None;
        }
        match unit.as_str() {
            "second" => Some((1_000_000, 0)),
            "minute" => Some((60_000_000, 0)),
            "hour" => Some((3_600_000_000, 0)),
            "day" => Some((DAY, 0)),
            // Weeks start on Monday; the epoch was a Thursday.
            "week" => Some((7 * DAY, -3 * DAY)),
            _ => None,
        }
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match UtcDateTrunc::fast(&args) {
            Some((width, origin)) => on_columnar(&args.args[1], &|a| {
                map_micros(a, &|v| floor_to(v, width, origin))
            }),
            None => self.inner.invoke_with_args(args),
        }
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// How wide a bucket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// Whole calendar months.
    Months(i32),
    /// A fixed number of microseconds.
    Micros(i64),
}

fn width_of(interval: &ScalarValue) -> DfResult<Width> {
    let (months, days, nanos) = match interval {
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        })) => (*months, *days, *nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => (0, v.days, i64::from(v.milliseconds) * 1_000_000),
        ScalarValue::IntervalYearMonth(Some(m)) => (*m, 0, 0),
        other => return exec_err!("time_bucket: the interval must be a constant, got {other}"),
    };
    match (months, days, nanos) {
        (m, 0, 0) if m > 0 => Ok(Width::Months(m)),
        (0, d, n) => {
            let micros = i64::from(d) * DAY + n / 1_000;
            if micros <= 0 || n % 1_000 != 0 {
                return exec_err!(
                    "time_bucket: the interval must be positive and whole microseconds"
                );
            }
            Ok(Width::Micros(micros))
        }
        _ => exec_err!(
            "time_bucket: an interval mixes months with days or time; use one or the other"
        ),
    }
}

/// The first instant of the month bucket of `months` calendar months holding `v`, counted
/// from January 2000.
fn month_bucket(v: i64, months: i32) -> Option<i64> {
    let date = chrono::DateTime::from_timestamp_micros(v)?.date_naive();
    let index = (date.year() - 2000) * 12 + date.month0() as i32;
    let start = index.div_euclid(months) * months;
    let (year, month0) = (2000 + start.div_euclid(12), start.rem_euclid(12) as u32);
    let first = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
    Some(first.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// `time_bucket(interval, ts [, origin])` (see the module documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> TimeBucket {
        TimeBucket {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!("time_bucket takes (interval, timestamp [, origin])");
        }
        let interval = match &arg_types[0] {
            DataType::Interval(_) => arg_types[0].clone(),
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                DataType::Interval(IntervalUnit::MonthDayNano)
            }
            other => return plan_err!("time_bucket: the width must be an interval, not {other}"),
        };
        let ts = match &arg_types[1] {
            t @ DataType::Timestamp(_, _) => t.clone(),
            DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Utf8View => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            other => {
                return plan_err!(
                    "time_bucket: the second argument must be a timestamp, not {other}"
                );
            }
        };
        let mut out = vec![interval, ts.clone()];
        if arg_types.len() == 3 {
            out.push(ts);
        }
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types[1].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let ColumnarValue::Scalar(interval) = &args.args[0] else {
            return exec_err!("time_bucket: the interval must be a constant");
        };
        let width = width_of(interval)?;
        let origin = match args.args.get(2) {
            None => ORIGIN,
            Some(ColumnarValue::Scalar(s)) => {
                let ts = s.to_array_of_size(1)?;
                let DataType::Timestamp(unit, _) = ts.data_type() else {
                    return exec_err!("time_bucket: the origin must be a timestamp");
                };
                let (mul, div) = per_micro(unit);
                let raw = match ScalarValue::try_from_array(&ts, 0)? {
                    ScalarValue::TimestampSecond(Some(v), _)
                    | ScalarValue::TimestampMillisecond(Some(v), _)
                    | ScalarValue::TimestampMicrosecond(Some(v), _)
                    | ScalarValue::TimestampNanosecond(Some(v), _) => v,
                    _ => return exec_err!("time_bucket: the origin must not be null"),
                };
                if mul > 1 {
                    raw.div_euclid(mul)
                } else {
                    raw.saturating_mul(div)
                }
            }
            Some(ColumnarValue::Array(_)) => {
                return exec_err!("time_bucket: the origin must be a constant");
            }
        };
        on_columnar(&args.args[1], &|a| match width {
            Width::Micros(w) => map_micros(a, &|v| floor_to(v, w, origin)),
            Width::Months(m) => map_micros(a, &|v| month_bucket(v, m)),
        })
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        // Monotonic in the timestamp for a constant width.
        if inputs[0].sort_properties == SortProperties::Singleton {
            Ok(inputs[1].sort_properties)
        } else {
            Ok(SortProperties::Unordered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::util::display::array_value_to_string;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let col = batches[0].column(0);
        if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
            return s.value(0).to_string();
        }
        array_value_to_string(col, 0).unwrap()
    }

    fn utc(s: &str) -> String {
        format!("arrow_cast(TIMESTAMP '{s}', 'Timestamp(µs, \"UTC\")')")
    }

    #[tokio::test]
    async fn date_trunc_fast_path_matches_datafusion() {
        // Every unit on a few instants, compared with DataFusion's result on the same value
        // without a time zone (where its arithmetic is not the slow path).
        for t in [
            "2024-06-05T14:37:21.123456",
            "1999-12-31T23:59:59",
            "2024-01-01T00:00:00",
            "1969-12-31T23:00:00",
        ] {
            for unit in ["second", "minute", "hour", "day", "week", "month", "year"] {
                let fast = one(&format!(
                    "SELECT arrow_cast(date_trunc('{unit}', {}), 'Timestamp(µs)')",
                    utc(t)
                ))
                .await;
                let reference = one(&format!(
                    "SELECT date_trunc('{unit}', arrow_cast(TIMESTAMP '{t}', 'Timestamp(µs)'))"
                ))
                .await;
                assert_eq!(fast, reference, "{unit} of {t}");
            }
        }
    }

    #[tokio::test]
    async fn time_bucket_aligns_like_timescaledb() {
        let cases = [
            ("'5 minutes'", "2024-06-03T14:37:21", "2024-06-03T14:35:00Z"),
            (
                "INTERVAL '1 hour'",
                "2024-06-03T14:37:21",
                "2024-06-03T14:00:00Z",
            ),
            ("'1 day'", "2024-06-03T14:37:21", "2024-06-03T00:00:00Z"),
            ("'1 week'", "2024-06-05T10:00:00", "2024-06-03T00:00:00Z"),
            ("'1 month'", "2024-06-05T10:00:00", "2024-06-01T00:00:00Z"),
            ("'3 months'", "2024-08-05T10:00:00", "2024-07-01T00:00:00Z"),
            ("'1 year'", "1999-08-05T10:00:00", "1999-01-01T00:00:00Z"),
            (
                "'15 minutes'",
                "1969-12-31T23:59:00",
                "1969-12-31T23:45:00Z",
            ),
        ];
        for (width, t, expected) in cases {
            let got = one(&format!("SELECT time_bucket({width}, {})", utc(t))).await;
            assert_eq!(got, expected, "time_bucket({width}, {t})");
        }
        let with_origin = one(&format!(
            "SELECT time_bucket('1 hour', {}, {})",
            utc("2024-06-03T14:37:21"),
            utc("2024-06-03T14:30:00")
        ))
        .await;
        assert_eq!(with_origin, "2024-06-03T14:30:00Z");
        let ctx = SessionContext::new();
        register(&ctx);
        let err = ctx
            .sql("SELECT time_bucket(INTERVAL '1 month 2 days', now())")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("mixes months"), "{err}");
    }
}
