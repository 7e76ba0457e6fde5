//! Several series merged into one stream in `(ts, symbol, timeframe)` order: a portfolio
//! backtest's replay of a universe.
//!
//! Each input is one series' batches in `ts` order (already cut to its warmup and range), and
//! a series holds each `ts` once (it is the key). So with every input's current batch in
//! hand, every row up to the smallest of their last `ts` (the horizon) is there: no later
//! batch can hold one. The merge takes those rows from each input in rank order, sorts them
//! by `ts` with a stable sort (which keeps the rank order of equal `ts`, and merges the
//! inputs' sorted runs in long sequential passes), and gathers them into output batches with
//! Arrow's `interleave`. Then the inputs that ran out give their next batch, and so on.
//!
//! Measured on a universe of 500 aligned minute series (`cargo bench --bench w14_throughput`),
//! a binary heap of each input's next row took about 150 ns a row (a pop and a push for
//! almost every row, as every series has a bar each minute); DataFusion's sort-preserving
//! merge also turns the string keys into its row format. A chunk is at most `CHUNK` rows (the
//! horizon is lowered until it fits), and at most one batch per input is held.
//!
//! An input that has used up its batch must give its next one before anything else is
//! merged; the stream waits for it, so inputs should be decoded ahead on their own tasks (see
//! [`super::prefetch`]).

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
/// Most rows sorted at once (about 40 MB of row references while they are emitted).
const CHUNK: usize = 1 << 20;

/// One input's current batch and the first row of it not yet merged.
struct Head {
    batch: RecordBatch,
    ts: ScalarBuffer<i64>,
    row: usize,
}

impl Head {
    /// Rows not yet merged with `ts <= bound`.
    fn upto(&self, bound: i64) -> usize {
        self.ts[self.row..].partition_point(|&t| t <= bound)
    }
}

/// The merged stream (see the module documentation).
pub(super) struct Merge {
    schema: SchemaRef,
    inputs: Vec<SendableRecordBatchStream>,
    /// The inputs in `(rank, input)` order: the order of rows of equal `ts`.
    order: Vec<usize>,
    heads: Vec<Option<Head>>,
    /// Inputs whose next batch is needed before the next chunk.
    waiting: Vec<usize>,
    /// The chunk being emitted: the batches its rows come from, the rows as `(slot, row)` in
    /// output order, and how many of them are out.
    slots: Vec<RecordBatch>,
    chunk: Vec<(usize, usize)>,
    emitted: usize,
    batch_size: usize,
    /// At most this many rows in a chunk ([`CHUNK`]; smaller in tests).
    chunk_rows: usize,
    done: bool,
}

impl Merge {
    /// Merges `inputs`, each in `ts` order with each `ts` once; `ranks[i]` orders input `i`
    /// among rows of equal `ts` (the series' place in `(symbol, timeframe)` order; equal ranks
    /// keep the inputs' order).
    pub(super) fn new(
        schema: SchemaRef,
        inputs: Vec<SendableRecordBatchStream>,
        ranks: Vec<u32>,
        batch_size: usize,
    ) -> Merge {
        let n = inputs.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ranks.get(i).copied().unwrap_or(u32::MAX), i));
        Merge {
            schema,
            inputs,
            order,
            heads: (0..n).map(|_| None).collect(),
            waiting: (0..n).collect(),
            slots: Vec::new(),
            chunk: Vec::new(),
            emitted: 0,
            batch_size: batch_size.max(1),
            chunk_rows: CHUNK,
            done: false,
        }
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
        self.heads[input] = Some(Head { batch, ts, row: 0 });
        Ok(())
    }

    /// Asks every waiting input for its next batch; ready when none is still waiting.
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

    /// Rows not yet merged with `ts <= bound`, over every input.
    fn rows_upto(&self, bound: i64) -> usize {
        self.heads.iter().flatten().map(|h| h.upto(bound)).sum()
    }

    /// The next chunk: every row up to the horizon (lowered to fit [`CHUNK`]), in order.
    /// False when every input is done.
    fn next_chunk(&mut self) -> bool {
        let heads = || self.heads.iter().flatten();
        let (Some(first), Some(horizon)) = (
            heads().map(|h| h.ts[h.row]).min(),
            heads().map(|h| h.ts[h.ts.len() - 1]).min(),
        ) else {
            return false;
        };
        let mut bound = horizon;
        let cap = self.chunk_rows;
        if self.rows_upto(bound) > cap {
            // The largest bound whose rows fit, but at least the smallest row (progress).
            let (mut lo, mut hi) = (first, horizon);
            if self.rows_upto(lo) <= cap {
                while i128::from(hi) - i128::from(lo) > 1 {
                    let mid = (i128::from(lo) + (i128::from(hi) - i128::from(lo)) / 2) as i64;
                    if self.rows_upto(mid) <= cap {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
            }
            bound = lo;
        }
        let mut keyed: Vec<(i64, usize, usize)> = Vec::with_capacity(self.rows_upto(bound));
        for &input in &self.order {
            let Some(head) = self.heads[input].as_mut() else {
                continue;
            };
            let n = head.upto(bound);
            if n == 0 {
                continue;
            }
            let slot = self.slots.len();
            self.slots.push(head.batch.clone());
            keyed.extend((head.row..head.row + n).map(|row| (head.ts[row], slot, row)));
            head.row += n;
            if head.row == head.ts.len() {
                self.heads[input] = None;
                self.waiting.push(input);
            }
        }
        // Stable: rows of equal `ts` stay in input rank order.
        keyed.sort_by_key(|&(ts, _, _)| ts);
        self.chunk = keyed
            .into_iter()
            .map(|(_, slot, row)| (slot, row))
            .collect();
        self.emitted = 0;
        true
    }

    /// The next output batch of the chunk; the chunk's batches are let go after its last.
    fn emit(&mut self) -> DfResult<RecordBatch> {
        let end = (self.emitted + self.batch_size).min(self.chunk.len());
        let sources: Vec<&RecordBatch> = self.slots.iter().collect();
        let out = interleave_record_batch(&sources, &self.chunk[self.emitted..end])?;
        self.emitted = end;
        if end == self.chunk.len() {
            self.chunk.clear();
            self.slots.clear();
            self.emitted = 0;
        }
        Ok(out)
    }

    fn poll_merge(&mut self, cx: &mut Context<'_>) -> Poll<Option<DfResult<RecordBatch>>> {
        loop {
            if self.emitted < self.chunk.len() {
                return Poll::Ready(Some(self.emit()));
            }
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
            if !self.next_chunk() {
                self.done = true;
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
                    // A series holds each ts once; other series share some.
                    t += 1 + (rng.next_u32() % 3) as i64;
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
            let mut merge = Merge::new(test_schema(), inputs, ranks, batch_size);
            // Chunks from a few rows (the horizon lowered to fit) to everything at once.
            merge.chunk_rows = [1, 3, 17, 100, CHUNK][case % 5];
            let merged: Vec<RecordBatch> = merge.map(|b| b.unwrap()).collect().await;
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
