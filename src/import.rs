//! Importing bar files: Yahoo, backtrader, Binance klines and quiver's own CSV, with format
//! sniffing, time-zone handling and exact validation.
//!
//! Every file is parsed and checked completely before anything is written, and all files of one
//! import go through a single [`crate::db::BarWriter`], so an import is all-or-nothing: the first
//! bad row stops it with its file, line, field and reason, and the database is untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::db::{OnConflict, Store, WriteReport};
use crate::error::{Error, Result};
use crate::model::{Bar, Symbol, Timeframe, localize, midnight, parse_decimal};
use crate::progress;

/// The layout of an input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Sniff the format from the first line.
    #[default]
    Auto,
    /// `Date,Open,High,Low,Close,Adj Close,Volume` (Adj Close optional and ignored).
    Yahoo,
    /// `Date,Time,Open,High,Low,Close,Volume,OpenInterest` (the `Time` header may be missing).
    Backtrader,
    /// Binance kline rows without header: open time in epoch ms (or µs), OHLCV, ...
    Binance,
    /// A header naming `symbol,timeframe,ts,open,high,low,close,volume` (symbol and timeframe
    /// may come from the command line instead).
    Csv,
}

impl Format {
    /// The name used on the command line (`yahoo`, `backtrader`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Yahoo => "yahoo",
            Format::Backtrader => "backtrader",
            Format::Binance => "binance",
            Format::Csv => "csv",
        }
    }
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Symbol of every bar (required unless a `csv` file has a `symbol` column).
    pub symbol: Option<Symbol>,
    /// Timeframe of every bar (required unless a `csv` file has a `timeframe` column).
    pub timeframe: Option<Timeframe>,
    /// File layout.
    pub format: Format,
    /// Zone of naive timestamps.
    pub tz: Tz,
    /// What to do with bars already stored.
    pub on_conflict: OnConflict,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            symbol: None,
            timeframe: None,
            format: Format::Auto,
            tz: Tz::UTC,
            on_conflict: OnConflict::Error,
        }
    }
}

/// What one file contributed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// The format it was read as.
    pub format: Format,
    /// Bars read.
    pub bars: usize,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Per file, in the order given.
    pub files: Vec<FileReport>,
    /// What the database write did.
    pub write: WriteReport,
}

/// Bars written per batch (and progress step).
const WRITE_BATCH: usize = 50_000;

/// Parses every file, then writes all bars in one transaction.
pub async fn import_files(
    store: &Store,
    paths: &[PathBuf],
    options: &ImportOptions,
) -> Result<ImportReport> {
    let mut seen = HashMap::new();
    let mut bars = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let before = bars.len();
        let format = read_file(path, options, &mut bars, &mut seen)?;
        files.push(FileReport {
            path: path.clone(),
            format,
            bars: bars.len() - before,
        });
    }
    let write = write_bars(store, &bars, options.on_conflict).await?;
    Ok(ImportReport { files, write })
}

/// Writes already validated bars in one transaction, with a progress bar on a terminal.
pub async fn write_bars(store: &Store, bars: &[Bar], policy: OnConflict) -> Result<WriteReport> {
    let bar = progress::rows(bars.len() as u64, "importing");
    let mut writer = store.writer(policy).await?;
    for chunk in bars.chunks(WRITE_BATCH) {
        writer.write(chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    let write = writer.commit().await?;
    bar.finish_and_clear();
    Ok(write)
}

/// Where a bar came from, for duplicate reports.
type Origin = (PathBuf, u64);

/// Parses one file into `out`, checking every row; `seen` spans all files of the import so a
/// bar given twice is caught across files too. Returns the format used.
pub fn read_file(
    path: &Path,
    options: &ImportOptions,
    out: &mut Vec<Bar>,
    seen: &mut HashMap<(Symbol, Timeframe, i64), Origin>,
) -> Result<Format> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Format {
        file: path.into(),
        message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })?;
    read_text(path, &text, options, out, seen)
}

