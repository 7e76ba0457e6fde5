//! Importing bar files: Yahoo, backtrader, Binance klines, CSV with a header (one symbol, or a
//! whole market with a `symbol`/`ticker` column) and Parquet, plain or gzip/zstd-compressed,
//! with format sniffing, time-zone and epoch handling and exact validation.
//!
//! Every file is parsed and checked completely before anything is written, and all files of one
//! import go through a single [`crate::db::BarWriter`], so an import is all-or-nothing: the first
//! bad row stops it with its file, line, field and reason, and the database is untouched.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::db::{OnConflict, Store, WriteReport};
use crate::error::{Error, Result};
use crate::frame::{FrameOptions, FrameReader};
use crate::model::{
    Bar, EpochUnit, Symbol, Timeframe, localize, parse_date, parse_decimal, parse_timestamp,
};
use crate::progress;

mod text;

pub use text::{read_text, sniff};

/// The layout of an input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// A header naming the time (`ts`, `timestamp`, `datetime`, `window_start`, `date` with an
    /// optional `time`, or `time`), `open,high,low,close,volume` and optionally `symbol` (or
    /// `ticker`) and `timeframe` (or `interval`), in any order and case; other columns are
    /// ignored. Symbol and timeframe may come from the command line instead.
    Csv,
    /// A Parquet file with the same columns (decimal, integer or decimal-text prices; Arrow
    /// timestamps, dates, text or epoch integers).
    Parquet,
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
            Format::Parquet => "parquet",
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
    /// Unit of integer (epoch) timestamps.
    pub epoch: EpochUnit,
    /// Accept binary float prices in Parquet files, rounded to 8 decimals.
    pub floats: bool,
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
            epoch: EpochUnit::Auto,
            floats: false,
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
    let started = std::time::Instant::now();
    let mut parsed = Parsed::default();
    let mut files = Vec::new();
    for path in paths {
        let before = parsed.bars.len();
        let format = read_file(path, options, &mut parsed)?;
        files.push(FileReport {
            path: path.clone(),
            format,
            bars: parsed.bars.len() - before,
        });
    }
    // Written in key order: a whole-market file lists every symbol each minute, and inserting
    // in that order scatters the writes over the primary key's index (measured: 1M bars of
    // 2,000 symbols into SQLite took 14.3 s as the file had them, 7.1 s sorted).
    let read = started.elapsed();
    let bars = parsed.into_sorted()?;
    let sorted = started.elapsed();
    let write = write_bars(store, &bars, options.on_conflict).await?;
    tracing::debug!(
        bars = bars.len(),
        read_ms = read.as_millis() as u64,
        sort_ms = (sorted - read).as_millis() as u64,
        write_ms = (started.elapsed() - sorted).as_millis() as u64,
        "import: files read and checked, bars sorted and checked for duplicates, written"
    );
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

/// The bars read from the files of one import, each with where it was read, so that a bar
/// given twice (in one file or across them) is refused naming both places.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The bars, file after file (see [`Parsed::bars`]), beside `at`.
    bars: Vec<Bar>,
    /// Where each bar was read: its source and line (or row).
    at: Vec<(u32, u64)>,
    /// Each file read.
    sources: Vec<Source>,
}

/// A file read into [`Parsed`].
#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// Positions are lines of text (else row indexes of a Parquet file).
    lines: bool,
    /// The file's name for the timestamp column, named by a duplicate's error.
    ts_field: String,
}

impl Source {
    /// `file:line`, or `file row N` for a Parquet file.
    fn place(&self, at: u64) -> String {
        if self.lines {
            format!("{}:{at}", self.path.display())
        } else {
            format!("{} row {at}", self.path.display())
        }
    }

    /// The error of the bar at `at` of this file, on its timestamp column.
    fn error(&self, at: u64, message: String) -> Error {
        if self.lines {
            Error::Input {
                file: self.path.clone(),
                line: at,
                field: self.ts_field.clone(),
                message,
            }
        } else {
            Error::Row {
                origin: self.path.display().to_string(),
                row: at,
                field: self.ts_field.clone(),
                message,
            }
        }
    }
}

impl Parsed {
    fn source(&mut self, path: &Path, lines: bool, ts_field: &str) -> u32 {
        self.sources.push(Source {
            path: path.to_path_buf(),
            lines,
            ts_field: ts_field.to_string(),
        });
        (self.sources.len() - 1) as u32
    }

