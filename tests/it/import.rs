//! Importing real files and refusing bad ones, on both backends.

use std::path::PathBuf;

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
