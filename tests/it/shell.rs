//! `quiver sql`: the example queries of `queries/` against a fixture cache (answers computed
//! independently from the database's rows), `live.market_data` on both backends, golden output
//! of every format and error, and the interactive shell driven through a pseudo-terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Timelike, Utc};
use quiver::arrow::array::RecordBatch;
use quiver::arrow::util::display::{ArrayFormatter, FormatOptions};
use quiver::import::{ImportOptions, import_files};
use quiver::model::{decimal_text, format_ts, parse_time_arg};
use quiver::read::{BarsRequest, Reader};
use quiver::sql::{QueryResult, Shell, ShellOptions};
use quiver::{Bar, BarFilter, Syncer};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::both;
use crate::harness::{Kind, TestDb, sample};

/// Daily bars of three stocks and a month of FESX minute bars, imported and synced.
async fn fixture(db: &TestDb) {
    for (file, symbol, timeframe) in [
        ("nvda-1999-2014.txt", "NVDA", "1d"),
        ("orcl-1995-2014.txt", "ORCL", "1d"),
        ("yhoo-1996-2015.txt", "YHOO", "1d"),
        ("2006-01-02-volume-min-001.txt", "FESX", "1m"),
    ] {
        let options = ImportOptions {
            symbol: Some(symbol.parse().unwrap()),
            timeframe: Some(timeframe.parse().unwrap()),
            ..ImportOptions::default()
        };
        import_files(&db.store, &[sample(file)], &options)
            .await
            .unwrap();
    }
    sync(db).await;
}

async fn sync(db: &TestDb) {
    Syncer::new(
        db.store.clone(),
        &db.config.cache,
        db.config.database.schema.clone(),
    )
    .unwrap()
    .pass(false)
    .await
    .unwrap();
}