    /// The bars read so far, file after file, each in its file's order; a large text file
    /// parsed in pieces on several threads gives each piece's bars in key order.
    pub fn bars(&self) -> &[Bar] {
        &self.bars
    }

    fn push(&mut self, bar: Bar, source: u32, at: u64) {
        self.bars.push(bar);
        self.at.push((source, at));
    }

    /// The bars in key order (symbol, timeframe, ts), as the writers store them fastest; a bar
    /// given twice is refused at its second place (the earliest such in file order), naming the
    /// first. Found by sorting instead of a set kept while parsing, which cost more than the
    /// parse of a whole-market file.
    pub fn into_sorted(self) -> Result<Vec<Bar>> {
        let Parsed { bars, at, sources } = self;
        let mut keyed: Vec<(Bar, (u32, u64))> = bars.into_iter().zip(at).collect();
        // A stable sort: the pieces of a text file arrive sorted, and it merges such runs in
        // linear time.
        keyed.sort_by(key_order);
        let same =
            |a: &Bar, b: &Bar| a.ts == b.ts && a.timeframe == b.timeframe && a.symbol == b.symbol;
        let duplicate = keyed
            .windows(2)
            .filter(|w| same(&w[0].0, &w[1].0))
            .min_by_key(|w| w[1].1);
        if let Some(w) = duplicate {
            let ((bar, (source, at)), (_, (first, first_at))) = (&w[1], &w[0]);
            let message = format!(
                "duplicate bar {} {} {} (first at {})",
                bar.symbol,
                bar.timeframe,
                crate::model::format_ts(&bar.ts),
                sources[*first as usize].place(*first_at),
            );
            return Err(sources[*source as usize].error(*at, message));
        }
        Ok(keyed.into_iter().map(|(bar, _)| bar).collect())
    }
}

/// The order bars are written in, `(symbol, timeframe, ts)`, then where each was read.
fn key_order<P: Ord>((a, a_at): &(Bar, P), (b, b_at): &(Bar, P)) -> std::cmp::Ordering {
    (a.symbol.as_str(), a.timeframe, a.ts, a_at).cmp(&(b.symbol.as_str(), b.timeframe, b.ts, b_at))
}

/// Parses one file into `parsed`, checking every row. A gzip or zstd file (told by its first
/// bytes) is decompressed first, so lines are those of the text inside. Returns the format used.
pub fn read_file(path: &Path, options: &ImportOptions, parsed: &mut Parsed) -> Result<Format> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = decompress(path, raw)?;
    let parquet = match options.format {
        Format::Parquet => true,
        Format::Auto => bytes.starts_with(b"PAR1"),
        _ => false,
    };
    if parquet {
        read_parquet(path, bytes, options, parsed)?;
        return Ok(Format::Parquet);
    }
    let text = String::from_utf8(bytes).map_err(|e| Error::Format {
        file: path.into(),
        message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })?;
    read_text(path, &text, options, parsed)
}

/// The bytes of a file, decompressed when they start with a gzip or zstd header.
fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    let kind = if raw.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        return Ok(raw);
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    let read = if kind == "gzip" {
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)
    } else {
        zstd::stream::read::Decoder::new(&raw[..]).and_then(|mut d| d.read_to_end(&mut out))
    };
    read.map_err(|e| Error::Format {
        file: path.into(),
        message: format!("{kind}: {e}"),
    })?;
    Ok(out)
}

