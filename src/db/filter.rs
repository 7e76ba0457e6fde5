//! The WHERE clause of a filtered read, scan or delete, built once with its binds in
//! placeholder order for either backend.

use chrono::{DateTime, Utc};

use super::BarFilter;

/// A value of a [`FilterSql`], in placeholder order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FilterValue {
    /// `symbol` or `timeframe`.
    Text(String),
    /// A bound on `ts` (microseconds on SQLite, `timestamptz` on PostgreSQL).
    Ts(DateTime<Utc>),
}

/// The `WHERE` clause of a [`BarFilter`] and the values of its placeholders, made together so
/// that they cannot drift apart: fixed text with numbered placeholders (`$n` on PostgreSQL,
/// `?n` on SQLite), every value bound, a missing bound leaving its side open. Used by the
/// filtered scan, [`Store::read_bars`] and [`Store::delete_bars`] on both backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FilterSql {
    /// ` WHERE true AND symbol = $1 …`.
    pub(super) clause: String,
    pub(super) values: Vec<FilterValue>,
}

impl FilterSql {
    pub(super) fn new(filter: &BarFilter, placeholder: char) -> FilterSql {
        let mut clause = String::from(" WHERE true");
        let mut values = Vec::new();
        let mut add = |column: &str, op: &str, value: FilterValue| {
            values.push(value);
            clause.push_str(&format!(" AND {column} {op} {placeholder}{}", values.len()));
        };
        if let Some(s) = &filter.symbol {
            add("symbol", "=", FilterValue::Text(s.as_str().to_owned()));
        }
        if let Some(tf) = &filter.timeframe {
            add("timeframe", "=", FilterValue::Text(tf.to_string()));
        }
        if let Some(t) = filter.start {
            add("ts", ">=", FilterValue::Ts(t));
        }
        if let Some(t) = filter.end {
            add("ts", "<=", FilterValue::Ts(t));
        }
        FilterSql { clause, values }
    }
}
