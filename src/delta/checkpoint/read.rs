//! Reading a checkpoint: its row groups decoded, each action handed to a [`Visitor`] as
//! borrowed strings.

use super::*;

pub(super) fn column<'a, T: 'static>(
    parent: &'a StructArray,
    name: &str,
    path: &str,
) -> Result<&'a T> {
    parent
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::DeltaLog {
            path: path.to_string(),
            message: format!("checkpoint column {name} is missing or of another type"),
        })
}

pub(super) fn optional<'a, T: 'static>(parent: &'a StructArray, name: &str) -> Option<&'a T> {
    parent
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
}

pub(super) fn entries<'a>(
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

pub(super) fn owned_map(
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
