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

/// Rows per row group of a checkpoint.
const CHECKPOINT_ROW_GROUP: usize = 32_768;

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

fn append_map<'a>(
    builder: &mut MapBuilder<StringBuilder, StringBuilder>,
    entries: Option<impl IntoIterator<Item = (&'a str, Option<&'a str>)>>,
) -> Result<()> {
    match entries {
        Some(entries) => {
            for (k, v) in entries {
                builder.keys().append_value(k);
                builder.values().append_option(v);
            }
            builder
                .append(true)
                .context(|| "building a checkpoint".into())?;
        }
        None => builder
            .append(false)
            .context(|| "building a checkpoint".into())?,
    }
    Ok(())
}

/// A nullable struct column from named children, null where `valid` is false.
fn struct_column(children: Vec<(&str, ArrayRef)>, valid: &[bool]) -> Result<ArrayRef> {
    let fields: Fields = children
        .iter()
        .map(|(name, a)| Arc::new(Field::new(*name, a.data_type().clone(), true)))
        .collect();
    let arrays = children.into_iter().map(|(_, a)| a).collect();
    let nulls = NullBuffer::from(valid.to_vec());
    Ok(Arc::new(
        StructArray::try_new(fields, arrays, Some(nulls))
            .context(|| "building a checkpoint".into())?,
    ))
}

/// Which action a row holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Protocol,
    Metadata,
    Txn(usize),
    Add(usize),
    Remove(usize),
}

