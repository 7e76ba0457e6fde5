//! The command line of DESIGN.md §2: flags defined once with clap, each command a thin call
//! into the library.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};

use crate::cache::{AsOf, Cache};
use crate::config::Config;
use crate::copy::{compare, copy_table};
use crate::daemon;
use crate::db::{BarFilter, OnConflict, Store};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, generate_into};
use crate::import::{Format, ImportOptions, import_files};
use crate::model::{EpochUnit, Symbol, Timeframe, parse_time_arg};
use crate::output::{self, BarsFormat, SqlFormat};
use crate::quickstart;
use crate::read::{BarsRequest, Reader};
use crate::sql::{Flow, Shell, ShellOptions, repl};
use crate::sync::{Syncer, status, verify};

/// Keep an SQL `market_data` table mirrored as a partitioned Parquet cache.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default ./config.toml; built-in defaults if absent).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL, overriding the configuration and QUIVER_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Cache folder, overriding the configuration and QUIVER_CACHE_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log lines as text or as one JSON object each (for a log collector).
    #[arg(long, global = true, value_enum, env = "QUIVER_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// End to end on the embedded default: migrate, import the bundled samples, show them.
    Quickstart,
    /// Apply pending migrations (idempotent), or revert the last one.
    Migrate {
        /// Undo the most recently applied migration.
        #[arg(long)]
        revert: bool,
    },
    /// Import bar files, all-or-nothing.
    Import(ImportArgs),
    /// Delete bars of a symbol, optionally of one timeframe and within a range.
    Delete(DeleteArgs),
    /// Write deterministic synthetic bars.
    Generate(GenerateArgs),
    /// Copy market_data into another database (migrated first) in one transaction, then
    /// compare both sides series by series; exit 1 on a difference.
    Copy(CopyArgs),
    /// Bring the Parquet cache up to date: one pass, or the daemon with --watch.
    Sync {
        /// Keep running, syncing on every change (stop with Ctrl-C or SIGTERM).
        #[arg(long)]
        watch: bool,
        /// Rebuild the cache from scratch.
        #[arg(long)]
        full: bool,
        /// With --watch: serve Prometheus metrics at http://ADDR/metrics and a health check
        /// at /healthz (e.g. 127.0.0.1:9187).
        #[arg(long, value_name = "ADDR", requires = "watch")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Show the cache's state and how far behind the database it is.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
        /// Exit 1 (a failed check, as `verify`) when the cache is further behind the table
        /// than this (`30s`, `5m`), or has no version: for cron and supervisors.
        #[arg(long, value_name = "DURATION", value_parser = parse_max_lag)]
        max_lag: Option<std::time::Duration>,
    },
    /// Compare the cache with the table, partition by partition; exit 1 on a difference.
    Verify,
    /// Delete the files and log entries that no version younger than `cache.retention` needs
    /// (the daemon does this by itself once an hour).
    Vacuum,
    /// Merge the files of every partition that has more than one (the daemon compacts by
    /// itself past `cache.compact_files`).
    Compact,
    /// Print bars of one series from the cache, after an exact warmup.
    Bars(BarsArgs),
    /// SQL over the cache (`market_data`) and the database (`live.market_data`): the
    /// interactive shell, or the statements of -c, -f or stdin.
    Sql(SqlArgs),
    /// Print the latest bar of one series from the cache.
    Latest {
        /// Instrument.
        #[arg(value_parser = parse_symbol)]
        symbol: Symbol,
        /// Bar length.
        #[arg(long, value_parser = parse_timeframe)]
        timeframe: Timeframe,
        /// Output format.
        #[arg(long, value_enum, default_value_t = BarsFormatArg::Table)]
        format: BarsFormatArg,
    },
}

/// `quiver bars`
#[derive(Debug, Args)]
pub struct BarsArgs {
    /// Instrument.
    #[arg(value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// Bar length.
    #[arg(long, value_parser = parse_timeframe)]
    pub timeframe: Timeframe,
    /// First bar of the range (RFC 3339 or date), inclusive.
    #[arg(long)]
    pub start: Option<String>,
    /// Last bar of the range (RFC 3339, or a date meaning the whole day), inclusive.
    #[arg(long)]
    pub end: Option<String>,
    /// Bars printed before the range: exactly N, fewer only where history is shorter.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// At most N bars of the range.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Read an older version of the cache: a version number (the Delta table's own, as
    /// `quiver status` lists them) or a time (RFC 3339 or a date).
    #[arg(long, value_name = "VERSION|TIME")]
    pub as_of: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BarsFormatArg::Table)]
    pub format: BarsFormatArg,
}

