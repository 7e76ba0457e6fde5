//! Classic single-file checkpoints (`<version>.checkpoint.parquet`, the V1 spec): one row per
//! action, one nullable struct column per action kind (`protocol`, `metaData`, `txn`, `add`,
//! `remove`), every field nullable as Spark writes them, maps as Parquet `MAP`s.
//!
//! Reading hands each `add` to a [`Visitor`] as borrowed strings, so opening a table of a
//! hundred thousand files allocates what the caller keeps and nothing per action besides.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Int32Array, Int64Array, Int64Builder, ListArray, ListBuilder,
    MapArray, MapBuilder, MapFieldNames, RecordBatch, StringArray, StringBuilder, StructArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{Field, Fields, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use super::{Add, Format, Metadata, Protocol, Remove, Txn};
use crate::error::{Context, Error, Result};

mod read;
mod write;

pub use read::{read, row_groups};
pub use write::write;

/// An `add` of a checkpoint, borrowed from the checkpoint's columns.
#[derive(Debug)]
pub struct AddRef<'a> {
    /// Path relative to the table root, as a URI.
    pub path: &'a str,
    /// Partition values.
    pub partition_values: &'a [(&'a str, Option<&'a str>)],
    /// Bytes.
    pub size: i64,
    /// When written (ms since the epoch).
    pub modification_time: i64,
    /// The statistics JSON, when present (and no parsed statistics were read).
    pub stats: Option<&'a str>,
    /// The statistics from `stats_parsed`, when the checkpoint has them.
    pub parsed: Option<FileStats>,
}

/// The statistics of one file that quiver's checkpoints also store as typed columns
/// (`stats_parsed`): the row count and the range of the table's time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStats {
    /// Rows in the file.
    pub num_records: i64,
    /// Smallest value of the time column (microseconds).
    pub min: i64,
    /// Largest value of the time column (microseconds).
    pub max: i64,
}

/// What a checkpoint stores as typed columns besides the JSON: the partition values and the
/// statistics of the time column `ts_column` (`stats_parsed`, `partitionValues_parsed`).
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// The table's partition columns (all strings).
    pub partition_columns: &'a [String],
    /// The time column whose range the statistics hold.
    pub ts_column: &'a str,
    /// One entry per `add`, in order.
    pub stats: &'a [FileStats],
}

/// A `remove` (a tombstone) of a checkpoint.
#[derive(Debug)]
pub struct RemoveRef<'a> {
    /// Path relative to the table root, as a URI.
    pub path: &'a str,
    /// When it was removed (ms since the epoch).
    pub deletion_timestamp: Option<i64>,
    /// Bytes, when known.
    pub size: Option<i64>,
    /// Partition values, when known.
    pub partition_values: &'a [(&'a str, Option<&'a str>)],
}

