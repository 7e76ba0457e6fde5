//! `live.market_data`: the SQL table itself, read-only, as a DataFusion table, so the shell can
//! compare the cache with its source or read bars newer than the last sync.
//!
//! Filters on `symbol`, `timeframe` and `ts` become the `WHERE` clause of the query sent to the
//! database (as bound parameters); DataFusion applies every filter again on the rows that come
//! back, so a filter the database cannot take is still exact. Rows arrive in the cache's
//! representation (exact `Decimal128(28, 8)`, `ts` in UTC microseconds), streamed in batches.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::cache::schema;
use crate::config::DatabaseConfig;
use crate::db::{BarFilter, Scan, Store};
use crate::error::{Context, Error, Result};
use crate::model::{Symbol, Timeframe, ts_from_micros};
use crate::read::filter::Bounds;

/// Rows per batch handed to DataFusion.
const BATCH_ROWS: usize = 8192;

/// The configured database's `market_data`, connected on first use: a shell that never reads
/// `live.market_data` never opens a connection.
#[derive(Debug)]
pub struct LiveTable {
    config: DatabaseConfig,
    store: Arc<OnceCell<Store>>,
}

impl LiveTable {
    /// The table of the database `config` names.
    pub fn new(config: DatabaseConfig) -> LiveTable {
        LiveTable {
            config,
            store: Arc::new(OnceCell::new()),
        }
    }
}

/// The part of the filters the database can answer: one symbol, one timeframe, a `ts` range.
/// `None` when the filters cannot match any row.
fn bar_filter(filters: &[Expr]) -> Option<BarFilter> {
    let bounds = Bounds::of_all(filters);
    let single = |set: &Option<std::collections::BTreeSet<String>>| -> Option<Option<String>> {
        match set {
            None => Some(None),
            Some(s) if s.is_empty() => None,
            Some(s) if s.len() == 1 => Some(s.iter().next().cloned()),
            Some(_) => Some(None),
        }
    };
    let symbol = single(&bounds.symbols)?;
    let timeframe = single(&bounds.timeframes)?;
    if let (Some(lo), Some(hi)) = (bounds.min_ts, bounds.max_ts)
        && lo > hi
    {
        return None;
    }
    // Only values stored exactly as written are sent: a symbol or timeframe quiver would
    // spell differently matches no stored row, and DataFusion's own filter says so.
    Some(BarFilter {
        symbol: symbol.and_then(|s| Symbol::parse(&s).ok().filter(|p| p.as_str() == s)),
        timeframe: timeframe.and_then(|t| Timeframe::parse(&t).ok().filter(|p| p.to_string() == t)),
        start: bounds.min_ts.and_then(|t| ts_from_micros(t).ok()),
        end: bounds.max_ts.and_then(|t| ts_from_micros(t).ok()),
    })
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let partition = LivePartition {
            config: self.config.clone(),
            store: self.store.clone(),
            filter: bar_filter(filters),
            schema: schema(),
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            schema(),
            vec![Arc::new(partition)],
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

#[derive(Debug)]
struct LivePartition {
    config: DatabaseConfig,
    store: Arc<OnceCell<Store>>,
    filter: Option<BarFilter>,
    schema: SchemaRef,
}

impl PartitionStream for LivePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let (config, cell, filter) = (self.config.clone(), self.store.clone(), self.filter.clone());
        // The query runs on its own task; dropping the stream (a cancelled query) closes the
        // channel, and the task stops at its next send.
        if let Some(filter) = filter {
            tokio::spawn(async move {
                let result = async {
                    let store = cell
                        .get_or_try_init(|| Store::connect_read_only(&config))
                        .await?;
                    read(store, filter, &tx).await
                }
                .await;
                if let Err(e) = result {
                    let _ = tx.send(Err(e)).await;
                }
            });
        }
        let batches =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            )
            .map(|b| b.map_err(datafusion::error::DataFusionError::from));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

async fn read(
    store: &Store,
    filter: BarFilter,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<()> {
    let mut rows = store.scan(Scan::Filter(filter));
    let mut batch = Batch::default();
    let mut series = (String::new(), String::new());
    while let Some(row) = rows.next().await {
        let row = row?;
        if let Some(bad) = row.bad {
            return Err(Error::invalid(bad.to_string()));
        }
        if let Some(s) = row.series {
            series = s;
        }
        batch.push(&series, row.ts, row.values);
        if batch.len == BATCH_ROWS && tx.send(batch.finish()).await.is_err() {
            return Ok(());
        }
    }
    if batch.len > 0 {
        let _ = tx.send(batch.finish()).await;
    }
    Ok(())
}

/// Builders of one batch of [`schema`].
#[derive(Default)]
struct Batch {
    symbol: StringBuilder,
    timeframe: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    values: [Decimal128Builder; 5],
    len: usize,
}

impl Batch {
    fn push(&mut self, (symbol, timeframe): &(String, String), ts: i64, values: [i128; 5]) {
        self.symbol.append_value(symbol);
        self.timeframe.append_value(timeframe);
        self.ts.append_value(ts);
        for (b, v) in self.values.iter_mut().zip(values) {
            b.append_value(v);
        }
        self.len += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        crate::cache::batch_of(
            self.symbol.finish(),
            self.timeframe.finish(),
            self.ts.finish(),
            self.values.each_mut().map(|b| b.finish()),
        )
        .context(|| "building live.market_data's rows".into())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn filters_become_a_bar_filter() {
        let f = bar_filter(&[
            col("symbol").eq(lit("AAPL")),
            col("timeframe").eq(lit("1d")),
        ])
        .unwrap();
        assert_eq!(f.symbol.unwrap().as_str(), "AAPL");
        assert_eq!(f.timeframe.unwrap().to_string(), "1d");
        assert_eq!(f.start, None);
        // Several symbols: the database returns all, DataFusion keeps the two.
        let f = bar_filter(&[col("symbol").in_list(vec![lit("A"), lit("B")], false)]).unwrap();
        assert_eq!(f.symbol, None);
        // Contradictions read nothing.
        assert!(bar_filter(&[col("symbol").eq(lit("A")), col("symbol").eq(lit("B"))]).is_none());
    }
}
