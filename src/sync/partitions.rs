//! From rows to files: a key-ordered scan cut into partitions, and partitions encoded and
//! written several at a time while the scan keeps reading.

use super::*;

/// One partition cut from a scan: its key, its rows and, when one of its rows cannot be held
/// exactly, why (the first such row). A held-back partition is never written.
pub(super) type Cut = (PartitionKey, PartitionData, Option<Box<str>>);

pub(super) type PartitionStream<'a> = futures_util::stream::BoxStream<'a, Result<Cut>>;

/// Cuts a key-ordered row stream into partitions.
pub(super) fn split_partitions(rows: ScanStream<'_>) -> PartitionStream<'_> {
    struct State<'a> {
        rows: ScanStream<'a>,
        series: Option<(String, String, Period)>,
        current: Option<(PartitionKey, i64, PartitionData, Option<Box<str>>)>,
        done: bool,
    }
    let state = State {
        rows,
        series: None,
        current: None,
        done: false,
    };
    Box::pin(futures_util::stream::try_unfold(
        state,
        |mut st| async move {
            if st.done {
                return Ok(None);
            }
            while let Some(row) = st.rows.next().await {
                let row = row?;
                if let Some((symbol, timeframe)) = row.series {
                    let tf = Timeframe::parse(&timeframe).map_err(|m| {
                        Error::corrupt(format!(
                            "market_data holds a bad timeframe for {symbol}: {m}"
                        ))
                    })?;
                    st.series = Some((symbol, timeframe, Period::for_timeframe(tf)));
                }
                let Some((symbol, timeframe, period)) = &st.series else {
                    return Err(Error::internal("a scan's first row names its series"));
                };
                let same = st.current.as_ref().is_some_and(|(key, end, _, _)| {
                    row.ts < *end && key.symbol == *symbol && key.timeframe == *timeframe
                });
                if same {
                    if let Some((_, _, data, held)) = st.current.as_mut() {
                        data.push(row.ts, row.values);
                        if held.is_none() {
                            *held = row.bad;
                        }
                    }
                    continue;
                }
                let key = PartitionKey {
                    timeframe: timeframe.clone(),
                    symbol: symbol.clone(),
                    period: period.label(row.ts),
                };
                let end = key.range()?.1.unwrap_or(i64::MAX);
                let mut data = PartitionData::default();
                data.push(row.ts, row.values);
                if let Some((key, _, data, held)) = st.current.replace((key, end, data, row.bad)) {
                    return Ok(Some(((key, data, held), st)));
                }
            }
            st.done = true;
            Ok(st
                .current
                .take()
                .map(|(key, _, data, held)| ((key, data, held), st)))
        },
    ))
}

/// What [`write_partitions`] did.
#[derive(Default)]
pub(super) struct Written {
    /// The new file per partition (`None`: the partition has no rows left).
    pub(super) files: Vec<(PartitionKey, Option<DataFile>)>,
    /// Partitions not written because a row cannot be held exactly, with the reason.
    pub(super) held: Vec<(PartitionKey, Box<str>)>,
    /// Rows written.
    pub(super) rows: u64,
}

/// Encodes and writes partitions while the stream keeps reading, several at a time (encoding
/// on the blocking pool, the puts concurrent): a live feed's burst is thousands of one-row
/// files. On an error, the files already written are deleted.
pub(super) async fn write_partitions(
    table: &Table,
    partitions: PartitionStream<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<Written> {
    enum Outcome {
        File(Option<DataFile>, u64),
        Held(Box<str>),
    }
    let mut writes = partitions
        .map(|item| {
            let table = table.clone();
            async move {
                let (key, data, held) = item?;
                if let Some(bar) = bar {
                    bar.inc(data.len() as u64);
                }
                if let Some(reason) = held {
                    return Ok((key, Outcome::Held(reason)));
                }
                if data.is_empty() {
                    return Ok((key, Outcome::File(None, 0)));
                }
                let rows = data.len() as u64;
                let (encoder, k) = (table.clone(), key.clone());
                let (file, bytes) =
                    tokio::task::spawn_blocking(move || encoder.encode_and_write_local(&k, &data))
                        .await
                        .map_err(|e| {
                            Error::internal(format!("the Parquet encoder stopped: {e}"))
                        })??;
                if let Some(bytes) = bytes {
                    table.store_file(&file, bytes).await?;
                }
                Ok::<_, Error>((key, Outcome::File(Some(file), rows)))
            }
        })
        .buffer_unordered(PARALLEL_WRITES);
    let mut out = Written::default();
    while let Some(written) = writes.next().await {
        match written {
            Ok((key, Outcome::File(file, n))) => {
                out.rows += n;
                out.files.push((key, file));
            }
            Ok((key, Outcome::Held(reason))) => out.held.push((key, reason)),
            Err(e) => {
                drop(writes);
                discard(table, out.files.iter().filter_map(|(_, f)| f.as_ref())).await;
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Deletes files a failed pass wrote (best effort: vacuum deletes any it misses).
pub(super) async fn discard(table: &Table, files: impl Iterator<Item = &DataFile>) {
    for f in files {
        if let Err(e) = table.log().delete(&f.path).await {
            tracing::debug!(path = %f.path, error = %e, "could not delete an uncommitted file");
        }
    }
}
