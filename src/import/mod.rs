//! Importing bar files: Yahoo, backtrader, Binance klines, CSV with a header (one symbol, or a
//! whole market with a `symbol`/`ticker` column) and Parquet, plain or gzip/zstd-compressed,
//! with format sniffing, time-zone and epoch handling and exact validation.
//!
//! Files are decompressed, parsed and checked in chunks on several threads while the bars read
//! so far are written (see [`import_files`]), and all files of one import go through a single
//! [`crate::db::BarWriter`] transaction, so an import is all-or-nothing: the first bad row stops
//! it with its file, line, field and reason, and nothing is committed.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;

use crate::db::{BarWriter, OnConflict, Store, WriteReport};
use crate::error::{Error, Result};
use crate::frame::{FrameOptions, FrameReader};
use crate::model::{Bar, EpochUnit, Symbol, Timeframe};
use crate::progress;

mod stream;
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
    /// Skip rows whose prices and volume are all `null` or empty (Yahoo's days without data)
    /// instead of refusing the file; they are counted in [`FileReport::skipped`].
    pub skip_null_rows: bool,
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
            skip_null_rows: false,
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
    /// Rows skipped for holding no prices ([`ImportOptions::skip_null_rows`]).
    pub skipped: u64,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Per file, in the order given.
    pub files: Vec<FileReport>,
    /// What the database write did.
    pub write: WriteReport,
    /// Bars written as they were read, without sorting: every chunk while each follows the one
    /// before in key order; then the rest is sorted first.
    pub written_while_reading: usize,
}

/// Bars written per batch (and progress step) once the files are read.
const WRITE_BATCH: usize = 50_000;

/// Reads, checks and writes every file in one transaction.
///
/// The files are parsed in chunks on several threads while the bars are written: a chunk whose
/// bars all come after those before it (a file in key order, as a file per symbol or a market
/// file listing ticker after ticker) is written once the next chunk is seen to follow it, while
/// later chunks are parsed. From the first chunk that does not, the rest is kept; once every
/// file is read, its sorted chunks are merged in key order on a thread of their own while the
/// merged batches are written (a market file listing every ticker each minute scatters the
/// writes over the primary key otherwise: 1M bars of 2,000 symbols into SQLite took 14.3 s in
/// file order, 7.1 s sorted). Nothing is committed unless every row of every file is good and
/// no bar is given twice.
pub async fn import_files(
    store: &Store,
    paths: &[PathBuf],
    options: &ImportOptions,
) -> Result<ImportReport> {
    let started = std::time::Instant::now();
    let paths = &expand(paths)?;
    let size = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let shown = progress::bytes(size, "importing");
    let mut items = stream::spawn(paths.to_vec(), options.clone(), shown.clone());
    let mut parsed = Parsed::default();
    let mut files: Vec<FileReport> = Vec::new();
    let mut writing = Writing::new(options.on_conflict);
    // The bars before `written` are written, in key order. A chunk is written once the next
    // one is seen to follow it (or the files end), so a file not in key order writes nothing
    // before it is sorted: a first chunk written early makes the sorted rest insert into the
    // middle of every symbol's rows (1M bars of 2,564 symbols into SQLite: 1.2 s of writing
    // instead of 0.85 s).
    let (mut written, mut in_order) = (0, true);
    while let Some(item) = items.next().await? {
        if let Some((from, follows)) = parsed.take(item, &mut files) {
            in_order &= follows;
            if in_order && from > written && writing.write(store, &parsed.bars[written..from]).await
            {
                written = from;
            }
        }
    }
    no_empty_file(&files)?;
    let all = parsed.bars.len();
    if in_order && all > written && writing.write(store, &parsed.bars[written..]).await {
        written = all;
    }
    shown.finish_and_clear();
    let read = started.elapsed();
    // The rest is merged in key order on a thread of its own while its first batches are
    // written: the merge (0.2 s for 1M bars in 50 chunks) hides behind the write.
    let (batches, mut merged) = tokio::sync::mpsc::channel::<Vec<Bar>>(4);
    let merging = tokio::task::spawn_blocking(move || {
        parsed.merge(written, |batch| batches.blocking_send(batch).is_ok())
    });
    let shown = progress::rows((all - written) as u64, "writing");
    while let Some(batch) = merged.recv().await {
        writing.write(store, &batch).await;
        shown.inc(batch.len() as u64);
    }
    // A bad row (returned above) or a bar given twice is the error to report before a failed
    // write.
    merging
        .await
        .map_err(|_| Error::internal("the import's merge stopped"))??;
    let write = writing.commit(store).await?;
    shown.finish_and_clear();
    tracing::debug!(
        bars = all,
        written_while_reading = written,
        read_ms = read.as_millis() as u64,
        rest_ms = (started.elapsed() - read).as_millis() as u64,
        "import: files read and checked (bars in key order written meanwhile), the rest merged \
         in key order, checked for duplicates and written"
    );
    Ok(ImportReport {
        files,
        write,
        written_while_reading: written,
    })
}