fn shell(db: &TestDb) -> Shell {
    Shell::open(&db.config, ShellOptions::default()).unwrap()
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("queries")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A result as text, exactly as the shell prints it.
fn rows(result: &QueryResult) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for batch in &result.batches {
        let batch: RecordBatch = quiver::output::printable(batch).unwrap();
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for i in 0..batch.num_rows() {
            out.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    out
}

async fn series(db: &TestDb, symbol: &str, timeframe: &str) -> Vec<Bar> {
    db.store
        .read_bars(&BarFilter {
            symbol: Some(symbol.parse().unwrap()),
            timeframe: Some(timeframe.parse().unwrap()),
            ..BarFilter::default()
        })
        .await
        .unwrap()
}

fn close_to(got: &str, expected: f64, tolerance: f64) -> bool {
    got.parse::<f64>()
        .is_ok_and(|g| (g - expected).abs() <= tolerance)
}

async fn resample_1h(db: TestDb) {
    fixture(&db).await;
    let got = rows(&shell(&db).query(&example("resample_1h.sql")).await.unwrap());
    let mut hours: BTreeMap<DateTime<Utc>, Vec<Bar>> = BTreeMap::new();
    for bar in series(&db, "FESX", "1m").await {
        let hour = bar
            .ts
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .unwrap();
        hours.entry(hour).or_default().push(bar);
    }
    let expected: Vec<Vec<String>> = hours
        .iter()
        .map(|(hour, bars)| {
            let high = bars.iter().map(|b| b.high).max().unwrap();
            let low = bars.iter().map(|b| b.low).min().unwrap();
            let volume: Decimal = bars.iter().map(|b| b.volume).sum();
            vec![
                "FESX".into(),
                format_ts(hour),
                decimal_text(&bars[0].open),
                decimal_text(&high),
                decimal_text(&low),
                decimal_text(&bars[bars.len() - 1].close),
                decimal_text(&volume),
                bars.len().to_string(),
            ]
        })
        .collect();
    assert!(expected.len() > 500, "a month of trading hours");
    assert_eq!(got, expected);
}

async fn daily_returns(db: TestDb) {
    fixture(&db).await;
    let got = rows(
        &shell(&db)
            .query(&example("daily_returns.sql"))
            .await
            .unwrap(),
    );
    let bars = series(&db, "NVDA", "1d").await;
    assert_eq!(got.len(), bars.len());
    for (i, (row, bar)) in got.iter().zip(&bars).enumerate() {
        assert_eq!(row[0], format_ts(&bar.ts));
        assert_eq!(row[1], decimal_text(&bar.close));
        if i == 0 {
            assert_eq!(row[2], "", "no return on the first day");
        } else {
            let r = (bar.close / bars[i - 1].close - Decimal::ONE)
                .to_f64()
                .unwrap()
                * 100.0;
            assert!(close_to(&row[2], r, 1.01e-4), "{row:?}: expected {r}");
        }
    }
}

async fn vwap_daily(db: TestDb) {
    fixture(&db).await;
    let got = rows(&shell(&db).query(&example("vwap_daily.sql")).await.unwrap());
    let mut days: BTreeMap<chrono::NaiveDate, (Decimal, Decimal, usize)> = BTreeMap::new();
    for bar in series(&db, "FESX", "1m").await {
        let day = days.entry(bar.ts.date_naive()).or_default();
        day.0 += bar.close * bar.volume;
        day.1 += bar.volume;
        day.2 += 1;
    }
    assert_eq!(got.len(), days.len());
    for (row, (day, (value, volume, n))) in got.iter().zip(&days) {
        assert_eq!(row[0], format!("{day}T00:00:00Z"));
        let vwap = (value / volume).to_f64().unwrap();
        assert!(
            close_to(&row[1], vwap, vwap * 1e-12),
            "{row:?}: expected {vwap}"
        );
        assert_eq!(row[2], decimal_text(volume));
        assert_eq!(row[3], n.to_string());
    }
}

async fn gaps(db: TestDb) {
    fixture(&db).await;
    let got = rows(&shell(&db).query(&example("gaps.sql")).await.unwrap());
    let bars = series(&db, "FESX", "1m").await;
    let mut expected: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = bars
        .windows(2)
        .filter(|w| {
            w[0].ts.date_naive() == w[1].ts.date_naive() && (w[1].ts - w[0].ts).num_seconds() > 60
        })
        .map(|w| ((w[1].ts - w[0].ts).num_minutes() - 1, w[0].ts, w[1].ts))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    expected.truncate(20);
    assert!(!expected.is_empty(), "the sample has gaps");
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|(n, a, b)| vec![format_ts(a), format_ts(b), n.to_string()])
        .collect();
    assert_eq!(got, expected);
}

async fn top_movers(db: TestDb) {
    fixture(&db).await;
    let got = rows(&shell(&db).query(&example("top_movers.sql")).await.unwrap());
    let mut expected = Vec::new();
    for symbol in ["NVDA", "ORCL", "YHOO"] {
        let bars = series(&db, symbol, "1d").await;
        let (last, before) = (&bars[bars.len() - 1], &bars[bars.len() - 21]);
        let change = ((last.close - before.close) / before.close)
            .to_f64()
            .unwrap()
            * 100.0;
        expected.push((symbol, last.ts, before.close, last.close, change));
    }
    expected.sort_by(|a, b| b.4.abs().total_cmp(&a.4.abs()));
    assert_eq!(got.len(), 3);
    for (row, (symbol, ts, before, close, change)) in got.iter().zip(&expected) {
        assert_eq!(row[0], *symbol);
        assert_eq!(row[1], format_ts(ts));
        assert_eq!(row[2], decimal_text(before));
        assert_eq!(row[3], decimal_text(close));
        assert!(
            close_to(&row[4], *change, 0.0051),
            "{row:?}: expected {change}"
        );
    }
}

async fn warmup(db: TestDb) {
    fixture(&db).await;
    let got = rows(&shell(&db).query(&example("warmup.sql")).await.unwrap());
    let request = BarsRequest::new("NVDA".parse().unwrap(), "1d".parse().unwrap())
        .with_start(parse_time_arg("2010-01-04", false).unwrap())
        .with_end(parse_time_arg("2010-01-31", true).unwrap())
        .with_warmup(20);
    let bars = Reader::open(&db.config)
        .unwrap()
        .bars(&request)
        .await
        .unwrap();
    assert_eq!(bars.warmup, 20);
    let expected: Vec<Vec<String>> = bars
        .to_bars()
        .unwrap()
        .into_iter()
        .map(|b| {
            let mut row = vec![
                b.symbol.to_string(),
                b.timeframe.to_string(),
                quiver::model::format_ts(&b.ts),
            ];
            row.extend([b.open, b.high, b.low, b.close, b.volume].map(|d| d.to_string()));
            row
        })
        .collect();
    assert_eq!(
        expected.len(),
        20 + 19,
        "20 warmup bars and January's 19 sessions"
    );
    assert_eq!(got, expected);
}

/// The live table reads the database itself: bars newer than the last sync, filters pushed
/// into the query, and a diff against the cache. Writes through it are refused.
async fn live_table(db: TestDb) {
    fixture(&db).await;
    let shell = shell(&db);
    let count = |sql: &'static str| {
        let shell = &shell;
        async move { rows(&shell.query(sql).await.unwrap())[0][0].clone() }
    };
    let diff = "SELECT count(*) FROM (SELECT * FROM live.market_data EXCEPT \
                SELECT * FROM market_data)";
    assert_eq!(count(diff).await, "0", "after a sync the two are equal");
    let total = db.count().await.to_string();
    assert_eq!(count("SELECT count(*) FROM live.market_data").await, total);

    // A late bar, not yet synced: live sees it, the cache does not.
    let dec = |s: &str| s.parse::<Decimal>().unwrap();
    let late = Bar {
        symbol: "NVDA".parse().unwrap(),
        timeframe: "1d".parse().unwrap(),
        ts: parse_time_arg("2015-01-01", false).unwrap(),
        open: dec("20.1"),
        high: dec("20.9"),
        low: dec("19.95"),
        close: dec("20.12345678"),
        volume: dec("1000.5"),
    };
    db.store
        .insert_bars(&[late], quiver::OnConflict::Error)
        .await
        .unwrap();
    let late = "SELECT ts, close, volume FROM live.market_data WHERE symbol = 'NVDA' \
                AND timeframe = '1d' AND ts >= TIMESTAMP '2015-01-01T00:00:00Z'";
    assert_eq!(
        rows(&shell.query(late).await.unwrap()),
        vec![vec![
            "2015-01-01T00:00:00Z".to_string(),
            "20.12345678".into(),
            "1000.5".into()
        ]],
    );
    assert_eq!(count(diff).await, "1");
    assert_eq!(
        count("SELECT count(*) FROM market_data WHERE ts >= TIMESTAMP '2015-01-01T00:00:00Z' AND symbol = 'NVDA'").await,
        "0"
    );

    // Filtered reads equal the database's own answer, bar for bar.
    let filtered = "SELECT * FROM live.market_data WHERE symbol = 'ORCL' AND timeframe = '1d' \
                    AND ts > TIMESTAMP '2003-03-03T00:00:00Z' AND ts <= TIMESTAMP '2003-06-30T00:00:00Z' \
                    ORDER BY ts";
    let expected: Vec<Vec<String>> = series(&db, "ORCL", "1d")
        .await
        .into_iter()
        .filter(|b| {
            b.ts > parse_time_arg("2003-03-03", false).unwrap()
                && b.ts <= parse_time_arg("2003-06-30", false).unwrap()
        })
        .map(|b| {
            vec![
                b.symbol.to_string(),
                b.timeframe.to_string(),
                format_ts(&b.ts),
                decimal_text(&b.open),
                decimal_text(&b.high),
                decimal_text(&b.low),
                decimal_text(&b.close),
                decimal_text(&b.volume),
            ]
        })
        .collect();
    assert!(expected.len() > 50, "four months of sessions");
    assert_eq!(rows(&shell.query(filtered).await.unwrap()), expected);

    for write in [
        "INSERT INTO live.market_data SELECT * FROM market_data LIMIT 1",
        "DELETE FROM market_data",
        "CREATE TABLE t AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/quiver-never-written.csv'",
    ] {
        let e = shell.query(write).await.unwrap_err().to_string();
        assert!(e.contains("quiver sql is read-only"), "{write}: {e}");
    }
    // Views of the session are allowed.
    shell
        .query("CREATE VIEW nvda AS SELECT * FROM market_data WHERE symbol = 'NVDA'")
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM nvda").await, "4012");
}

