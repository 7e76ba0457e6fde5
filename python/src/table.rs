//! `quiver.Table`: the record batches of a read, handed to pyarrow, Polars and pandas without
//! a copy.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::ffi::{ArrayIterator, ArrayReader, to_schema_pycapsule, to_stream_pycapsule};
use quiver::arrow::array::{ArrayRef, RecordBatch, StructArray};
use quiver::arrow::datatypes::{Field, SchemaRef};

use crate::convert::Prices;
use crate::errors::arrow_to_py;

pub(crate) fn struct_field(schema: &SchemaRef) -> Arc<Field> {
    Arc::new(Field::new_struct("", schema.fields().clone(), false))
}

/// Record batches of a read, in memory, shared with Python without a copy.
///
/// `pyarrow.table(t)`, `polars.DataFrame(t)` and `pandas` (through `to_pandas`) take it
/// through the Arrow PyCapsule interface.
#[pyclass(module = "quiver", name = "Table", frozen)]
pub(crate) struct Table {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) schema: SchemaRef,
    pub(crate) warmup: usize,
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

    /// The rows as a `polars.DataFrame` (no copy of the numbers): decimals as Polars'
    /// `Decimal`, or as `Float64` with `prices="float64"`.
    #[pyo3(signature = (*, prices="decimal"))]
    fn to_polars<'py>(slf: &Bound<'py, Self>, prices: &str) -> PyResult<Bound<'py, PyAny>> {
        let table = Table::with_prices(slf, prices)?;
        slf.py()
            .import("polars")?
            .call_method1("DataFrame", (table,))
    }

    /// The rows as a `pandas.DataFrame`: `ts` timezone-aware UTC, decimals as exact
    /// `decimal.Decimal` objects, or as `float64` columns with `prices="float64"` (what
    /// numpy and most of pandas compute with).
    #[pyo3(signature = (*, prices="decimal"))]
    fn to_pandas<'py>(slf: &Bound<'py, Self>, prices: &str) -> PyResult<Bound<'py, PyAny>> {
        let table = Table::with_prices(slf, prices)?;
        let table = Bound::new(slf.py(), table)?;
        Table::to_pyarrow(&table)?.call_method0("to_pandas")
    }
}

impl Table {
    /// The same rows with decimals as `prices` asks (a copy only of converted columns).
    fn with_prices(slf: &Bound<'_, Self>, prices: &str) -> PyResult<Table> {
        let prices = Prices::parse(prices)?;
        let this = slf.get();
        Ok(Table {
            batches: this
                .batches
                .iter()
                .map(|b| prices.convert(b.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(arrow_to_py)?,
            schema: prices.schema(&this.schema),
            warmup: this.warmup,
        })
    }
}