/// The checkpoint's Parquet bytes for a table state, and the number of actions in it. With
/// `parsed`, the `add`s also carry `stats_parsed` and `partitionValues_parsed`.
pub fn write(
    protocol: &Protocol,
    metadata: &Metadata,
    txns: &[Txn],
    adds: &[Add],
    removes: &[Remove],
    parsed: Option<Parsed<'_>>,
) -> Result<(Bytes, u64)> {
    let mut rows = vec![Row::Protocol, Row::Metadata];
    rows.extend((0..txns.len()).map(Row::Txn));
    rows.extend((0..adds.len()).map(Row::Add));
    rows.extend((0..removes.len()).map(Row::Remove));
    let n = rows.len();
    let valid = |f: &dyn Fn(Row) -> bool| rows.iter().map(|r| f(*r)).collect::<Vec<bool>>();

    // protocol
    let protocol_col = struct_column(
        vec![
            (
                "minReaderVersion",
                Arc::new(Int32Array::from(
                    rows.iter()
                        .map(|r| (*r == Row::Protocol).then_some(protocol.min_reader_version))
                        .collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "minWriterVersion",
                Arc::new(Int32Array::from(
                    rows.iter()
                        .map(|r| (*r == Row::Protocol).then_some(protocol.min_writer_version))
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
        &valid(&|r| r == Row::Protocol),
    )?;

    // metaData
    let only_meta = |v: Option<&str>| {
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| if *r == Row::Metadata { v } else { None })
                .collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let mut options = map_builder();
    let mut configuration = map_builder();
    let mut partition_columns = ListBuilder::new(StringBuilder::new());
    for r in &rows {
        if *r == Row::Metadata {
            append_map(
                &mut options,
                Some(
                    metadata
                        .format
                        .options
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref())),
                ),
            )?;
            append_map(
                &mut configuration,
                Some(
                    metadata
                        .configuration
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref())),
                ),
            )?;
            for c in &metadata.partition_columns {
                partition_columns.values().append_value(c);
            }
            partition_columns.append(true);
        } else {
            append_map(&mut options, None::<Vec<(&str, Option<&str>)>>)?;
            append_map(&mut configuration, None::<Vec<(&str, Option<&str>)>>)?;
            partition_columns.append(false);
        }
    }
    let meta_valid = valid(&|r| r == Row::Metadata);
    let format_col = struct_column(
        vec![
            ("provider", only_meta(Some(&metadata.format.provider))),
            ("options", Arc::new(options.finish())),
        ],
        &meta_valid,
    )?;
    let metadata_col = struct_column(
        vec![
            ("id", only_meta(Some(&metadata.id))),
            ("name", only_meta(metadata.name.as_deref())),
            ("description", only_meta(metadata.description.as_deref())),
            ("format", format_col),
            ("schemaString", only_meta(Some(&metadata.schema_string))),
            ("partitionColumns", Arc::new(partition_columns.finish())),
            ("configuration", Arc::new(configuration.finish())),
            (
                "createdTime",
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| {
                            if *r == Row::Metadata {
                                metadata.created_time
                            } else {
                                None
                            }
                        })
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
        &meta_valid,
    )?;

    // txn
    let txn_of = |r: &Row| match r {
        Row::Txn(i) => Some(&txns[*i]),
        _ => None,
    };
    let txn_col = struct_column(
        vec![
            (
                "appId",
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| txn_of(r).map(|t| t.app_id.as_str()))
                        .collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "version",
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| txn_of(r).map(|t| t.version))
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "lastUpdated",
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| txn_of(r).and_then(|t| t.last_updated))
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
        &valid(&|r| matches!(r, Row::Txn(_))),
    )?;

    // add
    let mut path = StringBuilder::with_capacity(n, 64 * adds.len());
    let mut values = map_builder();
    let mut size = Int64Builder::with_capacity(n);
    let mut modified = Int64Builder::with_capacity(n);
    let mut data_change = BooleanBuilder::with_capacity(n);
    let mut stats = StringBuilder::with_capacity(n, 160 * adds.len());
    let mut tags = map_builder();
    for r in &rows {
        match r {
            Row::Add(i) => {
                let a = &adds[*i];
                path.append_value(&a.path);
                append_map(
                    &mut values,
                    Some(
                        a.partition_values
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_deref())),
                    ),
                )?;
                size.append_value(a.size);
                modified.append_value(a.modification_time);
                data_change.append_value(a.data_change);
                stats.append_option(a.stats.as_deref());
                append_map(
                    &mut tags,
                    a.tags
                        .as_ref()
                        .map(|t| t.iter().map(|(k, v)| (k.as_str(), v.as_deref()))),
                )?;
            }
            _ => {
                path.append_null();
                append_map(&mut values, None::<Vec<(&str, Option<&str>)>>)?;
                size.append_null();
                modified.append_null();
                data_change.append_null();
                stats.append_null();
                append_map(&mut tags, None::<Vec<(&str, Option<&str>)>>)?;
            }
        }
    }
    let add_valid = valid(&|r| matches!(r, Row::Add(_)));
    let mut add_children = vec![
        ("path", Arc::new(path.finish()) as ArrayRef),
        ("partitionValues", Arc::new(values.finish())),
        ("size", Arc::new(size.finish())),
        ("modificationTime", Arc::new(modified.finish())),
        ("dataChange", Arc::new(data_change.finish())),
        ("stats", Arc::new(stats.finish())),
        ("tags", Arc::new(tags.finish())),
    ];
    if let Some(p) = parsed {
        let add_index = |r: &Row| match r {
            Row::Add(i) => Some(*i),
            _ => None,
        };
        let mut partition_children = Vec::new();
        for column in p.partition_columns {
            let values: Vec<Option<&str>> = rows
                .iter()
                .map(|r| {
                    add_index(r).and_then(|i| {
                        adds[i]
                            .partition_values
                            .get(column)
                            .and_then(|v| v.as_deref())
                    })
                })
                .collect();
            partition_children.push((
                column.as_str(),
                Arc::new(StringArray::from(values)) as ArrayRef,
            ));
        }
        add_children.push((
            "partitionValues_parsed",
            struct_column(partition_children, &add_valid)?,
        ));
        let of = |f: &dyn Fn(&FileStats) -> i64| -> Vec<Option<i64>> {
            rows.iter()
                .map(|r| add_index(r).and_then(|i| p.stats.get(i)).map(f))
                .collect()
        };
        let ts = |values: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
        };
        let stats_parsed = struct_column(
            vec![
                (
                    "numRecords",
                    Arc::new(Int64Array::from(of(&|s| s.num_records))) as ArrayRef,
                ),
                (
                    "minValues",
                    struct_column(vec![(p.ts_column, ts(of(&|s| s.min)))], &add_valid)?,
                ),
                (
                    "maxValues",
                    struct_column(vec![(p.ts_column, ts(of(&|s| s.max)))], &add_valid)?,
                ),
                (
                    "nullCount",
                    struct_column(
                        vec![(
                            p.ts_column,
                            Arc::new(Int64Array::from(of(&|_| 0))) as ArrayRef,
                        )],
                        &add_valid,
                    )?,
                ),
            ],
            &add_valid,
        )?;
        add_children.push(("stats_parsed", stats_parsed));
    }
    let add_col = struct_column(add_children, &add_valid)?;

    // remove
    let mut path = StringBuilder::new();
    let mut deleted = Int64Builder::with_capacity(n);
    let mut data_change = BooleanBuilder::with_capacity(n);
    let mut extended = BooleanBuilder::with_capacity(n);
    let mut values = map_builder();
    let mut size = Int64Builder::with_capacity(n);
    for r in &rows {
        match r {
            Row::Remove(i) => {
                let x = &removes[*i];
                path.append_value(&x.path);
                deleted.append_option(x.deletion_timestamp);
                data_change.append_value(x.data_change);
                extended.append_option(x.extended_file_metadata);
                append_map(
                    &mut values,
                    x.partition_values
                        .as_ref()
                        .map(|p| p.iter().map(|(k, v)| (k.as_str(), v.as_deref()))),
                )?;
                size.append_option(x.size);
            }
            _ => {
                path.append_null();
                deleted.append_null();
                data_change.append_null();
                extended.append_null();
                append_map(&mut values, None::<Vec<(&str, Option<&str>)>>)?;
                size.append_null();
            }
        }
    }
    let remove_col = struct_column(
        vec![
            ("path", Arc::new(path.finish()) as ArrayRef),
            ("deletionTimestamp", Arc::new(deleted.finish())),
            ("dataChange", Arc::new(data_change.finish())),
            ("extendedFileMetadata", Arc::new(extended.finish())),
            ("partitionValues", Arc::new(values.finish())),
            ("size", Arc::new(size.finish())),
        ],
        &valid(&|r| matches!(r, Row::Remove(_))),
    )?;

    let columns = vec![
        ("protocol", protocol_col),
        ("metaData", metadata_col),
        ("txn", txn_col),
        ("add", add_col),
        ("remove", remove_col),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let what = || "encoding a checkpoint".to_string();
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())
        .context(what)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Several row groups, so a reader decodes them on every core.
        .set_max_row_group_row_count(Some(CHECKPOINT_ROW_GROUP))
        .set_created_by(concat!("quiver ", env!("CARGO_PKG_VERSION")).into())
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties)).context(what)?;
    writer.write(&batch).context(what)?;
    writer.close().context(what)?;
    Ok((Bytes::from(out), n as u64))
}

