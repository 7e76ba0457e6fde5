//! What filters on `market_data` say about the rows that can match: the series and `ts`
//! range they bound (to choose files), which of them the choice of files already answers, and
//! `ts` filters evaluated at an instant (to skip re-checking files they hold for wholly). Both
//! table providers use it: the cache's ([`super::table`]) and `live.market_data`.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};
use datafusion::scalar::ScalarValue;

use super::versions::LoadedVersion;
use crate::cache::DataFile;

/// What filters say about the rows that can match: sets of symbols and timeframes (`None`:
/// any) and an inclusive `ts` range in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub symbols: Option<BTreeSet<String>>,
    pub timeframes: Option<BTreeSet<String>>,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

impl Bounds {
    /// Rows must satisfy both.
    fn and(self, other: Bounds) -> Bounds {
        let both = |a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>| match (a, b) {
            (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            (a, None) => a,
            (None, b) => b,
        };
        Bounds {
            symbols: both(self.symbols, other.symbols),
            timeframes: both(self.timeframes, other.timeframes),
            min_ts: self.min_ts.max(other.min_ts),
            max_ts: match (self.max_ts, other.max_ts) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Rows satisfy either.
    fn or(self, other: Bounds) -> Bounds {
        let either = |a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>| match (a, b) {
            (Some(a), Some(b)) => Some(a.union(&b).cloned().collect()),
            _ => None,
        };
        Bounds {
            symbols: either(self.symbols, other.symbols),
            timeframes: either(self.timeframes, other.timeframes),
            min_ts: match (self.min_ts, other.min_ts) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            },
            max_ts: match (self.max_ts, other.max_ts) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
        }
    }

    /// The files of `version` that can hold matching rows: through the series index when
    /// the filters name symbols and timeframes, else by looking at every file.
    pub fn files<'s>(&self, version: &'s LoadedVersion) -> Vec<&'s Arc<DataFile>> {
        match (&self.symbols, &self.timeframes) {
            (Some(symbols), Some(timeframes)) => symbols
                .iter()
                .flat_map(|s| timeframes.iter().map(move |t| (s, t)))
                .flat_map(|(s, t)| version.series(s, t))
                .filter(|p| self.admits(p))
                .collect(),
            _ => version.state.files().filter(|p| self.admits(p)).collect(),
        }
    }

    /// Whether a file can hold matching rows.
    pub fn admits(&self, p: &DataFile) -> bool {
        self.symbols
            .as_ref()
            .is_none_or(|s| s.contains(&p.key.symbol))
            && self
                .timeframes
                .as_ref()
                .is_none_or(|s| s.contains(&p.key.timeframe))
            && self.min_ts.is_none_or(|t| p.max_ts >= t)
            && self.max_ts.is_none_or(|t| p.min_ts <= t)
    }

    /// The bounds implied by a scan's filters, all of which hold.
    pub fn of_all(filters: &[Expr]) -> Bounds {
        filters
            .iter()
            .fold(Bounds::default(), |b, f| b.and(Bounds::of(f)))
    }

    /// The bounds implied by one filter (anything it does not constrain stays open).
    pub fn of(expr: &Expr) -> Bounds {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => Bounds::of(left).and(Bounds::of(right)),
                Operator::Or => Bounds::of(left).or(Bounds::of(right)),
                _ => comparison(left, *op, right).unwrap_or_default(),
            },
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) => {
                let Some(name) = column_name(expr) else {
                    return Bounds::default();
                };
                let values: Option<BTreeSet<String>> = list.iter().map(text_literal).collect();
                match (name, values) {
                    ("symbol", Some(v)) => Bounds {
                        symbols: Some(v),
                        ..Bounds::default()
                    },
                    ("timeframe", Some(v)) => Bounds {
                        timeframes: Some(v),
                        ..Bounds::default()
                    },
                    _ => Bounds::default(),
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => comparison(expr, Operator::GtEq, low)
                .unwrap_or_default()
                .and(comparison(expr, Operator::LtEq, high).unwrap_or_default()),
            _ => Bounds::default(),
        }
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn text_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

/// A timestamp literal in microseconds, rounded outwards (down for a lower bound, up for an
/// upper one) so that pruning never drops a matching row.
pub(crate) fn micros_literal(expr: &Expr, lower: bool) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let (v, per_micro, micros_per) = match value {
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1, 1),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1000, 1),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1, 1000),
        ScalarValue::TimestampSecond(Some(v), _) => (*v, 1, 1_000_000),
        _ => return None,
    };
    let scaled = if per_micro > 1 {
        if lower {
            v.div_euclid(per_micro)
        } else {
            v.div_euclid(per_micro) + i64::from(v.rem_euclid(per_micro) != 0)
        }
    } else {
        v.checked_mul(micros_per)?
    };
    Some(scaled)
}

/// `column op literal` (either way round) on symbol, timeframe or ts.
fn comparison(left: &Expr, op: Operator, right: &Expr) -> Option<Bounds> {
    let (name, op, value) = match (column_name(left), column_name(right)) {
        (Some(name), None) => (name, op, right),
        (None, Some(name)) => (name, op.swap()?, left),
        _ => return None,
    };
    match (name, op) {
        ("symbol", Operator::Eq) => Some(Bounds {
            symbols: Some(BTreeSet::from([text_literal(value)?])),
            ..Bounds::default()
        }),
        ("timeframe", Operator::Eq) => Some(Bounds {
            timeframes: Some(BTreeSet::from([text_literal(value)?])),
            ..Bounds::default()
        }),
        ("ts", Operator::Gt | Operator::GtEq) => Some(Bounds {
            min_ts: Some(micros_literal(value, true)?),
            ..Bounds::default()
        }),
        ("ts", Operator::Lt | Operator::LtEq) => Some(Bounds {
            max_ts: Some(micros_literal(value, false)?),
            ..Bounds::default()
        }),
        ("ts", Operator::Eq) => {
            let (lo, hi) = (micros_literal(value, true)?, micros_literal(value, false)?);
            Some(Bounds {
                min_ts: Some(lo),
                max_ts: Some(hi),
                ..Bounds::default()
            })
        }
        _ => None,
    }
}

