//! The data model of DESIGN.md §1: symbols, timeframes, bars, exact decimals and timestamps.
//!
//! Everything a user can type or a file can contain is validated here, once, so that the write
//! path and the database constraints only ever see well-formed values.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;

use crate::error::{Error, Result};

/// Largest number of fractional digits a price or volume may carry.
pub const MAX_SCALE: u32 = 8;
/// Largest number of significant digits a price or volume may carry.
pub const MAX_SIGNIFICANT_DIGITS: usize = 18;

/// An instrument name: trimmed, upper-cased, 1–32 chars of `A-Z 0-9 . _ - / : ^ =`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// Normalises (trim, upper-case) and validates a symbol.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().to_ascii_uppercase();
        if s.is_empty() {
            return Err("empty symbol".into());
        }
        if s.len() > 32 {
            return Err(format!("symbol {s:?} is longer than 32 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || "._-/:^=".contains(*c)))
        {
            return Err(format!(
                "symbol {s:?} contains {c:?}; allowed are A-Z 0-9 . _ - / : ^ ="
            ));
        }
        Ok(Symbol(s.into()))
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Symbol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Symbol::parse(s).map_err(Error::InvalidArgument)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// The unit of a [`Timeframe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeUnit {
    /// Seconds (`s`).
    Second,
    /// Minutes (`m`).
    Minute,
    /// Hours (`h`).
    Hour,
    /// Days (`d`).
    Day,
    /// Weeks (`w`).
    Week,
    /// Months (`mo`).
    Month,
}

impl TimeUnit {
    fn suffix(self) -> &'static str {
        match self {
            TimeUnit::Second => "s",
            TimeUnit::Minute => "m",
            TimeUnit::Hour => "h",
            TimeUnit::Day => "d",
            TimeUnit::Week => "w",
            TimeUnit::Month => "mo",
        }
    }
}

/// A bar length such as `1m`, `5m`, `1h`, `1d`, `1w`, `1mo`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeframe {
    /// How many units one bar spans (at least 1).
    pub count: u32,
    /// The unit.
    pub unit: TimeUnit,
}

impl Timeframe {
    /// Parses `<n><unit>`; `n` is a positive integer without leading zeros.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, suffix) = s.split_at(split);
        let unit = match suffix {
            "s" => TimeUnit::Second,
            "m" => TimeUnit::Minute,
            "h" => TimeUnit::Hour,
            "d" => TimeUnit::Day,
            "w" => TimeUnit::Week,
            "mo" => TimeUnit::Month,
            _ => {
                return Err(format!(
                    "timeframe {s:?} must be <n><unit> with unit one of s m h d w mo (e.g. 1m, 1d)"
                ));
            }
        };
        let count = match digits.parse::<u32>() {
            Ok(n) if n > 0 && !digits.starts_with('0') => n,
            _ => {
                return Err(format!(
                    "timeframe {s:?} must start with a positive whole number (e.g. 5m)"
                ));
            }
        };
        Ok(Timeframe { count, unit })
    }

    /// The bar length in microseconds, for units of fixed length (not months).
    pub fn fixed_micros(self) -> Option<i64> {
        let unit: i64 = match self.unit {
            TimeUnit::Second => 1_000_000,
            TimeUnit::Minute => 60_000_000,
            TimeUnit::Hour => 3_600_000_000,
            TimeUnit::Day => 86_400_000_000,
            TimeUnit::Week => 7 * 86_400_000_000,
            TimeUnit::Month => return None,
        };
        Some(unit * i64::from(self.count))
    }
}

impl FromStr for Timeframe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Timeframe::parse(s).map_err(Error::InvalidArgument)
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

impl fmt::Debug for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// One OHLCV bar. Prices and volume are exact decimals; `ts` is the bar's open time in UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Instrument.
    pub symbol: Symbol,
    /// Bar length.
    pub timeframe: Timeframe,
    /// Open time, UTC, microsecond precision.
    pub ts: DateTime<Utc>,
    /// Opening price.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Closing price.
    pub close: Decimal,
    /// Traded quantity, never negative.
    pub volume: Decimal,
}

