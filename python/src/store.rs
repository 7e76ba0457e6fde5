//! `quiver.Store` (migrations and writes to the SQL table) and `quiver.sync`, one pass into
//! the cache.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::input::AnyRecordBatch;
use quiver::config::Config;
use quiver::frame::{FrameOptions, bars_from_batches};
use quiver::{BarFilter, OnConflict, Symbol, Syncer};

use crate::convert::{instant, load_config, timeframe};
use crate::errors::{input_error, to_py};
use crate::{RUNTIME, run};

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
pub(crate) struct Store {
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
                RUNTIME.block_on(async {
                    match quiver::import::write_bars(&store, &bars, policy).await {
                        Err(e) => Err(store.explain_unmigrated(e).await),
                        done => done,
                    }
                })
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
        run(py, async move {
            match store.delete_bars(&filter).await {
                Err(e) => Err(store.explain_unmigrated(e).await),
                done => done,
            }
        })
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
pub(crate) fn sync<'py>(
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
        let mut syncer = Syncer::new(store.clone(), &c.cache, c.database.schema.clone())?;
        let report = syncer.pass(full).await;
        drop(syncer);
        // Closed, so a SQLite database's write-ahead log is checkpointed into its file.
        store.close().await;
        report
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
