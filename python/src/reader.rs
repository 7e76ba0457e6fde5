//! `quiver.Reader`: bars, merged universes, streams, the latest bar, the series listing and
//! SQL over one cache.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use quiver::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use quiver::arrow::datatypes::SchemaRef;
use quiver::arrow::error::ArrowError;
use quiver::read::BarsRequest;

use crate::convert::{Prices, as_of, instant, load_config, symbols, timeframe};
use crate::errors::{arrow_to_py, to_py};
use crate::run;
use crate::stream::{Pull, PyBarStream};
use crate::table::Table;

/// Reads bars from a cache folder. One reader is meant to be shared: by threads (every read
/// releases the GIL) and across calls (open files and their metadata stay cached).
#[pyclass(module = "quiver", name = "Reader", frozen)]
pub(crate) struct Reader {
    inner: quiver::read::Reader,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    fn requests(
        symbol: &Bound<'_, PyAny>,
        timeframe_: &str,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        warmup: usize,
        limit: Option<usize>,
        as_of_: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<BarsRequest>> {
        let timeframe = timeframe(timeframe_)?;
        let start = start
            .filter(|s| !s.is_none())
            .map(|s| instant(s, false))
            .transpose()?;
        let end = end
            .filter(|s| !s.is_none())
            .map(|s| instant(s, true))
            .transpose()?;
        let as_of = as_of(as_of_)?;
        Ok(symbols(symbol)?
            .into_iter()
            .map(|symbol| BarsRequest {
                symbol,
                timeframe,
                start,
                end,
                warmup,
                limit,
                as_of,
            })
            .collect())
    }
}

#[pymethods]
impl Reader {
    /// Opens the cache under `path`, or the one a config file names (`config=`), or the one
    /// of `./config.toml` and the `QUIVER_*` variables when both are left out.
    #[new]
    #[pyo3(signature = (path=None, *, config=None))]
    fn new(path: Option<std::path::PathBuf>, config: Option<&str>) -> PyResult<Reader> {
        let mut c = load_config(config, path.is_none())?;
        if let Some(dir) = path {
            c.cache.dir = dir;
        }
        let inner = quiver::read::Reader::open(&c).map_err(to_py)?;
        Ok(Reader { inner })
    }