/// A rule of DESIGN.md §1 that a bar breaks: the field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarViolation {
    /// The offending column.
    pub field: &'static str,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl Bar {
    /// Checks the price relations and the volume sign of DESIGN.md §1.
    pub fn check(&self) -> Result<(), BarViolation> {
        let v = |field, message: String| Err(BarViolation { field, message });
        if self.high < self.low {
            return v(
                "high",
                format!("high {} is below low {}", self.high, self.low),
            );
        }
        if self.high < self.open {
            return v(
                "high",
                format!("high {} is below open {}", self.high, self.open),
            );
        }
        if self.high < self.close {
            return v(
                "high",
                format!("high {} is below close {}", self.high, self.close),
            );
        }
        if self.low > self.open {
            return v(
                "low",
                format!("low {} is above open {}", self.low, self.open),
            );
        }
        if self.low > self.close {
            return v(
                "low",
                format!("low {} is above close {}", self.low, self.close),
            );
        }
        if self.volume.is_sign_negative() && !self.volume.is_zero() {
            return v("volume", format!("volume {} is negative", self.volume));
        }
        Ok(())
    }

    /// `ts` as microseconds since the Unix epoch (the SQLite representation).
    pub fn ts_micros(&self) -> i64 {
        self.ts.timestamp_micros()
    }
}

/// Parses an exact decimal in plain notation (`-12.50`, `0.00002853`), rejecting exponents,
/// separators, more than 8 fractional digits and more than 18 significant digits.
pub fn parse_decimal(raw: &str) -> Result<Decimal, String> {
    let s = raw.trim();
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let well_formed = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(format!("{s:?} is not a decimal number"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > MAX_SCALE as usize {
        return Err(format!(
            "{s:?} has {} fractional digits; at most {MAX_SCALE} are kept exactly",
            frac.len()
        ));
    }
    let int = int.trim_start_matches('0');
    let significant = if int.is_empty() {
        frac.trim_start_matches('0').len()
    } else {
        int.len() + frac.len()
    };
    if significant > MAX_SIGNIFICANT_DIGITS {
        return Err(format!(
            "{s:?} has {significant} significant digits; at most {MAX_SIGNIFICANT_DIGITS} are allowed"
        ));
    }
    Decimal::from_str_exact(s)
        .map(|d| d.normalize())
        .map_err(|e| format!("{s:?} is not a decimal number: {e}"))
}

/// The canonical text of a decimal: plain notation, no trailing zeros (`712345.12`).
pub fn decimal_text(d: &Decimal) -> String {
    let mut out = String::with_capacity(24);
    push_decimal_text(&mut out, d);
    out
}

/// Appends [`decimal_text`] of `d` to `out`: the bulk writers' form, without an allocation per
/// value (rust_decimal's `Display` after `normalize` cost ~15% of a SQLite bulk write).
pub fn push_decimal_text(out: &mut String, d: &Decimal) {
    let mut mantissa = d.mantissa().unsigned_abs();
    let mut scale = d.scale() as usize;
    while scale > 0 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa == 0 {
        out.push('0');
        return;
    }
    // At most 29 digits (a 96-bit mantissa), written from the right; in 64-bit arithmetic
    // once the rest fits (128-bit division is several times slower).
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    while mantissa > u128::from(u64::MAX) {
        at -= 1;
        digits[at] = b'0' + (mantissa % 10) as u8;
        mantissa /= 10;
    }
    let mut rest = mantissa as u64;
    while rest > 0 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    if d.is_sign_negative() {
        out.push('-');
    }
    let digits = &digits[at..];
    let whole = digits.len().saturating_sub(scale);
    let push = |out: &mut String, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&b| char::from(b)));
    };
    if whole == 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        push(out, digits);
    } else {
        push(out, &digits[..whole]);
        if scale > 0 {
            out.push('.');
            push(out, &digits[whole..]);
        }
    }
}

/// Exact decimals as stored in the cache: `Decimal128(28, 8)`, i.e. the value times 10^8.
pub const CACHE_PRECISION: u8 = 28;
/// Scale of every price and volume in the cache.
pub const CACHE_SCALE: i8 = 8;
const MAX_UNSCALED: i128 = 10_000_000_000_000_000_000_000_000_000; // 10^28

/// A decimal as an integer count of 10^-8 units (the cache's `Decimal128(28, 8)` value).
/// Fails when the value needs more than 8 fractional digits or 28 digits in all.
pub fn fixed8_from_decimal(d: Decimal) -> Result<i128, String> {
    let d = d.normalize();
    let scale = d.scale();
    if scale > MAX_SCALE {
        return Err(format!(
            "{d} has {scale} fractional digits; at most {MAX_SCALE} are kept exactly"
        ));
    }
    let v = d.mantissa() * 10i128.pow(MAX_SCALE - scale);
    if v.abs() >= MAX_UNSCALED {
        return Err(format!("{d} does not fit 28 digits"));
    }
    Ok(v)
}

