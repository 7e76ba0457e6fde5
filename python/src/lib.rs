//! `quiver._quiver`: the Python extension over the quiver library.
//!
//! A thin layer: every read, write and check is the library's; this crate only converts
//! arguments, releases the GIL while the library works, and hands Arrow data over through the
//! Arrow PyCapsule interface (no copy). The pure-Python package `quiver` re-exports it.

use std::sync::{Arc, LazyLock, Mutex};

use futures_util::StreamExt;
use pyo3::exceptions::{PyException, PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyString};
use pyo3_arrow::ffi::{ArrayIterator, ArrayReader, to_schema_pycapsule, to_stream_pycapsule};
use pyo3_arrow::input::AnyRecordBatch;
use quiver::arrow::array::{ArrayRef, RecordBatch, StructArray};
use quiver::arrow::compute::cast;
use quiver::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver::arrow::error::ArrowError;
use quiver::cache::AsOf;
use quiver::config::Config;
use quiver::frame::{FrameOptions, bars_from_batches};
use quiver::read::{BarStream, BarsRequest};
use quiver::{BarFilter, OnConflict, Symbol, Syncer, Timeframe};

/// The extension's Rust allocations go through mimalloc, as the quiver binary's: large reads
/// reuse freed memory instead of faulting fresh pages in (see the README's W14). Arrow data
/// handed to Python is released through its own callback, back into this allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One runtime for every call: reads run on the calling thread (`block_on`), parallel decodes
/// and database connections on its workers.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("quiver")
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
});

/// Runs a library future with the GIL released.
fn run<T: Send>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = quiver::Result<T>> + Send,
) -> PyResult<T> {
    py.detach(|| RUNTIME.block_on(fut)).map_err(to_py)
}

pyo3::create_exception!(quiver, Error, PyException, "Every error quiver raises.");
pyo3::create_exception!(
    quiver,
    InputError,
    Error,
    "Bad input: a bad row or column of a frame or file, a bad argument. Nothing was written."
);
pyo3::create_exception!(
    quiver,
    UnknownSeriesError,
    Error,
    "The cache holds no bars of this symbol and timeframe."
);
pyo3::create_exception!(
    quiver,
    EmptyRangeError,
    Error,
    "The range asked for holds no bar (the message says where the series' bars are)."
);
pyo3::create_exception!(
    quiver,
    InvalidRangeError,
    Error,
    "The range's start is after its end."
);
pyo3::create_exception!(
    quiver,
    EmptyCacheError,
    Error,
    "The cache has no version yet: run a sync first."
);
pyo3::create_exception!(
    quiver,
    ConflictError,
    Error,
    "A bar already exists and on_conflict is \"error\"; nothing was written."
);
pyo3::create_exception!(
    quiver,
    DatabaseError,
    Error,
    "The SQL database failed (connection, statement, migration)."
);

/// The Python exception for a library error, carrying the library's message.
fn to_py(e: quiver::Error) -> PyErr {
    let message = e.to_string();
    exception(&e, message)
}

/// The class of `e` (a failed statement keeps the class of its cause).
fn exception(e: &quiver::Error, message: String) -> PyErr {
    use quiver::Error as E;
    match e {
        E::At { inner, .. } => exception(inner, message),
        E::InvalidArgument(_) | E::Input { .. } | E::Row { .. } | E::Format { .. } => {
            InputError::new_err(message)
        }
        E::Conflict { .. } => ConflictError::new_err(message),
        E::UnknownSeries { .. } => UnknownSeriesError::new_err(message),
        E::EmptyRange(_) => EmptyRangeError::new_err(message),
        E::InvalidRange { .. } => InvalidRangeError::new_err(message),
        E::EmptyCache { .. } => EmptyCacheError::new_err(message),
        E::Database { .. } | E::Sqlite { .. } | E::Migrate(_) => DatabaseError::new_err(message),
        _ => Error::new_err(message),
    }
}

fn input_error(message: impl Into<String>) -> PyErr {
    InputError::new_err(message.into())
}

