//! The command line of DESIGN.md §2: flags defined once with clap, each command a thin call
//! into the library.

use std::io::Write;
use std::time::Instant;

use crate::cache::{AsOf, Cache};
use crate::config::Config;
use crate::copy::{compare, copy_table};
use crate::daemon;
use crate::db::{BarFilter, Store};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, generate_into};
use crate::import::{ImportOptions, import_files};
use crate::output;
use crate::quickstart;
use crate::read::{BarsRequest, Reader};
use crate::sql::{Flow, Shell, ShellOptions, repl};
use crate::sync::{Syncer, status, verify};

mod args;

pub use args::*;

/// How long a command waits at exit for its database connections to close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a parsed command line, writing results to `out`; returns the exit status.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<u8> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "quiver", out);
        return Ok(0);
    }
    let config = cli.config()?;
    // The daemon watches its stop signals from the start: a SIGTERM while it connects still
    // stops it cleanly (the default action would kill it).
    let shutdown = match cli.command {
        Command::Sync { watch: true, .. } => Some(daemon::shutdown_signal()?),
        _ => None,
    };
    // Reads of the cache never touch the database: they work where only the cache is; the
    // shell connects when a query first reads live.market_data. Only `migrate` and the
    // quickstart create a database; every other command needs one that is migrated.
    let store = match cli.command {
        Command::Bars(_)
        | Command::Latest { .. }
        | Command::Sql(_)
        | Command::Series { .. }
        | Command::Completions { .. } => None,
        Command::Quickstart | Command::Migrate { .. } => {
            Some(Store::connect(&config.database).await?)
        }
        _ => Some(Store::connect_migrated(&config.database).await?),
    };
    let result = dispatch(cli.command, &config, store.clone(), shutdown, out).await;
    // Closing the pool checkpoints SQLite's write-ahead log into the database file. Bounded:
    // a connection held by an abandoned task must not keep the process from exiting.
    if let Some(store) = store
        && tokio::time::timeout(CLOSE_GRACE, store.close())
            .await
            .is_err()
    {
        tracing::warn!("a database connection was still in use at exit");
    }
    result
}

/// Runs one command on its database connection (`None` for the commands that read only the
/// cache).
async fn dispatch(
    command: Command,
    config: &Config,
    store: Option<Store>,
    shutdown: Option<impl std::future::Future<Output = ()>>,
    out: &mut dyn Write,
) -> Result<u8> {
    let store = || {
        store
            .clone()
            .ok_or_else(|| Error::internal("this command needs the database"))
    };
    match command {
        Command::Quickstart => quickstart::run(&store()?, config, out).await.map(|()| 0),
        Command::Migrate { revert } => run_migrate(&store()?, revert, out).await,
        Command::Import(args) => run_import(&store()?, args, out).await,
        Command::Delete(args) => run_delete(&store()?, args, out).await,
        Command::Generate(args) => run_generate(&store()?, args, out).await,
        Command::Copy(args) => run_copy(&store()?, config, &args, out).await,
        Command::Sync { full, metrics, .. } => {
            run_sync(store()?, config, shutdown, full, metrics, out).await
        }
        Command::Status { format, max_lag } => {
            run_status(&store()?, config, format, max_lag, out).await
        }
        Command::Verify => run_verify(&store()?, config, out).await,
        Command::Compact => {
            let mut syncer = Syncer::new(store()?, &config.cache, config.database.schema.clone())?;
            line(out, syncer.compact().await?.to_string())
        }
        Command::Vacuum => run_vacuum(store()?, config, out).await,
        Command::Bars(args) => run_bars(config, args, out).await,
        Command::Latest {
            symbol,
            timeframe,
            format,
        } => {
            let bars = Reader::open(config)?.latest(&symbol, timeframe).await?;
            line(out, output::bars(&bars, format.into())?)
        }
        Command::Sql(args) => run_sql(config, &args, out).await,
        Command::Series { format } => {
            let series = Reader::open(config)?.series(AsOf::Latest).await?;
            line(out, output::series(&series, format.into())?)
        }
        Command::Completions { .. } => Ok(0),
    }
}

/// Writes a line to stderr, ignoring a closed stderr (`eprintln!` would panic).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
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
        skip_null_rows: args.skip_null_rows,
        on_conflict: args.on_conflict.into(),
    };
    let report = import_files(store, &args.files, &options).await?;
    for f in &report.files {
        let skipped = match f.skipped {
            0 => String::new(),
            n => format!(", {n} rows without prices skipped"),
        };
        line(
            out,
            format!(
                "{}: {} bars ({}{skipped})",
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
        symbol: Some(args.symbol.clone()),
        timeframe: args.timeframe,
        start,
        end,
    };
    let counts = store.count_bars(&filter).await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        // A typo in a symbol should not look like a successful delete.
        let timeframe = args
            .timeframe
            .map(|tf| format!(" {tf}"))
            .unwrap_or_default();
        let range = match (&args.start, &args.end) {
            (None, None) => String::new(),
            (a, b) => format!(
                " from {} to {}",
                a.as_deref().unwrap_or("the first"),
                b.as_deref().unwrap_or("the last")
            ),
        };
        return Err(Error::invalid(format!(
            "nothing to delete: the database holds no{timeframe} bars of {}{range}",
            args.symbol
        )));
    }
    let each: Vec<String> = counts.iter().map(|(tf, n)| format!("{n} {tf}")).collect();
    if args.dry_run {
        return line(
            out,
            format!(
                "would delete {total} bars ({}); nothing deleted (--dry-run)",
                each.join(", ")
            ),
        );
    }
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
        daemon::run(&mut syncer, &config.sync, shutdown, &shared).await?;
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
    note(&format!(
        "quiver: {behind} (--max-lag {})",
        humantime::format_duration(limit)
    ));
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
    let comparison = compare(source, &target).await;
    // Closed before the process ends, so a SQLite target is whole on its own (checkpointed).
    target.close().await;
    let comparison = comparison?;
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
        expanded: false,
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
            Err(e) if e.is_broken_pipe() => return Err(e),
            Err(e) => {
                out.flush().map_err(|e| Error::io("<stdout>", e))?;
                note(&format!("quiver: {}", repl::script_error(e)));
                return Ok(1);
            }
        }
    }
    Ok(0)
}