/// `quiver sql`
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Run these statements (or a meta-command such as \d); repeatable, in order with -f.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub commands: Vec<String>,
    /// Run the statements of FILE; repeatable, in order with -c.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormatArg::Table)]
    pub format: SqlFormatArg,
    /// Rows a table shows at most; the total is printed below (0: all).
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub maxrows: usize,
    /// -c and -f in command-line order (filled by [`Cli::parse_ordered`]; when empty, every
    /// -c runs before every -f).
    #[arg(skip)]
    pub order: Vec<Script>,
}

/// One -c or -f of `quiver sql`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// Statements given with -c.
    Command(String),
    /// A file given with -f.
    File(PathBuf),
}

impl SqlArgs {
    /// The scripts to run, in command-line order when known.
    pub fn scripts(&self) -> Vec<Script> {
        if !self.order.is_empty() {
            return self.order.clone();
        }
        let commands = self.commands.iter().cloned().map(Script::Command);
        commands
            .chain(self.files.iter().cloned().map(Script::File))
            .collect()
    }
}

/// Output of `quiver status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// A table for people.
    Table,
    /// One JSON object.
    Json,
}

fn parse_max_lag(text: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `quiver import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Symbol of the bars (required unless a csv file has a symbol column).
    #[arg(long, value_parser = parse_symbol)]
    pub symbol: Option<Symbol>,
    /// Timeframe of the bars, e.g. 1m, 1d (required unless a csv file has a timeframe column).
    #[arg(long, value_parser = parse_timeframe)]
    pub timeframe: Option<Timeframe>,
    /// File layout.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Time zone of naive timestamps, e.g. America/New_York.
    #[arg(long, default_value = "UTC", value_parser = parse_tz)]
    pub tz: Tz,
    /// Unit of integer (epoch) timestamps such as `window_start`; auto tells it by their size.
    #[arg(long, value_enum, default_value_t = EpochArg::Auto)]
    pub epoch_unit: EpochArg,
    /// Accept binary float prices and volumes in Parquet files, rounded to 8 decimals (a float
    /// is not a decimal: without this flag such a file is refused).
    #[arg(long)]
    pub round_floats: bool,
    /// What to do when a bar already exists.
    #[arg(long, value_enum, default_value_t = OnConflictArg::Error)]
    pub on_conflict: OnConflictArg,
}

/// `--log-format`
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T09:30:00Z  INFO quiver::sync: published version=…`, colored on a terminal.
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":"published","version":…},…}`.
    Json,
}