/// Parses decimal text straight into 10^-8 units. Plain notation (`-12.5`, `0.00002853`) takes
/// a fast path; anything else (a REAL that SQLite turned into text, such as `1.0e-05`) goes
/// through [`Decimal`]'s parser and must still be exact at 8 fractional digits.
pub fn fixed8_from_text(text: &str) -> Result<i128, String> {
    let bytes = text.as_bytes();
    let (negative, body) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut int: i128 = 0;
    let mut frac_digits = 0u32;
    let mut seen_dot = false;
    let mut digits = 0usize;
    let mut plain = !body.is_empty() && body.len() <= 38;
    if plain {
        for &b in body {
            match b {
                b'0'..=b'9' => {
                    if seen_dot {
                        frac_digits += 1;
                    }
                    int = int * 10 + i128::from(b - b'0');
                    digits += 1;
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => {
                    plain = false;
                    break;
                }
            }
        }
    }
    if plain
        && digits > 0
        && frac_digits <= MAX_SCALE
        && let Some(v) = int.checked_mul(10i128.pow(MAX_SCALE - frac_digits))
        && v < MAX_UNSCALED
    {
        return Ok(if negative { -v } else { v });
    }
    let d = Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|e| format!("{text:?} is not a decimal number: {e}"))?;
    fixed8_from_decimal(d)
}

/// The decimal of a value in 10^-8 units, normalized (no trailing zeros).
pub fn decimal_from_fixed8(v: i128) -> Decimal {
    Decimal::from_i128_with_scale(v, MAX_SCALE).normalize()
}

/// Parses a time given on the command line: RFC 3339, or a date (`2024-06-03`) meaning midnight
/// UTC, or the last microsecond of that day when `end_of_day` is set (inclusive range ends).
pub fn parse_time_arg(raw: &str, end_of_day: bool) -> Result<DateTime<Utc>> {
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = if end_of_day {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(Error::invalid(format!(
        "time {s:?} is neither RFC 3339 (2024-06-03T14:30:00Z) nor a date (2024-06-03)"
    )))
}

/// Resolves a naive local date-time in `tz` to UTC, refusing times that do not exist or that
/// occur twice there (daylight-saving transitions).
pub fn localize(naive: NaiveDateTime, tz: &chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Err(format!(
            "{naive} occurs twice in {tz} ({} and {}); give UTC times or another --tz",
            a.with_timezone(&Utc),
            b.with_timezone(&Utc)
        )),
        LocalResult::None => Err(format!("{naive} does not exist in {tz} (clock change)")),
    }
}

/// Midnight of `date`, as a naive date-time.
pub fn midnight(date: NaiveDate) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN)
}

/// A timestamp written as text: RFC 3339, or a naive date-time or date in `tz`.
pub fn parse_timestamp(raw: &str, tz: &chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok());
    let naive = match naive {
        Some(n) => n,
        None => midnight(parse_date(raw)?),
    };
    localize(naive, tz)
}

/// A date written as `YYYY-MM-DD`, `YYYYMMDD` or `YYYY/MM/DD`.
pub fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(raw, f).ok())
        .ok_or_else(|| format!("{raw:?} is not a date (YYYY-MM-DD)"))
}

/// The unit of an integer timestamp (seconds, milliseconds, microseconds or nanoseconds since
/// 1970-01-01 UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpochUnit {
    /// Told by the size of each value: below 10^11 seconds, below 10^14 milliseconds, below
    /// 10^17 microseconds, else nanoseconds (each range covers 1973 to 5138).
    #[default]
    Auto,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds (whole microseconds only: the cache keeps microseconds).
    Nanos,
}

impl EpochUnit {
    /// The instant `n` units after the epoch.
    pub fn instant(self, n: i64) -> Result<DateTime<Utc>, String> {
        let unit = match self {
            EpochUnit::Auto => match n.unsigned_abs() {
                m if m < 100_000_000_000 => EpochUnit::Seconds,
                m if m < 100_000_000_000_000 => EpochUnit::Millis,
                m if m < 100_000_000_000_000_000 => EpochUnit::Micros,
                _ => EpochUnit::Nanos,
            },
            unit => unit,
        };
        let micros = match unit {
            EpochUnit::Seconds => n.checked_mul(1_000_000),
            EpochUnit::Millis => n.checked_mul(1_000),
            EpochUnit::Nanos if n % 1_000 != 0 => {
                return Err(format!(
                    "{n} has nanoseconds (epoch ns); the cache keeps microseconds"
                ));
            }
            EpochUnit::Nanos => Some(n / 1_000),
            _ => Some(n),
        };
        micros
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| format!("{n} is out of range as an epoch time"))
    }
}

