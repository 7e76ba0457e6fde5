//! Property tests (proptest): bad input never panics and always gets a `file:line: field:
//! reason` error, good input imports exactly, and every decimal spelling in range round trips
//! to the last digit, through the parser and through import, the database, a pass and the
//! reader on both backends. The shell takes any text without panicking.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};
use quiver::Error;
use quiver::import::{ImportOptions, Parsed, read_files, read_text};
use quiver::model::{decimal_text, fixed8_from_decimal, parse_decimal};
use rust_decimal::Decimal;

use crate::both;
use crate::harness::TestDb;
use crate::sync::{Row, reader_rows, syncer, table_rows};

/// `n` cases, no failure files (a failure prints its input; the suite has no regressions file).
fn cases(n: u32) -> RunConfig {
    RunConfig {
        failure_persistence: None,
        ..RunConfig::with_cases(n)
    }
}

/// A decimal in range (at most 10 integer and 8 fractional digits) with one of its spellings:
/// leading zeros, trailing zeros past the 8th digit, a `+`, no integer part.
fn spelled_decimal(signed: bool) -> impl Strategy<Value = (String, Decimal)> {
    (
        0u64..10_000_000_000,
        0u32..=8,
        0u64..100_000_000,
        0usize..3,
        0usize..5,
        any::<bool>(),
        0u8..3,
    )
        .prop_map(move |(int, scale, frac, lead, trail, negative, sign)| {
            let frac = frac % 10u64.pow(scale);
            let mut text = String::new();
            let negative = signed && negative;
            match (negative, sign) {
                (true, _) => text.push('-'),
                (false, 1) if signed => text.push('+'),
                _ => {}
            }
            text.push_str(&"0".repeat(lead));
            if !(int == 0 && lead == 0 && scale > 0 && sign == 2) {
                text.push_str(&int.to_string());
            }
            if scale > 0 || trail > 0 {
                text.push('.');
                text.push_str(&format!("{frac:0width$}", width = scale as usize));
                text.push_str(&"0".repeat(trail));
                if scale == 0 && trail == 0 {
                    text.push('0');
                }
            }
            let units = i128::from(int) * 10i128.pow(scale) + i128::from(frac);
            let mut value = Decimal::from_i128_with_scale(units, scale);
            if negative {
                value = -value;
            }
            (text, value.normalize())
        })
}

#[test]
fn every_decimal_spelling_in_range_parses_exactly() {
    let mut runner = TestRunner::new(cases(4000));
    runner
        .run(&spelled_decimal(true), |(text, value)| {
            let parsed = parse_decimal(&text).map_err(TestCaseError::fail)?;
            prop_assert_eq!(parsed, value, "{}", text);
            // The cache's fixed-point form and the canonical text give the same value back.
            let units = fixed8_from_decimal(parsed).map_err(TestCaseError::fail)?;
            prop_assert_eq!(Decimal::from_i128_with_scale(units, 8).normalize(), value);
            prop_assert_eq!(parse_decimal(&decimal_text(&parsed)), Ok(value));
            Ok(())
        })
        .unwrap();
}