/// Parses the text of a file named `path` (used in messages) into `out`; see [`read_file`].
pub fn read_text(
    path: &Path,
    text: &str,
    options: &ImportOptions,
    out: &mut Vec<Bar>,
    seen: &mut HashMap<(Symbol, Timeframe, i64), Origin>,
) -> Result<Format> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let format = match options.format {
        Format::Auto => sniff(first_line).ok_or_else(|| Error::Format {
            file: path.into(),
            message: format!(
                "cannot tell the format from the first line {first_line:?}; pass --format yahoo|backtrader|binance|csv"
            ),
        })?,
        f => f,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let mut layout = if format == Format::Binance {
        Layout::binance()
    } else {
        let header = match records.next() {
            Some(r) => r.map_err(|e| csv_error(path, &e))?,
            None => return Ok(format),
        };
        Layout::from_header(format, &header).map_err(|message| Error::Format {
            file: path.into(),
            message,
        })?
    };
    let fail = |line: u64, field: &str, message: String| Error::Input {
        file: path.into(),
        line,
        field: field.into(),
        message,
    };
    for record in records {
        let record = record.map_err(|e| csv_error(path, &e))?;
        let line = record.position().map_or(0, |p| p.line());
        if format == Format::Binance && line == 1 && !record.get(0).is_some_and(is_integer) {
            continue; // some Binance exports carry a header row
        }
        if record.len() != layout.fields {
            // backtrader files exist whose header omits `Time` although every row has one.
            if format == Format::Backtrader
                && layout.time.is_none()
                && record.len() == layout.fields + 1
            {
                layout.insert_time_after_date();
            } else {
                return Err(fail(
                    line,
                    "row",
                    format!("expected {} fields, found {}", layout.fields, record.len()),
                ));
            }
        }
        let get = |i: usize| record.get(i).unwrap_or("");
        let symbol = match (layout.symbol, &options.symbol) {
            (Some(i), _) => Symbol::parse(get(i)).map_err(|m| fail(line, &layout.names[i], m))?,
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{}: no symbol column; pass --symbol",
                    path.display()
                )));
            }
        };
        let timeframe = match (layout.timeframe, &options.timeframe) {
            (Some(i), _) => {
                Timeframe::parse(get(i)).map_err(|m| fail(line, &layout.names[i], m))?
            }
            (None, Some(t)) => *t,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{}: no timeframe column; pass --timeframe",
                    path.display()
                )));
            }
        };
        let ts = layout
            .timestamp(&record, &options.tz)
            .map_err(|(i, m)| fail(line, &layout.names[i], m))?;
        let dec = |i: usize| parse_decimal(get(i)).map_err(|m| fail(line, &layout.names[i], m));
        let bar = Bar {
            symbol,
            timeframe,
            ts,
            open: dec(layout.open)?,
            high: dec(layout.high)?,
            low: dec(layout.low)?,
            close: dec(layout.close)?,
            volume: dec(layout.volume)?,
        };
        if let Err(v) = bar.check() {
            let column = match v.field {
                "high" => layout.high,
                "low" => layout.low,
                _ => layout.volume,
            };
            return Err(fail(line, &layout.names[column], v.message));
        }
        let key = (bar.symbol.clone(), bar.timeframe, bar.ts_micros());
        if let Some((first_file, first_line)) = seen.get(&key) {
            return Err(fail(
                line,
                &layout.names[layout.ts_column()],
                format!(
                    "duplicate bar {} {} {} (first at {}:{})",
                    bar.symbol,
                    bar.timeframe,
                    crate::model::format_ts(&bar.ts),
                    first_file.display(),
                    first_line
                ),
            ));
        }
        seen.insert(key, (path.to_path_buf(), line));
        out.push(bar);
    }
    Ok(format)
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    match e.position() {
        Some(p) => Error::Input {
            file: path.into(),
            line: p.line(),
            field: "row".into(),
            message: e.to_string(),
        },
        None => Error::Format {
            file: path.into(),
            message: e.to_string(),
        },
    }
}

fn is_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Guesses the format from the first non-empty line.
pub fn sniff(first_line: &str) -> Option<Format> {
    let cols: Vec<String> = first_line
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let has = |name: &str| cols.iter().any(|c| c == name);
    if cols.first().is_some_and(|c| is_integer(c) && c.len() >= 10) && cols.len() >= 6 {
        Some(Format::Binance)
    } else if has("ts") && has("open") && has("close") {
        Some(Format::Csv)
    } else if has("adj close") {
        Some(Format::Yahoo)
    } else if has("date") && (has("time") || has("openinterest")) {
        Some(Format::Backtrader)
    } else if has("date") && has("open") && has("close") {
        Some(Format::Yahoo)
    } else if has("open_time") {
        Some(Format::Binance)
    } else {
        None
    }
}

