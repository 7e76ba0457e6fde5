//! Arguments as Python gives them (instants, symbols, timeframes, versions, price types,
//! config files) turned into the library's types.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use quiver::arrow::array::RecordBatch;
use quiver::arrow::compute::cast;
use quiver::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver::arrow::error::ArrowError;
use quiver::cache::AsOf;
use quiver::config::Config;
use quiver::{Symbol, Timeframe};

use crate::errors::{input_error, to_py};

/// An instant given by Python: a `datetime` (naive means UTC), a `date`, or text (RFC 3339, a
/// date, or a naive ISO date-time in UTC). A date alone as a range end covers its whole day.
pub(crate) fn instant(
    ob: &Bound<'_, PyAny>,
    end_of_day: bool,
) -> PyResult<chrono::DateTime<chrono::Utc>> {
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

pub(crate) fn symbols(ob: &Bound<'_, PyAny>) -> PyResult<Vec<Symbol>> {
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

pub(crate) fn timeframe(raw: &str) -> PyResult<Timeframe> {
    Timeframe::parse(raw).map_err(|m| input_error(format!("timeframe {raw:?}: {m}")))
}

pub(crate) fn as_of(ob: Option<&Bound<'_, PyAny>>) -> PyResult<AsOf> {
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
pub(crate) enum Prices {
    Decimal,
    Float64,
}

impl Prices {
    pub(crate) fn parse(raw: &str) -> PyResult<Prices> {
        match raw {
            "decimal" => Ok(Prices::Decimal),
            "float64" => Ok(Prices::Float64),
            other => Err(PyValueError::new_err(format!(
                "prices must be \"decimal\" or \"float64\", not {other:?}"
            ))),
        }
    }

    pub(crate) fn schema(self, schema: &SchemaRef) -> SchemaRef {
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

    pub(crate) fn convert(self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
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

/// The configuration: a config file's (`config=`) with the `QUIVER_*` overrides, or
/// `./config.toml`'s when `fallback` (nothing else was given), or built-in defaults.
pub(crate) fn load_config(config: Option<&str>, fallback: bool) -> PyResult<Config> {
    match config {
        Some(path) => Config::load(Some(std::path::Path::new(path))).map_err(to_py),
        None if fallback => Config::load(None).map_err(to_py),
        None => Ok(Config::default()),
    }
}
