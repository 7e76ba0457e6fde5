//! Writing a checkpoint: every live action of a version as one row of its kind's struct
//! column, in row groups a reader can decode in parallel.

use super::*;

/// Rows per row group of a checkpoint.
pub(super) const CHECKPOINT_ROW_GROUP: usize = 32_768;

pub(super) fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
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

pub(super) fn append_map<'a>(
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
pub(super) fn struct_column(children: Vec<(&str, ArrayRef)>, valid: &[bool]) -> Result<ArrayRef> {
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
pub(super) enum Row {
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
