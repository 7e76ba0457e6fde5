//! Progress bars for long operations: drawn on a terminal, silent when stderr is piped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `total` rows, hidden unless stderr is a terminal.
pub fn rows(total: u64, what: &str) -> ProgressBar {
    bar(
        total,
        what,
        "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
    )
}

/// A bar counting `total` bytes (of a file being parsed), hidden unless stderr is a terminal.
pub fn bytes(total: u64, what: &str) -> ProgressBar {
    bar(
        total,
        what,
        "{msg:>10} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
    )
}

fn bar(total: u64, what: &str, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