/// Receives the actions of a checkpoint.
pub trait Visitor {
    /// A live file.
    fn add(&mut self, add: AddRef<'_>) -> Result<()>;
    /// A tombstone.
    fn remove(&mut self, remove: RemoveRef<'_>) -> Result<()>;
    /// The table's metadata.
    fn metadata(&mut self, metadata: Metadata) -> Result<()>;
    /// The table's protocol.
    fn protocol(&mut self, protocol: Protocol) -> Result<()>;
    /// An application's transaction marker.
    fn txn(&mut self, txn: Txn) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    type Values = Vec<(String, Option<String>)>;

    #[derive(Default)]
    struct Collect {
        adds: Vec<(String, Values, i64, Option<String>)>,
        removes: Vec<(String, Option<i64>)>,
        metadata: Vec<Metadata>,
        protocol: Vec<Protocol>,
        txns: Vec<Txn>,
    }

    impl Visitor for Collect {
        fn add(&mut self, a: AddRef<'_>) -> Result<()> {
            self.adds.push((
                a.path.into(),
                a.partition_values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect(),
                a.size,
                a.stats.map(str::to_string),
            ));
            Ok(())
        }
        fn remove(&mut self, r: RemoveRef<'_>) -> Result<()> {
            self.removes.push((r.path.into(), r.deletion_timestamp));
            Ok(())
        }
        fn metadata(&mut self, m: Metadata) -> Result<()> {
            self.metadata.push(m);
            Ok(())
        }
        fn protocol(&mut self, p: Protocol) -> Result<()> {
            self.protocol.push(p);
            Ok(())
        }
        fn txn(&mut self, t: Txn) -> Result<()> {
            self.txns.push(t);
            Ok(())
        }
    }

    #[test]
    fn checkpoints_round_trip() {
        let protocol = &Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        };
        let metadata = &Metadata {
            id: "id-1".into(),
            name: None,
            description: Some("d".into()),
            format: Format {
                provider: "parquet".into(),
                options: Default::default(),
            },
            schema_string: "{}".into(),
            partition_columns: vec!["timeframe".into(), "symbol".into()],
            configuration: [("k".to_string(), Some("v".to_string()))].into(),
            created_time: Some(5),
        };
        let add = |p: &str| Add {
            path: p.into(),
            partition_values: [
                ("symbol".to_string(), Some("A".to_string())),
                ("timeframe".to_string(), None),
            ]
            .into(),
            size: 42,
            modification_time: 7,
            data_change: true,
            stats: Some("{\"numRecords\":1}".into()),
            tags: None,
            deletion_vector: None,
        };
        let remove = Remove {
            path: "old.parquet".into(),
            deletion_timestamp: Some(9),
            data_change: true,
            extended_file_metadata: Some(true),
            partition_values: Some(Default::default()),
            size: Some(3),
        };
        let txn = Txn {
            app_id: "quiver".into(),
            version: 3,
            last_updated: None,
        };
        let (bytes, actions) = write(
            protocol,
            metadata,
            std::slice::from_ref(&txn),
            &[add("a.parquet"), add("b.parquet")],
            std::slice::from_ref(&remove),
            None,
        )
        .unwrap();
        assert_eq!(actions, 6);
        let mut seen = Collect::default();
        read("cp", bytes, true, None, &mut seen).unwrap();
        assert_eq!(seen.protocol, vec![protocol.clone()]);
        assert_eq!(seen.metadata, vec![metadata.clone()]);
        assert_eq!(seen.txns, vec![txn]);
        assert_eq!(seen.removes, vec![("old.parquet".to_string(), Some(9))]);
        assert_eq!(seen.adds.len(), 2);
        assert_eq!(seen.adds[1].0, "b.parquet");
        assert_eq!(
            seen.adds[1].1,
            vec![
                ("symbol".to_string(), Some("A".to_string())),
                ("timeframe".to_string(), None)
            ]
        );
        assert_eq!(seen.adds[1].3.as_deref(), Some("{\"numRecords\":1}"));

        // With parsed statistics, a reader gets them (and the partition values) typed.
        let columns = ["symbol".to_string(), "timeframe".to_string()];
        let stats = [
            FileStats {
                num_records: 3,
                min: 10,
                max: 20,
            },
            FileStats {
                num_records: 4,
                min: 30,
                max: 40,
            },
        ];
        let parsed = Parsed {
            partition_columns: &columns,
            ts_column: "ts",
            stats: &stats,
        };
        let (bytes, _) = write(
            protocol,
            metadata,
            &[],
            &[add("a.parquet"), add("b.parquet")],
            &[],
            Some(parsed),
        )
        .unwrap();
        struct Typed(Vec<(Option<FileStats>, Values, bool)>);
        impl Visitor for Typed {
            fn add(&mut self, a: AddRef<'_>) -> Result<()> {
                let pv = a
                    .partition_values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect();
                self.0.push((a.parsed, pv, a.stats.is_some()));
                Ok(())
            }
            fn remove(&mut self, _: RemoveRef<'_>) -> Result<()> {
                Ok(())
            }
            fn metadata(&mut self, _: Metadata) -> Result<()> {
                Ok(())
            }
            fn protocol(&mut self, _: Protocol) -> Result<()> {
                Ok(())
            }
            fn txn(&mut self, _: Txn) -> Result<()> {
                Ok(())
            }
        }
        let mut typed = Typed(Vec::new());
        read("cp", bytes, false, None, &mut typed).unwrap();
        assert_eq!(typed.0[1].0, Some(stats[1]));
        assert_eq!(
            typed.0[1].1,
            vec![
                ("symbol".to_string(), Some("A".to_string())),
                ("timeframe".to_string(), None)
            ]
        );
        assert!(
            !typed.0[1].2,
            "the JSON is not decoded when parsed statistics exist"
        );
    }
}
