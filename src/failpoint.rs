//! Crash-test hooks. When `QUIVER_PAUSE_AT` names a point that a pass reaches, the process
//! prints `quiver: paused at <point>` on stderr and waits there to be killed, so a test can
//! `kill -9` it at a known step of publication. Unset (always, outside tests), a point costs
//! one comparison.

use std::io::Write;
use std::sync::OnceLock;

static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();

/// Marks `point`; pauses the process forever if `QUIVER_PAUSE_AT` names it.
pub fn hit(point: &str) {
    let pause = PAUSE_AT.get_or_init(|| std::env::var("QUIVER_PAUSE_AT").ok());
    if pause.as_deref() == Some(point) {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "quiver: paused at {point}");
        let _ = err.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