/// Anything that is not a decimal in range is refused with a reason, never a panic, and what
/// is accepted is the value the text spells.
#[test]
fn any_text_is_a_decimal_or_a_reason() {
    let mut runner = TestRunner::new(cases(4000));
    let text = prop_oneof![
        any::<String>(),
        "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,3})?",
        "[ 0-9.,_+-]{0,12}",
        Just("NaN".to_string()),
        Just("inf".to_string()),
    ];
    runner
        .run(&text, |text| {
            match parse_decimal(&text) {
                Ok(d) => {
                    let t = text.trim();
                    prop_assert!(
                        fixed8_from_decimal(d).is_ok(),
                        "{t:?} accepted out of range"
                    );
                    let exact = Decimal::from_str_exact(t.strip_prefix('+').unwrap_or(t))
                        .map_err(|e| TestCaseError::fail(format!("{t:?}: {e}")))?;
                    prop_assert_eq!(d, exact.normalize());
                }
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
            Ok(())
        })
        .unwrap();
}

/// One bar of a generated CSV file, as text fields and as the values they spell.
#[derive(Clone, Debug)]
struct CsvRow {
    fields: [String; 8],
    values: (String, i64, [Decimal; 5]),
}

fn csv_row(i: usize) -> impl Strategy<Value = CsvRow> {
    let symbols = prop::sample::select(vec!["AAPL", "BTC/USDT", "^STOXX50E", "ES.F"]);
    (
        symbols,
        prop::collection::vec(spelled_decimal(false), 4),
        spelled_decimal(false),
    )
        .prop_map(move |(symbol, mut prices, volume)| {
            prices.sort_by_key(|p| p.1);
            let (low, a, b, high) = (&prices[0], &prices[1], &prices[2], &prices[3]);
            let ts = 1_709_251_200 + i as i64 * 60;
            let time = chrono::DateTime::from_timestamp(ts, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            CsvRow {
                fields: [
                    symbol.to_string(),
                    "1m".to_string(),
                    time,
                    a.0.clone(),
                    high.0.clone(),
                    low.0.clone(),
                    b.0.clone(),
                    volume.0.clone(),
                ],
                values: (
                    symbol.to_string(),
                    ts * 1_000_000,
                    [a.1, high.1, low.1, b.1, volume.1],
                ),
            }
        })
}

/// Text that may or may not be a valid field: anything (no line breaks, so line numbers stay
/// those of the generated rows), number-like junk, or what an exporter writes.
fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,20}",
        "[-+0-9.eE ]{0,25}",
        Just(String::new()),
        Just("NaN".into()),
        Just("1.123456789".into()),
        Just("99999999999999999999".into()),
        Just("-5".into()),
        Just("2024-02-30T00:00:00Z".into()),
        Just("\"quoted, with a comma\"".into()),
        Just("1e3".into()),
    ]
}

fn csv_file(rows: &[CsvRow]) -> String {
    let mut text = String::from("symbol,timeframe,ts,open,high,low,close,volume\n");
    for r in rows {
        text.push_str(&r.fields.join(","));
        text.push('\n');
    }
    text
}