    /// Bars of one series (or of several, merged by `ts`) from `start` to `end` inclusive,
    /// after exactly `warmup` bars before `start`.
    #[pyo3(signature = (symbol, timeframe, *, start=None, end=None, warmup=0, limit=None, as_of=None, prices="decimal"))]
    #[allow(clippy::too_many_arguments)]
    fn bars(
        &self,
        py: Python<'_>,
        symbol: &Bound<'_, PyAny>,
        timeframe: &str,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        warmup: usize,
        limit: Option<usize>,
        as_of: Option<&Bound<'_, PyAny>>,
        prices: &str,
    ) -> PyResult<Table> {
        let prices = Prices::parse(prices)?;
        let requests = Reader::requests(symbol, timeframe, start, end, warmup, limit, as_of)?;
        let reader = self.inner.clone();
        let bars = run(py, async move {
            if requests.len() == 1 {
                reader.bars(&requests[0]).await
            } else {
                reader.bars_merged(&requests).await
            }
        })?;
        let schema = prices.schema(&quiver::cache::schema());
        let batches = bars
            .batches
            .into_iter()
            .map(|b| prices.convert(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(arrow_to_py)?;
        Ok(Table {
            batches,
            schema,
            warmup: bars.warmup,
        })
    }

    /// `bars` as a stream of record batches that never holds the range in memory.
    #[pyo3(signature = (symbol, timeframe, *, start=None, end=None, warmup=0, limit=None, as_of=None, prices="decimal"))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        symbol: &Bound<'_, PyAny>,
        timeframe: &str,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        warmup: usize,
        limit: Option<usize>,
        as_of: Option<&Bound<'_, PyAny>>,
        prices: &str,
    ) -> PyResult<PyBarStream> {
        let prices = Prices::parse(prices)?;
        let requests = Reader::requests(symbol, timeframe, start, end, warmup, limit, as_of)?;
        let reader = self.inner.clone();
        let stream = run(py, async move {
            if requests.len() == 1 {
                reader.stream(&requests[0]).await
            } else {
                reader.stream_merged(&requests).await
            }
        })?;
        Ok(PyBarStream {
            schema: prices.schema(&stream.schema()),
            pull: Mutex::new(Pull {
                stream: Some(stream),
                prices,
            }),
        })
    }

    /// The newest bar of each symbol given, in the order given.
    #[pyo3(signature = (symbol, timeframe, *, prices="decimal"))]
    fn latest(
        &self,
        py: Python<'_>,
        symbol: &Bound<'_, PyAny>,
        timeframe: &str,
        prices: &str,
    ) -> PyResult<Table> {
        let prices = Prices::parse(prices)?;
        let timeframe = self::timeframe(timeframe)?;
        let symbols = symbols(symbol)?;
        let reader = self.inner.clone();
        let batches = run(py, async move {
            let mut out = Vec::with_capacity(symbols.len());
            for s in &symbols {
                out.extend(reader.latest(s, timeframe).await?.batches);
            }
            Ok(out)
        })?;
        Ok(Table {
            batches: batches
                .into_iter()
                .map(|b| prices.convert(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(arrow_to_py)?,
            schema: prices.schema(&quiver::cache::schema()),
            warmup: 0,
        })
    }

    /// Runs SQL (DataFusion's dialect, the `quiver sql` shell's tables and functions) on the
    /// cache and returns the result.
    fn sql(&self, py: Python<'_>, query: &str) -> PyResult<Table> {
        let ctx = self.inner.context().clone();
        let query = query.to_string();
        let (schema, batches) = run(py, async move {
            let df = ctx.sql(&query).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok((schema, batches))
        })?;
        Ok(Table {
            batches,
            schema,
            warmup: 0,
        })
    }

    /// The series the cache holds: `symbol`, `timeframe`, `first` and `last` bar (UTC
    /// timestamps) and the number of `bars`, from the table's manifest (no data file read).
    #[pyo3(signature = (*, as_of=None))]
    fn series(&self, py: Python<'_>, as_of: Option<&Bound<'_, PyAny>>) -> PyResult<Table> {
        let as_of = self::as_of(as_of)?;
        let reader = self.inner.clone();
        let series = run(py, async move { reader.series(as_of).await })?;
        let batch = series_batch(&series).map_err(arrow_to_py)?;
        Ok(Table {
            schema: batch.schema(),
            batches: vec![batch],
            warmup: 0,
        })
    }

    /// The newest version of the cache (the Delta table's), or `None` before the first sync.
    fn version(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let reader = self.inner.clone();
        let loaded = run(py, async move { reader.current_version().await })?;
        Ok(loaded.map(|s| s.version()))
    }

    fn __repr__(&self) -> String {
        format!("quiver.Reader({})", self.inner.cache().root().display())
    }
}

/// Series summaries as one record batch, times as UTC timestamps.
fn series_batch(series: &[quiver::SeriesSummary]) -> Result<RecordBatch, ArrowError> {
    let strings = |f: &dyn Fn(&quiver::SeriesSummary) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(series.iter().map(f)))
    };
    let times = |f: &dyn Fn(&quiver::SeriesSummary) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(series.iter().map(f)).with_timezone("UTC"),
        )
    };
    RecordBatch::try_from_iter([
        ("symbol", strings(&|s| s.symbol.as_str())),
        ("timeframe", strings(&|s| s.timeframe.as_str())),
        ("first", times(&|s| s.first.timestamp_micros())),
        ("last", times(&|s| s.last.timestamp_micros())),
        (
            "bars",
            Arc::new(Int64Array::from_iter_values(series.iter().map(|s| s.bars))) as ArrayRef,
        ),
    ])
}