fn column<'a, T: 'static>(parent: &'a StructArray, name: &str, path: &str) -> Result<&'a T> {
    parent
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::DeltaLog {
            path: path.to_string(),
            message: format!("checkpoint column {name} is missing or of another type"),
        })
}

fn optional<'a, T: 'static>(parent: &'a StructArray, name: &str) -> Option<&'a T> {
    parent
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
}

fn entries<'a>(
    map: &'a MapArray,
    row: usize,
    out: &mut Vec<(&'a str, Option<&'a str>)>,
    path: &str,
) -> Result<()> {
    out.clear();
    if map.is_null(row) {
        return Ok(());
    }
    let bad = || Error::DeltaLog {
        path: path.to_string(),
        message: "a checkpoint map is not of strings".into(),
    };
    let keys = map
        .keys()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(bad)?;
    let values = map
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(bad)?;
    let offsets = map.value_offsets();
    for i in offsets[row] as usize..offsets[row + 1] as usize {
        out.push((keys.value(i), (!values.is_null(i)).then(|| values.value(i))));
    }
    Ok(())
}

fn owned_map(
    map: Option<&MapArray>,
    row: usize,
    path: &str,
) -> Result<std::collections::BTreeMap<String, Option<String>>> {
    let mut buf = Vec::new();
    if let Some(map) = map {
        entries(map, row, &mut buf, path)?;
    }
    Ok(buf
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect())
}

/// The number of row groups of a checkpoint file (they can be read on separate threads).
pub fn row_groups(path: &str, bytes: &Bytes) -> Result<usize> {
    datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map(|m| m.num_row_groups())
        .map_err(|e| Error::DeltaLog {
            path: path.to_string(),
            message: format!("unreadable checkpoint: {e}"),
        })
}