/// Formats a timestamp as RFC 3339 UTC with `Z`, showing fractional seconds only when present.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Converts microseconds since the epoch to a UTC timestamp.
pub fn ts_from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::invalid(format!("timestamp {micros} µs is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The bulk writers' decimal text is exactly rust_decimal's normalised `Display`, for
        /// every mantissa, sign and scale (zeros, trailing zeros, values below one).
        #[test]
        fn decimal_text_is_normalized_display(
            mantissa in proptest::prop_oneof![
                -1_000_000i128..1_000_000,
                -(1i128 << 96) + 1..(1i128 << 96),
            ],
            scale in 0u32..=28,
        ) {
            let d = Decimal::from_i128_with_scale(mantissa, scale);
            proptest::prop_assert_eq!(decimal_text(&d), d.normalize().to_string());
        }
    }

    #[test]
    fn fixed8_round_trips_exactly() {
        for (text, units) in [
            ("0.00002853", 2853),
            ("712345.12", 71_234_512_000_000),
            ("-12.5", -1_250_000_000),
            ("7", 700_000_000),
            ("1.0e-05", 1000),
            ("999999999999999999", 99_999_999_999_999_999_900_000_000),
        ] {
            assert_eq!(fixed8_from_text(text), Ok(units), "{text}");
            assert_eq!(
                decimal_from_fixed8(units),
                Decimal::from_scientific(text)
                    .or_else(|_| Decimal::from_str_exact(text))
                    .unwrap()
                    .normalize()
            );
        }
        assert!(fixed8_from_text("0.000000001").is_err());
        assert!(fixed8_from_text("abc").is_err());
        assert!(fixed8_from_text("").is_err());
        assert!(fixed8_from_decimal(Decimal::new(1, 9)).is_err());
    }

    #[test]
    fn symbols_are_normalised_and_checked() {
        assert_eq!(Symbol::parse(" aapl ").unwrap().as_str(), "AAPL");
        assert_eq!(Symbol::parse("^gspc").unwrap().as_str(), "^GSPC");
        assert_eq!(
            Symbol::parse("btc/usdt:x=1").unwrap().as_str(),
            "BTC/USDT:X=1"
        );
        assert!(Symbol::parse("  ").unwrap_err().contains("empty"));
        assert!(Symbol::parse("A B").unwrap_err().contains("' '"));
        assert!(Symbol::parse(&"A".repeat(33)).is_err());
    }

    #[test]
    fn timeframes_round_trip() {
        for tf in ["1s", "1m", "5m", "1h", "1d", "1w", "1mo", "15m"] {
            assert_eq!(Timeframe::parse(tf).unwrap().to_string(), tf);
        }
        for bad in ["", "m", "0m", "01m", "1y", "1M", "-1m", "1 m"] {
            assert!(Timeframe::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            Timeframe::parse("5m").unwrap().fixed_micros(),
            Some(300_000_000)
        );
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(
            parse_decimal("0.00002853").unwrap().to_string(),
            "0.00002853"
        );
        assert_eq!(parse_decimal("712345.12").unwrap().to_string(), "712345.12");
        assert_eq!(parse_decimal("36304.2").unwrap().to_string(), "36304.2");
        assert_eq!(parse_decimal("1.750000").unwrap().to_string(), "1.75");
        assert_eq!(parse_decimal("-37.63").unwrap().to_string(), "-37.63");
        assert_eq!(parse_decimal("0").unwrap().to_string(), "0");
        assert_eq!(parse_decimal(".5").unwrap().to_string(), "0.5");
        assert_eq!(
            parse_decimal("123456789012.123456").unwrap().to_string(),
            "123456789012.123456"
        );
        for bad in [
            "",
            "abc",
            "1e5",
            "1_000",
            "1,5",
            "1.2.3",
            "0.000000001",
            "1234567890123456789",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad} accepted");
        }
        assert!(
            parse_decimal("0.000000001")
                .unwrap_err()
                .contains("fractional")
        );
    }

    #[test]
    fn bar_rules() {
        let d = |s: &str| parse_decimal(s).unwrap();
        let mut bar = Bar {
            symbol: Symbol::parse("X").unwrap(),
            timeframe: Timeframe::parse("1d").unwrap(),
            ts: Utc::now(),
            open: d("10"),
            high: d("12"),
            low: d("9"),
            close: d("11"),
            volume: d("0"),
        };
        assert!(bar.check().is_ok());
        bar.high = d("8");
        assert_eq!(bar.check().unwrap_err().field, "high");
        bar.high = d("12");
        bar.volume = d("-1");
        assert_eq!(bar.check().unwrap_err().field, "volume");
    }

    #[test]
    fn time_arguments() {
        assert_eq!(
            format_ts(&parse_time_arg("2024-06-03", false).unwrap()),
            "2024-06-03T00:00:00Z"
        );
        assert_eq!(
            format_ts(&parse_time_arg("2024-06-03", true).unwrap()),
            "2024-06-03T23:59:59.999999Z"
        );
        assert_eq!(
            format_ts(&parse_time_arg("2024-06-03T16:30:00+02:00", false).unwrap()),
            "2024-06-03T14:30:00Z"
        );
        assert!(parse_time_arg("yesterday", false).is_err());
    }
}