/// A command-line choice standing for a library enum: clap's derive stays in the CLI, the
/// library's types stay free of it. Each variant's doc comment is its `--help` text.
macro_rules! choice {
    ($(#[$meta:meta])* $arg:ident => $lib:ty { $($(#[$vmeta:meta])* $v:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
        pub enum $arg { $($(#[$vmeta])* $v),* }
        impl From<$arg> for $lib {
            fn from(a: $arg) -> $lib {
                match a { $($arg::$v => <$lib>::$v),* }
            }
        }
    };
}

choice!(
    /// `--on-conflict`
    OnConflictArg => OnConflict {
        /// Refuse the whole write; nothing is stored.
        Error,
        /// Keep the stored bar, drop the new one.
        Skip,
        /// Overwrite the stored bar with the new one.
        Replace,
    }
);

choice!(
    /// `quiver import --format`
    FormatArg => Format {
        /// Sniff the format from the first line.
        Auto,
        /// `Date,Open,High,Low,Close,Adj Close,Volume` (Adj Close optional and ignored).
        Yahoo,
        /// `Date,Time,Open,High,Low,Close,Volume,OpenInterest`.
        Backtrader,
        /// Binance kline rows without header: open time in epoch ms (or µs), OHLCV, ...
        Binance,
        /// A header naming the time, OHLCV and optionally symbol and timeframe.
        Csv,
        /// A Parquet file with the same columns.
        Parquet,
    }
);

choice!(
    /// `quiver bars --format`, `quiver latest --format`
    BarsFormatArg => BarsFormat {
        /// A table.
        Table,
        /// CSV with a header.
        Csv,
        /// A JSON array of objects (decimals as strings, exact).
        Json,
    }
);

choice!(
    /// `quiver sql --format`
    SqlFormatArg => SqlFormat {
        /// A table, cut at `--maxrows`, with the row count below it (psql, datafusion-cli).
        Table,
        /// CSV with a header, every row.
        Csv,
        /// One JSON array of objects, every row.
        Json,
        /// One JSON object per line, every row.
        Ndjson,
    }
);

/// `--epoch-unit`
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EpochArg {
    /// Below 10^11 seconds, below 10^14 milliseconds, below 10^17 microseconds, else nanoseconds.
    Auto,
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl From<EpochArg> for EpochUnit {
    fn from(a: EpochArg) -> EpochUnit {
        match a {
            EpochArg::Auto => EpochUnit::Auto,
            EpochArg::S => EpochUnit::Seconds,
            EpochArg::Ms => EpochUnit::Millis,
            EpochArg::Us => EpochUnit::Micros,
            EpochArg::Ns => EpochUnit::Nanos,
        }
    }
}

/// `quiver copy`
#[derive(Args)]
pub struct CopyArgs {
    /// The database to copy into: sqlite://path or postgres://user@host:port/db.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// PostgreSQL only: the target's schema (created by its migration).
    #[arg(long, value_name = "SCHEMA")]
    pub to_schema: Option<String>,
    /// What to do with bars the target already holds.
    #[arg(long, value_enum, default_value_t = OnConflictArg::Error)]
    pub on_conflict: OnConflictArg,
}

impl std::fmt::Debug for CopyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyArgs")
            .field("to", &crate::config::redact_url(&self.to))
            .field("to_schema", &self.to_schema)
            .field("on_conflict", &self.on_conflict)
            .finish()
    }
}

/// `quiver delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Symbol whose bars are deleted.
    #[arg(long, value_parser = parse_symbol)]
    pub symbol: Symbol,
    /// Only this timeframe.
    #[arg(long, value_parser = parse_timeframe)]
    pub timeframe: Option<Timeframe>,
    /// First bar deleted (RFC 3339 or date), inclusive.
    #[arg(long)]
    pub start: Option<String>,
    /// Last bar deleted (RFC 3339, or a date meaning the whole day), inclusive.
    #[arg(long)]
    pub end: Option<String>,
}

/// `quiver generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of symbols (SYM001, SYM002, ...).
    #[arg(long)]
    pub symbols: usize,
    /// Number of trading days (weekdays from 2024-01-01).
    #[arg(long)]
    pub days: usize,
    /// Bar length: s, m or h within 14:30-21:00 UTC, or 1d.
    #[arg(long, value_parser = parse_timeframe)]
    pub timeframe: Timeframe,
    /// Random seed; the same seed gives the same bars.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// What to do when a bar already exists.
    #[arg(long, value_enum, default_value_t = OnConflictArg::Error)]
    pub on_conflict: OnConflictArg,
}

fn parse_symbol(s: &str) -> Result<Symbol, String> {
    Symbol::parse(s)
}

fn parse_timeframe(s: &str) -> Result<Timeframe, String> {
    Timeframe::parse(s)
}

fn parse_tz(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {s:?} (use an IANA name such as America/New_York)"))
}

/// An optional inclusive bound of a time range.
type Bound = Option<DateTime<Utc>>;

/// `--start` and `--end` as instants: a date alone as the end covers that whole day.
fn time_range(start: Option<&str>, end: Option<&str>) -> Result<(Bound, Bound)> {
    Ok((
        start.map(|t| parse_time_arg(t, false)).transpose()?,
        end.map(|t| parse_time_arg(t, true)).transpose()?,
    ))
}

impl Cli {
    /// Parses the process's arguments, keeping the order of `quiver sql`'s -c and -f (clap's
    /// derive gives each its own list); exits with usage on bad flags, as `Cli::parse` does.
    pub fn parse_ordered() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let (Command::Sql(args), Some(("sql", m))) = (&mut cli.command, matches.subcommand()) {
            let mut order: Vec<(usize, Script)> = Vec::new();
            if let Some(indices) = m.indices_of("commands") {
                order.extend(indices.zip(args.commands.iter().cloned().map(Script::Command)));
            }
            if let Some(indices) = m.indices_of("files") {
                order.extend(indices.zip(args.files.iter().cloned().map(Script::File)));
            }
            order.sort_by_key(|(i, _)| *i);
            args.order = order.into_iter().map(|(_, s)| s).collect();
        }
        cli
    }

    /// The configuration: file, then environment, then this command line's flags.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database.url = url.clone();
        }
        if let Some(dir) = &self.cache_dir {
            config.cache.dir = dir.clone();
        }
        Ok(config)
    }
}