/// An instant given by Python: a `datetime` (naive means UTC), a `date`, or text (RFC 3339, a
/// date, or a naive ISO date-time in UTC). A date alone as a range end covers its whole day.
fn instant(ob: &Bound<'_, PyAny>, end_of_day: bool) -> PyResult<chrono::DateTime<chrono::Utc>> {
    let py = ob.py();
    let text: String = if let Ok(s) = ob.cast::<PyString>() {
        s.to_str()?.to_string()
    } else if ob.hasattr("isoformat")? {
        let datetime = py.import("datetime")?;
        let is_datetime = ob.is_instance(&datetime.getattr("datetime")?)?;
        let ob = if is_datetime && ob.getattr("tzinfo")?.is_none() {
            let utc = datetime.getattr("timezone")?.getattr("utc")?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("tzinfo", utc)?;
            ob.call_method("replace", (), Some(&kwargs))?
        } else {
            ob.clone()
        };
        ob.call_method0("isoformat")?.extract()?
    } else {
        // numpy.datetime64 and the like print as naive ISO text.
        ob.str()?.to_str()?.to_string()
    };
    match quiver::model::parse_time_arg(&text, end_of_day) {
        Ok(t) => Ok(t),
        Err(e) => ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text.trim(), f).ok())
            .map(|n| n.and_utc())
            .ok_or_else(|| to_py(e)),
    }
}

fn symbols(ob: &Bound<'_, PyAny>) -> PyResult<Vec<Symbol>> {
    let raw: Vec<String> = if let Ok(s) = ob.cast::<PyString>() {
        vec![s.to_str()?.to_string()]
    } else if let Ok(list) = ob.extract::<Vec<String>>() {
        list
    } else {
        return Err(PyTypeError::new_err(
            "symbol must be a str or a list of str",
        ));
    };
    if raw.is_empty() {
        return Err(input_error("no symbol given"));
    }
    raw.iter()
        .map(|s| Symbol::parse(s).map_err(|m| input_error(format!("symbol {s:?}: {m}"))))
        .collect()
}

fn timeframe(raw: &str) -> PyResult<Timeframe> {
    Timeframe::parse(raw).map_err(|m| input_error(format!("timeframe {raw:?}: {m}")))
}

fn as_of(ob: Option<&Bound<'_, PyAny>>) -> PyResult<AsOf> {
    let Some(ob) = ob.filter(|o| !o.is_none()) else {
        return Ok(AsOf::Latest);
    };
    let text = if let Ok(v) = ob.extract::<u64>() {
        v.to_string()
    } else if ob.cast::<PyString>().is_ok() {
        ob.extract::<String>()?
    } else {
        quiver::model::format_ts(&instant(ob, false)?)
    };
    text.parse::<AsOf>().map_err(to_py)
}

/// How prices and volumes come out: exact `Decimal128(28, 8)`, or `float64` at the edge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prices {
    Decimal,
    Float64,
}

impl Prices {
    fn parse(raw: &str) -> PyResult<Prices> {
        match raw {
            "decimal" => Ok(Prices::Decimal),
            "float64" => Ok(Prices::Float64),
            other => Err(PyValueError::new_err(format!(
                "prices must be \"decimal\" or \"float64\", not {other:?}"
            ))),
        }
    }

    fn schema(self, schema: &SchemaRef) -> SchemaRef {
        match self {
            Prices::Decimal => schema.clone(),
            Prices::Float64 => Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Decimal128(..) => {
                            Arc::new(Field::new(f.name(), DataType::Float64, f.is_nullable()))
                        }
                        _ => f.clone(),
                    })
                    .collect::<Vec<_>>(),
            )),
        }
    }

    fn convert(self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self == Prices::Decimal {
            return Ok(batch);
        }
        let schema = self.schema(&batch.schema());
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Decimal128(..) => cast(c, &DataType::Float64),
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, columns)
    }
}

fn struct_field(schema: &SchemaRef) -> Arc<Field> {
    Arc::new(Field::new_struct("", schema.fields().clone(), false))
}

