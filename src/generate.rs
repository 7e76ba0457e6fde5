//! Deterministic synthetic bars: a geometric random walk per symbol with valid OHLC, U-shaped
//! intraday volume and US trading hours (14:30–21:00 UTC) on weekdays of 2024 onwards.
//!
//! The same `(symbols, days, timeframe, seed)` always gives the same bars, and each symbol has
//! its own random stream, so `--symbols 10` is a prefix of `--symbols 50`.

use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::{Distribution, StandardNormal, StandardUniform};
use rust_decimal::Decimal;

use crate::db::{OnConflict, Store, WriteReport};
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, TimeUnit, Timeframe};
use crate::progress;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Number of symbols (`SYM001`, `SYM002`, …).
    pub symbols: usize,
    /// Number of trading days (weekdays) from `start`.
    pub days: usize,
    /// Bar length: seconds, minutes or hours within the session, or `1d`.
    pub timeframe: Timeframe,
    /// Random seed.
    pub seed: u64,
    /// First calendar day considered.
    pub start: NaiveDate,
}

impl GenerateOptions {
    /// `symbols` × `days` of `timeframe` bars with `seed`, starting 2024-01-01.
    pub fn new(symbols: usize, days: usize, timeframe: Timeframe, seed: u64) -> Self {
        GenerateOptions {
            symbols,
            days,
            timeframe,
            seed,
            start: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
        }
    }
}

const SESSION_OPEN_MICROS: i64 = (14 * 3600 + 30 * 60) * 1_000_000;
const SESSION_MICROS: i64 = 390 * 60 * 1_000_000;

/// Bar step and bars per day for a timeframe, or why it cannot be generated.
fn schedule(tf: Timeframe) -> Result<(i64, i64)> {
    match tf.unit {
        TimeUnit::Second | TimeUnit::Minute | TimeUnit::Hour => {
            let step = tf.fixed_micros().unwrap_or(i64::MAX);
            let per_day = SESSION_MICROS / step;
            if per_day == 0 {
                return Err(Error::invalid(format!(
                    "timeframe {tf} is longer than the 6.5 h session"
                )));
            }
            Ok((step, per_day))
        }
        TimeUnit::Day if tf.count == 1 => Ok((0, 1)),
        _ => Err(Error::invalid(format!(
            "generate makes intraday (s, m, h) or daily (1d) bars, not {tf}"
        ))),
    }
}

/// Total bars the options produce.
pub fn bar_count(options: &GenerateOptions) -> Result<u64> {
    let (_, per_day) = schedule(options.timeframe)?;
    Ok(options.symbols as u64 * options.days as u64 * per_day as u64)
}

/// The trading days: the first `days` weekdays from `start`.
fn trading_days(start: NaiveDate, days: usize) -> Vec<NaiveDate> {
    let mut out = Vec::with_capacity(days);
    let mut d = start;
    while out.len() < days {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            out.push(d);
        }
        d = d + Days::new(1);
    }
    out
}

/// The symbol names used for `count` symbols.
pub fn symbol_names(count: usize) -> Vec<String> {
    let width = count.to_string().len().max(3);
    (1..=count).map(|i| format!("SYM{i:0width$}")).collect()
}

fn cents(x: f64) -> Decimal {
    Decimal::new((x * 100.0).round().max(1.0) as i64, 2)
}

