//! What keeps the table lean between passes: checkpoints, vacuum and compaction, run on a
//! background task by the daemon and inline by one-shot commands.

use super::*;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The version committed, or `None` when there was nothing to merge.
    pub version: Option<u64>,
    /// Partitions merged.
    pub partitions: usize,
    /// Files those partitions had.
    pub files_before: usize,
    /// Files they have now.
    pub files_after: usize,
    /// Rows rewritten.
    pub rows: u64,
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            None => write!(f, "nothing to compact"),
            Some(v) => write!(
                f,
                "committed version {v}: {} partitions compacted from {} files to {} ({} rows, \
                 none changed)",
                self.partitions, self.files_before, self.files_after, self.rows
            ),
        }
    }
}

/// Which files of a partition a compaction merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Merge {
    /// Every file, into one.
    All,
    /// The small files after a partition's first when that one holds at least four times the
    /// rows of the rest (so a live feed's appends do not rewrite the month each time), else
    /// every file.
    Tiered,
}

impl Merge {
    pub(super) fn choose(self, files: &[Arc<DataFile>]) -> &[Arc<DataFile>] {
        match (self, files) {
            (Merge::Tiered, [first, rest @ ..]) => {
                let small: u64 = rest.iter().map(|f| f.rows).sum();
                if first.rows >= 4 * small { rest } else { files }
            }
            _ => files,
        }
    }
}

/// What a background maintenance task did.
pub(super) enum Maintenance {
    Checkpoint {
        version: u64,
        bytes: u64,
        took: Duration,
    },
    Vacuum {
        report: VacuumReport,
        deleted: Vec<String>,
    },
}

impl Syncer {
    /// Writes a checkpoint when one is due, and vacuums once an hour; on a background task for
    /// the daemon, here otherwise.
    pub(super) async fn maintain(&mut self) -> Result<()> {
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        if self.maintenance.is_some() {
            return Ok(()); // one at a time; the next pass looks again
        }
        let (commits, actions) = self.since_checkpoint;
        let checkpoint_due =
            commits >= self.settings.checkpoint_interval || actions >= CHECKPOINT_ACTIONS;
        let vacuum_due = self.background && Instant::now() >= self.next_vacuum;
        let job = if checkpoint_due {
            Job::Checkpoint
        } else if vacuum_due {
            Job::Vacuum
        } else {
            return Ok(());
        };
        if job == Job::Vacuum {
            self.next_vacuum = Instant::now() + VACUUM_EVERY;
        } else {
            self.since_checkpoint = (0, 0);
        }
        let snapshot = state.clone();
        let table = self.table.clone();
        let cache = self.cache.clone();
        let retention = self.settings.retention;
        let work = async move { run_job(job, &cache, &table, snapshot, retention).await };
        if self.background {
            let handle = tokio::runtime::Handle::current();
            self.maintenance = Some(tokio::task::spawn_blocking(move || handle.block_on(work)));
            Ok(())
        } else {
            let done = work.await?;
            self.record(done);
            Ok(())
        }
    }