/// Where each value sits in a row.
#[derive(Debug)]
struct Layout {
    names: Vec<String>,
    fields: usize,
    symbol: Option<usize>,
    timeframe: Option<usize>,
    /// The timestamp: a date (+ optional time) column, an RFC 3339/naive `ts`, or epoch ms.
    date: usize,
    time: Option<usize>,
    epoch: bool,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
}

impl Layout {
    fn binance() -> Self {
        let names = [
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "close_time",
            "quote_volume",
            "trades",
            "taker_buy_base",
            "taker_buy_quote",
            "ignore",
        ];
        Layout {
            names: names.iter().map(|s| s.to_string()).collect(),
            fields: 12,
            symbol: None,
            timeframe: None,
            date: 0,
            time: None,
            epoch: true,
            open: 1,
            high: 2,
            low: 3,
            close: 4,
            volume: 5,
        }
    }

    fn from_header(format: Format, header: &csv::StringRecord) -> Result<Self, String> {
        let names: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        let find = |want: &str| names.iter().position(|n| n.eq_ignore_ascii_case(want));
        let need = |want: &str| {
            find(want).ok_or_else(|| format!("{format:?} header {names:?} has no {want:?} column"))
        };
        let (date, time) = match format {
            Format::Csv => (need("ts")?, None),
            _ => (need("date")?, find("time")),
        };
        let (symbol, timeframe) = match format {
            Format::Csv => (find("symbol"), find("timeframe")),
            _ => (None, None),
        };
        Ok(Layout {
            fields: names.len(),
            symbol,
            timeframe,
            date,
            time,
            epoch: false,
            open: need("open")?,
            high: need("high")?,
            low: need("low")?,
            close: need("close")?,
            volume: need("volume")?,
            names,
        })
    }

    /// Adapts to rows carrying a time column right after the date that the header does not name.
    fn insert_time_after_date(&mut self) {
        let at = self.date + 1;
        for i in [
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
            &mut self.volume,
        ] {
            if *i >= at {
                *i += 1;
            }
        }
        self.names.insert(at, "Time".into());
        self.time = Some(at);
        self.fields += 1;
    }

    fn ts_column(&self) -> usize {
        self.date
    }

    /// The row's timestamp, or the offending column and why.
    fn timestamp(&self, r: &csv::StringRecord, tz: &Tz) -> Result<DateTime<Utc>, (usize, String)> {
        let raw = r.get(self.date).unwrap_or("");
        if self.epoch {
            let n: i64 = raw
                .parse()
                .map_err(|_| (self.date, format!("{raw:?} is not an epoch time")))?;
            // Binance switched spot dumps from milliseconds to microseconds in 2025.
            let micros = if n.abs() >= 100_000_000_000_000 {
                n
            } else {
                n.saturating_mul(1000)
            };
            return DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| (self.date, format!("{raw:?} is out of range")));
        }
        if let Some(t) = self.time {
            let date = parse_date(raw).map_err(|m| (self.date, m))?;
            let traw = r.get(t).unwrap_or("");
            let time = ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .find_map(|f| NaiveTime::parse_from_str(traw, f).ok())
                .ok_or_else(|| (t, format!("{traw:?} is not a time (HH:MM:SS)")))?;
            return localize(date.and_time(time), tz).map_err(|m| (t, m));
        }
        parse_timestamp(raw, tz).map_err(|m| (self.date, m))
    }
}

/// A timestamp written as text: RFC 3339, or a naive date-time or date in `tz`.
pub(crate) fn parse_timestamp(raw: &str, tz: &Tz) -> Result<DateTime<Utc>, String> {
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

fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(raw, f).ok())
        .ok_or_else(|| format!("{raw:?} is not a date (YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(
            sniff("Date,Open,High,Low,Close,Adj Close,Volume"),
            Some(Format::Yahoo)
        );
        assert_eq!(
            sniff("Date,Time,Open,High,Low,Close,Volume,OpenInterest"),
            Some(Format::Backtrader)
        );
        assert_eq!(
            sniff("Date,Open,High,Low,Close,Volume,OpenInterest"),
            Some(Format::Backtrader)
        );
        assert_eq!(
            sniff(
                "1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68108,1704070799999,53957248.973,47134,682.57581,28957416.819,0"
            ),
            Some(Format::Binance)
        );
        assert_eq!(
            sniff("symbol,timeframe,ts,open,high,low,close,volume"),
            Some(Format::Csv)
        );
        assert_eq!(sniff("hello,world"), None);
    }
}
