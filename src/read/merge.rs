//! Several series merged into one stream in `(ts, symbol, timeframe)` order: a portfolio
//! backtest's replay of a universe.
//!
//! Each input is one series' batches in `ts` order (already cut to its warmup and range), so
//! the merge is a k-way merge on `ts` with the series' rank as the tie-break: a binary heap
//! holds each input's next `(ts, rank)`, the smallest input gives every row that still comes
//! before the next smallest, and the rows chosen are gathered into output batches with
//! Arrow's `interleave`. Nothing is converted to a row format (as a general sort-preserving
//! merge does for its string keys), and at most one batch per input is held.
//!
//! An input that has used up its batch must give its next one before anything else is
//! merged (its next row may be the smallest); the stream waits for it, so inputs should be
//! decoded ahead on their own tasks (see [`super::prefetch`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures_util::{Stream, StreamExt};

/// Index of `ts` among the cache's columns.
const TS: usize = 2;

/// An input's place in the heap: its next row's `ts`, then the series' rank, then the input
/// (two requests for the same series keep their order).
type Key = (i64, u32, u32);

/// One input's current batch and the first row of it not yet merged.
struct Head {
    batch: RecordBatch,
    ts: ScalarBuffer<i64>,
    row: usize,
    /// Index of `batch` among the batches the pending output rows come from.
    slot: usize,
}

/// The merged stream (see the module documentation).
pub(super) struct Merge {
    schema: SchemaRef,
    inputs: Vec<SendableRecordBatchStream>,
    /// Each input's rank in `(symbol, timeframe)` order.
    ranks: Vec<u32>,
    heads: Vec<Option<Head>>,
    /// Inputs whose next batch is needed before merging can go on.
    waiting: Vec<usize>,
    heap: BinaryHeap<Reverse<Key>>,
    /// The batches the pending rows come from, and the rows as `(slot, row)`.
    slots: Vec<RecordBatch>,
    rows: Vec<(usize, usize)>,
    batch_size: usize,
    done: bool,
}

impl Merge {
    /// Merges `inputs`, each in `ts` order; `ranks[i]` orders input `i` among rows of equal
    /// `ts` (the series' place in `(symbol, timeframe)` order).
    pub(super) fn new(
        schema: SchemaRef,
        inputs: Vec<SendableRecordBatchStream>,
        ranks: Vec<u32>,
        batch_size: usize,
    ) -> Merge {
        let n = inputs.len();
        Merge {
            schema,
            inputs,
            ranks,
            heads: (0..n).map(|_| None).collect(),
            waiting: (0..n).collect(),
            heap: BinaryHeap::with_capacity(n),
            slots: Vec::new(),
            rows: Vec::with_capacity(batch_size),
            batch_size: batch_size.max(1),
            done: false,
        }
    }

    fn key(&self, input: usize) -> Option<Key> {
        let head = self.heads[input].as_ref()?;
        Some((head.ts[head.row], self.ranks[input], input as u32))
    }

    /// Takes `batch` as the current batch of `input`.
    fn install(&mut self, input: usize, batch: RecordBatch) -> DfResult<()> {
        let ts = batch
            .column(TS)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| {
                DataFusionError::Internal("a merged batch without the cache's ts column".into())
            })?
            .values()
            .clone();
        self.slots.push(batch.clone());
        self.heads[input] = Some(Head {
            batch,
            ts,
            row: 0,
            slot: self.slots.len() - 1,
        });
        if let Some(key) = self.key(input) {
            self.heap.push(Reverse(key));
        }
        Ok(())
    }

    /// Asks every waiting input for its next batch; true when none is still waiting.
    fn refill(&mut self, cx: &mut Context<'_>) -> Poll<DfResult<()>> {
        let mut i = 0;
        while i < self.waiting.len() {
            let input = self.waiting[i];
            match self.inputs[input].poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) if batch.num_rows() == 0 => {}
                Poll::Ready(Some(Ok(batch))) => {
                    self.install(input, batch)?;
                    self.waiting.swap_remove(i);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    self.waiting.swap_remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if self.waiting.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Moves the rows of the smallest input that come before every other input's next row
    /// (at most what fits the output batch) to the pending rows.
    fn take_smallest(&mut self) -> bool {
        let Some(Reverse((_, rank, input))) = self.heap.pop() else {
            return false;
        };
        let (input, bound) = (input as usize, self.heap.peek().map(|Reverse(k)| *k));
        let room = self.batch_size - self.rows.len();
        let Some(head) = self.heads[input].as_mut() else {
            return true;
        };
        let rest = &head.ts[head.row..];
        let run = match bound {
            None => rest.len(),
            // Rows of equal `ts` go first when this input ranks first.
            Some((ts, other_rank, other)) => match (rank, input as u32).cmp(&(other_rank, other)) {
                Ordering::Less => rest.partition_point(|&t| t <= ts),
                _ => rest.partition_point(|&t| t < ts),
            },
        }
        .clamp(1, room);
        let slot = head.slot;
        self.rows
            .extend((head.row..head.row + run).map(|row| (slot, row)));
        head.row += run;
        if head.row == head.ts.len() {
            self.heads[input] = None;
            self.waiting.push(input);
        } else if let Some(key) = self.key(input) {
            self.heap.push(Reverse(key));
        }
        true
    }

    /// The pending rows as one batch; afterwards only the current batches are kept.
    fn flush(&mut self) -> DfResult<RecordBatch> {
        let sources: Vec<&RecordBatch> = self.slots.iter().collect();
        let out = interleave_record_batch(&sources, &self.rows)?;
        self.rows.clear();
        self.slots.clear();
        for head in self.heads.iter_mut().flatten() {
            self.slots.push(head.batch.clone());
            head.slot = self.slots.len() - 1;
        }
        Ok(out)
    }

    fn poll_merge(&mut self, cx: &mut Context<'_>) -> Poll<Option<DfResult<RecordBatch>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if !self.waiting.is_empty() {
                match self.refill(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.take_smallest() {
                self.done = true;
                if self.rows.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(self.flush()));
            }
            if self.rows.len() >= self.batch_size {
                return Poll::Ready(Some(self.flush()));
            }
        }
    }
}

