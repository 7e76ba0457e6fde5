//! The flags and commands of DESIGN.md §2 as clap types, the library's enums mirrored as
//! command-line choices, and the parsing of the values clap does not know.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::db::OnConflict;
use crate::error::Result;
use crate::import::Format;
use crate::model::{EpochUnit, Symbol, Timeframe, parse_time_arg};
use crate::output::{BarsFormat, SqlFormat};

/// The `--help` heading of the options every command takes, apart from the command's own.
const GLOBAL: &str = "Global options";

/// Keep an SQL `market_data` table mirrored as a partitioned Parquet cache.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default ./config.toml; built-in defaults if absent).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Database URL, overriding the configuration and QUIVER_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub database_url: Option<String>,
    /// Cache folder, overriding the configuration and QUIVER_CACHE_DIR.
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub cache_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    /// Log lines as text or as one JSON object each (for a log collector).
    #[arg(long, global = true, value_enum, env = "QUIVER_LOG_FORMAT", default_value_t = LogFormat::Text, help_heading = GLOBAL)]
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
    /// List the cache's series: symbol, timeframe, first and last bar, and the number of bars.
    Series {
        /// Output format.
        #[arg(long, value_enum, default_value_t = BarsFormatArg::Table)]
        format: BarsFormatArg,
    },
    /// Print a shell completion script on stdout, e.g. `quiver completions bash >
    /// ~/.local/share/bash-completion/completions/quiver`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

pub(super) fn parse_max_lag(text: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `quiver import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import; a folder stands for the files in it, in name order (one import).
    #[arg(required = true, value_name = "FILE|DIR")]
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
    /// Skip rows whose prices and volume are all `null` or empty (Yahoo's downloads hold
    /// them for days without data) instead of refusing the file; the report counts them.
    #[arg(long)]
    pub skip_null_rows: bool,
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
    /// Count the bars that would be deleted, per timeframe, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
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

pub(super) fn parse_symbol(s: &str) -> Result<Symbol, String> {
    Symbol::parse(s)
}

pub(super) fn parse_timeframe(s: &str) -> Result<Timeframe, String> {
    Timeframe::parse(s)
}

pub(super) fn parse_tz(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {s:?} (use an IANA name such as America/New_York)"))
}

/// An optional inclusive bound of a time range.
pub(super) type Bound = Option<DateTime<Utc>>;

/// `--start` and `--end` as instants: a date alone as the end covers that whole day.
pub(super) fn time_range(start: Option<&str>, end: Option<&str>) -> Result<(Bound, Bound)> {
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
