//! Importing real files and refusing bad ones, on both backends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono_tz::Tz;
use quiver::db::BarFilter;
use quiver::import::{Format, ImportOptions, import_files};
use quiver::model::format_ts;
use quiver::{Error, OnConflict, Symbol, Timeframe};

use crate::both;
use crate::harness::{TestDb, sample};

fn options(symbol: &str, tf: &str) -> ImportOptions {
    ImportOptions {
        symbol: Some(Symbol::parse(symbol).unwrap()),
        timeframe: Some(Timeframe::parse(tf).unwrap()),
        ..ImportOptions::default()
    }
}

fn line_count(path: &PathBuf) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

both!(
    every_bundled_sample_imports_exactly,
    bad_rows_stop_the_import_and_write_nothing,
    binance_and_csv_formats,
    reimport_with_each_policy,
    whole_market_compressed_files,
    large_files_are_written_while_read_and_still_all_or_nothing,
    parquet_files,
    real_downloads_null_rows_empty_files_and_folders,
);

async fn every_bundled_sample_imports_exactly(db: TestDb) {
    let cases = [
        ("nvda-1999-2014.txt", "NVDA", "1d", Tz::UTC, Format::Yahoo),
        ("orcl-1995-2014.txt", "ORCL", "1d", Tz::UTC, Format::Yahoo),
        (
            "yhoo-1996-2015.txt",
            "YHOO",
            "1d",
            Tz::America__New_York,
            Format::Yahoo,
        ),
        (
            "2006-min-005.txt",
            "^STOXX50E",
            "5m",
            Tz::Europe__Berlin,
            Format::Backtrader,
        ),
        (
            "2006-01-02-volume-min-001.txt",
            "FESX",
            "1m",
            Tz::Europe__Berlin,
            Format::Backtrader,
        ),
    ];
    for (file, symbol, tf, tz, format) in cases {
        let path = sample(file);
        let opts = ImportOptions {
            tz,
            ..options(symbol, tf)
        };
        let report = import_files(&db.store, std::slice::from_ref(&path), &opts)
            .await
            .unwrap();
        assert_eq!(report.files[0].format, format, "{file}");
        assert_eq!(report.files[0].bars, line_count(&path) - 1, "{file}");
        assert_eq!(
            report.write.written as usize,
            line_count(&path) - 1,
            "{file}"
        );
    }
    let nvda = BarFilter {
        symbol: Some(Symbol::parse("NVDA").unwrap()),
        ..Default::default()
    };
    let bars = db.store.read_bars(&nvda).await.unwrap();
    // 1999-01-22,1.750000,1.953125,1.552083,1.640625,1.518424,67867200
    let first = &bars[0];
    assert_eq!(
        (
            format_ts(&first.ts),
            first.open.to_string(),
            first.high.to_string(),
            first.low.to_string(),
            first.close.to_string(),
            first.volume.to_string()
        ),
        (
            "1999-01-22T00:00:00Z".into(),
            "1.75".into(),
            "1.953125".into(),
            "1.552083".into(),
            "1.640625".into(),
            "67867200".into()
        )
    );
    // 2014-12-31,20.400000,20.510000,19.990000,20.049999,19.425875,4157500
    let last = bars.last().unwrap();
    assert_eq!(
        (format_ts(&last.ts), last.close.to_string()),
        ("2014-12-31T00:00:00Z".into(), "20.049999".into())
    );

    // Naive times are read in --tz: 09:05 in Berlin in January is 08:05 UTC; New York midnight is 05:00 UTC.
    let stoxx = BarFilter {
        symbol: Some(Symbol::parse("^STOXX50E").unwrap()),
        ..Default::default()
    };
    let s = db.store.read_bars(&stoxx).await.unwrap();
    assert_eq!(format_ts(&s[0].ts), "2006-01-02T08:05:00Z");
    assert_eq!(s[0].volume.to_string(), "0");
    let yhoo = BarFilter {
        symbol: Some(Symbol::parse("YHOO").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        format_ts(&db.store.read_bars(&yhoo).await.unwrap()[0].ts),
        "1996-04-12T04:00:00Z"
    );

    // The file whose header omits `Time` still gets its times.
    let fesx = BarFilter {
        symbol: Some(Symbol::parse("FESX").unwrap()),
        ..Default::default()
    };
    let f = db.store.read_bars(&fesx).await.unwrap();
    assert_eq!(
        (
            format_ts(&f[0].ts),
            f[0].open.to_string(),
            f[0].volume.to_string()
        ),
        ("2006-01-02T08:01:00Z".into(), "3602".into(), "5699".into())
    );
    assert_eq!(format_ts(&f.last().unwrap().ts), "2006-02-27T21:00:00Z");
}

const HEADER: &str = "Date,Open,High,Low,Close,Adj Close,Volume\n";
const GOOD: &str = "2024-01-02,10.0,11.0,9.5,10.5,10.5,1000\n";

async fn bad_rows_stop_the_import_and_write_nothing(db: TestDb) {
    let cases: [(&str, &str, &str); 8] = [
        (
            "2024-01-03,10.0,1x.0,9.5,10.5,10.5,1000",
            "High",
            "\"1x.0\" is not a decimal number",
        ),
        (
            "2024-13-03,10.0,11.0,9.5,10.5,10.5,1000",
            "Date",
            "\"2024-13-03\" is not a date",
        ),
        (
            "2024-01-03,10.0,9.0,9.5,9.2,9.2,1000",
            "High",
            "high 9 is below low 9.5",
        ),
        (
            "2024-01-03,10.0,11.0,10.2,10.5,10.5,1000",
            "Low",
            "low 10.2 is above open 10",
        ),
        (
            "2024-01-03,10.0,11.0,9.5,10.5,10.5,-5",
            "Volume",
            "volume -5 is negative",
        ),
        (
            "2024-01-02,10.0,11.0,9.5,10.5,10.5,1000",
            "Date",
            "duplicate bar X 1d 2024-01-02T00:00:00Z (first at",
        ),
        (
            "2024-01-03,10.0,11.0,9.5,10.5,1000",
            "row",
            "expected 7 fields, found 6",
        ),
        (
            "2024-01-03,10.0,11.0,9.5,10.5,10.5,0.000000001",
            "Volume",
            "9 fractional digits",
        ),
    ];
    for (i, (row, field, reason)) in cases.iter().enumerate() {
        let path = db.file(&format!("bad{i}.csv"), &format!("{HEADER}{GOOD}{row}\n"));
        let err = import_files(&db.store, std::slice::from_ref(&path), &options("X", "1d"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Input { line: 3, .. }),
            "{row}: {err:?}"
        );
        let msg = err.to_string();
        let prefix = format!("{}:3: {field}: ", path.display());
        assert!(
            msg.starts_with(&prefix),
            "{msg:?} does not start with {prefix:?}"
        );
        assert!(msg.contains(reason), "{msg:?} lacks {reason:?}");
        assert_eq!(db.count().await, 0, "a row was written despite {msg}");
    }

    // Symbols: empty or invalid in a csv file, named by line and field.
    let csv = db.file("sym.csv", "symbol,timeframe,ts,open,high,low,close,volume\nAAPL,1d,2024-01-02,1,1,1,1,1\n,1d,2024-01-03,1,1,1,1,1\n");
    let err = import_files(
        &db.store,
        std::slice::from_ref(&csv),
        &ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:3: symbol: empty symbol", csv.display())
    );
    let csv = db.file("sym2.csv", "symbol,timeframe,ts,open,high,low,close,volume\nAAPL,1d,2024-01-02,1,1,1,1,1\nBAD SYM,1d,2024-01-03,1,1,1,1,1\n");
    let err = import_files(
        &db.store,
        std::slice::from_ref(&csv),
        &ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}:3: symbol: symbol \"BAD SYM\" contains ' '",
            csv.display()
        )),
        "{err}"
    );

    // A bad second file stops the first one too: all-or-nothing across files.
    let good = db.file("good.csv", &format!("{HEADER}{GOOD}"));
    let bad = db.file("bad.csv", &format!("{HEADER}2024-01-05,1,1,1,1,1,oops\n"));
    let err = import_files(&db.store, &[good.clone(), bad], &options("X", "1d"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad.csv:2: Volume:"), "{err}");
    // ... and a bar repeated across files is a duplicate too.
    let again = db.file("again.csv", &format!("{HEADER}{GOOD}"));
    let err = import_files(&db.store, &[good, again], &options("X", "1d"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("again.csv:2: Date: duplicate bar"),
        "{err}"
    );
    assert_eq!(db.count().await, 0);

    // A missing symbol is a usage error before anything is read.
    let path = db.file("nosym.csv", &format!("{HEADER}{GOOD}"));
    let err = import_files(&db.store, &[path], &ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pass --symbol"), "{err}");
    // An unknown layout is refused with advice.
    let path = db.file("what.csv", "a,b,c\n1,2,3\n");
    let err = import_files(&db.store, &[path], &options("X", "1d"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pass --format"), "{err}");
}

async fn binance_and_csv_formats(db: TestDb) {
    let klines = "1704067200000,42283.58000000,42554.57000000,42261.02000000,42475.23000000,1271.68108000,1704070799999,53957248.97,47134,682.57581000,28957416.81,0\n\
                  1704070800000000,42475.23000000,42775.00000000,42431.65000000,42613.56000000,1196.37856000,1704074399999999,50777949.96,48245,603.23981000,25598328.97,0\n";
    let path = db.file("BTCUSDT-1h-2024-01.csv", klines);
    let report = import_files(
        &db.store,
        std::slice::from_ref(&path),
        &options("btcusdt", "1h"),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.files[0].format, report.files[0].bars),
        (Format::Binance, 2)
    );
    let bars = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(format_ts(&bars[0].ts), "2024-01-01T00:00:00Z");
    assert_eq!(
        format_ts(&bars[1].ts),
        "2024-01-01T01:00:00Z",
        "microsecond open times (2025+ dumps)"
    );
    assert_eq!(bars[0].volume.to_string(), "1271.68108");

    let csv = db.file(
        "mixed.csv",
        "ts,symbol,timeframe,open,high,low,close,volume\n\
        2024-06-03T14:30:00Z,eth/usdt,1m,3800.5,3801,3800,3800.75,12.5\n\
        2024-06-03 14:31:00,ETH/USDT,1m,3800.75,3802,3800.5,3801,0.125\n",
    );
    let report = import_files(
        &db.store,
        std::slice::from_ref(&csv),
        &ImportOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.files[0].format, report.write.written),
        (Format::Csv, 2)
    );
    let eth = BarFilter {
        symbol: Some(Symbol::parse("ETH/USDT").unwrap()),
        ..Default::default()
    };
    let bars = db.store.read_bars(&eth).await.unwrap();
    assert_eq!(format_ts(&bars[1].ts), "2024-06-03T14:31:00Z");
    assert_eq!(bars[1].volume.to_string(), "0.125");
}

async fn reimport_with_each_policy(db: TestDb) {
    let path = sample("2006-min-005.txt");
    let opts = options("IDX", "5m");
    let n = import_files(&db.store, std::slice::from_ref(&path), &opts)
        .await
        .unwrap()
        .write
        .written;
    let err = import_files(&db.store, std::slice::from_ref(&path), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let skip = ImportOptions {
        on_conflict: OnConflict::Skip,
        ..opts.clone()
    };
    let r = import_files(&db.store, std::slice::from_ref(&path), &skip)
        .await
        .unwrap();
    assert_eq!((r.write.written, r.write.unchanged()), (0, n));
    let replace = ImportOptions {
        on_conflict: OnConflict::Replace,
        ..opts
    };
    let r = import_files(&db.store, std::slice::from_ref(&path), &replace)
        .await
        .unwrap();
    assert_eq!(
        (r.write.written, r.write.unchanged()),
        (0, n),
        "identical bars are not rewritten"
    );
    assert_eq!(db.count().await as u64, n);
}

/// A day of `tickers` x `minutes` one-minute bars named `{prefix}{t:03}`, with 8-decimal prices
/// and fractional volumes, listed ticker after ticker (as Massive's flat files are) or every
/// ticker each minute; and the bars as (symbol, ts, open, volume) text, in key order.
fn market_day(
    prefix: &str,
    tickers: usize,
    minutes: usize,
    ticker_after_ticker: bool,
) -> (String, Vec<(String, String, String, String)>) {
    let row = |t: usize, m: usize| {
        let units = 100 + (t * 7 + m) % 50;
        let open = format!("{units}.{:08}", (t * 7919 + m * 104_729) % 100_000_000);
        let ts = (1_709_821_800 + m as i64 * 60) * 1_000_000_000;
        let volume = format!("{}.5", t + m);
        let line = format!(
            "{prefix}{t:03},{volume},{open},{open},{}.5,{}.25,{ts},3\n",
            units + 1,
            units - 1
        );
        let ts = format_ts(&chrono::DateTime::from_timestamp_nanos(ts));
        (line, (format!("{prefix}{t:03}"), ts, open, volume))
    };
    let mut text = String::from("ticker,volume,open,close,high,low,window_start,transactions\n");
    let mut bars = Vec::new();
    for i in 0..tickers * minutes {
        let (t, m) = if ticker_after_ticker {
            (i / minutes, i % minutes)
        } else {
            (i % tickers, i / tickers)
        };
        let (line, (symbol, ts, open, volume)) = row(t, m);
        text.push_str(&line);
        bars.push((symbol, ts, normal(&open), normal(&volume)));
    }
    bars.sort();
    (text, bars)
}

/// A decimal's digits without trailing zeros, as exact text.
fn normal(decimal: &str) -> String {
    rust_decimal::Decimal::from_str_exact(decimal)
        .unwrap()
        .normalize()
        .to_string()
}

/// The stored bars whose symbol starts with `prefix`, as [`market_day`] gives them.
async fn stored_day(db: &TestDb, prefix: &str) -> Vec<(String, String, String, String)> {
    let bars = db.store.read_bars(&BarFilter::default()).await.unwrap();
    let mut day: Vec<_> = bars
        .iter()
        .filter(|b| b.symbol.as_str().starts_with(prefix))
        .map(|b| {
            (
                b.symbol.to_string(),
                format_ts(&b.ts),
                b.open.normalize().to_string(),
                b.volume.normalize().to_string(),
            )
        })
        .collect();
    day.sort();
    day
}

async fn large_files_are_written_while_read_and_still_all_or_nothing(db: TestDb) {
    // About 4.5 MB of text each: several chunks of a MiB, parsed on several threads.
    let (tickers, minutes) = (60, 1000);
    let rows = tickers * minutes;
    let one_minute = ImportOptions {
        timeframe: Some(Timeframe::parse("1m").unwrap()),
        ..ImportOptions::default()
    };
    let import = |path: PathBuf, options: ImportOptions| {
        let store = db.store.clone();
        async move { import_files(&store, std::slice::from_ref(&path), &options).await }
    };

    // Ticker after ticker: every chunk follows the last, so all of it is written as it is read.
    let (text, expected) = market_day("K", tickers, minutes, true);
    let path = compress("gzip", &db.file("by-ticker.csv", &text));
    let report = import(path.clone(), one_minute.clone()).await.unwrap();
    assert_eq!(
        (
            report.files[0].bars,
            report.write.written,
            report.written_while_reading
        ),
        (rows, rows as u64, rows)
    );
    assert_eq!(stored_day(&db, "K").await, expected, "every value exact");

    // Every ticker each minute: the second chunk does not follow the first, so all is sorted.
    let (text, expected) = market_day("M", tickers, minutes, false);
    let report = import(db.file("by-minute.csv", &text), one_minute.clone())
        .await
        .unwrap();
    assert_eq!(report.write.written, rows as u64);
    assert_eq!(report.written_while_reading, 0);
    assert_eq!(stored_day(&db, "M").await, expected, "every value exact");
    let before = db.count().await;

    // A bad row in the last chunk, after every earlier chunk was written: nothing is kept.
    let (text, _) = market_day("B", tickers, minutes, true);
    let mut lines: Vec<&str> = text.lines().collect();
    let bad_line = lines.len() - 2;
    let bad = format!("{},extra", lines[bad_line]);
    lines[bad_line] = &bad;
    let path = db.file("bad-late.csv", &(lines.join("\n") + "\n"));
    let err = import(path.clone(), one_minute.clone()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:{}: row: expected 8 fields, found 9",
            path.display(),
            bad_line + 1
        )
    );
    assert_eq!(
        db.count().await,
        before,
        "the chunks written before are rolled back"
    );

    // A bar given again at the end of a file in key order is a duplicate naming both lines.
    let mut lines: Vec<&str> = text.lines().collect();
    let again = lines[2];
    lines.push(again);
    let path = db.file("twice.csv", &(lines.join("\n") + "\n"));
    let err = import(path.clone(), one_minute.clone()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{}:{}: window_start: duplicate bar B000 1m ",
            path.display(),
            lines.len()
        )) && message.ends_with(&format!("(first at {}:3)", path.display())),
        "{message}"
    );
    assert_eq!(db.count().await, before);

    // Bars already stored are refused (the default policy) while the file is read; a bad row
    // later in it is still the error reported, and nothing is kept.
    let (text, _) = market_day("K", tickers, minutes, true);
    let err = import(db.file("again.csv", &text), one_minute.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.len() - 1;
    let bad = lines[last].replacen(".5,", "x,", 1);
    lines[last] = &bad;
    let path = db.file("again-bad.csv", &(lines.join("\n") + "\n"));
    let err = import(path.clone(), one_minute).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:{}: volume: ", path.display(), last + 1)),
        "{err}"
    );
    assert_eq!(db.count().await, before);
}

/// Compresses `path` in place with the system's `gzip` or `zstd`, returning the new file.
fn compress(tool: &str, path: &Path) -> PathBuf {
    let status = Command::new(tool)
        .args(["-q", "-f"])
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} failed");
    let ext = if tool == "gzip" { "gz" } else { "zst" };
    let out = PathBuf::from(format!("{}.{ext}", path.display()));
    assert!(out.exists(), "{tool} made no {}", out.display());
    out
}