both!(
    resample_1h,
    daily_returns,
    vwap_daily,
    gaps,
    top_movers,
    warmup,
    live_table
);

#[test]
fn every_example_has_a_test() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "daily_returns.sql",
            "gaps.sql",
            "resample_1h.sql",
            "top_movers.sql",
            "vwap_daily.sql",
            "warmup.sql"
        ]
    );
    for f in &files {
        assert!(
            example(f).starts_with("-- "),
            "{f} opens with a comment saying what it answers"
        );
    }
}

/// A fixture cache on SQLite for the binary's golden tests, built once per test.
struct Cli {
    db: TestDb,
}

impl Cli {
    async fn new() -> Cli {
        let db = TestDb::new(Kind::Sqlite).await;
        fixture(&db).await;
        Cli { db }
    }

    fn command(&self) -> std::process::Command {
        let mut c = self.db.quiver(&["sql"]);
        c.env("QUIVER_HISTORY", self.db.path("history.txt"))
            .env("NO_COLOR", "1");
        c
    }

    /// Runs `quiver sql ARGS` with `stdin`; returns exit status, stdout and stderr.
    fn run(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn dir(&self) -> PathBuf {
        self.db.dir.path().to_path_buf()
    }
}

/// Snapshot settings: temp folders and timings vary from run to run.
fn settings(cli: &Cli) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&cli.dir().display().to_string()), "[DIR]");
    s.add_filter(r"Time: [0-9.]+ ms", "Time: [T] ms");
    s.set_prepend_module_to_snapshot(false);
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

