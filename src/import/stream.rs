//! Reading the files of one import as a pipeline: one thread reads and decompresses them and
//! cuts their text into chunks of whole lines, a few threads parse and check the chunks, and the
//! caller takes the results in file order ([`Items::next`]) while the next chunks are parsed, so
//! decompression, parsing and the caller's writing overlap.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use tokio::sync::mpsc as channel;

use super::text::FileParser;
use super::{Format, ImportOptions, read_parquet};
use crate::error::{Error, Result};
use crate::model::{Bar, Timeframe};

/// Text is cut into chunks of about this many bytes, each parsed on its own.
pub(super) const CHUNK_BYTES: usize = 1 << 20;
/// At most this many threads parse chunks.
const MAX_WORKERS: usize = 4;

/// What the pipeline gives, in file order.
#[derive(Debug)]
pub(super) enum Item {
    /// A file starts: the bars after it, up to the next `File`, are its own.
    File {
        path: PathBuf,
        format: Format,
        /// Its bars are placed by line (else by row of a Parquet file).
        lines: bool,
        /// Its name of the timestamp column.
        ts_field: String,
    },
    /// Bars of the current file, from one chunk of it.
    Bars(Chunk),
}

/// The bars of one chunk in key order, each beside the line (or row) it was read from.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) rows: Vec<(Bar, u64)>,
    /// Rows skipped as empty (`--skip-null-rows`).
    pub(super) skipped: u64,
    /// Every bar's key is greater than the one before: no bar is in the chunk twice.
    pub(super) increasing: bool,
}

impl Chunk {
    /// Sorts `rows` into key order (a chunk of a file already in that order costs a scan).
    pub(super) fn new(mut rows: Vec<(Bar, u64)>, skipped: u64) -> Chunk {
        rows.sort_unstable_by(key_order);
        let increasing = rows.windows(2).all(|w| key(&w[0].0) < key(&w[1].0));
        Chunk {
            rows,
            skipped,
            increasing,
        }
    }
}

/// A bar's key, in the order the writers store bars fastest.
pub(super) type Key<'a> = (&'a str, Timeframe, DateTime<Utc>);

/// The key of a bar.
pub(super) fn key(bar: &Bar) -> Key<'_> {
    (bar.symbol.as_str(), bar.timeframe, bar.ts)
}

/// The order of bars by key, then by where each was read.
fn key_order<P: Ord>((a, a_at): &(Bar, P), (b, b_at): &(Bar, P)) -> std::cmp::Ordering {
    (key(a), a_at).cmp(&(key(b), b_at))
}

/// A message of the pipeline: its place in file order and what it says.
type Message = (u64, Result<Option<Item>>);

/// The pipeline's results, handed out in file order.
pub(super) struct Items {
    results: channel::Receiver<Message>,
    /// Results that arrived before one of an earlier place.
    early: BTreeMap<u64, Result<Option<Item>>>,
    next: u64,
}

impl Items {
    /// The next item in file order; `None` once every file has been read. The first error in
    /// file order ends the pipeline (each chunk stops at its own first bad row).
    pub(super) async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(result) = self.early.remove(&self.next) {
                self.next += 1;
                return result;
            }
            match self.results.recv().await {
                Some((place, result)) => {
                    self.early.insert(place, result);
                }
                None => {
                    return Err(Error::internal(
                        "a thread reading the import's files stopped",
                    ));
                }
            }
        }
    }
}

/// One chunk of text to parse.
struct Job {
    place: u64,
    parser: Arc<FileParser>,
    text: String,
    /// Where its rows start in `text`.
    from: usize,
    /// The file's line of the first row.
    line: u64,
}

