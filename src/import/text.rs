//! The text formats: sniffing a file's layout from its first line, then each line parsed and
//! checked (Yahoo, backtrader, Binance klines, CSV with a header, one symbol or a market).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use super::{Format, ImportOptions, Parsed, stream};
use crate::error::{Error, Result};
use crate::model::{
    Bar, EpochUnit, Symbol, Timeframe, localize, parse_date, parse_decimal, parse_timestamp,
};

/// Parses the text of a file named `path` (used in messages) into `parsed` on the calling
/// thread, its bars in key order; files are read by [`import_files`], which parses them in
/// chunks on several threads.
pub fn read_text(
    path: &Path,
    text: &str,
    options: &ImportOptions,
    parsed: &mut Parsed,
) -> Result<Format> {
    let (format, start) = FileParser::start(path, text, options)?;
    if let Some(start) = start {
        let parser = &start.parser;
        let body = &text[start.body_at..];
        let (rows, skipped) = parser.parse(body, start.body_line, &mut HashMap::new())?;
        let file = stream::Item::File {
            path: path.into(),
            format,
            lines: true,
            ts_field: parser.ts_field().into(),
        };
        let mut files = Vec::new();
        parsed.take(file, &mut files);
        parsed.take(
            stream::Item::Bars(stream::Chunk::new(rows, skipped)),
            &mut files,
        );
    }
    Ok(format)
}

/// How the rows of one text file are read: its format, layout and where symbol and timeframe
/// come from, found from its first lines; shared by the threads parsing its chunks.
#[derive(Debug)]
pub(super) struct FileParser {
    path: PathBuf,
    format: Format,
    options: ImportOptions,
    symbol: Value<Symbol>,
    timeframe: Value<Timeframe>,
    layout: Layout,
}

/// Where the rows of a text file start, and how to parse them.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) parser: FileParser,
    /// The byte of the text the first row starts at (after a byte order mark and the header).
    pub(super) body_at: usize,
    /// The line of the file the first row is on.
    pub(super) body_line: u64,
}