/// Reads and checks every file as [`import_files`] does, without writing: what each file held,
/// and every bar with where it was read.
pub async fn read_files(
    paths: &[PathBuf],
    options: &ImportOptions,
) -> Result<(Vec<FileReport>, Parsed)> {
    let shown = indicatif::ProgressBar::hidden();
    let mut items = stream::spawn(expand(paths)?, options.clone(), shown);
    let (mut files, mut parsed) = (Vec::new(), Parsed::default());
    while let Some(item) = items.next().await? {
        parsed.take(item, &mut files);
    }
    no_empty_file(&files)?;
    Ok((files, parsed))
}

/// The files to import: each path given, a folder standing for the files in it (not in its
/// subfolders, hidden ones left out) in name order.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut inside = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.path().is_file() {
                inside.push(entry.path());
            }
        }
        if inside.is_empty() {
            return Err(Error::Format {
                file: path.clone(),
                message: "the folder holds no files to import".into(),
            });
        }
        inside.sort();
        out.extend(inside);
    }
    Ok(out)
}

/// A file that held no bar (a header alone) is refused: it is more likely a failed download
/// than a series without bars.
fn no_empty_file(files: &[FileReport]) -> Result<()> {
    match files.iter().find(|f| f.bars == 0 && f.skipped == 0) {
        Some(f) => Err(Error::Format {
            file: f.path.clone(),
            message: "the file holds no bars".into(),
        }),
        None => Ok(()),
    }
}

/// An import's one write transaction, begun with its first bars; a failed write ends the
/// writing and is kept to be reported after any bad row or duplicate.
struct Writing {
    policy: OnConflict,
    writer: Option<BarWriter>,
    error: Option<Error>,
}

impl Writing {
    fn new(policy: OnConflict) -> Self {
        Writing {
            policy,
            writer: None,
            error: None,
        }
    }