/// Starts reading `paths` in order with `options`; `shown` counts the bytes read from the
/// files (compressed, as they are on disk).
pub(super) fn spawn(paths: Vec<PathBuf>, options: ImportOptions, shown: ProgressBar) -> Items {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    let (results, received) = channel::channel(4 * workers);
    let (jobs, queue) = mpsc::sync_channel::<Job>(2 * workers);
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..workers {
        let (queue, results) = (queue.clone(), results.clone());
        std::thread::spawn(move || parse_jobs(&queue, &results));
    }
    std::thread::spawn(move || {
        let mut reader = FileReader {
            jobs,
            results,
            place: 0,
        };
        for path in &paths {
            if let Err(e) = reader.read(path, &options, &shown) {
                reader.send(Err(e));
                return;
            }
        }
        reader.send(Ok(None));
    });
    Items {
        results: received,
        early: BTreeMap::new(),
        next: 0,
    }
}

/// A parsing thread: takes chunks until the reader is done, each spelling of a symbol parsed
/// once across them.
fn parse_jobs(queue: &Mutex<mpsc::Receiver<Job>>, results: &channel::Sender<Message>) {
    let mut symbols = HashMap::new();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let parsed = job
            .parser
            .parse(&job.text[job.from..], job.line, &mut symbols);
        let item = parsed.map(|(bars, skipped)| Some(Item::Bars(Chunk::new(bars, skipped))));
        if results.blocking_send((job.place, item)).is_err() {
            return; // the import stopped
        }
    }
}

/// The thread reading the files: sends each chunk of text to the parsing threads, and what it
/// finds itself (a file's start, a Parquet file's bars, an error) straight to the results.
struct FileReader {
    jobs: mpsc::SyncSender<Job>,
    results: channel::Sender<Message>,
    /// The place in file order of the next message.
    place: u64,
}

/// Stops reading: the import is over (an error was sent, or nobody listens).
struct Stop;

impl FileReader {
    fn take_place(&mut self) -> u64 {
        self.place += 1;
        self.place - 1
    }

    /// Sends a result of the reader's own; false when the import no longer listens.
    fn send(&mut self, result: Result<Option<Item>>) -> bool {
        let place = self.take_place();
        self.results.blocking_send((place, result)).is_ok()
    }

    fn send_item(&mut self, item: Item) -> std::result::Result<(), Stop> {
        if self.send(Ok(Some(item))) {
            Ok(())
        } else {
            Err(Stop)
        }
    }

    fn send_job(
        &mut self,
        parser: &Arc<FileParser>,
        text: String,
        from: usize,
        line: u64,
    ) -> std::result::Result<(), Stop> {
        let job = Job {
            place: self.take_place(),
            parser: parser.clone(),
            text,
            from,
            line,
        };
        self.jobs.send(job).map_err(|_| Stop)
    }