/// Generates the bars of one symbol, in time order.
fn generate_symbol(
    options: &GenerateOptions,
    index: usize,
    symbol: &Symbol,
    days: &[NaiveDate],
) -> Result<Vec<Bar>> {
    let (step, per_day) = schedule(options.timeframe)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    rng.set_stream(index as u64);
    let mut uniform = || -> f64 { StandardUniform.sample(&mut rng) };
    let mut price = 20.0 + 480.0 * uniform();
    let daily_volume = 2e5 + 5e6 * uniform();
    let sigma = 0.02 / (per_day as f64).sqrt();
    let mut normal = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed);
    normal.set_stream(index as u64);
    let mut z = || -> f64 { StandardNormal.sample(&mut normal) };
    let mut bars = Vec::with_capacity(days.len() * per_day as usize);
    for day in days {
        let midnight = Utc
            .with_ymd_and_hms(day.year(), day.month(), day.day(), 0, 0, 0)
            .single()
            .ok_or_else(|| Error::invalid(format!("bad day {day}")))?
            .timestamp_micros();
        let first = if step == 0 {
            midnight
        } else {
            midnight + SESSION_OPEN_MICROS
        };
        price *= (0.01 * z()).exp(); // overnight gap
        for i in 0..per_day {
            let open = price;
            let close = open * (sigma * z()).exp();
            let high = open.max(close) * (1.0 + (0.5 * sigma * z()).abs());
            let low = open.min(close) * (1.0 - (0.5 * sigma * z()).abs());
            price = close;
            let (open, close) = (cents(open), cents(close));
            let high = cents(high).max(open).max(close);
            let low = cents(low).min(open).min(close);
            let t = (i as f64 + 0.5) / per_day as f64 - 0.5;
            let shape = 1.0 + 6.0 * t * t; // busier at the open and the close
            let volume = (daily_volume / per_day as f64 * shape * (0.5 * z()).exp()).round();
            bars.push(Bar {
                symbol: symbol.clone(),
                timeframe: options.timeframe,
                ts: crate::model::ts_from_micros(first + i * step)?,
                open,
                high,
                low,
                close,
                volume: Decimal::from(volume as i64),
            });
        }
    }
    Ok(bars)
}

/// The bars of each symbol in turn (`SYM001` first), each symbol's in time order; one symbol's
/// bars are made only when the iterator reaches it.
pub fn by_symbol(options: &GenerateOptions) -> Result<impl Iterator<Item = Result<Vec<Bar>>> + '_> {
    schedule(options.timeframe)?;
    let days = trading_days(options.start, options.days);
    Ok(symbol_names(options.symbols)
        .into_iter()
        .enumerate()
        .map(move |(i, name)| {
            let symbol = Symbol::parse(&name).map_err(Error::InvalidArgument)?;
            generate_symbol(options, i, &symbol, &days)
        }))
}

/// Generates all bars into memory.
pub fn generate_vec(options: &GenerateOptions) -> Result<Vec<Bar>> {
    let mut out = Vec::with_capacity(bar_count(options)? as usize);
    for bars in by_symbol(options)? {
        out.extend(bars?);
    }
    Ok(out)
}

/// Generates the bars and writes them through the bulk path in one transaction, one symbol at a
/// time, so memory holds one symbol's bars and not the whole data set.
pub async fn generate_into(
    store: &Store,
    options: &GenerateOptions,
    policy: OnConflict,
) -> Result<WriteReport> {
    let progress = progress::rows(bar_count(options)?, "generating");
    let mut writer = store.writer(policy).await?;
    for bars in by_symbol(options)? {
        let bars = bars?;
        writer.write(&bars).await?;
        progress.inc(bars.len() as u64);
    }
    let report = writer.commit().await?;
    progress.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_and_sized() {
        let tf = Timeframe::parse("1m").unwrap();
        let a = generate_vec(&GenerateOptions::new(2, 3, tf, 42)).unwrap();
        let b = generate_vec(&GenerateOptions::new(2, 3, tf, 42)).unwrap();
        let c = generate_vec(&GenerateOptions::new(2, 3, tf, 43)).unwrap();
        assert_eq!(a.len(), 2 * 3 * 390);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|bar| bar.check().is_ok()));
        assert_eq!(crate::model::format_ts(&a[0].ts), "2024-01-01T14:30:00Z");
        assert_eq!(crate::model::format_ts(&a[389].ts), "2024-01-01T20:59:00Z");
        // one symbol's stream does not depend on how many symbols there are
        let one = generate_vec(&GenerateOptions::new(1, 3, tf, 42)).unwrap();
        assert_eq!(one[..], a[..one.len()]);
    }

    #[test]
    fn weekends_are_skipped_and_daily_works() {
        let d = generate_vec(&GenerateOptions::new(
            1,
            6,
            Timeframe::parse("1d").unwrap(),
            1,
        ))
        .unwrap();
        let days: Vec<String> = d.iter().map(|b| b.ts.format("%a %d").to_string()).collect();
        assert_eq!(
            days,
            ["Mon 01", "Tue 02", "Wed 03", "Thu 04", "Fri 05", "Mon 08"]
        );
        assert!(
            generate_vec(&GenerateOptions::new(
                1,
                1,
                Timeframe::parse("1w").unwrap(),
                1
            ))
            .is_err()
        );
    }
}
