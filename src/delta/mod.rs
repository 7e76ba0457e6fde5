//! The part of the Delta Lake transaction log protocol that quiver writes and reads
//! (`PROTOCOL.md` of the Delta project, reader version 1, writer version 2).
//!
//! This module knows the log's files and actions, not quiver's data: [`actions`] are the
//! JSON lines of a commit, [`Log`] reads and writes the `_delta_log` folder and the data files
//! through `object_store` (every commit is a create-only put, so two writers cannot both commit
//! a version), and [`checkpoint`] writes and reads the classic single-file Parquet checkpoint.
//! What a version means for `market_data` is [`crate::cache`]'s business.
//!
//! quiver writes the commit JSON itself instead of going through delta-rs: its commit path
//! loads the whole table state to commit a change, so its cost grows with the number of files
//! (docs/BENCHMARKS.md gives the figures), while a quiver commit costs what it changes.

pub mod actions;
pub mod checkpoint;
mod log;

pub use actions::{Action, Add, Format, Metadata, PartitionValues, Protocol, Remove, Txn};
pub use log::{LastCheckpoint, Log, LogEntry, LogEntryKind};

/// Reader and writer protocol versions quiver writes and can read.
pub const READER_VERSION: i32 = 1;
/// See [`READER_VERSION`].
pub const WRITER_VERSION: i32 = 2;

/// The log folder under a table's root.
pub const LOG_DIR: &str = "_delta_log";

/// `_delta_log/<version, 20 digits>.json`
pub fn commit_path(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}.json")
}

/// `_delta_log/<version, 20 digits>.checkpoint.parquet`
pub fn checkpoint_path(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}.checkpoint.parquet")
}

/// Characters a path in an `add` or `remove` action keeps as they are: the path is a URI
/// (RFC 2396), so everything else, `%` first, is percent-encoded.
const URI_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'=')
    .remove(b'~');

/// The URI form of a relative file path, as actions carry it.
pub fn path_to_uri(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, URI_KEEP).to_string()
}

/// The file path an action's URI names.
pub fn uri_to_path(uri: &str) -> String {
    percent_encoding::percent_decode_str(uri)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_their_uri() {
        let path = "timeframe=1m/symbol=BTC%2FUSDT/2024-06_a1.parquet";
        let uri = path_to_uri(path);
        assert_eq!(uri, "timeframe=1m/symbol=BTC%252FUSDT/2024-06_a1.parquet");
        assert_eq!(uri_to_path(&uri), path);
        assert_eq!(commit_path(7), "_delta_log/00000000000000000007.json");
    }
}
