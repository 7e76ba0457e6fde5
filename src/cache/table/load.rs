//! Loading a version: the newest checkpoint, then the commits after it; following the table
//! by applying only new commits.

use super::*;

impl Table {
    /// The newest version; `None` when the table has no commit yet.
    pub async fn load(&self, options: LoadOptions) -> Result<Option<TableState>> {
        self.load_at(AsOf::Latest, options).await
    }

    /// A version of the table; `None` when the table has no commit yet.
    pub async fn load_at(&self, as_of: AsOf, options: LoadOptions) -> Result<Option<TableState>> {
        let target = match as_of {
            AsOf::Latest => None,
            AsOf::Version(v) => Some(v),
            AsOf::Time(t) => Some(self.version_at(t).await?),
        };
        let pointer = self.log.last_checkpoint().await?;
        let mut start = pointer
            .map(|p| p.version)
            .filter(|v| target.is_none_or(|t| *v <= t));
        if start.is_none() && (target.is_some() || !self.log.has_commit(0).await?) {
            // Time travel before the newest checkpoint, or a log whose first commits were
            // cleaned up: the newest checkpoint at or before the target.
            start = self
                .log
                .entries()
                .await?
                .into_iter()
                .filter(|e| e.kind == LogEntryKind::Checkpoint)
                .map(|e| e.version)
                .filter(|v| target.is_none_or(|t| *v <= t))
                .max();
        }
        let mut state: Option<TableState> = None;
        if let Some(v) = start {
            let path = delta::checkpoint_path(v);
            if let Some(bytes) = self.log.get(&path).await? {
                state = Some(self.read_checkpoint(&path, bytes, v, options)?);
            } else {
                start = None;
            }
        }
        let mut next = start.map_or(0, |v| v + 1);
        loop {
            if target.is_some_and(|t| next > t) {
                break;
            }
            let Some(actions) = self.log.read_commit(next).await? else {
                break;
            };
            let path = delta::commit_path(next);
            match state.as_mut() {
                Some(s) => s.apply(next, actions, &path)?,
                None => state = Some(self.first_state(actions, &path, options)?),
            }
            next += 1;
        }
        let Some(mut state) = state else {
            return match target {
                Some(t) => Err(Error::NoSuchVersion(format!(
                    "version {t} is not in the table at {}",
                    self.log.location()
                ))),
                None => Ok(None),
            };
        };
        if let Some(t) = target
            && state.version != t
        {
            return Err(Error::NoSuchVersion(format!(
                "version {t} is not in the table at {} (it has versions up to {})",
                self.log.location(),
                state.version
            )));
        }
        if start == Some(state.version) || (options.sync_mark && state.sync.is_none()) {
            self.read_marks(&mut state, options.sync_mark).await?;
        }
        Ok(Some(state))
    }

    /// Version 0 (or the first commit after a missing checkpoint): it must carry the protocol
    /// and the metadata.
    pub(super) fn first_state(
        &self,
        actions: Vec<Action>,
        path: &str,
        options: LoadOptions,
    ) -> Result<TableState> {
        let protocol = actions.iter().find_map(|a| match a {
            Action::Protocol(p) => Some(p.clone()),
            _ => None,
        });
        let metadata = actions.iter().find_map(|a| match a {
            Action::Metadata(m) => Some(m.clone()),
            _ => None,
        });
        let (Some(protocol), Some(metadata)) = (protocol, metadata) else {
            return Err(Error::DeltaLog {
                path: path.into(),
                message: "the first commit has no protocol or metadata".into(),
            });
        };
        let version = path_version(path);
        let mut state = TableState::new(protocol, metadata, options.tombstones);
        state.apply(version, actions, path)?;
        Ok(state)
    }