impl FileParser {
    /// Reads the format and the header from `start`, the beginning of the file's text (at least
    /// its first line). Returns the format, and the rows' parser unless the file holds none.
    pub(super) fn start(
        path: &Path,
        start: &str,
        options: &ImportOptions,
    ) -> Result<(Format, Option<Body>)> {
        let text = start.strip_prefix('\u{feff}').unwrap_or(start);
        let bom = start.len() - text.len();
        if text.trim().is_empty() {
            return Err(Error::Format {
                file: path.into(),
                message: "the file is empty".into(),
            });
        }
        let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let format = match options.format {
            Format::Parquet => {
                return Err(Error::Format {
                    file: path.into(),
                    message: "not a Parquet file (no PAR1 header)".into(),
                });
            }
            Format::Auto => sniff(first_line).ok_or_else(|| Error::Format {
                file: path.into(),
                message: format!(
                    "cannot tell the format from the first line {first_line:?}; pass --format yahoo|backtrader|binance|csv"
                ),
            })?,
            f => f,
        };
        let mut reader = csv_reader(text);
        let layout = if format == Format::Binance {
            Layout::binance()
        } else {
            let mut header = csv::StringRecord::new();
            if !reader
                .read_record(&mut header)
                .map_err(|e| csv_error(path, 0, &e))?
            {
                return Ok((format, None));
            }
            Layout::from_header(format, &header).map_err(|message| Error::Format {
                file: path.into(),
                message,
            })?
        };
        let symbol = match (layout.symbol, &options.symbol) {
            (Some(i), _) => Value::Column(i),
            (None, Some(s)) => Value::Given(s.clone()),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{}: no symbol column; pass --symbol",
                    path.display()
                )));
            }
        };
        let timeframe = match (layout.timeframe, options.timeframe) {
            (Some(i), _) => Value::Column(i),
            (None, Some(t)) => Value::Given(t),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{}: no timeframe column; pass --timeframe",
                    path.display()
                )));
            }
        };
        let body = Body {
            body_at: bom + reader.position().byte() as usize,
            body_line: reader.position().line(),
            parser: FileParser {
                path: path.to_path_buf(),
                format,
                options: options.clone(),
                symbol,
                timeframe,
                layout,
            },
        };
        Ok((format, Some(body)))
    }

    /// The file's name for its timestamp column.
    pub(super) fn ts_field(&self) -> &str {
        &self.layout.names[self.layout.ts_column()]
    }

    /// Parses and checks the rows of `text`, whose first line is line `first_line` of the file,
    /// into bars with their lines; stops at the first bad row. `text` holds whole lines, and no
    /// quoted field runs into it from before. `symbols` keeps each spelling of a symbol parsed
    /// once: files of a whole market repeat each symbol on many lines. Also returns how many
    /// rows without prices were skipped ([`ImportOptions::skip_null_rows`]).
    pub(super) fn parse(
        &self,
        text: &str,
        first_line: u64,
        symbols: &mut HashMap<Box<str>, Symbol>,
    ) -> Result<(Vec<(Bar, u64)>, u64)> {
        let (path, format, options) = (self.path.as_path(), self.format, &self.options);
        let mut layout = self.layout.clone();
        let layout = &mut layout;
        let offset = first_line.saturating_sub(1);
        let fail = |line: u64, field: &str, message: String| Error::Input {
            file: path.into(),
            line,
            field: field.into(),
            message,
        };
        let mut reader = csv_reader(text);
        // One record, refilled line after line.
        let mut record = csv::StringRecord::new();
        let mut bars = Vec::with_capacity(text.len() / 48);
        let mut skipped = 0u64;
        while reader
            .read_record(&mut record)
            .map_err(|e| csv_error(path, offset, &e))?
        {
            let line = record.position().map_or(0, |p| p.line() + offset);
            if format == Format::Binance
                && line == 1
                && !record.get(0).is_some_and(|f| is_integer(f.trim()))
            {
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
            let get = |i: usize| record.get(i).unwrap_or("").trim();
            let values = [
                layout.open,
                layout.high,
                layout.low,
                layout.close,
                layout.volume,
            ];
            if values.iter().all(|&i| is_null(get(i))) {
                // Yahoo's downloads hold such rows for days without data.
                if options.skip_null_rows {
                    skipped += 1;
                    continue;
                }
                return Err(fail(
                    line,
                    &layout.names[layout.open],
                    format!(
                        "a row without prices ({:?}); pass --skip-null-rows to skip such rows",
                        get(layout.open)
                    ),
                ));
            }
            let symbol = match &self.symbol {
                Value::Column(i) => match symbols.get(get(*i)) {
                    Some(symbol) => symbol.clone(),
                    None => {
                        let symbol =
                            Symbol::parse(get(*i)).map_err(|m| fail(line, &layout.names[*i], m))?;
                        symbols.insert(get(*i).into(), symbol.clone());
                        symbol
                    }
                },
                Value::Given(s) => s.clone(),
            };
            let timeframe = match self.timeframe {
                Value::Column(i) => {
                    Timeframe::parse(get(i)).map_err(|m| fail(line, &layout.names[i], m))?
                }
                Value::Given(t) => t,
            };
            let ts = layout
                .timestamp(&record, &options.tz, options.epoch)
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
            bars.push((bar, line));
        }
        Ok((bars, skipped))
    }
}

/// Fields are trimmed where they are read: the reader's own trimming rebuilds every record
/// (3.7% of a whole-market import's CPU).
fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
}

/// Where a row's symbol or timeframe comes from: a column, or the command line for every row.
#[derive(Debug)]
enum Value<T> {
    Column(usize),
    Given(T),
}

/// A CSV reader's error; its line is `offset` lines short of the file's.
pub(super) fn csv_error(path: &Path, offset: u64, e: &csv::Error) -> Error {
    match e.position() {
        Some(p) => Error::Input {
            file: path.into(),
            line: p.line() + offset,
            field: "row".into(),
            message: e.to_string(),
        },
        None => Error::Format {
            file: path.into(),
            message: e.to_string(),
        },
    }
}

/// A field that holds no value: empty, or `null` as Yahoo writes it.
fn is_null(s: &str) -> bool {
    s.is_empty() || s.eq_ignore_ascii_case("null")
}