impl Stream for Merge {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_merge(cx)
    }
}

impl RecordBatchStream for Merge {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures_util::stream;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};

    use super::*;

    fn test_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]))
    }

    /// Rows `(ts, n)` of one series cut into batches at `cuts`.
    fn input(
        name: &str,
        rows: &[(i64, i64)],
        cuts: &[usize],
        pending_first: bool,
    ) -> SendableRecordBatchStream {
        let schema = test_schema();
        let mut batches = Vec::new();
        let mut at = 0;
        for &end in cuts.iter().chain(std::iter::once(&rows.len())) {
            let part = &rows[at..end.max(at)];
            at = end.max(at);
            batches.push(Ok(RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![name; part.len()])),
                    Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        part.iter().map(|r| r.0),
                    )),
                ],
            )
            .unwrap()));
        }
        // A stream that is not ready at its first poll, as a task decoding ahead would be.
        let mut yielded = !pending_first;
        let delayed = stream::iter(batches).then(move |b| {
            let first = !yielded;
            yielded = true;
            async move {
                if first {
                    tokio::task::yield_now().await;
                }
                b
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, delayed))
    }

    fn rows_of(batches: &[RecordBatch]) -> Vec<(i64, String, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let names = b.column(0).as_string::<i32>();
            let n = b
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
            for r in 0..b.num_rows() {
                out.push((ts.value(r), names.value(r).to_string(), n.value(r)));
            }
        }
        out
    }

    #[tokio::test]
    async fn merges_like_a_stable_sort_by_ts_then_rank() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let series = 1 + (rng.next_u32() % 12) as usize;
            let mut inputs = Vec::new();
            let mut names = Vec::new();
            let mut expected = Vec::new();
            for s in 0..series {
                // Shared and own timestamps, equal ts across series, empty series, and a
                // series given twice (equal rank: kept in input order).
                let len = (rng.next_u32() % 40) as usize;
                let mut t = (rng.next_u32() % 10) as i64;
                let mut rows = Vec::new();
                for i in 0..len {
                    t += (rng.next_u32() % 3) as i64;
                    rows.push((t, (s * 1000 + i) as i64));
                }
                let mut cuts: Vec<usize> = (0..rng.next_u32() % 4)
                    .map(|_| (rng.next_u32() as usize) % (len + 1))
                    .collect();
                cuts.sort_unstable();
                let name = if s > 0 && rng.next_u32() % 5 == 0 {
                    names[s - 1]
                } else {
                    ["B", "A", "D", "C", "F", "E", "H", "G", "J", "I", "L", "K"][s]
                };
                names.push(name);
                inputs.push(input(name, &rows, &cuts, rng.next_u32() % 2 == 0));
                expected.extend(rows.iter().map(|&(t, n)| (t, name.to_string(), n, s)));
            }
            let mut order: Vec<usize> = (0..series).collect();
            order.sort_by_key(|&i| (names[i], i));
            let mut ranks = vec![0u32; series];
            for (rank, &i) in order.iter().enumerate() {
                ranks[i] = if rank > 0 && names[order[rank - 1]] == names[i] {
                    ranks[order[rank - 1]]
                } else {
                    rank as u32
                };
            }
            expected.sort_by(|a, b| (a.0, ranks[a.3], a.3).cmp(&(b.0, ranks[b.3], b.3)));
            let expected: Vec<_> = expected.into_iter().map(|(t, s, n, _)| (t, s, n)).collect();
            let batch_size = 1 + (rng.next_u32() % 16) as usize;
            let merged: Vec<RecordBatch> = Merge::new(test_schema(), inputs, ranks, batch_size)
                .map(|b| b.unwrap())
                .collect()
                .await;
            assert!(
                merged
                    .iter()
                    .all(|b| b.num_rows() <= batch_size && b.num_rows() > 0),
                "case {case}: batches of at most {batch_size} rows"
            );
            assert_eq!(rows_of(&merged), expected, "case {case}");
        }
    }

    #[tokio::test]
    async fn an_input_error_ends_the_merge_with_it() {
        let good = input("A", &[(1, 1), (2, 2)], &[], false);
        let bad: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            test_schema(),
            stream::iter(vec![Err(DataFusionError::Execution("disk gone".into()))]),
        ));
        let out: Vec<_> = Merge::new(test_schema(), vec![good, bad], vec![0, 1], 8)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("disk gone")
        );
    }
}