fn bars_of(bars: &[quiver::Bar], symbol: &str) -> Vec<(String, String, String)> {
    bars.iter()
        .filter(|b| b.symbol.as_str() == symbol)
        .map(|b| (format_ts(&b.ts), b.close.to_string(), b.volume.to_string()))
        .collect()
}

/// A day of a whole market as the flat-file vendors ship it: gzip CSV, every symbol in one
/// file, `ticker` and `window_start` in epoch nanoseconds, columns in their own order.
async fn whole_market_compressed_files(db: TestDb) {
    let day = db.file(
        "2024-03-07.csv",
        "ticker,volume,open,close,high,low,window_start,transactions\n\
         AAPL,4930,169.15,169.5,169.6,169.15,1709802000000000000,112\n\
         aapl,1187,169.5,169.44,169.5,169.42,1709802060000000000,31\n\
         BRK.B,12,409.01,409.01,409.01,409.01,1709802000000000000,2\n\
         X:BTCUSD,0.00002853,66810.5,66812.25,66820,66800.125,1709802000000000000,9\n",
    );
    let gz = compress("gzip", &day);
    let one_minute = ImportOptions {
        timeframe: Some(Timeframe::parse("1m").unwrap()),
        ..ImportOptions::default()
    };
    let report = import_files(&db.store, std::slice::from_ref(&gz), &one_minute)
        .await
        .unwrap();
    assert_eq!(
        (
            report.files[0].format,
            report.files[0].bars,
            report.write.written
        ),
        (Format::Csv, 4, 4)
    );
    let bars = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(
        bars_of(&bars, "AAPL"),
        [
            ("2024-03-07T09:00:00Z".into(), "169.5".into(), "4930".into()),
            (
                "2024-03-07T09:01:00Z".into(),
                "169.44".into(),
                "1187".into()
            ),
        ],
        "symbols normalised per row, epoch nanoseconds detected"
    );
    assert_eq!(
        bars_of(&bars, "X:BTCUSD"),
        [(
            "2024-03-07T09:00:00Z".into(),
            "66812.25".into(),
            "0.00002853".into()
        )]
    );
    assert_eq!(bars_of(&bars, "BRK.B").len(), 1);

    // zstd, headers in any case with the usual aliases, epoch seconds given by flag.
    let next = db.file(
        "next.csv",
        "Symbol,Interval,Timestamp,Open,High,Low,Close,Volume\n\
         MSFT,1h,1709805600,410.5,411,410,410.75,712345.12\n\
         MSFT,1h,1709809200,410.75,412,410.5,411.5,36304.2\n",
    );
    let zst = compress("zstd", &next);
    let seconds = ImportOptions {
        epoch: quiver::model::EpochUnit::Seconds,
        ..ImportOptions::default()
    };
    let report = import_files(&db.store, std::slice::from_ref(&zst), &seconds)
        .await
        .unwrap();
    assert_eq!(report.write.written, 2);
    let bars = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(
        bars_of(&bars, "MSFT"),
        [
            (
                "2024-03-07T10:00:00Z".into(),
                "410.75".into(),
                "712345.12".into()
            ),
            (
                "2024-03-07T11:00:00Z".into(),
                "411.5".into(),
                "36304.2".into()
            ),
        ]
    );
    let before = db.count().await;

    // A bad row inside a compressed file is named by the file and its line in the text.
    let bad = db.file(
        "bad-day.csv",
        "ticker,volume,open,close,high,low,window_start\n\
         NVDA,10,900,901,902,899,1709802000000000000\n\
         NVDA,10,900,901,902,899,1709802060000000001\n",
    );
    let bad = compress("gzip", &bad);
    let err = import_files(&db.store, std::slice::from_ref(&bad), &one_minute)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: window_start: 1709802060000000001 has nanoseconds (epoch ns); the cache keeps \
             microseconds",
            bad.display()
        )
    );
    let bad = db.file(
        "bad-sym.csv",
        "ticker,volume,open,close,high,low,window_start\n\
         NVDA,10,900,901,902,899,1709802000000000000\n\
         NV DA,10,900,901,902,899,1709802060000000000\n",
    );
    let bad = compress("zstd", &bad);
    let err = import_files(&db.store, std::slice::from_ref(&bad), &one_minute)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: ticker: symbol \"NV DA\"", bad.display())),
        "{err}"
    );
    // A truncated archive is refused as a whole.
    let cut = db.path("cut.csv.gz");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 12]).unwrap();
    let err = import_files(&db.store, std::slice::from_ref(&cut), &one_minute)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains("gzip"),
        "{err}"
    );
    assert_eq!(db.count().await, before, "nothing written by the bad files");
}