    /// Reads one file; an error of the file is returned (and ends the import), a stop is not.
    fn read(&mut self, path: &Path, options: &ImportOptions, shown: &ProgressBar) -> Result<()> {
        match self.read_file(path, options, shown) {
            Ok(Ok(())) | Ok(Err(Stop)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read_file(
        &mut self,
        path: &Path,
        options: &ImportOptions,
        shown: &ProgressBar,
    ) -> Result<std::result::Result<(), Stop>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut input = Decoded::open(path, shown.wrap_read(file))?;
        let mut rest = Vec::new();
        let mut offset = 0u64;
        // An empty file is text without a header: refused unless its format is given.
        let first = input.block(&mut rest)?.unwrap_or_default();
        let parquet = match options.format {
            Format::Parquet => true,
            Format::Auto => first.starts_with(b"PAR1"),
            _ => false,
        };
        if parquet {
            let mut bytes = first;
            bytes.append(&mut rest);
            input.read_to_end(&mut bytes)?;
            let rows = read_parquet(path, bytes, options)?;
            if let Err(stop) = self.send_item(Item::File {
                path: path.into(),
                format: Format::Parquet,
                lines: false,
                ts_field: "ts".into(),
            }) {
                return Ok(Err(stop));
            }
            return Ok(self.send_item(Item::Bars(Chunk::new(rows, 0))));
        }
        let text = utf8(path, first, offset)?;
        let (format, body) = FileParser::start(path, &text, options)?;
        let ts_field = body
            .as_ref()
            .map_or_else(String::new, |b| b.parser.ts_field().to_string());
        if let Err(stop) = self.send_item(Item::File {
            path: path.into(),
            format,
            lines: true,
            ts_field,
        }) {
            return Ok(Err(stop));
        }
        let Some(body) = body else { return Ok(Ok(())) };
        let parser = Arc::new(body.parser);
        let (mut text, mut from, mut line) = (text, body.body_at, body.body_line);
        loop {
            // A quote may open a field that holds a line end, so chunks can no longer be cut at
            // line ends: the rest of the file is one chunk.
            if memchr::memchr(b'"', &text.as_bytes()[from..]).is_some() {
                let at = offset + text.len() as u64;
                let mut more = std::mem::take(&mut rest);
                input.read_to_end(&mut more)?;
                text.push_str(&utf8(path, more, at)?);
                return Ok(self.send_job(&parser, text, from, line));
            }
            offset += text.len() as u64;
            let lines = memchr::memchr_iter(b'\n', &text.as_bytes()[from..]).count() as u64;
            if let Err(stop) = self.send_job(&parser, text, from, line) {
                return Ok(Err(stop));
            }
            line += lines;
            from = 0;
            text = match input.block(&mut rest)? {
                Some(block) => utf8(path, block, offset)?,
                None => return Ok(Ok(())),
            };
        }
    }
}

/// `bytes` as text; `offset` is the file's (decompressed) byte they start at.
fn utf8(path: &Path, bytes: Vec<u8>, offset: u64) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Format {
        file: path.into(),
        message: format!(
            "not UTF-8 text (byte {})",
            offset + e.utf8_error().valid_up_to() as u64
        ),
    })
}

/// A file's bytes, decompressed on the fly when they start with a gzip or zstd header.
struct Decoded<'p> {
    path: &'p Path,
    /// `gzip` or `zstd`, named by a decompression error.
    kind: Option<&'static str>,
    input: Box<dyn Read + Send>,
}

impl<'p> Decoded<'p> {
    fn open(path: &'p Path, file: impl Read + Send + 'static) -> Result<Self> {
        let mut file = std::io::BufReader::with_capacity(256 * 1024, file);
        let head = file.fill_buf().map_err(|e| Error::io(path, e))?;
        let (kind, input): (_, Box<dyn Read + Send>) = if head.starts_with(&[0x1f, 0x8b]) {
            (
                Some("gzip"),
                Box::new(flate2::bufread::MultiGzDecoder::new(file)),
            )
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let decoder = zstd::stream::read::Decoder::with_buffer(file);
            let decoder = decoder.map_err(|e| Error::io(path, e))?;
            (Some("zstd"), Box::new(decoder))
        } else {
            (None, Box::new(file))
        };
        Ok(Decoded { path, kind, input })
    }

    fn error(&self, e: std::io::Error) -> Error {
        match self.kind {
            Some(kind) => Error::Format {
                file: self.path.into(),
                message: format!("{kind}: {e}"),
            },
            None => Error::io(self.path, e),
        }
    }

    /// The next block of about [`CHUNK_BYTES`] that ends at a line end (or the file's end),
    /// starting with `rest`, the part of the last read after the previous block's last line end.
    fn block(&mut self, rest: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
        let mut block = std::mem::take(rest);
        let mut want = CHUNK_BYTES;
        loop {
            if block.len() < want {
                let missing = want - block.len();
                block.reserve(missing);
                let read = (&mut self.input)
                    .take(missing as u64)
                    .read_to_end(&mut block)
                    .map_err(|e| self.error(e))?;
                if read < missing {
                    return Ok((!block.is_empty()).then_some(block));
                }
            }
            if let Some(end) = memchr::memrchr(b'\n', &block) {
                rest.extend_from_slice(&block[end + 1..]);
                block.truncate(end + 1);
                return Ok(Some(block));
            }
            want += CHUNK_BYTES; // a line longer than a block
        }
    }

    fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.input.read_to_end(out).map_err(|e| self.error(e))?;
        Ok(())
    }
}
