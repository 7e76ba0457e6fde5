//! `quiver quickstart`: the whole product end to end on the configured (by default embedded)
//! database, with real market data bundled into the binary so it works from any directory.

use std::io::Write;
use std::path::Path;

use chrono_tz::Tz;

use crate::cache::Cache;
use crate::config::Config;
use crate::db::{OnConflict, Store};
use crate::error::{Error, Result};
use crate::import::{Format, ImportOptions, Parsed, read_text, write_bars};
use crate::model::parse_time_arg;
use crate::model::{Symbol, Timeframe};
use crate::output::{self, BarsFormat};
use crate::read::{BarsRequest, Reader};
use crate::sql::{Shell, ShellOptions};
use crate::sync::{Syncer, status};

/// A bundled sample: real bars from the backtrader project's example data (see data/README.md).
pub struct Sample {
    /// File name under `data/samples/`.
    pub file: &'static str,
    /// Its contents.
    pub text: &'static str,
    /// Symbol given to its bars.
    pub symbol: &'static str,
    /// Their timeframe.
    pub timeframe: &'static str,
    /// Zone of its naive timestamps.
    pub tz: Tz,
}

/// The samples `quickstart` imports.
pub const SAMPLES: &[Sample] = &[
    Sample {
        file: "nvda-1999-2014.txt",
        text: include_str!("../data/samples/nvda-1999-2014.txt"),
        symbol: "NVDA",
        timeframe: "1d",
        tz: Tz::UTC,
    },
    Sample {
        file: "2006-min-005.txt",
        text: include_str!("../data/samples/2006-min-005.txt"),
        symbol: "^STOXX50E",
        timeframe: "5m",
        tz: Tz::Europe__Berlin,
    },
    Sample {
        file: "2006-01-02-volume-min-001.txt",
        text: include_str!("../data/samples/2006-01-02-volume-min-001.txt"),
        symbol: "FESX",
        timeframe: "1m",
        tz: Tz::Europe__Berlin,
    },
];

/// Migrates, imports the samples (skipping bars already there, so it can run again), prints
/// what the table holds, syncs the cache and prints its status.
pub async fn run(store: &Store, config: &Config, out: &mut dyn Write) -> Result<()> {
    let io = |e| Error::io("<stdout>", e);
    writeln!(out, "database: {}", config.redacted_url()).map_err(io)?;
    let applied = store.migrate().await?;
    writeln!(
        out,
        "migrations: {} applied now, {} in total",
        applied.len(),
        store.applied_migrations().await?.len()
    )
    .map_err(io)?;
    let mut parsed = Parsed::default();
    for sample in SAMPLES {
        let options = ImportOptions {
            symbol: Some(Symbol::parse(sample.symbol).map_err(Error::InvalidArgument)?),
            timeframe: Some(Timeframe::parse(sample.timeframe).map_err(Error::InvalidArgument)?),
            format: Format::Auto,
            tz: sample.tz,
            on_conflict: OnConflict::Skip,
            ..ImportOptions::default()
        };
        let path = Path::new("data/samples").join(sample.file);
        let before = parsed.bars().len();
        let format = read_text(&path, sample.text, &options, &mut parsed)?;
        // The command that imports the same bars, time zone included: a user who repeats
        // it with their own file gets what the quickstart got.
        let symbol = if sample.symbol.chars().all(|c| c.is_ascii_alphanumeric()) {
            sample.symbol.to_string()
        } else {
            format!("'{}'", sample.symbol)
        };
        writeln!(
            out,
            "quiver import {} --symbol {symbol} --timeframe {} --tz {}  # {} bars ({})",
            path.display(),
            sample.timeframe,
            sample.tz,
            parsed.bars().len() - before,
            format.name(),
        )
        .map_err(io)?;
    }
    let report = write_bars(store, &parsed.into_sorted()?, OnConflict::Skip).await?;
    writeln!(
        out,
        "imported {} new bars ({} already present)",
        report.written,
        report.unchanged()
    )
    .map_err(io)?;
    writeln!(out, "market_data now holds:").map_err(io)?;
    writeln!(
        out,
        "{}",
        output::series(&store.summary().await?, BarsFormat::Table)?
    )
    .map_err(io)?;
    let cache = Cache::new(&config.cache.dir);
    let mut syncer = Syncer::new(store.clone(), &config.cache, config.database.schema.clone())?
        .with_progress(true);
    let report = syncer.pass(false).await?;
    writeln!(out, "sync: {report}").map_err(io)?;
    drop(syncer);
    writeln!(out, "cache status:").map_err(io)?;
    writeln!(
        out,
        "{}",
        output::status_table(&status(store, &cache, &config.cache).await?)?
    )
    .map_err(io)?;
    // What a backtest asks for: bars from a point in time, after exact warmup bars.
    let request = BarsRequest {
        start: Some(parse_time_arg("2006-01-03T08:00:00Z", false)?),
        end: None,
        warmup: 2,
        limit: Some(3),
        ..BarsRequest::new(
            Symbol::parse("FESX").map_err(Error::InvalidArgument)?,
            Timeframe::parse("1m").map_err(Error::InvalidArgument)?,
        )
    };
    let bars = Reader::open(config)?.bars(&request).await?;
    writeln!(
        out,
        "quiver bars FESX --timeframe 1m --start 2006-01-03T08:00:00Z --warmup 2 --limit 3 \
         ({} warmup bars, then the range):",
        bars.warmup
    )
    .map_err(io)?;
    writeln!(out, "{}", output::bars(&bars, BarsFormat::Table)?).map_err(io)?;
    // What an analyst asks the shell: FESX's daily VWAP (queries/vwap_daily.sql has more).
    let sql = "SELECT date_trunc('day', ts) AS day, sum(close * volume) / sum(volume) AS vwap, \
               sum(volume) AS volume FROM market_data WHERE symbol = 'FESX' AND timeframe = '1m' \
               GROUP BY day ORDER BY day LIMIT 3";
    writeln!(
        out,
        "quiver sql: FESX's volume-weighted average price of its first three days:"
    )
    .map_err(io)?;
    let mut shell = Shell::open(config, ShellOptions::default())?;
    shell.run_script(sql, "-c", out).await?;
    writeln!(
        out,
        "next: `quiver sql` opens the shell (\\? for help); queries/ holds example queries."
    )
    .map_err(io)?;
    Ok(())
}
