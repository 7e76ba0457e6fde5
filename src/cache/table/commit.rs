//! Writing: a partition's rows encoded as a new data file, and a set of changes committed as
//! the next version (then, every so often, a checkpoint).

use super::*;

impl Table {
    /// Encodes one partition's rows as a new data file with a new name: the CPU half of
    /// [`Table::encode_and_write_local`].
    pub fn encode_file(
        &self,
        key: &PartitionKey,
        data: &PartitionData,
    ) -> Result<(DataFile, Bytes)> {
        let path = key.new_file();
        let bytes = encode(key, data)?;
        let file = DataFile {
            key: key.clone(),
            path,
            rows: data.len() as u64,
            bytes: bytes.len() as u64,
            min_ts: data.ts.first().copied().unwrap_or_default(),
            max_ts: data.ts.last().copied().unwrap_or_default(),
            modified_ms: now_ms(),
        };
        Ok((file, Bytes::from(bytes)))
    }

    /// Encodes one partition's rows as a new data file and, on a local disk, writes it, all
    /// on the calling (blocking) thread; on an object store the bytes come back for
    /// [`Table::store_file`].
    pub fn encode_and_write_local(
        &self,
        key: &PartitionKey,
        data: &PartitionData,
    ) -> Result<(DataFile, Option<Bytes>)> {
        let (file, bytes) = self.encode_file(key, data)?;
        match self.log.write_new_local(&file.path, &bytes) {
            None => Ok((file, Some(bytes))),
            Some(Ok(true)) => {
                crate::failpoint::hit("after-file");
                Ok((file, None))
            }
            Some(Ok(false)) => Err(taken(&file.path)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Puts an encoded data file on an object store (after [`Table::encode_and_write_local`]).
    pub async fn store_file(&self, file: &DataFile, bytes: Bytes) -> Result<()> {
        if !self.log.put_new(&file.path, bytes).await? {
            return Err(taken(&file.path));
        }
        crate::failpoint::hit("after-file");
        Ok(())
    }

    /// Commits `changes` as the version after `base` (version 0, creating the table, when
    /// `base` is `None`), with `mark` in its `commitInfo`; applies them to `base` and returns
    /// the new version. The files added are flushed to the device first. When another writer
    /// committed that version meanwhile, nothing is committed and the error names it.
    pub async fn commit(
        &self,
        base: &mut Option<TableState>,
        changes: &Changes,
        mark: Option<SyncMark>,
        tombstones: bool,
    ) -> Result<u64> {
        let paths: Vec<&str> = changes.adds.iter().map(|f| f.path.as_str()).collect();
        self.log.make_durable(&paths)?;
        let at = now_ms();
        let version = base.as_ref().map_or(0, |s| s.version + 1);
        let operation = match (base.is_none(), changes.rearranges_only) {
            (true, _) => "CREATE TABLE",
            (false, true) => "OPTIMIZE",
            (false, false) => "WRITE",
        };
        let mut info = serde_json::Map::new();
        info.insert("timestamp".into(), at.into());
        info.insert("operation".into(), operation.into());
        info.insert(
            "operationParameters".into(),
            serde_json::json!({ "mode": "Append" }),
        );
        info.insert(
            "engineInfo".into(),
            concat!("quiver/", env!("CARGO_PKG_VERSION")).into(),
        );
        info.insert(
            "isBlindAppend".into(),
            (changes.removes.is_empty() && !changes.rearranges_only).into(),
        );
        let mark = mark.map(|mut m| {
            m.writer = writer_name();
            m
        });
        if let Some(m) = &mark {
            info.insert(
                "quiver".into(),
                serde_json::to_value(m)
                    .map_err(|e| Error::internal(format!("a sync mark does not serialize: {e}")))?,
            );
        }
        let mut actions = Vec::with_capacity(3 + changes.adds.len() + changes.removes.len());
        actions.push(Action::CommitInfo(info));
        let mut created = None;
        if base.is_none() {
            let protocol = Protocol {
                min_reader_version: delta::READER_VERSION,
                min_writer_version: delta::WRITER_VERSION,
                reader_features: None,
                writer_features: None,
            };
            let metadata = Metadata {
                id: uuid::Uuid::new_v4().to_string(),
                name: Some("market_data".into()),
                description: Some(
                    "OHLCV bars mirrored by quiver from its SQL market_data table".into(),
                ),
                format: Format {
                    provider: "parquet".into(),
                    options: Default::default(),
                },
                schema_string: schema_string(),
                partition_columns: PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect(),
                // Checkpoints also hold the statistics and partition values as typed columns:
                // a reader opening 100k files decodes three integers per file, not JSON.
                configuration: [(STATS_AS_STRUCT.to_string(), Some("true".to_string()))].into(),
                created_time: Some(at),
            };
            actions.push(Action::Protocol(protocol.clone()));
            actions.push(Action::Metadata(metadata.clone()));
            created = Some(TableState::new(protocol, metadata, tombstones));
        }
        let data_change = !changes.rearranges_only;
        for f in &changes.removes {
            actions.push(Action::Remove(f.remove_action(at, data_change)));
        }
        for f in &changes.adds {
            actions.push(Action::Add(f.add_action(data_change)));
        }
        if !self.log.write_commit(version, &actions).await? {
            let other = self
                .commit_info(version)
                .await
                .ok()
                .flatten()
                .and_then(|i| {
                    i.get("quiver")
                        .and_then(|q| q.get("writer"))
                        .and_then(|w| w.as_str().map(str::to_string))
                        .or_else(|| {
                            i.get("engineInfo")
                                .and_then(|w| w.as_str().map(str::to_string))
                        })
                })
                .unwrap_or_else(|| "another program".into());
            return Err(Error::CommitConflict {
                table: self.log.location().to_string(),
                version,
                other,
            });
        }
        crate::failpoint::hit("after-commit");
        if let Some(c) = created {
            *base = Some(c);
        }
        if let Some(state) = base.as_mut() {
            state.apply_changes(version, changes, at, mark);
        }
        Ok(version)
    }

    /// Writes a checkpoint of `state` (a writer's state, with its tombstones): every live file,
    /// and the tombstones removed less than `retention` ago. Returns its size in bytes.
    pub async fn checkpoint(
        &self,
        state: &TableState,
        retention: std::time::Duration,
    ) -> Result<u64> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        // In series and time order, so a reader builds each series by appending.
        let mut files: Vec<&Arc<DataFile>> = state.files().collect();
        files.sort_by(|a, b| {
            (&a.key.timeframe, &a.key.symbol, a.min_ts).cmp(&(
                &b.key.timeframe,
                &b.key.symbol,
                b.min_ts,
            ))
        });
        let adds: Vec<Add> = files.iter().map(|f| f.add_action(true)).collect();
        let stats: Vec<checkpoint::FileStats> = files
            .iter()
            .map(|f| checkpoint::FileStats {
                num_records: f.rows as i64,
                min: f.min_ts,
                max: f.max_ts,
            })
            .collect();
        let as_struct = state
            .metadata
            .configuration
            .get(STATS_AS_STRUCT)
            .and_then(|v| v.as_deref())
            == Some("true");
        let parsed = as_struct.then_some(checkpoint::Parsed {
            partition_columns: &state.metadata.partition_columns,
            ts_column: "ts",
            stats: &stats,
        });
        let removes: Vec<Remove> = state
            .tombstones()
            .filter(|(_, t)| t.deleted_ms >= cutoff)
            .map(|(path, t)| Remove {
                path: delta::path_to_uri(path),
                deletion_timestamp: Some(t.deleted_ms),
                data_change: true,
                extended_file_metadata: Some(t.series.is_some()),
                partition_values: t.series.as_ref().map(|s| {
                    [
                        ("timeframe".to_string(), Some(s.timeframe.clone())),
                        ("symbol".to_string(), Some(s.symbol.clone())),
                    ]
                    .into()
                }),
                size: Some(t.bytes as i64),
            })
            .collect();
        let (bytes, size) = checkpoint::write(
            &state.protocol,
            &state.metadata,
            &state.txns,
            &adds,
            &removes,
            parsed,
        )?;
        let len = bytes.len() as u64;
        let pointer = LastCheckpoint {
            version: state.version,
            size,
            size_in_bytes: Some(len),
            num_of_add_files: Some(adds.len() as u64),
        };
        self.log.write_checkpoint(&pointer, bytes).await?;
        Ok(len)
    }
}