/// Record batches of a read, in memory, shared with Python without a copy.
///
/// `pyarrow.table(t)`, `polars.DataFrame(t)` and `pandas` (through `to_pandas`) take it
/// through the Arrow PyCapsule interface.
#[pyclass(module = "quiver", name = "Table", frozen)]
struct Table {
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    warmup: usize,
}

#[pymethods]
impl Table {
    /// Rows in all, warmup included.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// How many of the first rows are warmup bars (before the range's start).
    #[getter]
    fn warmup(&self) -> usize {
        self.warmup
    }

    /// The column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    fn __repr__(&self) -> String {
        format!(
            "quiver.Table({} rows, {} warmup; {})",
            self.num_rows(),
            self.warmup,
            self.schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.schema.as_ref())?)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let arrays = self
            .batches
            .clone()
            .into_iter()
            .map(|b| Ok(Arc::new(StructArray::from(b)) as ArrayRef));
        let reader: Box<dyn ArrayReader + Send> =
            Box::new(ArrayIterator::new(arrays, struct_field(&self.schema)));
        Ok(to_stream_pycapsule(py, reader, requested_schema)?)
    }

    /// The rows as a `pyarrow.Table` (no copy).
    fn to_pyarrow<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("pyarrow")?.call_method1("table", (slf,))
    }

    /// The rows as a `polars.DataFrame` (no copy of the numbers).
    fn to_polars<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("polars")?.call_method1("DataFrame", (slf,))
    }

    /// The rows as a `pandas.DataFrame`: `ts` timezone-aware UTC, decimals as
    /// `decimal.Decimal` objects (or floats with `prices="float64"`).
    fn to_pandas<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Table::to_pyarrow(slf)?.call_method0("to_pandas")
    }
}

/// Batches pulled one at a time from a library stream (blocking on the runtime).
struct Pull {
    stream: Option<BarStream>,
    prices: Prices,
}

impl Pull {
    fn next_batch(&mut self) -> Option<Result<RecordBatch, ArrowError>> {
        let stream = self.stream.as_mut()?;
        match RUNTIME.block_on(stream.next()) {
            Some(Ok(b)) => Some(self.prices.convert(b)),
            Some(Err(e)) => {
                self.stream = None;
                Some(Err(ArrowError::ExternalError(Box::new(e))))
            }
            None => {
                self.stream = None;
                None
            }
        }
    }
}

/// A read as a stream of record batches: the warmup bars, then the range as it is decoded,
/// never the whole range in memory. Iterate it for `pyarrow.RecordBatch`es, or hand it to
/// `pyarrow.RecordBatchReader.from_stream` (it can be consumed once).
#[pyclass(module = "quiver", name = "BarStream", frozen)]
struct PyBarStream {
    pull: Mutex<Pull>,
    schema: SchemaRef,
}

impl PyBarStream {
    fn take(&self) -> PyResult<Pull> {
        let mut pull = self
            .pull
            .lock()
            .map_err(|_| Error::new_err("the stream was poisoned by a panic"))?;
        Ok(Pull {
            stream: pull.stream.take(),
            prices: pull.prices,
        })
    }
}

#[pymethods]
impl PyBarStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let next = py.detach(|| match self.pull.lock() {
            Ok(mut pull) => Ok(pull.next_batch()),
            Err(_) => Err(()),
        });
        match next {
            Ok(Some(Ok(batch))) => py
                .import("pyarrow")?
                .call_method1("record_batch", (pyo3_arrow::PyRecordBatch::new(batch),)),
            Ok(Some(Err(e))) => Err(arrow_to_py(e)),
            Ok(None) => Err(PyStopIteration::new_err(())),
            Err(()) => Err(Error::new_err("the stream was poisoned by a panic")),
        }
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.schema.as_ref())?)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let mut pull = self.take()?;
        let arrays = std::iter::from_fn(move || pull.next_batch())
            .map(|b| b.map(|b| Arc::new(StructArray::from(b)) as ArrayRef));
        let reader: Box<dyn ArrayReader + Send> =
            Box::new(ArrayIterator::new(arrays, struct_field(&self.schema)));
        Ok(to_stream_pycapsule(py, reader, requested_schema)?)
    }
}