const THREE: &str = "SELECT symbol, timeframe, ts, close, volume FROM market_data \
                     WHERE symbol = 'NVDA' AND timeframe = '1d' ORDER BY ts LIMIT 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_output_in_every_format() {
    let cli = Cli::new().await;
    let settings = settings(&cli);
    let _guard = settings.bind_to_scope();
    for format in ["table", "csv", "json", "ndjson"] {
        let (code, out, err) = cli.run(&["--format", format, "-c", THREE], "");
        assert_eq!((code, err.as_str()), (0, ""), "{format}");
        insta::assert_snapshot!(format!("format_{format}"), out);
        let (code, out, _) = cli.run(
            &[
                "--format",
                format,
                "-c",
                "SELECT * FROM market_data WHERE symbol = 'NONE'",
            ],
            "",
        );
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("empty_{format}"), out);
    }
    let (code, out, _) = cli.run(&["--maxrows", "2", "-c", THREE], "");
    assert_eq!(code, 0);
    insta::assert_snapshot!("maxrows", out);

    // Decimals and timestamps print exactly as `quiver bars` prints them.
    let five = "SELECT * FROM market_data WHERE symbol = 'NVDA' AND timeframe = '1d' \
                ORDER BY ts LIMIT 5";
    let bars = |format: &str| {
        let out = cli
            .db
            .quiver(&[
                "bars",
                "NVDA",
                "--timeframe",
                "1d",
                "--limit",
                "5",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (_, csv, _) = cli.run(&["--format", "csv", "-c", five], "");
    assert_eq!(csv.trim_end(), bars("csv").trim_end());
    assert!(csv.contains(",1.640625,"), "trailing zeros dropped: {csv}");
    let (_, json, _) = cli.run(&["--format", "json", "-c", five], "");
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(parse(&json), parse(&bars("json")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_scripts_and_meta_commands() {
    let cli = Cli::new().await;
    let settings = settings(&cli);
    let _guard = settings.bind_to_scope();
    // -c and -f run in command-line order.
    std::fs::write(cli.dir().join("two.sql"), "-- the second\nSELECT 2 AS b;\n").unwrap();
    let (code, out, err) = cli.run(
        &[
            "-c",
            "SELECT 1 AS a",
            "-f",
            "two.sql",
            "-c",
            "SELECT 3 AS c; SELECT 4 AS d",
        ],
        "",
    );
    assert_eq!((code, err.as_str()), (0, ""));
    insta::assert_snapshot!("order", out);

    // A script on stdin: multi-line statements and meta-commands.
    let script = "\\?\n\\d\n\\d market_data\n\\timing on\nSELECT symbol,\n  count(*) AS bars\nFROM market_data\nGROUP BY symbol\nORDER BY symbol;\n\\timing off\n\\format csv\nSELECT 'a;b' AS text; -- a semicolon in a string\n\\i two.sql\n\\q\nSELECT 'never run';\n";
    let (code, out, err) = cli.run(&[], script);
    assert_eq!((code, err.as_str()), (0, ""));
    insta::assert_snapshot!("stdin_script", out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_errors() {
    let cli = Cli::new().await;
    let settings = settings(&cli);
    let _guard = settings.bind_to_scope();
    std::fs::write(
        cli.dir().join("bad.sql"),
        "SELECT 1 AS fine;\n\n-- the next one fails\nSELECT nope\nFROM market_data;\nSELECT 'never run';\n",
    )
    .unwrap();
    let cases: [(&str, Vec<&str>); 7] = [
        ("unknown_table", vec!["-c", "SELECT * FROM nowhere"]),
        ("syntax", vec!["-c", "SELEKT 1"]),
        (
            "insert_refused",
            vec!["-c", "INSERT INTO market_data SELECT * FROM market_data"],
        ),
        ("delete_refused", vec!["-c", "DELETE FROM live.market_data"]),
        ("file_line", vec!["-f", "bad.sql"]),
        ("unknown_meta", vec!["-c", "\\y"]),
        ("missing_file", vec!["-f", "nowhere.sql"]),
    ];
    for (name, args) in cases {
        let (code, out, err) = cli.run(&args, "");
        assert_ne!(code, 0, "{name}");
        assert_eq!(err.lines().count(), 1, "{name}: one error line: {err}");
        insta::assert_snapshot!(
            format!("error_{name}"),
            format!("exit {code}\n--- stdout\n{out}--- stderr\n{err}")
        );
    }
}

/// The interactive shell in a pseudo-terminal: completion, a statement over two lines,
/// Ctrl-C cancelling a running query without leaving, history kept, `\q`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shell_cancels_with_ctrl_c() {
    let cli = Cli::new().await;
    let mut command = cli.command();
    command
        .env("TERM", "xterm")
        .env("QUIVER_LOG", "quiver::sql=debug");
    let mut p = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
    p.exp_string("quiver> ").unwrap();

    // Tab completes the table name.
    p.send("SELECT count(*) AS n FROM market_d").unwrap();
    p.send("\t").unwrap();
    p.send_line(" WHERE symbol = 'NVDA';").unwrap();
    p.exp_string("4012").unwrap();
    p.exp_string("(1 row)").unwrap();
    p.exp_string("quiver> ").unwrap();

    // Tab completes keywords (in the case typed) and column names too.
    for part in ["sel", "\t", " clo", "\t", " FROM market_d", "\t"] {
        p.send(part).unwrap();
    }
    p.send_line(" WHERE symbol = 'NVDA' ORDER BY ts LIMIT 1;")
        .unwrap();
    p.exp_string("1.640625").unwrap();
    p.exp_string("quiver> ").unwrap();

    // A statement over two lines runs at the `;`; its second line has psql's kind of
    // continuation prompt.
    p.send_line("SELECT 6 * 7").unwrap();
    p.exp_string("quiver-> ").unwrap();
    p.send_line("AS answer;").unwrap();
    p.exp_string("42").unwrap();
    p.exp_string("quiver> ").unwrap();

    // \x shows each row as `column | value` lines, and toggles back.
    p.send_line("\\x").unwrap();
    p.exp_string("Expanded display is on.").unwrap();
    p.send_line("SELECT symbol, close FROM market_data WHERE symbol = 'NVDA' ORDER BY ts LIMIT 1;")
        .unwrap();
    p.exp_string("-[ RECORD 1 ]").unwrap();
    p.exp_string("symbol | NVDA").unwrap();
    p.exp_string("close  | 1.640625").unwrap();
    p.exp_string("(1 row)").unwrap();
    p.send_line("\\x").unwrap();
    p.exp_string("Expanded display is off.").unwrap();
    p.exp_string("quiver> ").unwrap();

    // A query that would run for minutes, cancelled.
    p.send_line("SELECT sum(value) FROM range(100000000000);")
        .unwrap();
    // Logged (at debug level, QUIVER_LOG above) once the statement is executing.
    p.exp_string("statement running").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("cancelled").unwrap();
    p.exp_string("quiver> ").unwrap();

    // The shell is still there, and an error keeps it.
    p.send_line("SELECT * FROM nowhere;").unwrap();
    p.exp_string("error: ").unwrap();
    p.exp_string("quiver> ").unwrap();
    p.send_line("SELECT 'still here' AS s;").unwrap();
    p.exp_string("still here").unwrap();
    p.exp_string("quiver> ").unwrap();
    p.send_line("\\q").unwrap();
    p.exp_eof().unwrap();

    // Ctrl-D at an empty prompt leaves too, and so do `exit` and `quit` (not inside a
    // statement, where they are names).
    let mut command = cli.command();
    command.env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
    p.exp_string("quiver> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    for word in ["exit", "quit"] {
        let mut command = cli.command();
        command.env("TERM", "xterm");
        let mut p = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
        p.exp_string("quiver> ").unwrap();
        p.send_line(word).unwrap();
        p.exp_eof().unwrap();
    }

    let history = std::fs::read_to_string(cli.db.path("history.txt")).unwrap();
    assert!(history.contains("SELECT 'still here' AS s;"), "{history}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cli.db.path("history.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the history is private: {mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_logged_with_their_time() {
    let cli = Cli::new().await;
    std::fs::write(cli.dir().join("slow.toml"), "[read]\nslow_query = \"0s\"\n").unwrap();
    let sql = "SELECT count(*) AS n FROM market_data";
    let (code, out, err) = cli.run(&["--config", "slow.toml", "-c", sql], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("44902"), "{out}");
    assert!(
        err.contains("slow SQL statement") && err.contains("elapsed_ms") && err.contains(sql),
        "{err}"
    );
    // Under the default threshold (1 s), nothing is logged.
    let (_, _, err) = cli.run(&["-c", sql], "");
    assert_eq!(err, "");
}