/// Runs a parsed command line, writing results to `out`; returns the exit status.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<u8> {
    let config = cli.config()?;
    // The daemon watches its stop signals from the start: a SIGTERM while it connects still
    // stops it cleanly (the default action would kill it).
    let shutdown = match cli.command {
        Command::Sync { watch: true, .. } => Some(daemon::shutdown_signal()?),
        _ => None,
    };
    // Reads of the cache never touch the database: they work where only the cache is; the
    // shell connects when a query first reads live.market_data.
    let store = match cli.command {
        Command::Bars(_) | Command::Latest { .. } | Command::Sql(_) => None,
        _ => Some(Store::connect(&config.database).await?),
    };
    let store = || {
        store
            .clone()
            .ok_or_else(|| Error::internal("this command needs the database"))
    };
    match cli.command {
        Command::Quickstart => quickstart::run(&store()?, &config, out).await.map(|()| 0),
        Command::Migrate { revert } => run_migrate(&store()?, revert, out).await,
        Command::Import(args) => run_import(&store()?, args, out).await,
        Command::Delete(args) => run_delete(&store()?, args, out).await,
        Command::Generate(args) => run_generate(&store()?, args, out).await,
        Command::Copy(args) => run_copy(&store()?, &config, &args, out).await,
        Command::Sync { full, metrics, .. } => {
            run_sync(store()?, &config, shutdown, full, metrics, out).await
        }
        Command::Status { format, max_lag } => {
            run_status(&store()?, &config, format, max_lag, out).await
        }
        Command::Verify => run_verify(&store()?, &config, out).await,
        Command::Compact => {
            let mut syncer = Syncer::new(store()?, &config.cache, config.database.schema.clone())?;
            line(out, syncer.compact().await?.to_string())
        }
        Command::Vacuum => run_vacuum(store()?, &config, out).await,
        Command::Bars(args) => run_bars(&config, args, out).await,
        Command::Latest {
            symbol,
            timeframe,
            format,
        } => {
            let bars = Reader::open(&config)?.latest(&symbol, timeframe).await?;
            line(out, output::bars(&bars, format.into())?)
        }
        Command::Sql(args) => run_sql(&config, &args, out).await,
    }
}

/// Writes one line of a command's result; a command that got this far succeeded (0).
fn line(out: &mut dyn Write, text: String) -> Result<u8> {
    writeln!(out, "{text}").map_err(|e| Error::io("<stdout>", e))?;
    Ok(0)
}

/// `quiver migrate [--revert]`
async fn run_migrate(store: &Store, revert: bool, out: &mut dyn Write) -> Result<u8> {
    if revert {
        return match store.revert().await? {
            Some(v) => line(out, format!("reverted migration {v}")),
            None => line(out, "no migration to revert".into()),
        };
    }
    let applied = store.migrate().await?;
    if applied.is_empty() {
        line(out, "database is up to date".into())?;
    }
    for v in applied {
        line(out, format!("applied migration {v}"))?;
    }
    Ok(0)
}

/// `quiver import`
async fn run_import(store: &Store, args: ImportArgs, out: &mut dyn Write) -> Result<u8> {
    let started = Instant::now();
    let options = ImportOptions {
        symbol: args.symbol,
        timeframe: args.timeframe,
        format: args.format.into(),
        tz: args.tz,
        epoch: args.epoch_unit.into(),
        floats: args.round_floats,
        on_conflict: args.on_conflict.into(),
    };
    let report = import_files(store, &args.files, &options).await?;
    for f in &report.files {
        line(
            out,
            format!(
                "{}: {} bars ({})",
                f.path.display(),
                f.bars,
                f.format.name()
            ),
        )?;
    }
    line(
        out,
        format!(
            "imported {} bars, {} unchanged, in {:.2?}",
            report.write.written,
            report.write.unchanged(),
            started.elapsed()
        ),
    )
}