/// Reads a Parquet file's bars through [`FrameReader`] (errors name the 0-based row).
fn read_parquet(
    path: &Path,
    bytes: Vec<u8>,
    options: &ImportOptions,
    parsed: &mut Parsed,
) -> Result<()> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let origin = path.display().to_string();
    let whole = |message: String| Error::Format {
        file: path.into(),
        message,
    };
    if !bytes.starts_with(b"PAR1") {
        return Err(whole("not a Parquet file (no PAR1 header)".into()));
    }
    let batches = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| whole(format!("not a readable Parquet file: {e}")))?;
    let mut frame = FrameReader::new(
        origin.clone(),
        FrameOptions {
            symbol: options.symbol.clone(),
            timeframe: options.timeframe,
            floats: options.floats,
            tz: options.tz,
            epoch: options.epoch,
        },
    );
    let source = parsed.source(path, false, "ts");
    let mut bars = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| whole(format!("cannot read: {e}")))?;
        let first = frame.rows();
        frame.push(&batch, &mut bars)?;
        for (k, bar) in bars.drain(..).enumerate() {
            parsed.push(bar, source, first + k as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-market text of `minutes` x 40 tickers, over a MiB, so it is parsed in pieces on
    /// machines with more than one core; row `i` is on line `i + 2`.
    fn market_lines(minutes: usize) -> Vec<String> {
        let mut lines = vec!["ticker,volume,open,close,high,low,window_start,transactions".into()];
        for m in 0..minutes {
            for t in 0..40 {
                let ts = (1_709_821_800 + m as i64 * 60) * 1_000_000_000;
                let cents = 10_000 + (m * 7 + t * 13) % 500;
                lines.push(format!(
                    "t{t:03},{v}.5,{o}.{c:02},{o}.{c:02},{h}.00,{l}.00,{ts},1",
                    v = m + t,
                    o = cents / 100,
                    c = cents % 100,
                    h = cents / 100 + 1,
                    l = cents / 100 - 1,
                ));
            }
        }
        lines
    }

    fn parse_market(lines: &[String]) -> Result<Vec<Bar>> {
        let text = lines.join("\n") + "\n";
        let options = ImportOptions {
            timeframe: Some(Timeframe::parse("1m").expect("timeframe")),
            ..ImportOptions::default()
        };
        let mut parsed = Parsed::default();
        read_text(Path::new("day.csv"), &text, &options, &mut parsed)?;
        parsed.into_sorted()
    }

    fn error_place(e: Error) -> (u64, String, String) {
        match e {
            Error::Input {
                line,
                field,
                message,
                ..
            } => (line, field, message),
            other => panic!("not a file:line error: {other}"),
        }
    }

    #[test]
    fn a_file_parsed_in_pieces_gives_every_bar_in_key_order() {
        let lines = market_lines(800);
        assert!(lines.iter().map(|l| l.len() + 1).sum::<usize>() > text::PARALLEL_MIN_BYTES);
        let bars = parse_market(&lines).expect("parse");
        assert_eq!(bars.len(), 800 * 40);
        // Every row of the text is there once, exactly, in (symbol, ts) order.
        for (k, bar) in bars.iter().enumerate() {
            let (t, m) = (k / 800, k % 800);
            let line = &lines[1 + m * 40 + t];
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(bar.symbol.as_str(), fields[0].to_ascii_uppercase());
            assert_eq!(bar.ts_micros(), (1_709_821_800 + m as i64 * 60) * 1_000_000);
            let exact = |s: &str| rust_decimal::Decimal::from_str_exact(s).expect("decimal");
            assert_eq!(bar.open, exact(fields[2]));
            assert_eq!(bar.volume, exact(fields[1]));
        }
    }

    #[test]
    fn a_file_parsed_in_pieces_names_its_first_bad_line() {
        let mut lines = market_lines(800);
        let late = lines.len() - 10; // in the last piece
        let fields: Vec<String> = lines[late].split(',').map(String::from).collect();
        lines[late] = format!(
            "{},{},1.2.3,{}",
            fields[0],
            fields[1],
            fields[3..].join(",")
        );
        let (line, field, message) = error_place(parse_market(&lines).expect_err("bad row"));
        assert_eq!(
            (line, field.as_str()),
            (late as u64 + 1, "open"),
            "{message}"
        );
        // A bad row in the first piece as well: that one is named.
        let early = 5;
        lines[early] = lines[early].replacen(",1709", ",x1709", 1);
        let (line, field, message) = error_place(parse_market(&lines).expect_err("bad row"));
        assert_eq!(
            (line, field.as_str()),
            (early as u64 + 1, "window_start"),
            "{message}"
        );
    }

    #[test]
    fn a_bar_given_twice_across_pieces_names_both_lines() {
        let mut lines = market_lines(800);
        let (first, again) = (3, lines.len() - 3);
        lines[again] = lines[first].clone();
        let (line, field, message) = error_place(parse_market(&lines).expect_err("duplicate"));
        assert_eq!((line, field.as_str()), (again as u64 + 1, "window_start"));
        assert!(
            message.ends_with(&format!("(first at day.csv:{})", first + 1)),
            "{message}"
        );
    }

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
