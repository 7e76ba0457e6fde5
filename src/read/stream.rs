//! The stream a read returns: the cut of a series' ordered batches to the warmup and the
//! range ([`Cut`]), the check that a merged read found something, and [`BarStream`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::{Bars, BarsRequest, Reader, TS, decode_bars, empty_range};
use crate::cache::schema;
use crate::error::{Error, Result};
use crate::model::Bar;

/// Fails a merged stream at its end when no series had a bar in range.
pub(super) fn require_some_range(
    input: SendableRecordBatchStream,
    start: Option<i64>,
    wanted: bool,
    (request, first_last): (BarsRequest, (i64, i64)),
) -> SendableRecordBatchStream {
    let start = start.unwrap_or(i64::MIN);
    let state = (input, 0u64, false);
    let stream = futures_util::stream::unfold(state, move |(mut input, mut in_range, done)| {
        let request = request.clone();
        async move {
            if done {
                return None;
            }
            match input.next().await {
                Some(Ok(batch)) => {
                    in_range += ts_values(&batch)
                        .map(|ts| ts.iter().filter(|&&t| t >= start).count() as u64)
                        .unwrap_or(0);
                    Some((Ok(batch), (input, in_range, false)))
                }
                Some(Err(e)) => Some((Err(e), (input, in_range, true))),
                None if wanted && in_range == 0 => Some((
                    Err(datafusion::error::DataFusionError::from(empty_range(
                        &request, first_last,
                    ))),
                    (input, in_range, true),
                )),
                None => None,
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema(), stream))
}

pub(super) fn ts_values(batch: &RecordBatch) -> Result<&[i64]> {
    Ok(batch
        .column(TS)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::corrupt("a cache file without the cache's ts column"))?
        .values())
}

/// Cuts a series' ordered batches to the last `warmup` rows before `start` and the first
/// `remaining` rows of `[start, end]`, holding at most the warmup in memory.
pub(super) struct Cut {
    pub(super) input: BoxStream<'static, datafusion::error::Result<RecordBatch>>,
    pub(super) lo: i64,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) warmup: usize,
    pub(super) remaining: usize,
    pub(super) warm: VecDeque<RecordBatch>,
    pub(super) warm_rows: usize,
    pub(super) warm_done: bool,
    pub(super) out: VecDeque<RecordBatch>,
    pub(super) range_rows: u64,
    /// A row at or after `start` was seen: the warmup is complete.
    pub(super) reached_start: bool,
    pub(super) done: bool,
    /// The error to end with if the range held no bar.
    pub(super) empty: Option<Error>,
}

impl Cut {
    pub(super) fn push_warm(&mut self, batch: RecordBatch) {
        if self.warmup == 0 || batch.num_rows() == 0 {
            return;
        }
        self.warm_rows += batch.num_rows();
        self.warm.push_back(batch);
        while let Some(front) = self.warm.front() {
            if self.warm_rows - front.num_rows() >= self.warmup {
                self.warm_rows -= front.num_rows();
                self.warm.pop_front();
            } else {
                break;
            }
        }
    }

    pub(super) fn flush_warm(&mut self) {
        if self.warm_done {
            return;
        }
        self.warm_done = true;
        let excess = self.warm_rows.saturating_sub(self.warmup);
        if let Some(front) = self.warm.front_mut()
            && excess > 0
        {
            *front = front.slice(excess, front.num_rows() - excess);
        }
        self.out.extend(self.warm.drain(..));
    }

    pub(super) async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.out.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                if self.range_rows == 0 {
                    return self.empty.take().map(Err);
                }
                return None;
            }
            if self.remaining == 0 && self.reached_start {
                self.flush_warm();
                self.done = true;
                continue;
            }
            let batch = match self.input.next().await {
                None => {
                    self.flush_warm();
                    self.done = true;
                    continue;
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.empty = None;
                    return Some(Err(e.into()));
                }
                Some(Ok(batch)) => batch,
            };
            let ts = match ts_values(&batch) {
                Ok(ts) => ts,
                Err(e) => {
                    self.done = true;
                    self.empty = None;
                    return Some(Err(e));
                }
            };
            let (lo, start, end) = (self.lo, self.start, self.end);
            let a = ts.partition_point(|&t| t < lo);
            let s = ts.partition_point(|&t| t < start).max(a);
            let e = ts.partition_point(|&t| t <= end).max(s);
            let past_end = e < ts.len();
            self.reached_start |= s < ts.len();
            if s > a && !self.warm_done {
                self.push_warm(batch.slice(a, s - a));
            }
            let take = (e - s).min(self.remaining);
            if take > 0 {
                self.flush_warm();
                self.out.push_back(batch.slice(s, take));
                self.remaining -= take;
                self.range_rows += take as u64;
            }
            if past_end {
                self.flush_warm();
                self.done = true;
            }
        }
    }
}

/// The result of a read as a stream of record batches (the cache's eight columns, in `ts`
/// order): warmup bars first, then the range.
pub struct BarStream {
    inner: SendableRecordBatchStream,
    start: Option<i64>,
    reader: Reader,
    started: Instant,
    rows: usize,
    observed: bool,
}

impl BarStream {
    pub(super) fn new(
        inner: SendableRecordBatchStream,
        start: Option<i64>,
        reader: Reader,
        started: Instant,
    ) -> BarStream {
        BarStream {
            inner,
            start,
            reader,
            started,
            rows: 0,
            observed: false,
        }
    }

    /// The schema of every batch: the cache's eight columns.
    pub fn schema(&self) -> SchemaRef {
        schema()
    }

    /// Reads the whole stream; the warmup count is the number of bars before the range.
    pub async fn collect_bars(mut self) -> Result<Bars> {
        let mut bars = Bars::default();
        while let Some(batch) = self.next().await {
            let batch = batch?;
            if let Some(start) = self.start {
                bars.warmup += ts_values(&batch)?.partition_point(|&t| t < start);
            }
            bars.batches.push(batch);
        }
        Ok(bars)
    }

    /// The stream as typed bars, one at a time.
    pub fn into_bars(self) -> impl Stream<Item = Result<Bar>> + Send {
        self.flat_map(|batch| {
            let bars = batch.and_then(|b| {
                let mut out = Vec::new();
                decode_bars(&b, &mut out)?;
                Ok(out)
            });
            match bars {
                Ok(bars) => {
                    futures_util::stream::iter(bars.into_iter().map(Ok).collect::<Vec<_>>())
                }
                Err(e) => futures_util::stream::iter(vec![Err(e)]),
            }
        })
    }
}

impl Stream for BarStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => self.rows += batch.num_rows(),
            Poll::Ready(None) if !self.observed => {
                self.observed = true;
                self.reader.observe(self.started.elapsed(), self.rows);
            }
            _ => {}
        }
        polled.map(|item| item.map(|r| r.map_err(Error::from)))
    }
}