    /// Takes the result of a finished background task (all of it when `wait`).
    pub(super) async fn finish_maintenance(&mut self, wait: bool) -> Result<()> {
        let finished = self.maintenance.as_ref().is_some_and(|h| h.is_finished());
        if !(finished || wait) {
            return Ok(());
        }
        let Some(handle) = self.maintenance.take() else {
            return Ok(());
        };
        match handle.await {
            Ok(Ok(done)) => self.record(done),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache maintenance failed (retried later)");
                // Try again after the next commit.
                self.since_checkpoint.0 = self.settings.checkpoint_interval;
            }
            Err(e) => tracing::warn!(error = %e, "cache maintenance task stopped"),
        }
        Ok(())
    }

    pub(super) fn record(&mut self, done: Maintenance) {
        match done {
            Maintenance::Checkpoint {
                version,
                bytes,
                took,
            } => {
                self.last_checkpoint = Some(version);
                tracing::info!(
                    version,
                    bytes,
                    elapsed_ms = took.as_secs_f64() * 1e3,
                    "checkpoint written"
                );
            }
            Maintenance::Vacuum { report, deleted } => {
                if let Some(state) = self.state.as_mut() {
                    state.forget_tombstones(&deleted);
                }
                tracing::info!(
                    files = report.files,
                    bytes = report.bytes,
                    orphans = report.orphans,
                    log_entries = report.log_entries,
                    "vacuumed"
                );
            }
        }
    }

    /// Merges the files of every partition that has more than one into one (`quiver
    /// compact`): one commit that rearranges rows without changing any.
    pub async fn compact(&mut self) -> Result<CompactReport> {
        self.finish_maintenance(true).await?;
        if !self.loaded {
            self.load().await?;
        }
        self.catch_up_view()?;
        let keys: Vec<PartitionKey> = self
            .state
            .as_ref()
            .map(|s| {
                s.partitions()
                    .into_iter()
                    .filter(|(_, files)| files.len() > 1)
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        self.compact_partitions(&keys, Merge::All).await
    }

    /// Deletes up to `limit` of the plain view's retired folders whose grace has passed (the
    /// daemon, while idle, and vacuum; updates delete only a few each).
    pub fn tidy_view(&self, limit: usize) -> Result<usize> {
        self.view
            .purge_retired(crate::cache::view::RETIRE_GRACE, limit)
    }

    /// One step of the daemon's compaction between passes: merges the small files of up to
    /// [`IDLE_CHUNK`] partitions holding at least half of `cache.compact_files` files (the
    /// most first) in one commit; `None` when no partition is due. Merging early and a chunk
    /// at a time spreads the work over the quiet time between a live feed's bursts, so no pass
    /// finds thousands of partitions over the threshold at once (a pass still merges any that
    /// are, before it returns).
    pub async fn compact_idle(&mut self) -> Result<Option<CompactReport>> {
        let Some(state) = self.state.as_ref() else {
            return Ok(None);
        };
        let least = (self.settings.compact_files / 2).max(2);
        let mut due: Vec<(usize, PartitionKey)> = Vec::new();
        self.backlog.retain(|key| {
            let files = state.partition(key).len();
            if files >= least {
                due.push((files, key.clone()));
            }
            files > 1
        });
        if due.is_empty() {
            return Ok(None);
        }
        due.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let keys: Vec<PartitionKey> = due.into_iter().take(IDLE_CHUNK).map(|(_, k)| k).collect();
        let report = self.compact_partitions(&keys, Merge::Tiered).await?;
        if report.version.is_none() {
            // Nothing merged (each is one large file and one small): not due after all.
            for key in &keys {
                self.backlog.remove(key);
            }
            return Ok(None);
        }
        self.maintain().await?;
        Ok(Some(report))
    }

    /// Merges the files of `keys` (all of them, or with [`Merge::Tiered`] the small ones) and
    /// commits the result with `dataChange` false. The rows come from the cache's own files,
    /// never from the database, and must come out strictly in `ts` order (the files of a
    /// partition never overlap); anything else stops the compaction before it commits.
    pub(super) async fn compact_partitions(
        &mut self,
        keys: &[PartitionKey],
        merge: Merge,
    ) -> Result<CompactReport> {
        let started = Instant::now();
        let mut report = CompactReport::default();
        let Some(state) = self.state.as_ref() else {
            return Ok(report);
        };
        let mut inputs: Vec<(PartitionKey, Vec<Arc<DataFile>>)> = Vec::new();
        for key in keys {
            let files = state.partition(key);
            let chosen = merge.choose(&files);
            if chosen.len() > 1 {
                report.files_before += files.len();
                report.files_after += files.len() - chosen.len() + 1;
                inputs.push((key.clone(), chosen.to_vec()));
            }
        }
        if inputs.is_empty() {
            return Ok(report);
        }
        let table = self.table.clone();
        let merged = futures_util::stream::iter(inputs.clone()).map(move |(key, files)| {
            let mut data = PartitionData::default();
            for f in &files {
                let path = table
                    .local_path(&f.path)
                    .ok_or_else(|| Error::invalid("compaction needs the table on a local disk"))?;
                let (series, rows) = crate::cache::read_file(&path)
                    .map_err(|e| Error::corrupt(format!("{}: {e}", path.display())))?;
                if series
                    .iter()
                    .any(|(s, t)| *s != key.symbol || *t != key.timeframe)
                {
                    return Err(Error::Format {
                        file: path,
                        message: format!("holds rows of {series:?}, not of {key}"),
                    });
                }
                if rows.len() as u64 != f.rows {
                    return Err(Error::Format {
                        file: path,
                        message: format!("holds {} rows, the table says {}", rows.len(), f.rows),
                    });
                }
                if let (Some(last), Some(first)) = (data.ts.last(), rows.ts.first())
                    && first <= last
                {
                    return Err(Error::Format {
                        file: path,
                        message: format!("overlaps the file before it in {key}: not compacted"),
                    });
                }
                data.ts.extend(rows.ts);
                for (to, from) in data.values.iter_mut().zip(rows.values) {
                    to.extend(from);
                }
            }
            Ok((key, data, None))
        });
        let Written {
            files: written,
            rows,
            ..
        } = write_partitions(&self.table, Box::pin(merged), None).await?;
        let mut changes = Changes {
            rearranges_only: true,
            ..Changes::default()
        };
        for ((_, files), (_, file)) in inputs.into_iter().zip(written) {
            changes.removes.extend(files);
            changes.adds.extend(file);
        }
        let mark = self.state.as_ref().and_then(|s| s.sync_mark().cloned());
        let version = match self
            .table
            .commit(&mut self.state, &changes, mark, true)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                discard(&self.table, changes.adds.iter()).await;
                return Err(e);
            }
        };
        self.since_checkpoint.0 += 1;
        self.since_checkpoint.1 += (changes.adds.len() + changes.removes.len()) as u64;
        if let Some(state) = self.state.as_ref() {
            self.view
                .update(&self.table, state, &changes.partitions())?;
            self.view_at = Some(version);
        }
        report.partitions = changes.adds.len();
        report.rows = rows;
        report.version = Some(version);
        tracing::info!(
            version,
            partitions = report.partitions,
            files_before = report.files_before,
            files_after = report.files_after,
            rows,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "compacted"
        );
        Ok(report)
    }

    /// Waits for background maintenance to finish (the daemon calls it before it exits).
    pub async fn settle(&mut self) -> Result<()> {
        self.finish_maintenance(true).await
    }

    /// Deletes what no retained version needs (`quiver vacuum`).
    pub async fn vacuum(&mut self) -> Result<VacuumReport> {
        self.finish_maintenance(true).await?;
        if !self.loaded {
            self.load().await?;
        }
        self.tidy_view(usize::MAX)?;
        let Some(state) = self.state.as_mut() else {
            return Ok(VacuumReport::default());
        };
        self.cache
            .vacuum(&self.table, state, self.settings.retention)
            .await
    }
}

/// How often the daemon vacuums (a vacuum lists every file of the table, so not often).
pub(super) const VACUUM_EVERY: Duration = Duration::from_secs(3600);
/// When the daemon first vacuums after it starts.
pub(super) const VACUUM_FIRST: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    Checkpoint,
    Vacuum,
}

pub(super) async fn run_job(
    job: Job,
    cache: &Cache,
    table: &Table,
    mut state: TableState,
    retention: Duration,
) -> Result<Maintenance> {
    let started = Instant::now();
    match job {
        Job::Checkpoint => {
            let bytes = table.checkpoint(&state, retention).await?;
            Ok(Maintenance::Checkpoint {
                version: state.version(),
                bytes,
                took: started.elapsed(),
            })
        }
        Job::Vacuum => {
            let before: BTreeSet<String> = state.tombstones().map(|(p, _)| p.clone()).collect();
            let report = cache.vacuum(table, &mut state, retention).await?;
            let after: BTreeSet<String> = state.tombstones().map(|(p, _)| p.clone()).collect();
            Ok(Maintenance::Vacuum {
                report,
                deleted: before.difference(&after).cloned().collect(),
            })
        }
    }
}