/// Reads a checkpoint file (`path` names it in errors), handing every action to `visitor`;
/// only the `row_groups` given, when given.
/// Only the columns used are decoded: the parsed statistics and partition values instead of
/// the JSON and the map when the checkpoint has them, the tombstones only when `removes`.
pub fn read(
    path: &str,
    bytes: Bytes,
    removes: bool,
    row_groups: Option<&[usize]>,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::DeltaLog {
        path: path.to_string(),
        message: format!("unreadable checkpoint: {e}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(&e))?;
    let schema = builder.parquet_schema();
    let leaves: Vec<Vec<String>> = schema
        .columns()
        .iter()
        .map(|c| c.path().parts().to_vec())
        .collect();
    let has = |prefix: &[&str]| {
        leaves
            .iter()
            .any(|l| l.len() >= prefix.len() && l.iter().zip(prefix).all(|(a, b)| a == b))
    };
    let parsed = has(&["add", "stats_parsed"]) && has(&["add", "partitionValues_parsed"]);
    let wanted = |leaf: &[String]| -> bool {
        let parts: Vec<&str> = leaf.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["add", "path" | "size" | "modificationTime", ..] => true,
            ["add", "deletionVector", ..] => true,
            ["add", "stats"] | ["add", "partitionValues", ..] => !parsed,
            ["add", "stats_parsed", "numRecords"] => parsed,
            ["add", "stats_parsed", "minValues" | "maxValues", _] => parsed,
            ["add", "partitionValues_parsed", ..] => parsed,
            ["add", ..] => false,
            ["remove", ..] => removes,
            _ => true,
        }
    };
    let mask = datafusion::parquet::arrow::ProjectionMask::leaves(
        schema,
        leaves
            .iter()
            .enumerate()
            .filter(|(_, l)| wanted(l))
            .map(|(i, _)| i),
    );
    let mut builder = builder.with_projection(mask).with_batch_size(65_536);
    if let Some(groups) = row_groups {
        builder = builder.with_row_groups(groups.to_vec());
    }
    let reader = builder.build().map_err(|e| bad(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let mut pv = Vec::new();
        let structs = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StructArray>())
        };
        if let Some(add) = structs("add") {
            let paths: &StringArray = column(add, "path", path)?;
            let values: Option<&MapArray> = optional(add, "partitionValues");
            let sizes: &Int64Array = column(add, "size", path)?;
            let modified: &Int64Array = column(add, "modificationTime", path)?;
            let stats: Option<&StringArray> = optional(add, "stats");
            let parsed_values: Option<&StructArray> = optional(add, "partitionValues_parsed");
            let parsed_stats = optional::<StructArray>(add, "stats_parsed").and_then(|s| {
                let rows: &Int64Array = optional(s, "numRecords")?;
                let ts = |name: &str| -> Option<&TimestampMicrosecondArray> {
                    let values: &StructArray = optional(s, name)?;
                    values
                        .columns()
                        .first()?
                        .as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                };
                Some((rows, ts("minValues")?, ts("maxValues")?))
            });
            let parsed_strings: Vec<(&str, &StringArray)> = parsed_values
                .map(|p| {
                    p.fields()
                        .iter()
                        .zip(p.columns())
                        .filter_map(|(f, c)| {
                            c.as_any()
                                .downcast_ref::<StringArray>()
                                .map(|a| (f.name().as_str(), a))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(dv) = add.column_by_name("deletionVector")
                && dv.null_count() < dv.len()
                && (0..add.len()).any(|i| add.is_valid(i) && dv.is_valid(i))
            {
                return Err(bad(&"deletion vectors are not supported"));
            }
            for row in 0..add.len() {
                if add.is_null(row) {
                    continue;
                }
                match values {
                    Some(map) => entries(map, row, &mut pv, path)?,
                    None => {
                        pv.clear();
                        for (name, a) in &parsed_strings {
                            pv.push((*name, (!a.is_null(row)).then(|| a.value(row))));
                        }
                    }
                }
                let parsed = parsed_stats.and_then(|(n, lo, hi)| {
                    (n.is_valid(row) && lo.is_valid(row) && hi.is_valid(row)).then(|| FileStats {
                        num_records: n.value(row),
                        min: lo.value(row),
                        max: hi.value(row),
                    })
                });
                visitor.add(AddRef {
                    path: paths.value(row),
                    partition_values: &pv,
                    size: sizes.value(row),
                    modification_time: modified.value(row),
                    stats: stats.filter(|s| s.is_valid(row)).map(|s| s.value(row)),
                    parsed,
                })?;
            }
        }
        if let Some(remove) = structs("remove") {
            let paths: &StringArray = column(remove, "path", path)?;
            let deleted: Option<&Int64Array> = optional(remove, "deletionTimestamp");
            let sizes: Option<&Int64Array> = optional(remove, "size");
            let values: Option<&MapArray> = optional(remove, "partitionValues");
            for row in 0..remove.len() {
                if remove.is_null(row) {
                    continue;
                }
                match values {
                    Some(v) => entries(v, row, &mut pv, path)?,
                    None => pv.clear(),
                }
                let value =
                    |a: Option<&Int64Array>| a.filter(|a| a.is_valid(row)).map(|a| a.value(row));
                visitor.remove(RemoveRef {
                    path: paths.value(row),
                    deletion_timestamp: value(deleted),
                    size: value(sizes),
                    partition_values: &pv,
                })?;
            }
        }
        if let Some(p) = structs("protocol") {
            let reader: &Int32Array = column(p, "minReaderVersion", path)?;
            let writer: &Int32Array = column(p, "minWriterVersion", path)?;
            let features = |name: &str, row: usize| -> Option<Vec<String>> {
                let list: &ListArray = optional(p, name)?;
                if list.is_null(row) {
                    return None;
                }
                let values = list.value(row);
                let strings = values.as_any().downcast_ref::<StringArray>()?;
                Some(strings.iter().flatten().map(str::to_string).collect())
            };
            for row in 0..p.len() {
                if p.is_valid(row) {
                    visitor.protocol(Protocol {
                        min_reader_version: reader.value(row),
                        min_writer_version: writer.value(row),
                        reader_features: features("readerFeatures", row),
                        writer_features: features("writerFeatures", row),
                    })?;
                }
            }
        }
        if let Some(m) = structs("metaData") {
            let ids: &StringArray = column(m, "id", path)?;
            let schemas: &StringArray = column(m, "schemaString", path)?;
            let partitions: &ListArray = column(m, "partitionColumns", path)?;
            let format: &StructArray = column(m, "format", path)?;
            let provider: &StringArray = column(format, "provider", path)?;
            let text = |name: &str, row: usize| -> Option<String> {
                let a: &StringArray = optional(m, name)?;
                a.is_valid(row).then(|| a.value(row).to_string())
            };
            for row in 0..m.len() {
                if m.is_null(row) {
                    continue;
                }
                let columns = partitions.value(row);
                let columns = columns
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| bad(&"partitionColumns is not a list of strings"))?;
                let created: Option<&Int64Array> = optional(m, "createdTime");
                visitor.metadata(Metadata {
                    id: ids.value(row).to_string(),
                    name: text("name", row),
                    description: text("description", row),
                    format: Format {
                        provider: provider.value(row).to_string(),
                        options: owned_map(optional(format, "options"), row, path)?,
                    },
                    schema_string: schemas.value(row).to_string(),
                    partition_columns: columns.iter().flatten().map(str::to_string).collect(),
                    configuration: owned_map(optional(m, "configuration"), row, path)?,
                    created_time: created.filter(|c| c.is_valid(row)).map(|c| c.value(row)),
                })?;
            }
        }
        if let Some(t) = structs("txn") {
            let apps: &StringArray = column(t, "appId", path)?;
            let versions: &Int64Array = column(t, "version", path)?;
            let updated: Option<&Int64Array> = optional(t, "lastUpdated");
            for row in 0..t.len() {
                if t.is_valid(row) {
                    visitor.txn(Txn {
                        app_id: apps.value(row).to_string(),
                        version: versions.value(row),
                        last_updated: updated.filter(|u| u.is_valid(row)).map(|u| u.value(row)),
                    })?;
                }
            }
        }
    }
    Ok(())
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