    pub(super) fn read_checkpoint(
        &self,
        path: &str,
        bytes: Bytes,
        version: u64,
        options: LoadOptions,
    ) -> Result<TableState> {
        let placeholder = Metadata {
            id: String::new(),
            name: None,
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: Default::default(),
            },
            schema_string: String::new(),
            partition_columns: Vec::new(),
            configuration: Default::default(),
            created_time: None,
        };
        let empty = TableState::new(
            Protocol {
                min_reader_version: delta::READER_VERSION,
                min_writer_version: delta::WRITER_VERSION,
                reader_features: None,
                writer_features: None,
            },
            placeholder,
            options.tombstones,
        );
        let started = std::time::Instant::now();
        // Row groups are decoded and turned into files on every core, then joined.
        let groups = checkpoint::row_groups(path, &bytes)?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(groups)
            .max(1);
        let chunks: Vec<Vec<usize>> = (0..threads)
            .map(|t| (0..groups).filter(|g| g % threads == t).collect())
            .collect();
        let parts: Vec<Result<CheckpointPart>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let (bytes, empty) = (bytes.clone(), empty.clone());
                    scope.spawn(move || {
                        let mut visitor = FromCheckpoint {
                            state: empty,
                            at: path,
                            protocol: None,
                            metadata: None,
                            run: None,
                        };
                        checkpoint::read(
                            path,
                            bytes,
                            options.tombstones,
                            Some(&chunk),
                            &mut visitor,
                        )?;
                        Ok(visitor.finish())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::internal("a checkpoint reading thread panicked"))
                    })
                })
                .collect()
        });
        let mut state = empty;
        let (mut protocol, mut metadata) = (None, None);
        for part in parts {
            let (part, p, m) = part?;
            protocol = protocol.or(p);
            metadata = metadata.or(m);
            state.merge(part);
        }
        tracing::debug!(
            path,
            files = state.files,
            threads,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint read"
        );
        let (Some(protocol), Some(metadata)) = (protocol, metadata) else {
            return Err(Error::DeltaLog {
                path: path.into(),
                message: "the checkpoint has no protocol or metadata".into(),
            });
        };
        state.protocol = protocol;
        state.metadata = Arc::new(metadata);
        state.version = version;
        Ok(state)
    }

    /// The commit time of the state's version, and (with `sync_mark`) the position of the
    /// newest quiver commit at or before it: checkpoints keep neither.
    pub(super) async fn read_marks(&self, state: &mut TableState, sync_mark: bool) -> Result<()> {
        if let Some(info) = self.commit_info(state.version).await? {
            state.committed_ms = info
                .get("timestamp")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
        }
        let mut v = state.version;
        while sync_mark && state.sync.is_none() {
            if let Some(info) = self.commit_info(v).await?
                && let Some(mark) = info
                    .get("quiver")
                    .and_then(|q| serde_json::from_value::<SyncMark>(q.clone()).ok())
            {
                state.sync = Some(Arc::new(mark));
                break;
            }
            if v == 0 || state.version - v >= 10_000 {
                break; // no quiver commit left in the log: the next pass rebuilds
            }
            v -= 1;
        }
        Ok(())
    }

    /// The `commitInfo` of a commit (its first line, as quiver writes it), if it has one.
    pub(super) async fn commit_info(
        &self,
        version: u64,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let path = delta::commit_path(version);
        let Some(first) = self.log.first_line(&path).await? else {
            return Ok(None);
        };
        Ok(Action::parse_commit(&path, &first)
            .ok()
            .and_then(|actions| {
                actions.into_iter().find_map(|a| match a {
                    Action::CommitInfo(i) => Some(i),
                    _ => None,
                })
            }))
    }

    /// Applies the commits after `state`'s version; `None` when there is none. With
    /// `check_pointer`, also notices a log cleaned up past `state` (the next commit gone, a
    /// newer checkpoint there) and reloads from that checkpoint.
    pub async fn refresh(
        &self,
        state: &TableState,
        check_pointer: bool,
    ) -> Result<Option<TableState>> {
        let mut next = state.version + 1;
        if !self.log.has_commit(next).await? {
            if check_pointer
                && let Some(p) = self.log.last_checkpoint().await?
                && p.version > state.version
                && !self.log.has_commit(next).await?
            {
                let options = LoadOptions {
                    tombstones: state.tombstones.is_some(),
                    sync_mark: false,
                };
                return self.load(options).await;
            }
            return Ok(None);
        }
        let mut new = state.clone();
        while let Some(actions) = self.log.read_commit(next).await? {
            new.apply(next, actions, &delta::commit_path(next))?;
            next += 1;
        }
        Ok(Some(new))
    }
}