/// A timestamp literal in nanoseconds, exactly.
fn nanos_literal(expr: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let (v, scale): (i64, i128) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, 1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1_000_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1),
        _ => return None,
    };
    Some(i128::from(v) * scale)
}

/// Evaluates a filter made only of comparisons of `ts` with timestamp literals (`AND`ed, or a
/// `BETWEEN`) at one instant; `None` for any other filter. Such a filter holds on a convex
/// set of instants, so it holds for every row of a file when it holds at the file's first
/// and last `ts`.
pub(crate) fn ts_filter_holds(expr: &Expr, micros: i64) -> Option<bool> {
    let t = i128::from(micros) * 1_000;
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => Some(ts_filter_holds(left, micros)? && ts_filter_holds(right, micros)?),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (column_name(left), column_name(right)) {
                (Some("ts"), None) => (*op, nanos_literal(right)?),
                (None, Some("ts")) => (op.swap()?, nanos_literal(left)?),
                _ => return None,
            };
            match op {
                Operator::Eq => Some(t == value),
                Operator::Lt => Some(t < value),
                Operator::LtEq => Some(t <= value),
                Operator::Gt => Some(t > value),
                Operator::GtEq => Some(t >= value),
                _ => None,
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if column_name(expr) == Some("ts") => {
            Some(nanos_literal(low)? <= t && t <= nanos_literal(high)?)
        }
        _ => None,
    }
}

/// True when choosing files by `expr` already applies it to every row: a set of symbols or of
/// timeframes (`=`, `IN`, `OR` of those on one column), since each file holds one series.
pub(crate) fn answered_by_file_choice(expr: &Expr) -> bool {
    fn one_column(expr: &Expr) -> Option<&str> {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (column_name(left), column_name(right)) {
                (Some(c), None) if text_literal(right).is_some() => Some(c),
                (None, Some(c)) if text_literal(left).is_some() => Some(c),
                _ => None,
            },
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => match (one_column(left), one_column(right)) {
                (Some(a), Some(b)) if a == b => Some(a),
                _ => None,
            },
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if list.iter().all(|e| text_literal(e).is_some()) => column_name(expr),
            _ => None,
        }
    }
    matches!(one_column(expr), Some("symbol" | "timeframe"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(micros: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn filters_bound_series_and_time() {
        let f = col("symbol")
            .eq(lit("A"))
            .and(col("ts").gt_eq(ts(10)))
            .and(ts(20).gt(col("ts")));
        let b = Bounds::of(&f);
        assert_eq!(b.symbols, Some(BTreeSet::from(["A".to_string()])));
        assert_eq!((b.min_ts, b.max_ts), (Some(10), Some(20)));
        let either = Bounds::of(&col("symbol").eq(lit("A")).or(col("symbol").eq(lit("B"))));
        assert_eq!(either.symbols.map(|s| s.len()), Some(2));
        let loose = Bounds::of(
            &col("symbol")
                .eq(lit("A"))
                .or(col("timeframe").eq(lit("1m"))),
        );
        assert_eq!(loose, Bounds::default());
        let nanos = lit(ScalarValue::TimestampNanosecond(Some(1_500), None));
        assert_eq!(Bounds::of(&col("ts").lt_eq(nanos.clone())).max_ts, Some(2));
        assert_eq!(Bounds::of(&col("ts").gt_eq(nanos)).min_ts, Some(1));
    }

    #[test]
    fn time_filters_are_evaluated_exactly() {
        let gt = col("ts").gt(ts(10));
        assert_eq!(ts_filter_holds(&gt, 10), Some(false));
        assert_eq!(ts_filter_holds(&gt, 11), Some(true));
        let nanos = lit(ScalarValue::TimestampNanosecond(Some(10_500), None));
        assert_eq!(
            ts_filter_holds(&col("ts").lt_eq(nanos.clone()), 10),
            Some(true)
        );
        assert_eq!(
            ts_filter_holds(&nanos.clone().gt(col("ts")), 11),
            Some(false)
        );
        let between = col("ts").between(ts(5), ts(7));
        assert_eq!(ts_filter_holds(&between, 7), Some(true));
        assert_eq!(
            ts_filter_holds(&between.and(col("ts").not_eq(ts(6))), 6),
            None
        );
        assert_eq!(ts_filter_holds(&col("symbol").eq(lit("A")), 6), None);
    }

    #[test]
    fn only_series_sets_are_exact() {
        assert!(answered_by_file_choice(&col("symbol").eq(lit("A"))));
        assert!(answered_by_file_choice(
            &col("timeframe").in_list(vec![lit("1m"), lit("1d")], false)
        ));
        assert!(!answered_by_file_choice(&col("ts").gt(ts(1))));
        assert!(!answered_by_file_choice(&col("symbol").not_eq(lit("A"))));
        assert!(!answered_by_file_choice(
            &col("symbol")
                .eq(lit("A"))
                .or(col("timeframe").eq(lit("1m")))
        ));
    }
}