pub(super) fn is_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Guesses the format from the first non-empty line.
pub fn sniff(first_line: &str) -> Option<Format> {
    let cols: Vec<String> = first_line
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let has = |name: &str| cols.iter().any(|c| c == name);
    let any = |names: &[&str]| names.iter().any(|n| has(n));
    if cols.first().is_some_and(|c| is_integer(c) && c.len() >= 10) && cols.len() >= 6 {
        Some(Format::Binance)
    } else if any(&[
        "ts",
        "timestamp",
        "datetime",
        "window_start",
        "symbol",
        "ticker",
    ]) && has("open")
        && has("close")
    {
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
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub(super) names: Vec<String>,
    pub(super) fields: usize,
    pub(super) symbol: Option<usize>,
    pub(super) timeframe: Option<usize>,
    /// The timestamp: a date (+ optional time) column, or one column of RFC 3339 or naive text
    /// or epoch integers.
    pub(super) date: usize,
    pub(super) time: Option<usize>,
    /// Every timestamp is an epoch integer (Binance), not only those that look like one.
    pub(super) epoch: bool,
    pub(super) open: usize,
    pub(super) high: usize,
    pub(super) low: usize,
    pub(super) close: usize,
    pub(super) volume: usize,
}

impl Layout {
    pub(super) fn binance() -> Self {
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

    pub(super) fn from_header(format: Format, header: &csv::StringRecord) -> Result<Self, String> {
        let names: Vec<String> = header.iter().map(|s| s.trim().to_string()).collect();
        let find = |want: &str| names.iter().position(|n| n.eq_ignore_ascii_case(want));
        let find_any = |wants: &[&str]| wants.iter().find_map(|w| find(w));
        let need = |want: &str| {
            find(want).ok_or_else(|| format!("{format:?} header {names:?} has no {want:?} column"))
        };
        let (date, time) = match format {
            Format::Csv => match (
                find_any(&["ts", "timestamp", "datetime", "window_start", "open_time"]),
                find("date"),
            ) {
                (Some(ts), _) => (ts, None),
                (None, Some(date)) => (date, find("time")),
                (None, None) => (
                    find("time").ok_or_else(|| {
                        format!(
                            "csv header {names:?} has no time column (ts, timestamp, datetime, \
                             window_start, date or time)"
                        )
                    })?,
                    None,
                ),
            },
            _ => (need("date")?, find("time")),
        };
        let (symbol, timeframe) = match format {
            Format::Csv => (
                find_any(&["symbol", "ticker"]),
                find_any(&["timeframe", "interval"]),
            ),
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
    pub(super) fn insert_time_after_date(&mut self) {
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

    pub(super) fn ts_column(&self) -> usize {
        self.date
    }

    /// The row's timestamp, or the offending column and why.
    pub(super) fn timestamp(
        &self,
        r: &csv::StringRecord,
        tz: &Tz,
        unit: EpochUnit,
    ) -> Result<DateTime<Utc>, (usize, String)> {
        let raw = r.get(self.date).unwrap_or("").trim();
        // An integer is an epoch time when the layout says so, a unit was given, or it has the
        // nine or more digits of one (eight are a YYYYMMDD date). Binance switched spot dumps
        // from milliseconds to microseconds in 2025; the automatic unit tells them apart.
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if self.epoch
            || (self.time.is_none()
                && is_integer(digits)
                && (digits.len() >= 9 || unit != EpochUnit::Auto))
        {
            let n: i64 = raw
                .parse()
                .map_err(|_| (self.date, format!("{raw:?} is not an epoch time")))?;
            return unit.instant(n).map_err(|m| (self.date, m));
        }
        if let Some(t) = self.time {
            let date = parse_date(raw).map_err(|m| (self.date, m))?;
            let traw = r.get(t).unwrap_or("").trim();
            let time = ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .find_map(|f| NaiveTime::parse_from_str(traw, f).ok())
                .ok_or_else(|| (t, format!("{traw:?} is not a time (HH:MM:SS)")))?;
            return localize(date.and_time(time), tz).map_err(|m| (t, m));
        }
        parse_timestamp(raw, tz).map_err(|m| (self.date, m))
    }
}
