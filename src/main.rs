//! The `quiver` binary: parse flags, set up logging, run the library command, map errors to
//! exit statuses (0 ok, 1 failed check, 2 bad usage or input, 3 a fault) with a one-line cause
//! on stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use quiver::cli::{Cli, Command, LogFormat, run};
use tracing_subscriber::EnvFilter;

/// Keeps freed memory for the next query instead of returning large read buffers to the
/// kernel (see docs/BENCHMARKS.md, W14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SAFETY: first thing in main: no other thread exists yet, so none is using SQLite.
    unsafe { quiver::db::sqlite_without_memory_statistics() };
    let cli = Cli::parse_ordered();
    // The daemon reports each pass at info level: that is its output.
    let daemon = matches!(cli.command, Command::Sync { watch: true, .. });
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("QUIVER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("quiver={default_level},warn")));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "quiver: cannot start the async runtime: {e}"
            );
            return ExitCode::from(3);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(run(cli, &mut stdout)) {
        Ok(code) => ExitCode::from(code),
        // `quiver bars … | head`: the reader closed the pipe having read what it wanted.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr is a closed pipe too.
            let _ = writeln!(std::io::stderr(), "quiver: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Whether to colour output going to a terminal (`terminal`): not when `NO_COLOR` is set to
/// anything non-empty (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