/// `quiver delete`
async fn run_delete(store: &Store, args: DeleteArgs, out: &mut dyn Write) -> Result<u8> {
    let (start, end) = time_range(args.start.as_deref(), args.end.as_deref())?;
    let filter = BarFilter {
        symbol: Some(args.symbol),
        timeframe: args.timeframe,
        start,
        end,
    };
    let n = store.delete_bars(&filter).await?;
    line(out, format!("deleted {n} bars"))
}

/// `quiver generate`
async fn run_generate(store: &Store, args: GenerateArgs, out: &mut dyn Write) -> Result<u8> {
    let started = Instant::now();
    let options = GenerateOptions::new(args.symbols, args.days, args.timeframe, args.seed);
    let report = generate_into(store, &options, args.on_conflict.into()).await?;
    let secs = started.elapsed().as_secs_f64();
    line(
        out,
        format!(
            "generated {} bars ({} written) in {secs:.2} s ({:.0} bars/s)",
            report.received,
            report.written,
            report.received as f64 / secs.max(1e-9)
        ),
    )
}

/// `quiver sync [--watch] [--full]`: one pass, or (given the daemon's stop signal) the daemon.
async fn run_sync(
    store: Store,
    config: &Config,
    shutdown: Option<impl std::future::Future<Output = ()>>,
    full: bool,
    metrics: Option<std::net::SocketAddr>,
    out: &mut dyn Write,
) -> Result<u8> {
    let mut syncer = Syncer::new(store.clone(), &config.cache, config.database.schema.clone())?
        .with_progress(true);
    if shutdown.is_none() || full {
        line(out, syncer.pass(full).await?.to_string())?;
    }
    if let Some(shutdown) = shutdown {
        let shared = std::sync::Arc::new(crate::metrics::Metrics::default());
        let _endpoint = match metrics {
            Some(addr) => {
                let (bound, task) = crate::metrics::serve(addr, shared.clone(), store).await?;
                tracing::info!(
                    "metrics at http://{bound}/metrics, health at http://{bound}/healthz"
                );
                Some(AbortOnDrop(task))
            }
            None => None,
        };
        daemon::run(&mut syncer, config.sync.poll_interval, shutdown, &shared).await?;
    }
    Ok(0)
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `quiver status [--format] [--max-lag]`: 1 when the cache is further behind than allowed.
async fn run_status(
    store: &Store,
    config: &Config,
    format: StatusFormat,
    max_lag: Option<std::time::Duration>,
    out: &mut dyn Write,
) -> Result<u8> {
    let cache = Cache::new(&config.cache.dir);
    let status = status(store, &cache, &config.cache).await?;
    let text = match format {
        StatusFormat::Json => serde_json::to_string_pretty(&status)
            .map_err(|e| Error::internal(format!("status: {e}")))?,
        StatusFormat::Table => output::status_table(&status)?,
    };
    line(out, text)?;
    let Some(limit) = max_lag else {
        return Ok(0);
    };
    let behind = match status.lag_seconds {
        Some(lag) if lag <= limit.as_secs_f64() => return Ok(0),
        Some(lag) => format!("the cache is {lag:.1} s behind the table"),
        None => "the cache has no version yet".to_string(),
    };
    eprintln!(
        "quiver: {behind} (--max-lag {})",
        humantime::format_duration(limit)
    );
    Ok(1)
}

/// `quiver verify`: 1 when a partition differs.
async fn run_verify(store: &Store, config: &Config, out: &mut dyn Write) -> Result<u8> {
    let cache = Cache::new(&config.cache.dir);
    let report = verify(store, &cache).await?;
    for d in &report.differences {
        line(
            out,
            format!(
                "differs: {} (database {} rows, cache {} rows): {}",
                d.partition, d.database_rows, d.cache_rows, d.detail
            ),
        )?;
    }
    if report.differences.is_empty() {
        return line(
            out,
            format!(
                "cache equals the table: {} partitions, {} rows",
                report.partitions, report.rows
            ),
        );
    }
    line(
        out,
        format!(
            "{} of {} partitions differ",
            report.differences.len(),
            report.partitions
        ),
    )?;
    Ok(1)
}

/// `quiver vacuum`
async fn run_vacuum(store: Store, config: &Config, out: &mut dyn Write) -> Result<u8> {
    let mut syncer = Syncer::new(store, &config.cache, config.database.schema.clone())?;
    let r = syncer.vacuum().await?;
    line(
        out,
        format!(
            "vacuumed: {} files ({} bytes) of versions older than {}, {} orphaned files, \
             {} log entries",
            r.files,
            r.bytes,
            humantime::format_duration(config.cache.retention),
            r.orphans,
            r.log_entries
        ),
    )
}

/// `quiver bars`
async fn run_bars(config: &Config, args: BarsArgs, out: &mut dyn Write) -> Result<u8> {
    let (start, end) = time_range(args.start.as_deref(), args.end.as_deref())?;
    let as_of = match &args.as_of {
        Some(v) => v.parse()?,
        None => AsOf::Latest,
    };
    let request = BarsRequest {
        symbol: args.symbol,
        timeframe: args.timeframe,
        start,
        end,
        warmup: args.warmup,
        limit: args.limit,
        as_of,
    };
    let bars = Reader::open(config)?.bars(&request).await?;
    line(out, output::bars(&bars, args.format.into())?)
}

/// `quiver copy`: the copy, then the comparison; 1 when a series differs.
async fn run_copy(
    source: &Store,
    config: &Config,
    args: &CopyArgs,
    out: &mut dyn Write,
) -> Result<u8> {
    let started = Instant::now();
    let target = Store::connect(&crate::config::DatabaseConfig {
        url: args.to.clone(),
        schema: args.to_schema.clone(),
        max_connections: config.database.max_connections,
    })
    .await?;
    let report = copy_table(source, &target, args.on_conflict.into()).await?;
    line(
        out,
        format!(
            "copied {} bars to {}: {} written, {} unchanged, in {:.2?}",
            report.read,
            target.redacted_url(),
            report.write.written,
            report.write.unchanged(),
            started.elapsed()
        ),
    )?;
    let comparison = compare(source, &target).await?;
    for d in &comparison.differences {
        line(
            out,
            format!(
                "differs: {} {} (source {} rows, checksum {:016x}; target {} rows, checksum {:016x})",
                d.symbol,
                d.timeframe,
                d.source.rows,
                d.source.checksum,
                d.target.rows,
                d.target.checksum
            ),
        )?;
    }
    if comparison.differences.is_empty() {
        line(
            out,
            format!(
                "both sides equal: {} series, {} rows (counts and checksums)",
                comparison.series, comparison.rows
            ),
        )
    } else {
        line(
            out,
            format!(
                "{} of {} series differ",
                comparison.differences.len(),
                comparison.series
            ),
        )?;
        Ok(1)
    }
}

/// `quiver sql`: the scripts of -c and -f in order, else stdin when it is not a terminal,
/// else the interactive shell. A failing statement stops the run: its error goes to stderr
/// and the exit status is 1.
async fn run_sql(config: &Config, args: &SqlArgs, out: &mut dyn Write) -> Result<u8> {
    use std::io::{IsTerminal, Read};
    let options = ShellOptions {
        format: args.format.into(),
        maxrows: (args.maxrows > 0).then_some(args.maxrows),
        timing: false,
    };
    let mut shell = Shell::open(config, options)?;
    let mut scripts: Vec<(String, String)> = Vec::new();
    for script in args.scripts() {
        match script {
            Script::Command(sql) => scripts.push((sql, "-c".into())),
            Script::File(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                scripts.push((text, path.display().to_string()));
            }
        }
    }
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() {
            repl::run(&mut shell, out).await?;
            return Ok(0);
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("<stdin>", e))?;
        scripts.push((text, "<stdin>".into()));
    }
    for (text, origin) in scripts {
        match shell.run_script(&text, &origin, out).await {
            Ok(Flow::Quit) => break,
            Ok(Flow::Continue) => {}
            Err(e) => {
                out.flush().map_err(|e| Error::io("<stdout>", e))?;
                eprintln!("quiver: {}", repl::script_error(e));
                return Ok(1);
            }
        }
    }
    Ok(0)
}
