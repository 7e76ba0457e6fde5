//! `quiver.BarStream`: a read as record batches pulled one at a time, never the whole range
//! in memory.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::ffi::{ArrayIterator, ArrayReader, to_schema_pycapsule, to_stream_pycapsule};
use quiver::arrow::array::{ArrayRef, RecordBatch, StructArray};
use quiver::arrow::datatypes::SchemaRef;
use quiver::arrow::error::ArrowError;
use quiver::read::BarStream;

use crate::RUNTIME;
use crate::convert::Prices;
use crate::errors::{Error, arrow_to_py};
use crate::table::struct_field;

/// Batches pulled one at a time from a library stream (blocking on the runtime).
pub(crate) struct Pull {
    pub(crate) stream: Option<BarStream>,
    pub(crate) prices: Prices,
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
pub(crate) struct PyBarStream {
    pub(crate) pull: Mutex<Pull>,
    pub(crate) schema: SchemaRef,
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
