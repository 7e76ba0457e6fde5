//! The steps of a pass: a snapshot of the whole table, or the changed partitions applied
//! (appends, rewrites, held-back partitions), then published as one commit and the view.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::Instant;

use super::partitions::{Written, discard, split_partitions, write_partitions};
use super::{PassReport, Plan, Syncer};
use crate::cache::{Changes, DataFile, PartitionKey, SyncMark};
use crate::db::{Scan, Window};
use crate::error::{Error, Result};
use crate::feed::{DayChange, FeedPosition};
use crate::progress;

impl Syncer {
    /// The whole table as the next version: every partition written anew, every file of the
    /// version before removed.
    pub(super) async fn snapshot(&mut self, position: FeedPosition) -> Result<PassReport> {
        let bar = if self.progress && std::io::stderr().is_terminal() {
            progress::rows(self.store.count_rows().await?, "snapshot")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let rows = self.store.scan(Scan::All);
        let written = write_partitions(&self.table, split_partitions(rows), Some(&bar)).await?;
        bar.finish_and_clear();
        let written_rows = written.rows;
        // A held-back partition keeps the files it has; every other old file goes.
        let kept: BTreeSet<&PartitionKey> = written.held.iter().map(|(k, _)| k).collect();
        let mut changes = Changes {
            adds: written
                .files
                .iter()
                .filter_map(|(_, f)| f.clone())
                .collect(),
            removes: self
                .state
                .as_ref()
                .map(|s| {
                    s.files()
                        .filter(|f| !kept.contains(&f.key))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            rearranges_only: false,
        };
        drop(kept);
        let held = self.held_after(None, written.held);
        let old_partitions: BTreeSet<PartitionKey> =
            changes.removes.iter().map(|f| f.key.clone()).collect();
        let new_partitions: BTreeSet<PartitionKey> =
            changes.adds.iter().map(|f| f.key.clone()).collect();
        let removed = old_partitions.difference(&new_partitions).count();
        changes.adds.sort_by(|a, b| a.key.cmp(&b.key));
        let mut report = self.publish(changes, position, removed, held).await?;
        report.snapshot = true;
        report.rows = written_rows;
        Ok(report)
    }

    /// Brings the changed partitions up to date, all read in one scan: a partition that only
    /// had bars inserted after its last published bar gets them as a small new file (an
    /// append); any other change (an update, a delete, a late bar, a partition new to the
    /// cache) rewrites the partition from the table in full.
    pub(super) async fn apply(
        &mut self,
        partitions: BTreeMap<PartitionKey, DayChange>,
        position: FeedPosition,
    ) -> Result<PassReport> {
        let mut plans: BTreeMap<PartitionKey, Plan> = BTreeMap::new();
        let mut windows = Vec::with_capacity(partitions.len());
        for (key, change) in partitions {
            let files = self
                .state
                .as_ref()
                .map(|s| s.partition(&key))
                .unwrap_or_default();
            let last = files.iter().map(|f| f.max_ts).max();
            let (start, end) = key.range()?;
            // A held-back partition is re-read whole until it comes out clean.
            let plan = match last {
                Some(last) if change.appends_after(last) && !self.is_held(&key) => {
                    Plan::Append { after: last }
                }
                _ => Plan::Rewrite,
            };
            windows.push(Window {
                symbol: key.symbol.clone(),
                timeframe: key.timeframe.clone(),
                from: match plan {
                    Plan::Append { after } => after + 1,
                    Plan::Rewrite => start.unwrap_or(i64::MIN),
                },
                until: end.unwrap_or(i64::MAX),
            });
            plans.insert(key, plan);
        }
        let appends = plans
            .values()
            .filter(|p| matches!(p, Plan::Append { .. }))
            .count();
        let started = Instant::now();
        let rows = self.store.scan(Scan::Windows(windows));
        let Written {
            files: written,
            held: newly_held,
            rows,
        } = write_partitions(&self.table, split_partitions(rows), None).await?;
        tracing::debug!(
            partitions = plans.len(),
            appends,
            rows,
            read_and_write_ms = started.elapsed().as_secs_f64() * 1e3,
            "changed partitions read and written"
        );
        let mut changes = Changes::default();
        let mut removed = 0;
        let mut written: BTreeMap<PartitionKey, Option<DataFile>> = written.into_iter().collect();
        let held_now: BTreeSet<&PartitionKey> = newly_held.iter().map(|(k, _)| k).collect();
        for (key, plan) in &plans {
            if held_now.contains(key) {
                continue; // stays at its last good version
            }
            let file = written.remove(key).flatten();
            if *plan == Plan::Rewrite {
                // A partition the scan found no row of has none left.
                let old = self
                    .state
                    .as_ref()
                    .map(|s| s.partition(key))
                    .unwrap_or_default();
                if file.is_none() && !old.is_empty() {
                    removed += 1;
                }
                changes.removes.extend(old);
            }
            changes.adds.extend(file);
        }
        // Rows of a partition nobody planned cannot come back from the windows; if they do,
        // the window arithmetic is wrong and nothing is committed.
        if let Some((key, _)) = written.into_iter().next() {
            discard(&self.table, changes.adds.iter()).await;
            return Err(Error::internal(format!(
                "a sync scan returned rows of {key}, which no window asked for"
            )));
        }
        drop(held_now);
        let cleared: Vec<&PartitionKey> = plans.keys().collect();
        let held = self.held_after(Some(&cleared), newly_held);
        // Even with no file changed (a day logged but left as it was), the commit moves the
        // position, so the same days are not read again.
        let mut report = self.publish(changes, position, removed, held).await?;
        report.rows = rows;
        report.appended = appends;
        Ok(report)
    }

    /// Commits `changes` with `position`, brings the plain view along, then lets the change
    /// log forget what the position covers.
    pub(super) async fn publish(
        &mut self,
        changes: Changes,
        position: FeedPosition,
        removed: usize,
        held: Held,
    ) -> Result<PassReport> {
        let held_back = held.reasons.len();
        let mark = SyncMark {
            position: position.clone(),
            source: self.source.clone(),
            writer: String::new(),
            held: held.reasons,
            held_since: held.since,
        };
        let started = Instant::now();
        let version = match self
            .table
            .commit(&mut self.state, &changes, Some(mark), true)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                // No version references the files written for it: delete them now.
                discard(&self.table, changes.adds.iter()).await;
                return Err(e);
            }
        };
        let commit_ms = started.elapsed().as_secs_f64() * 1e3;
        self.since_checkpoint.0 += 1;
        self.since_checkpoint.1 += (changes.adds.len() + changes.removes.len()) as u64;
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| Error::internal("a committed table has a state"))?;
        let started = Instant::now();
        let partitions = changes.partitions();
        self.view.update(&self.table, state, &partitions)?;
        self.view_at = Some(version);
        let removed_from: BTreeSet<&PartitionKey> =
            changes.removes.iter().map(|f| &f.key).collect();
        self.grown = changes
            .adds
            .iter()
            .map(|f| &f.key)
            .filter(|k| !removed_from.contains(k))
            .cloned()
            .collect();
        self.backlog.extend(self.grown.iter().cloned());
        tracing::debug!(
            version,
            partitions = partitions.len(),
            commit_ms,
            view_ms = started.elapsed().as_secs_f64() * 1e3,
            "committed; plain view updated"
        );
        // Only once the position is durable may the log forget what it covers.
        if let Err(e) = self.store.prune_changes(&position).await {
            tracing::warn!(error = %e, "could not prune the change log (harmless; retried next pass)");
        }
        Ok(PassReport {
            version: Some(version),
            written: changes.adds.len(),
            bytes: changes.adds.iter().map(|f| f.bytes).sum(),
            removed,
            held_back,
            ..PassReport::default()
        })
    }

