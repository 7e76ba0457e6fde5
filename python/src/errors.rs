//! quiver's exceptions: one Python class per kind of library error, so callers catch what
//! they can handle (a bad frame, an unknown series) apart from faults.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use quiver::arrow::error::ArrowError;

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
pub(crate) fn to_py(e: quiver::Error) -> PyErr {
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
        E::NotMigrated { .. } => {
            DatabaseError::new_err(format!("{message} (from Python: Store.migrate())"))
        }
        _ => Error::new_err(message),
    }
}

pub(crate) fn input_error(message: impl Into<String>) -> PyErr {
    InputError::new_err(message.into())
}

/// A library error that travelled through Arrow keeps its Python class.
pub(crate) fn arrow_to_py(e: ArrowError) -> PyErr {
    match e {
        ArrowError::ExternalError(inner) => match inner.downcast::<quiver::Error>() {
            Ok(ours) => to_py(*ours),
            Err(other) => Error::new_err(other.to_string()),
        },
        other => Error::new_err(other.to_string()),
    }
}

/// Registers the exception classes on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("UnknownSeriesError", py.get_type::<UnknownSeriesError>())?;
    m.add("EmptyRangeError", py.get_type::<EmptyRangeError>())?;
    m.add("InvalidRangeError", py.get_type::<InvalidRangeError>())?;
    m.add("EmptyCacheError", py.get_type::<EmptyCacheError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    Ok(())
}