/// Parquet with decimal, integer and decimal-text prices; floats only when asked for.
async fn parquet_files(db: TestDb) {
    use quiver::arrow::array::{
        ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use quiver::parquet::arrow::ArrowWriter;

    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let path = db.path(name);
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    };
    let dec = |v: &[i128], p: u8, s: i8| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v.to_vec())
                .with_precision_and_scale(p, s)
                .unwrap(),
        )
    };
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(vec![1_709_802_000_000_000, 1_709_802_060_000_000])
            .with_timezone("UTC"),
    );
    let good = write(
        "good.parquet",
        vec![
            (
                "symbol",
                Arc::new(StringArray::from(vec!["shib/usdt", "SHIB/USDT"])) as ArrayRef,
            ),
            ("timeframe", Arc::new(StringArray::from(vec!["1m", "1m"]))),
            ("ts", ts.clone()),
            ("open", dec(&[2853, 2854], 28, 8)),
            (
                "high",
                Arc::new(StringArray::from(vec!["0.00002860", "0.0000286"])),
            ),
            ("low", dec(&[2850, 2850], 28, 8)),
            ("close", dec(&[2854, 2855], 28, 8)),
            ("volume", Arc::new(Int64Array::from(vec![712_345, 36_304]))),
        ],
    );
    let report = import_files(
        &db.store,
        std::slice::from_ref(&good),
        &ImportOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.files[0].format, report.write.written),
        (Format::Parquet, 2),
        "told by its PAR1 header"
    );
    let bars = db.store.read_bars(&BarFilter::default()).await.unwrap();
    let b = &bars[0];
    assert_eq!(
        (
            b.symbol.as_str(),
            format_ts(&b.ts),
            b.open.to_string(),
            b.high.to_string(),
            b.volume.to_string()
        ),
        (
            "SHIB/USDT",
            "2024-03-07T09:00:00Z".to_string(),
            "0.00002853".to_string(),
            "0.0000286".to_string(),
            "712345".to_string()
        )
    );

    // Binary floats are refused, and accepted rounded to 8 decimals when asked for.
    let floats = write(
        "floats.parquet",
        vec![
            (
                "ticker",
                Arc::new(StringArray::from(vec!["ETH", "ETH"])) as ArrayRef,
            ),
            (
                "window_start",
                Arc::new(Int64Array::from(vec![
                    1_709_802_000_000_000_000,
                    1_709_802_060_000_000_000,
                ])),
            ),
            (
                "open",
                Arc::new(Float64Array::from(vec![3800.1, 0.1 + 0.2])),
            ),
            ("high", Arc::new(Float64Array::from(vec![3801.0, 0.5]))),
            ("low", Arc::new(Float64Array::from(vec![3800.0, 0.1]))),
            ("close", Arc::new(Float64Array::from(vec![3800.5, 0.3]))),
            ("volume", Arc::new(Float64Array::from(vec![36304.2, 1.0]))),
        ],
    );
    let one_minute = ImportOptions {
        timeframe: Some(Timeframe::parse("1m").unwrap()),
        ..ImportOptions::default()
    };
    let err = import_files(&db.store, std::slice::from_ref(&floats), &one_minute)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Format { .. })
            && err.to_string().contains("binary floats")
            && err.to_string().contains("--round-floats")
            && err.to_string().contains("floats=True"),
        "{err}"
    );
    let rounded = ImportOptions {
        floats: true,
        ..one_minute.clone()
    };
    import_files(&db.store, std::slice::from_ref(&floats), &rounded)
        .await
        .unwrap();
    let eth = BarFilter {
        symbol: Some(Symbol::parse("ETH").unwrap()),
        ..Default::default()
    };
    let bars = db.store.read_bars(&eth).await.unwrap();
    assert_eq!(
        bars.iter()
            .map(|b| (format_ts(&b.ts), b.open.to_string(), b.volume.to_string()))
            .collect::<Vec<_>>(),
        [
            (
                "2024-03-07T09:00:00Z".into(),
                "3800.1".into(),
                "36304.2".into()
            ),
            ("2024-03-07T09:01:00Z".into(), "0.3".into(), "1".into()),
        ],
        "0.1 + 0.2 is 0.30000000000000004 as a float, 0.3 rounded to 8 decimals"
    );
    let before = db.count().await;

    // A bad row is named by its 0-based index and column; nothing is written.
    let bad = write(
        "bad.parquet",
        vec![
            (
                "symbol",
                Arc::new(StringArray::from(vec!["A", "A", "A"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(StringArray::from(vec![
                    "2024-01-02",
                    "2024-01-03",
                    "2024-01-04",
                ])),
            ),
            ("open", dec(&[100, 100, 100], 10, 2)),
            ("high", dec(&[110, 110, 90], 10, 2)),
            ("low", dec(&[90, 90, 95], 10, 2)),
            ("close", dec(&[100, 100, 100], 10, 2)),
            ("volume", dec(&[1, 1, 1], 10, 0)),
        ],
    );
    let daily = ImportOptions {
        timeframe: Some(Timeframe::parse("1d").unwrap()),
        ..ImportOptions::default()
    };
    let err = import_files(&db.store, &[good.clone(), bad.clone()], &daily)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: row 2: high: high 0.9 is below low 0.95", bad.display())
    );
    // A bar given again in another file (here the CSV twin of a Parquet row) is a duplicate.
    let twin = db.file(
        "twin.csv",
        "symbol,timeframe,ts,open,high,low,close,volume\n\
         SHIB/USDT,1m,2024-03-07T09:01:00Z,0.00002854,0.0000286,0.0000285,0.00002855,36304\n",
    );
    let fresh = db.file(
        "fresh.csv",
        "symbol,timeframe,ts,open,high,low,close,volume\n\
         SHIB/USDT,1m,2024-03-07T09:02:00Z,0.00002854,0.0000286,0.0000285,0.00002855,1\n",
    );
    let err = import_files(
        &db.store,
        &[fresh, good.clone(), twin.clone()],
        &ImportOptions {
            on_conflict: OnConflict::Skip,
            ..ImportOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: ts: duplicate bar SHIB/USDT 1m 2024-03-07T09:01:00Z (first at {} row 1)",
            twin.display(),
            good.display()
        )
    );
    // A text file given as Parquet is refused as a whole.
    let err = import_files(
        &db.store,
        &[twin],
        &ImportOptions {
            format: Format::Parquet,
            ..ImportOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a Parquet file"), "{err}");
    assert_eq!(db.count().await, before, "nothing written by the bad files");
}

/// What real downloads hold: Yahoo's `null` rows (refused with the flag that skips them, or
/// skipped and counted), an empty file or a header alone (refused, named), and a folder of
/// files imported in name order as one all-or-nothing import.
async fn real_downloads_null_rows_empty_files_and_folders(db: TestDb) {
    let quiver = |args: &[&str]| db.quiver(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let header = "Date,Open,High,Low,Close,Adj Close,Volume\n";
    db.file(
        "yahoo.csv",
        &format!(
            "{header}2020-03-19,10,11,9,10.5,10.1,1000\n2020-03-20,null,null,null,null,null,null\n\
             2020-03-23,10.5,12,10,11,10.6,1200\n"
        ),
    );
    let import = ["import", "yahoo.csv", "--symbol", "Y", "--timeframe", "1d"];
    let out = quiver(&import);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "quiver: yahoo.csv:3: Open: a row without prices (\"null\"); pass --skip-null-rows to \
         skip such rows\n"
    );
    assert_eq!(db.count().await, 0);
    let out = quiver(&[&import[..], &["--skip-null-rows"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("yahoo.csv: 2 bars (yahoo, 1 rows without prices skipped)\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(db.count().await, 2);

    // An empty file, a header alone: refused by name, whatever the format.
    db.file("empty.csv", "");
    db.file("header.csv", header);
    for (file, format, said) in [
        (
            "empty.csv",
            "auto",
            "quiver: empty.csv: the file is empty\n",
        ),
        (
            "empty.csv",
            "yahoo",
            "quiver: empty.csv: the file is empty\n",
        ),
        (
            "header.csv",
            "auto",
            "quiver: header.csv: the file holds no bars\n",
        ),
    ] {
        let out = quiver(&[
            "import",
            file,
            "--symbol",
            "E",
            "--timeframe",
            "1d",
            "--format",
            format,
        ]);
        assert_eq!(out.status.code(), Some(2), "{file} {format}");
        assert_eq!(text(&out.stderr), said);
    }

    // A folder: its files in name order, all or nothing.
    let dir = db.path("downloads");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("b.csv"),
        format!("{header}2021-01-05,2,3,1,2,2,10\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("a.csv"),
        format!("{header}2021-01-04,1,2,1,2,2,10\n"),
    )
    .unwrap();
    std::fs::write(dir.join(".hidden"), "not a bar file").unwrap();
    let out = quiver(&["import", "downloads", "--symbol", "F", "--timeframe", "1d"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[0], "downloads/a.csv: 1 bars (yahoo)", "{said}");
    assert_eq!(lines[1], "downloads/b.csv: 1 bars (yahoo)", "{said}");
    assert_eq!(db.count().await, 4);
    std::fs::write(
        dir.join("c.csv"),
        format!("{header}2021-01-06,2,1,1,2,2,10\n"),
    )
    .unwrap();
    let out = quiver(&["import", "downloads", "--symbol", "G", "--timeframe", "1d"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "quiver: downloads/c.csv:2: High: high 1 is below open 2\n"
    );
    assert_eq!(db.count().await, 4, "nothing of a.csv or b.csv as G");
}