/// A generated multi-symbol CSV, with one field of one row perhaps replaced by junk: it
/// imports exactly the bars it spells, or fails naming this file, the line of the row and a
/// field; never a panic.
#[test]
fn csv_imports_exactly_or_names_file_line_and_field() {
    let strategy = (1usize..12)
        .prop_flat_map(|n| (0..n).map(csv_row).collect::<Vec<_>>())
        .prop_flat_map(|rows| {
            let n = rows.len();
            (Just(rows), prop::option::of((0..n, 0usize..8, junk())))
        });
    let path = Path::new("/data/bars.csv");
    let mut runner = TestRunner::new(cases(1500));
    runner
        .run(&strategy, |(mut rows, mutation)| {
            if let Some((row, field, junk)) = &mutation {
                rows[*row].fields[*field] = junk.clone();
            }
            let text = csv_file(&rows);
            let mut parsed = Parsed::default();
            match read_text(path, &text, &ImportOptions::default(), &mut parsed) {
                Ok(_) => {
                    prop_assert_eq!(parsed.bars().len(), rows.len());
                    if mutation.is_none() {
                        // Read in key order; the generated rows are in time order.
                        let mut bars = parsed.bars().to_vec();
                        bars.sort_by_key(|b| b.ts);
                        for (bar, row) in bars.iter().zip(&rows) {
                            let got = (
                                bar.symbol.to_string(),
                                bar.ts_micros(),
                                [bar.open, bar.high, bar.low, bar.close, bar.volume]
                                    .map(|d| d.normalize()),
                            );
                            prop_assert_eq!(&got, &row.values);
                        }
                    }
                }
                Err(e) => {
                    let Some((row, _, _)) = mutation else {
                        return Err(TestCaseError::fail(format!("good rows refused: {e}")));
                    };
                    let message = e.to_string();
                    match e {
                        Error::Input {
                            file, line, field, ..
                        } => {
                            prop_assert_eq!(&file, path);
                            // Header on line 1; a quote in the junk may make the row end later.
                            prop_assert!(line as usize >= row + 2, "{message}");
                            prop_assert!(line as usize <= rows.len() + 2, "{message}");
                            prop_assert!(!field.is_empty(), "{message}");
                            prop_assert!(
                                message.starts_with(&format!("/data/bars.csv:{line}: {field}: ")),
                                "{message}"
                            );
                        }
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "not a file:line error: {other}"
                            )));
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A Parquet file of string columns (as another tool might write it) with one cell perhaps
/// junk, or null: it imports exactly, or fails naming the file, the row and the column.
#[test]
fn parquet_imports_exactly_or_names_file_row_and_field() {
    use quiver::arrow::array::{ArrayRef, RecordBatch, StringArray};
    use quiver::parquet::arrow::ArrowWriter;
    let names = [
        "symbol",
        "timeframe",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.parquet");
    let strategy = (1usize..10)
        .prop_flat_map(|n| (0..n).map(csv_row).collect::<Vec<_>>())
        .prop_flat_map(|rows| {
            let n = rows.len();
            (
                Just(rows),
                prop::option::of((0..n, 0usize..8, prop::option::of(junk()))),
            )
        });
    let mut runner = TestRunner::new(cases(300));
    runner
        .run(&strategy, |(rows, mutation)| {
            let columns: Vec<(&str, ArrayRef)> = names
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    let cells: StringArray = rows
                        .iter()
                        .enumerate()
                        .map(|(r, row)| match &mutation {
                            Some((mr, mc, cell)) if *mr == r && *mc == c => cell.clone(),
                            _ => Some(row.fields[c].clone()),
                        })
                        .collect();
                    (*name, std::sync::Arc::new(cells) as ArrayRef)
                })
                .collect();
            let batch = RecordBatch::try_from_iter(columns).unwrap();
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                    .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            match read_file(&path, &ImportOptions::default()) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.bars().len(), rows.len());
                    if mutation.is_none() {
                        // Read in key order; the generated rows are in time order.
                        let mut bars = parsed.bars().to_vec();
                        bars.sort_by_key(|b| b.ts);
                        for (bar, row) in bars.iter().zip(&rows) {
                            prop_assert_eq!(bar.ts_micros(), row.values.1);
                            prop_assert_eq!(bar.close.normalize(), row.values.2[3]);
                        }
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let Some((row, column, _)) = mutation else {
                        return Err(TestCaseError::fail(format!("good rows refused: {e}")));
                    };
                    match e {
                        Error::Row {
                            origin,
                            row: at,
                            field,
                            ..
                        } => {
                            prop_assert!(origin.contains("bars.parquet"), "{message}");
                            // At the junk, or later (a duplicate of a later bar's key).
                            prop_assert!(at as usize >= row, "{message}");
                            prop_assert!(
                                names.contains(&field.as_str()) || field == "row",
                                "{message} (junk in {})",
                                names[column]
                            );
                        }
                        other => {
                            return Err(TestCaseError::fail(format!("not a row error: {other}")));
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Arbitrary bytes behind every format's first bytes (gzip, zstd, Parquet, each text format's
/// header, a Binance kline row): reading refuses them as bad input (exit status 2) naming the file, or reads
/// bars; it never panics.
#[test]
fn arbitrary_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.bin");
    let heads: Vec<&[u8]> = vec![
        b"",
        b"\x1f\x8b\x08\x00",
        b"\x28\xb5\x2f\xfd",
        b"PAR1",
        b"symbol,timeframe,ts,open,high,low,close,volume\n",
        b"Date,Open,High,Low,Close,Adj Close,Volume\n",
        b"Date,Time,Open,High,Low,Close,Volume,OpenInterest\n",
        b"ts,open,high,low,close,volume\n",
        b"1704067200000,42000.1,42100,41900,42050.5,12.5,1704067259999\n",
    ];
    let strategy = (
        prop::sample::select(heads),
        prop::collection::vec(any::<u8>(), 0..600),
    );
    let options = ImportOptions {
        symbol: Some(quiver::Symbol::parse("FUZZ").unwrap()),
        timeframe: Some(quiver::Timeframe::parse("1d").unwrap()),
        ..ImportOptions::default()
    };
    let mut runner = TestRunner::new(cases(1500));
    runner
        .run(&strategy, |(head, tail)| {
            let mut bytes = head.to_vec();
            bytes.extend(&tail);
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = read_file(&path, &options) {
                prop_assert_eq!(e.exit_code(), 2, "{}", e);
                prop_assert!(e.to_string().contains("input.bin"), "{}", e);
            }
            Ok(())
        })
        .unwrap();
}

/// Reads and checks one file as `quiver import` does, from a synchronous test.
fn read_file(path: &Path, options: &ImportOptions) -> quiver::Result<Parsed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let read = runtime.block_on(read_files(&[path.to_path_buf()], options));
    read.map(|(_, parsed)| parsed)
}

/// Runs `body` for every case of `strategy` from inside an async test (proptest's runner is
/// synchronous; the body's async work runs on the test's runtime).
fn run_async<S: Strategy>(
    n: u32,
    strategy: S,
    body: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let ran = std::sync::atomic::AtomicU32::new(0);
    tokio::task::block_in_place(|| {
        TestRunner::new(cases(n))
            .run(&strategy, |v| {
                ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                body(v)
            })
            .unwrap()
    });
    assert_eq!(ran.into_inner(), n, "every case ran");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}

/// Every spelling through the whole path: a CSV imported by `quiver import`'s library call
/// into the database, a pass, then read back by quiver's reader. The values come back exact.
async fn spellings_round_trip_through_import_sync_and_read(db: TestDb) {
    let file = db.path("spellings.csv");
    let s = tokio::sync::Mutex::new(syncer(&db));
    let strategy = (40usize..80).prop_flat_map(|n| (0..n).map(csv_row).collect::<Vec<_>>());
    run_async(8, strategy, |rows| {
        std::fs::write(&file, csv_file(&rows)).unwrap();
        block_on(async {
            db.plain_sql("DELETE FROM market_data").await;
            quiver::import::import_files(
                &db.store,
                std::slice::from_ref(&file),
                &ImportOptions::default(),
            )
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            s.lock().await.pass(false).await.unwrap();
            let mut want: Vec<Row> = rows
                .iter()
                .map(|r| {
                    (
                        r.values.0.clone(),
                        "1m".to_string(),
                        r.values.1,
                        r.values.2.map(|d| d.normalize().to_string()),
                    )
                })
                .collect();
            want.sort();
            prop_assert_eq!(&table_rows(&db).await, &want, "the table");
            prop_assert_eq!(&reader_rows(&db).await, &want, "quiver's reader");
            Ok(())
        })
    });
}

/// The shell takes any text, SQL-like or not, statements and meta-commands: it answers with
/// rows or an error and stays usable; it never panics.
async fn the_shell_takes_any_input(db: TestDb) {
    db.store
        .insert_bars(
            &crate::harness::generated(2, 2, "1h", 5),
            quiver::OnConflict::Error,
        )
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let reader = quiver::read::Reader::open(&db.config).unwrap();
    let mut shell = tokio::sync::Mutex::new(
        quiver::sql::Shell::with_reader(
            reader,
            db.config.database.clone(),
            quiver::sql::ShellOptions::default(),
        )
        .unwrap(),
    );
    let token = prop::sample::select(vec![
        "SELECT",
        "*",
        "FROM",
        "market_data",
        "live.market_data",
        "WHERE",
        "ts",
        ">=",
        "'2024-01-02'",
        "symbol",
        "=",
        "'SYM001'",
        "AND",
        "OR",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "1",
        "count(*)",
        "time_bucket('1 hour', ts)",
        "date_trunc('day', ts)",
        "(",
        ")",
        ",",
        ";",
        "\n",
        "'",
        "\"",
        "--",
        "/*",
        "*/",
        "INSERT INTO market_data VALUES (1)",
        "DROP TABLE market_data",
        "\\d",
        "\\d market_data",
        "\\x",
        "\\timing",
        "\\?",
        "\\dt",
        "\\o",
        "\\zz",
        "AS OF",
        "VERSION",
        "sum(close)",
        "max(volume)",
        "NULL",
        "1e400",
        "-",
        "::",
        "CAST(close AS DOUBLE)",
    ]);
    let input = prop_oneof![
        "[^\\\\]{0,60}",
        prop::collection::vec(token, 0..14).prop_map(|t| t.join(" ")),
    ];
    run_async(400, input, |text| {
        let mut out = Vec::new();
        let result = block_on(async {
            shell
                .lock()
                .await
                .run_script(&text, "<fuzz>", &mut out)
                .await
        });
        if let Err(e) = result {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    });
    // Still answering after all that.
    let mut out = Vec::new();
    let rows = db.count().await.to_string();
    shell
        .get_mut()
        .run_script("SELECT count(*) AS n FROM market_data;", "-c", &mut out)
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains(&rows), "{out}");
}

both!(
    spellings_round_trip_through_import_sync_and_read,
    the_shell_takes_any_input
);