    /// The partitions held back by the newest version.
    pub(super) fn held(&self) -> Option<&BTreeMap<String, String>> {
        self.state
            .as_ref()
            .and_then(|s| s.sync_mark())
            .map(|m| &m.held)
            .filter(|h| !h.is_empty())
    }

    pub(super) fn is_held(&self, key: &PartitionKey) -> bool {
        self.held().is_some_and(|h| h.contains_key(&key.dir()))
    }

    /// The held-back partitions after a pass that re-read `cleared` (each now written or
    /// held again; `None`: a snapshot, which re-read everything) and found `newly` held: logs
    /// each partition that is newly held or held for another reason (once, not at every
    /// pass), and each released.
    pub(super) fn held_after(
        &mut self,
        cleared: Option<&[&PartitionKey]>,
        newly: Vec<(PartitionKey, Box<str>)>,
    ) -> Held {
        let before = self.held().cloned().unwrap_or_default();
        let since_before = self
            .state
            .as_ref()
            .and_then(|s| s.sync_mark())
            .map(|m| m.held_since.clone())
            .unwrap_or_default();
        let mut held = before.clone();
        match cleared {
            None => held.clear(),
            Some(keys) => {
                for key in keys {
                    held.remove(&key.dir());
                }
            }
        }
        for (key, reason) in newly {
            let dir = key.dir();
            if before.get(&dir).map(String::as_str) != Some(&*reason) {
                self.held_warned = Some(Instant::now());
                tracing::warn!(
                    partition = %dir,
                    reason = %reason,
                    "partition held back at its last good version: a row cannot be held exactly; fix it in SQL and the next pass publishes it"
                );
            }
            held.insert(dir, reason.into());
        }
        for dir in before.keys().filter(|d| !held.contains_key(*d)) {
            tracing::info!(partition = %dir, "partition no longer held back: published");
        }
        let now = chrono::Utc::now().timestamp_millis();
        let since = held
            .keys()
            .map(|dir| (dir.clone(), since_before.get(dir).copied().unwrap_or(now)))
            .collect();
        Held {
            reasons: held,
            since,
        }
    }

    /// Repeats the warning about the partitions the newest version holds back, at most once
    /// per `every` (the daemon calls it after each pass): a held partition stays behind the
    /// table until its row is fixed, and a warning logged once scrolls away.
    pub fn warn_held(&mut self, every: std::time::Duration) {
        let Some(held) = self.held() else {
            self.held_warned = None;
            return;
        };
        if self.held_warned.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        let count = held.len();
        let list: Vec<String> = held.iter().map(|(p, why)| format!("{p} ({why})")).collect();
        self.held_warned = Some(Instant::now());
        tracing::warn!(
            partitions = count,
            held = %list.join("; "),
            "partitions still held back at their last good version; fix the rows in SQL"
        );
    }
}

/// The partitions a version holds back: why, and since when.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Partition folder → the row and why.
    pub(super) reasons: BTreeMap<String, String>,
    /// Partition folder → when it was first held (ms since the epoch).
    pub(super) since: BTreeMap<String, i64>,
}