/// A library error that travelled through Arrow keeps its Python class.
fn arrow_to_py(e: ArrowError) -> PyErr {
    match e {
        ArrowError::ExternalError(inner) => match inner.downcast::<quiver::Error>() {
            Ok(ours) => to_py(*ours),
            Err(other) => Error::new_err(other.to_string()),
        },
        other => Error::new_err(other.to_string()),
    }
}

/// The configuration: a config file's (`config=`) with the `QUIVER_*` overrides, or
/// `./config.toml`'s when `fallback` (nothing else was given), or built-in defaults.
fn load_config(config: Option<&str>, fallback: bool) -> PyResult<Config> {
    match config {
        Some(path) => Config::load(Some(std::path::Path::new(path))).map_err(to_py),
        None if fallback => Config::load(None).map_err(to_py),
        None => Ok(Config::default()),
    }
}

/// Reads bars from a cache folder. One reader is meant to be shared: by threads (every read
/// releases the GIL) and across calls (open files and their metadata stay cached).
#[pyclass(module = "quiver", name = "Reader", frozen)]
struct Reader {
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

fn database_config(
    url: Option<String>,
    config: Option<&str>,
    schema: Option<String>,
) -> PyResult<Config> {
    let mut c = load_config(config, url.is_none())?;
    if let Some(url) = url {
        c.database.url = url;
    }
    if schema.is_some() {
        c.database.schema = schema;
    }
    Ok(c)
}

fn connect(py: Python<'_>, config: &Config) -> PyResult<quiver::Store> {
    let database = config.database.clone();
    run(py, async move { quiver::Store::connect(&database).await })
}

/// The SQL store (SQLite or PostgreSQL): migrations and writes. Every write is one
/// transaction, with the same checks as `quiver import`.
#[pyclass(module = "quiver", name = "Store", frozen)]
struct Store {
    inner: quiver::Store,
}

#[pymethods]
impl Store {
    /// Connects to `url` (`sqlite://file.db`, `postgres://…`), or to the database of a config
    /// file (`config=`) or of `./config.toml` and `QUIVER_*`; `schema` for PostgreSQL.
    #[new]
    #[pyo3(signature = (url=None, *, config=None, schema=None))]
    fn new(
        py: Python<'_>,
        url: Option<String>,
        config: Option<&str>,
        schema: Option<String>,
    ) -> PyResult<Store> {
        let c = database_config(url, config, schema)?;
        Ok(Store {
            inner: connect(py, &c)?,
        })
    }

    /// Applies pending migrations; returns the versions applied.
    fn migrate(&self, py: Python<'_>) -> PyResult<Vec<i64>> {
        let store = self.inner.clone();
        run(py, async move { store.migrate().await })
    }