    /// Writes `bars` unless a write failed before; true when they are written.
    async fn write(&mut self, store: &Store, bars: &[Bar]) -> bool {
        if self.error.is_none() && self.writer.is_none() {
            match store.writer(self.policy).await {
                Ok(writer) => self.writer = Some(writer),
                Err(e) => self.error = Some(e),
            }
        }
        let (Some(writer), None) = (&mut self.writer, &self.error) else {
            return false;
        };
        match writer.write(bars).await {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Commits what was written (an import of no bars too), or gives the failed write's error.
    async fn commit(self, store: &Store) -> Result<WriteReport> {
        match (self.writer, self.error) {
            (_, Some(e)) => Err(e),
            (Some(writer), None) => writer.commit().await,
            (None, None) => store.writer(self.policy).await?.commit().await,
        }
    }
}

/// Writes already validated bars in one transaction, with a progress bar on a terminal.
pub async fn write_bars(store: &Store, bars: &[Bar], policy: OnConflict) -> Result<WriteReport> {
    let bar = progress::rows(bars.len() as u64, "writing");
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
    /// Where each run of bars in key order starts: a chunk of a file, or a text read whole.
    runs: Vec<usize>,
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

    /// The bars read so far, file after file, in runs of key order: a text given to
    /// [`read_text`], or each chunk of a file read by [`read_files`] (about a MiB of text, or a
    /// whole Parquet file).
    pub fn bars(&self) -> &[Bar] {
        &self.bars
    }

    /// Takes the pipeline's next item: a file begins (reported in `files`), or a chunk of it
    /// comes. For a chunk, returns the index of its first bar and whether it follows every bar
    /// before it in key order.
    fn take(&mut self, item: stream::Item, files: &mut Vec<FileReport>) -> Option<(usize, bool)> {
        match item {
            stream::Item::File {
                path,
                format,
                lines,
                ts_field,
            } => {
                self.source(&path, lines, &ts_field);
                files.push(FileReport {
                    path,
                    format,
                    bars: 0,
                    skipped: 0,
                });
                None
            }
            stream::Item::Bars(chunk) => {
                let follows = chunk.increasing
                    && match (self.bars.last(), chunk.rows.first()) {
                        (Some(last), Some((first, _))) => stream::key(last) < stream::key(first),
                        _ => true,
                    };
                if let Some(file) = files.last_mut() {
                    file.bars += chunk.rows.len();
                    file.skipped += chunk.skipped;
                }
                let from = self.bars.len();
                self.runs.push(from);
                let source = self.sources.len().saturating_sub(1) as u32;
                self.bars.reserve(chunk.rows.len());
                self.at.reserve(chunk.rows.len());
                for (bar, at) in chunk.rows {
                    self.bars.push(bar);
                    self.at.push((source, at));
                }
                Some((from, follows))
            }
        }
    }

    /// The bars in key order (symbol, timeframe, ts), as the writers store them fastest; a bar
    /// given twice is refused at its second place (the earliest such in file order), naming the
    /// first. Found by merging the sorted runs instead of a set kept while parsing, which cost
    /// more than the parse of a whole-market file.
    pub fn into_sorted(self) -> Result<Vec<Bar>> {
        let mut sorted = Vec::with_capacity(self.bars.len());
        self.merge(0, |batch| {
            sorted.extend(batch);
            true
        })?;
        Ok(sorted)
    }

    /// Merges the runs into key order, checking every bar as [`Parsed::into_sorted`] does, and
    /// hands those from the `from`th on to `emit` in batches of [`WRITE_BATCH`] (the bars before
    /// it are written). Stops when `emit` says false; the error of a bar given twice comes after
    /// the last batch.
    fn merge(self, from: usize, mut emit: impl FnMut(Vec<Bar>) -> bool) -> Result<()> {
        use std::cmp::Reverse;
        /// The first bar not yet merged of one run. Equal keys come in index order, which is
        /// file order (each chunk keeps them in line order): the second of a pair is the later
        /// place.
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Head<'a> {
            key: stream::Key<'a>,
            index: usize,
            end: usize,
        }
        let Parsed {
            bars,
            at,
            sources,
            runs,
        } = self;
        if from == bars.len() {
            return Ok(()); // all written, each bar after the one before: none is there twice
        }
        let head = |index: usize, end: usize| {
            (index < end).then(|| {
                Reverse(Head {
                    key: stream::key(&bars[index]),
                    index,
                    end,
                })
            })
        };
        let ends = runs.iter().skip(1).copied().chain([bars.len()]);
        let mut heads: std::collections::BinaryHeap<_> = runs
            .iter()
            .zip(ends)
            .filter_map(|(&start, end)| head(start, end))
            .collect();
        let mut batch = Vec::with_capacity(WRITE_BATCH.min(bars.len()));
        let mut previous: Option<usize> = None;
        // The pair of the same key whose second place is the earliest.
        let mut duplicate: Option<(usize, usize)> = None;
        while let Some(Reverse(Head { key, index, end })) = heads.pop() {
            if let Some(p) = previous
                && stream::key(&bars[p]) == key
                && duplicate.is_none_or(|(_, second)| at[index] < at[second])
            {
                duplicate = Some((p, index));
            }
            previous = Some(index);
            if let Some(next) = head(index + 1, end) {
                heads.push(next);
            }
            if index >= from {
                batch.push(bars[index].clone());
                if batch.len() == WRITE_BATCH
                    && !emit(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(WRITE_BATCH),
                    ))
                {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() && !emit(batch) {
            return Ok(());
        }
        if let Some((first, second)) = duplicate {
            let (bar, (source, place), (first, first_at)) = (&bars[second], at[second], at[first]);
            let message = format!(
                "duplicate bar {} {} {} (first at {})",
                bar.symbol,
                bar.timeframe,
                crate::model::format_ts(&bar.ts),
                sources[first as usize].place(first_at),
            );
            return Err(sources[source as usize].error(place, message));
        }
        Ok(())
    }
}

/// Reads a Parquet file's bars through [`FrameReader`] (errors name the 0-based row).
fn read_parquet(path: &Path, bytes: Vec<u8>, options: &ImportOptions) -> Result<Vec<(Bar, u64)>> {
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
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| whole(format!("cannot read: {e}")))?;
        let first = frame.rows();
        frame.push(&batch, &mut bars)?;
        rows.extend(
            bars.drain(..)
                .enumerate()
                .map(|(k, bar)| (bar, first + k as u64)),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-market text of `minutes` x 40 tickers, every ticker each minute; row `i` is on
    /// line `i + 2`. 2,000 minutes are about four chunks.
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

    /// Reads `bytes` as the file `name` in `dir` through the import's pipeline.
    async fn read_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<Vec<Bar>> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write the file");
        let options = ImportOptions {
            timeframe: Some(Timeframe::parse("1m").expect("timeframe")),
            ..ImportOptions::default()
        };
        read_files(&[path], &options).await?.1.into_sorted()
    }

    /// Reads the lines as `day.csv` in `dir`, or gzip-compressed as `day.csv.gz`.
    async fn parse_market(dir: &Path, lines: &[String], gzip: bool) -> Result<Vec<Bar>> {
        let text = lines.join("\n") + "\n";
        if !gzip {
            return read_bytes(dir, "day.csv", text.as_bytes()).await;
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, text.as_bytes()).expect("compress");
        let bytes = encoder.finish().expect("compress");
        read_bytes(dir, "day.csv.gz", &bytes).await
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

    #[tokio::test]
    async fn a_file_read_in_chunks_gives_every_bar_in_key_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines = market_lines(2000);
        let size = lines.iter().map(|l| l.len() + 1).sum::<usize>();
        assert!(size > 3 * stream::CHUNK_BYTES, "{size} bytes");
        for gzip in [false, true] {
            let bars = parse_market(dir.path(), &lines, gzip).await.expect("parse");
            assert_eq!(bars.len(), 2000 * 40);
            // Every row of the text is there once, exactly, in (symbol, ts) order.
            for (k, bar) in bars.iter().enumerate() {
                let (t, m) = (k / 2000, k % 2000);
                let line = &lines[1 + m * 40 + t];
                let fields: Vec<&str> = line.split(',').collect();
                assert_eq!(bar.symbol.as_str(), fields[0].to_ascii_uppercase());
                assert_eq!(bar.ts_micros(), (1_709_821_800 + m as i64 * 60) * 1_000_000);
                let exact = |s: &str| rust_decimal::Decimal::from_str_exact(s).expect("decimal");
                assert_eq!(bar.open, exact(fields[2]));
                assert_eq!(bar.volume, exact(fields[1]));
            }
        }
    }

    #[tokio::test]
    async fn a_file_read_in_chunks_names_its_first_bad_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lines = market_lines(2000);
        let late = lines.len() - 10; // in the last chunk
        let fields: Vec<String> = lines[late].split(',').map(String::from).collect();
        lines[late] = format!(
            "{},{},1.2.3,{}",
            fields[0],
            fields[1],
            fields[3..].join(",")
        );
        for gzip in [false, true] {
            let bad = parse_market(dir.path(), &lines, gzip).await;
            let (line, field, message) = error_place(bad.expect_err("bad row"));
            assert_eq!(
                (line, field.as_str()),
                (late as u64 + 1, "open"),
                "{message}"
            );
        }
        // A bad row in the first chunk as well: that one is named.
        let mut early_too = lines.clone();
        let early = 5;
        early_too[early] = early_too[early].replacen(",1709", ",x1709", 1);
        let bad = parse_market(dir.path(), &early_too, true).await;
        let (line, field, message) = error_place(bad.expect_err("bad row"));
        assert_eq!(
            (line, field.as_str()),
            (early as u64 + 1, "window_start"),
            "{message}"
        );
        // A quoted field in the second chunk: the rest of the file is read as one chunk, its
        // lines still counted right.
        let quoted = 30_000;
        lines[quoted] = lines[quoted]
            .replacen("t", "\"t", 1)
            .replacen(',', "\",", 1);
        let size: usize = lines[..quoted].iter().map(|l| l.len() + 1).sum();
        assert!(size > stream::CHUNK_BYTES && size < 2 * stream::CHUNK_BYTES);
        let bad = parse_market(dir.path(), &lines, false).await;
        let (line, field, message) = error_place(bad.expect_err("bad row"));
        assert_eq!(
            (line, field.as_str()),
            (late as u64 + 1, "open"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_byte_that_is_not_utf8_is_named_by_its_offset_in_any_chunk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines = market_lines(2000);
        let mut bytes = (lines.join("\n") + "\n").into_bytes();
        let at = 3 * stream::CHUNK_BYTES + 17;
        bytes[at] = 0xff;
        let err = read_bytes(dir.path(), "day.csv", &bytes)
            .await
            .expect_err("not UTF-8");
        assert!(
            matches!(&err, Error::Format { message, .. } if *message == format!("not UTF-8 text (byte {at})")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_bar_given_twice_across_chunks_names_both_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lines = market_lines(2000);
        let (first, again) = (3, lines.len() - 3);
        lines[again] = lines[first].clone();
        let twice = parse_market(dir.path(), &lines, false).await;
        let (line, field, message) = error_place(twice.expect_err("duplicate"));
        assert_eq!((line, field.as_str()), (again as u64 + 1, "window_start"));
        let place = format!(
            "(first at {}:{})",
            dir.path().join("day.csv").display(),
            first + 1
        );
        assert!(message.ends_with(&place), "{message}");
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