    /// Writes the bars of `frame` (anything with the Arrow PyCapsule interface: a pyarrow
    /// Table or RecordBatch, a Polars or pandas DataFrame) in one transaction. Returns
    /// `{"received": n, "written": n}`.
    #[pyo3(signature = (frame, *, symbol=None, timeframe=None, on_conflict="error", floats=false, tz="UTC"))]
    #[allow(clippy::too_many_arguments)]
    fn insert<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        symbol: Option<&str>,
        timeframe: Option<&str>,
        on_conflict: &str,
        floats: bool,
        tz: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let policy = match on_conflict {
            "error" => OnConflict::Error,
            "skip" => OnConflict::Skip,
            "replace" => OnConflict::Replace,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_conflict must be \"error\", \"skip\" or \"replace\", not {other:?}"
                )));
            }
        };
        let options = FrameOptions {
            symbol: symbol
                .map(|s| Symbol::parse(s).map_err(|m| input_error(format!("symbol {s:?}: {m}"))))
                .transpose()?,
            timeframe: timeframe.map(self::timeframe).transpose()?,
            floats,
            tz: tz
                .parse()
                .map_err(|_| input_error(format!("unknown time zone {tz:?}")))?,
            ..FrameOptions::default()
        };
        let frame: AnyRecordBatch = frame.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "insert takes Arrow data (a pyarrow Table, a Polars or pandas DataFrame), not {}",
                frame
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let reader = frame.into_reader()?;
        let store = self.inner.clone();
        let report = py
            .detach(move || {
                let bars = bars_from_batches(
                    "frame",
                    reader.map(|b| {
                        b.map_err(|source| quiver::Error::Arrow {
                            what: "reading the frame's batches".into(),
                            source,
                        })
                    }),
                    options,
                )?;
                RUNTIME.block_on(quiver::import::write_bars(&store, &bars, policy))
            })
            .map_err(to_py)?;
        let out = PyDict::new(py);
        out.set_item("received", report.received)?;
        out.set_item("written", report.written)?;
        Ok(out)
    }

    /// Deletes the bars of `symbol` (of one timeframe, between `start` and `end` inclusive,
    /// when given); returns how many.
    #[pyo3(signature = (symbol, timeframe=None, *, start=None, end=None))]
    fn delete(
        &self,
        py: Python<'_>,
        symbol: &str,
        timeframe: Option<&str>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let filter = BarFilter {
            symbol: Some(
                Symbol::parse(symbol)
                    .map_err(|m| input_error(format!("symbol {symbol:?}: {m}")))?,
            ),
            timeframe: timeframe.map(self::timeframe).transpose()?,
            start: start
                .filter(|s| !s.is_none())
                .map(|s| instant(s, false))
                .transpose()?,
            end: end
                .filter(|s| !s.is_none())
                .map(|s| instant(s, true))
                .transpose()?,
        };
        let store = self.inner.clone();
        run(py, async move { store.delete_bars(&filter).await })
    }

    /// `postgres` or `sqlite`.
    #[getter]
    fn backend(&self) -> String {
        self.inner.backend().to_string()
    }

    fn __repr__(&self) -> String {
        format!("quiver.Store({})", self.inner.redacted_url())
    }
}

/// One sync pass: mirrors the database into the cache as one Delta commit. The database is
/// `url` (or a config file's, `config=`), the cache the folder `cache` (or the config's).
/// Returns what the pass did.
#[pyfunction]
#[pyo3(signature = (url=None, *, cache=None, config=None, schema=None, full=false))]
fn sync<'py>(
    py: Python<'py>,
    url: Option<String>,
    cache: Option<std::path::PathBuf>,
    config: Option<&str>,
    schema: Option<String>,
    full: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let mut c = database_config(url, config, schema)?;
    if let Some(dir) = cache {
        c.cache.dir = dir;
    }
    let store = connect(py, &c)?;
    let report = run(py, async move {
        let mut syncer = Syncer::new(store, &c.cache, c.database.schema.clone())?;
        syncer.pass(full).await
    })?;
    let out = PyDict::new(py);
    out.set_item("version", report.version)?;
    out.set_item("rows", report.rows)?;
    out.set_item("changed_days", report.changed_days)?;
    out.set_item("written", report.written)?;
    out.set_item("removed", report.removed)?;
    out.set_item("appended", report.appended)?;
    out.set_item("held_back", report.held_back)?;
    out.set_item("seconds", report.elapsed.as_secs_f64())?;
    Ok(out)
}

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Reader>()?;
    m.add_class::<Store>()?;
    m.add_class::<Table>()?;
    m.add_class::<PyBarStream>()?;
    m.add_function(wrap_pyfunction!(sync, m)?)?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("UnknownSeriesError", py.get_type::<UnknownSeriesError>())?;
    m.add("EmptyRangeError", py.get_type::<EmptyRangeError>())?;
    m.add("InvalidRangeError", py.get_type::<InvalidRangeError>())?;
    m.add("EmptyCacheError", py.get_type::<EmptyCacheError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
