//! Reading bars back from the cache: exact warmup across partition and year boundaries, typed
//! bars, streams, merged series, the latest bar, typed errors, a reader following
//! publications, pruning proved from DataFusion's metrics, and `quiver bars`/`latest`.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_util::StreamExt;
use quiver::cache::Cache;
use quiver::config::IoMode;
use quiver::datafusion::physical_plan::{ExecutionPlan, collect};
use quiver::read::{BarsRequest, ReadOptions, Reader};
use quiver::{Bar, BarFilter, Error, OnConflict, Symbol, Timeframe};

use crate::both;
use crate::harness::{Kind, TestDb, generated};
use crate::sync::syncer;

both!(
    warmup_reads_are_exact_across_partitions_and_years,
    streams_merges_and_latest_agree_with_the_table,
    universe_replays_and_large_reads_are_exact,
    errors_are_typed,
    a_reader_follows_publications_and_keeps_its_snapshot,
    a_one_week_read_opens_only_the_files_and_row_groups_it_needs,
    bars_and_latest_commands_print_every_format,
    sql_scans_of_values_decode_the_files_directly_and_exactly,
);

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn tf(s: &str) -> Timeframe {
    s.parse().unwrap()
}

async fn series(db: &TestDb, symbol: &str, timeframe: &str) -> Vec<Bar> {
    db.store
        .read_bars(&BarFilter {
            symbol: Some(sym(symbol)),
            timeframe: Some(tf(timeframe)),
            ..BarFilter::default()
        })
        .await
        .unwrap()
}

/// Generated bars moved back by `days`, so that they straddle a year boundary.
fn shifted(bars: Vec<Bar>, days: i64) -> Vec<Bar> {
    bars.into_iter()
        .map(|mut b| {
            b.ts -= Duration::days(days);
            b
        })
        .collect()
}

fn reader(db: &TestDb) -> Reader {
    Reader::new(Cache::new(&db.config.cache.dir)).unwrap()
}

/// A read as a stream of typed bars, collected.
async fn streamed_bars(reader: &Reader, request: &BarsRequest) -> Vec<Bar> {
    reader
        .stream(request)
        .await
        .unwrap()
        .into_bars()
        .map(|b| b.unwrap())
        .collect()
        .await
}

/// A reader that reads files with `pread` instead of memory maps.
fn pread_reader(db: &TestDb) -> Reader {
    Reader::with_options(
        Cache::new(&db.config.cache.dir),
        ReadOptions {
            io: IoMode::Pread,
            ..ReadOptions::default()
        },
    )
    .unwrap()
}

async fn warmup_reads_are_exact_across_partitions_and_years(db: TestDb) {
    // 1m bars from mid-December 2023 to February 2024 (month partitions across a year
    // boundary) and 1h bars over the same days (year partitions).
    let minutes = shifted(generated(2, 45, "1m", 11), 20);
    let hours = shifted(generated(2, 45, "1h", 12), 20);
    for bars in [&minutes, &hours] {
        db.store.insert_bars(bars, OnConflict::Error).await.unwrap();
    }
    syncer(&db).pass(false).await.unwrap();
    let reader = reader(&db);
    let new_year: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();

    for (timeframe, warmup, limit, span) in [("1m", 700, 1000, 400), ("1h", 50, 20, 40)] {
        let all = series(&db, "SYM002", timeframe).await;
        let first = all.iter().position(|b| b.ts >= new_year).unwrap();
        assert!(first > warmup, "the test needs history before the new year");
        let request = BarsRequest::new(sym("SYM002"), tf(timeframe))
            .with_start(new_year)
            .with_warmup(warmup)
            .with_limit(limit);
        let got = reader.bars(&request).await.unwrap();
        assert_eq!(got.warmup, warmup, "{timeframe}");
        assert_eq!(
            got.to_bars().unwrap(),
            all[first - warmup..first + limit].to_vec(),
            "{timeframe}: warmup across the year boundary"
        );

        // Every (start, warmup, end) combination near the boundary agrees with the table.
        for (s, w, e) in [
            (first, 1, first),
            (first + 3, span - 10, first + span),
            (5, 50, 9),
        ] {
            let request = BarsRequest::new(sym("SYM002"), tf(timeframe))
                .with_start(all[s].ts)
                .with_end(all[e].ts)
                .with_warmup(w);
            let got = reader.bars(&request).await.unwrap();
            let from = s.saturating_sub(w);
            assert_eq!(got.warmup, s - from, "{timeframe} {s} {w} {e}");
            assert_eq!(got.to_bars().unwrap(), all[from..=e].to_vec());
        }
    }

    // The same read without memory maps gives the same bars.
    let plain = pread_reader(&db);
    let request = BarsRequest::new(sym("SYM001"), tf("1m"))
        .with_start(new_year)
        .with_warmup(300);
    let (a, b) = (
        reader.bars(&request).await.unwrap(),
        plain.bars(&request).await.unwrap(),
    );
    assert_eq!(a.to_bars().unwrap(), b.to_bars().unwrap());
    assert_eq!(
        a.to_bars().unwrap().len(),
        minutes.len() / 2 - first_index(&minutes, "SYM001", new_year) + 300
    );
}

fn first_index(bars: &[Bar], symbol: &str, at: DateTime<Utc>) -> usize {
    bars.iter()
        .filter(|b| b.symbol.as_str() == symbol)
        .position(|b| b.ts >= at)
        .unwrap()
}

async fn streams_merges_and_latest_agree_with_the_table(db: TestDb) {
    db.insert_generated(3, 30, "1m", 5).await;
    syncer(&db).pass(false).await.unwrap();
    let reader = reader(&db);
    let all = series(&db, "SYM003", "1m").await;

    // A stream delivers the same bars as the collected read, in several batches.
    let request = BarsRequest::new(sym("SYM003"), tf("1m"))
        .with_start(all[5000].ts)
        .with_warmup(100);
    let mut stream = reader.stream(&request).await.unwrap();
    let mut batches = 0;
    let mut streamed = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert_eq!(batch.schema(), quiver::cache::schema());
        batches += 1;
        quiver::read::decode_bars(&batch, &mut streamed).unwrap();
    }
    assert!(batches > 1, "the range arrives in pieces, not at once");
    assert_eq!(streamed, all[4900..].to_vec());
    assert_eq!(streamed_bars(&reader, &request).await, streamed);

    // Merged: every series' warmup and range, in (ts, symbol) order.
    let start = all[2000].ts;
    let requests: Vec<BarsRequest> = ["SYM001", "SYM003"]
        .iter()
        .map(|s| {
            BarsRequest::new(sym(s), tf("1m"))
                .with_start(start)
                .with_warmup(10)
                .with_limit(50)
        })
        .collect();
    let merged = reader.bars_merged(&requests).await.unwrap();
    let mut expected = Vec::new();
    for s in ["SYM001", "SYM003"] {
        let bars = series(&db, s, "1m").await;
        let i = bars.iter().position(|b| b.ts >= start).unwrap();
        expected.extend_from_slice(&bars[i - 10..i + 50]);
    }
    expected.sort_by(|a, b| (a.ts, &a.symbol).cmp(&(b.ts, &b.symbol)));
    assert_eq!(merged.warmup, 20);
    assert_eq!(merged.to_bars().unwrap(), expected);

    // The open files are bounded: a reader that may keep one file open reads the same bars,
    // dropping files as it goes.
    let bounded = Reader::with_options(
        Cache::new(&db.config.cache.dir),
        ReadOptions {
            open_files: 1,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    for _ in 0..2 {
        let again = bounded.bars_merged(&requests).await.unwrap();
        assert_eq!(again.to_bars().unwrap(), expected);
    }
    let files = bounded.stats().files;
    assert!(files.open <= 1 && files.evictions > 0, "{files:?}");

    // Latest.
    let latest = reader.latest(&sym("SYM003"), tf("1m")).await.unwrap();
    assert_eq!(latest.to_bars().unwrap(), vec![all.last().unwrap().clone()]);
}

/// The bars a request asks for, from the table: `warmup` before `start`, then the range up
/// to `limit`.
fn expected_of(all: &[Bar], request: &BarsRequest) -> Vec<Bar> {
    let start = request.start.unwrap_or(DateTime::<Utc>::MIN_UTC);
    let end = request.end.unwrap_or(DateTime::<Utc>::MAX_UTC);
    let s = all.partition_point(|b| b.ts < start);
    let e = all.partition_point(|b| b.ts <= end).max(s);
    let e = e.min(s.saturating_add(request.limit.unwrap_or(usize::MAX)));
    all[s.saturating_sub(request.warmup)..e].to_vec()
}

async fn universe_replays_and_large_reads_are_exact(db: TestDb) {
    // 16 symbols over 25 trading days (January into February), one with a gap of two days
    // and one that only starts on February 1st: month files, day windows inside them.
    let bars = generated(16, 25, "1m", 11);
    let gap = (
        Utc.with_ymd_and_hms(2024, 1, 10, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 1, 12, 0, 0, 0).unwrap(),
    );
    let february = Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap();
    let kept: Vec<Bar> = bars
        .into_iter()
        .filter(|b| !(b.symbol.as_str() == "SYM004" && b.ts >= gap.0 && b.ts < gap.1))
        .filter(|b| !(b.symbol.as_str() == "SYM009" && b.ts < february))
        .collect();
    db.store
        .insert_bars(&kept, OnConflict::Error)
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let reader = reader(&db);
    let names: Vec<String> = (1..=16).map(|i| format!("SYM{i:03}")).collect();
    let mut table = Vec::new();
    for name in &names {
        table.push(series(&db, name, "1m").await);
    }
    let at = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2024, 1, d, h, m, 0).unwrap();

    let day = |d: u32| (at(d, 0, 0), at(d, 23, 59) + Duration::seconds(59));
    let cases: Vec<(&str, Vec<BarsRequest>)> = vec![
        // A day of every series, no warmup: windows that start and end inside pages; SYM004
        // has nothing that day and SYM009 nothing yet.
        (
            "a day",
            names
                .iter()
                .map(|n| {
                    BarsRequest::new(sym(n), tf("1m"))
                        .with_start(day(10).0)
                        .with_end(day(10).1)
                })
                .collect(),
        ),
        // A week across the month boundary from mid-session, each series with a warmup and
        // some with a limit, in no particular order, one series asked twice.
        (
            "a week with warmups",
            names
                .iter()
                .rev()
                .chain(std::iter::once(&names[2]))
                .enumerate()
                .map(|(i, n)| {
                    let r = BarsRequest::new(sym(n), tf("1m"))
                        .with_start(at(29, 15, 7))
                        .with_end(Utc.with_ymd_and_hms(2024, 2, 2, 18, 3, 0).unwrap())
                        .with_warmup(i * 37);
                    if i % 3 == 0 {
                        r.with_limit(500 + i * 11)
                    } else {
                        r
                    }
                })
                .collect(),
        ),
    ];
    for (what, requests) in cases {
        let mut expected: Vec<Bar> = Vec::new();
        for r in &requests {
            let i = names.iter().position(|n| n == r.symbol.as_str()).unwrap();
            expected.extend(expected_of(&table[i], r));
        }
        // Equal ts: by symbol; the same series asked twice: both, side by side.
        expected.sort_by(|a, b| (a.ts, &a.symbol).cmp(&(b.ts, &b.symbol)));
        let merged = reader.bars_merged(&requests).await.unwrap();
        assert_eq!(merged.to_bars().unwrap(), expected, "{what}: collected");
        let mut stream = reader.stream_merged(&requests).await.unwrap();
        let mut streamed = Vec::new();
        let mut batches = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            assert!(batch.num_rows() <= 8192, "{what}: batches are bounded");
            batches += 1;
            quiver::read::decode_bars(&batch, &mut streamed).unwrap();
        }
        if expected.len() > 8192 {
            assert!(batches > 1, "{what}: the merge streams in pieces");
        }
        assert_eq!(streamed, expected, "{what}: streamed");
    }

    // One series' large reads (over the parallel decoding threshold, several files), with
    // windows cut inside pages, warmups across the month boundary and limits, collected and
    // streamed, through memory maps and plain reads.
    let plain = pread_reader(&db);
    let one = &table[0];
    let requests = [
        BarsRequest::new(sym("SYM001"), tf("1m")),
        BarsRequest::new(sym("SYM001"), tf("1m"))
            .with_start(at(3, 16, 1))
            .with_end(Utc.with_ymd_and_hms(2024, 2, 1, 20, 11, 0).unwrap()),
        BarsRequest::new(sym("SYM001"), tf("1m"))
            .with_start(Utc.with_ymd_and_hms(2024, 2, 1, 14, 45, 0).unwrap())
            .with_warmup(9000),
        BarsRequest::new(sym("SYM001"), tf("1m"))
            .with_start(at(2, 14, 31))
            .with_warmup(1)
            .with_limit(9000),
    ];
    for request in &requests {
        let expected = expected_of(one, request);
        assert!(expected.len() > 8192, "{request:?} is a large read");
        for r in [&reader, &plain] {
            let got = r.bars(request).await.unwrap();
            let before = request
                .start
                .map_or(0, |start| one.partition_point(|b| b.ts < start));
            assert_eq!(got.warmup, request.warmup.min(before), "{request:?}");
            assert_eq!(got.to_bars().unwrap(), expected, "{request:?}");
            assert_eq!(
                streamed_bars(r, request).await,
                expected,
                "{request:?} streamed"
            );
        }
    }
}

async fn errors_are_typed(db: TestDb) {
    let reader = reader(&db);
    let any = BarsRequest::new(sym("SYM001"), tf("1m"));
    assert!(matches!(
        reader.bars(&any).await,
        Err(Error::EmptyCache { .. })
    ));

    db.store
        .insert_bars(&generated(1, 3, "1m", 1), OnConflict::Error)
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let all = series(&db, "SYM001", "1m").await;

    match reader.bars(&BarsRequest::new(sym("NOPE"), tf("1m"))).await {
        Err(Error::UnknownSeries { timeframes, .. }) => assert!(timeframes.is_empty()),
        other => panic!("unknown symbol: {other:?}"),
    }
    let err = reader
        .bars(&BarsRequest::new(sym("SYM001"), tf("1h")))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::UnknownSeries { timeframes, .. } if timeframes == &["1m"]));
    assert_eq!(
        err.to_string(),
        "no 1h bars of SYM001 in the cache; it holds SYM001 in 1m"
    );
    assert!(matches!(
        reader.latest(&sym("NOPE"), tf("1d")).await,
        Err(Error::UnknownSeries { .. })
    ));

    let reversed = any.clone().with_start(all[20].ts).with_end(all[10].ts);
    assert!(matches!(
        reader.bars(&reversed).await,
        Err(Error::InvalidRange { .. })
    ));

    // After the last bar, and inside the night between two sessions: no bar in range.
    let after = any
        .clone()
        .with_start(all.last().unwrap().ts + Duration::minutes(1));
    let night = any
        .clone()
        .with_start(all[389].ts + Duration::minutes(1))
        .with_end(all[390].ts - Duration::minutes(1))
        .with_warmup(5);
    for request in [after, night] {
        let err = reader.bars(&request).await.unwrap_err();
        assert!(matches!(err, Error::EmptyRange(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("the cache holds them from 2024-01-01T14:30:00Z"),
            "{err}"
        );
    }
    // Asking for no bar of the range is not an error.
    let none = any
        .clone()
        .with_start(all[100].ts)
        .with_limit(0)
        .with_warmup(3);
    let got = reader.bars(&none).await.unwrap();
    assert_eq!(got.to_bars().unwrap(), all[97..100].to_vec());
}

async fn a_reader_follows_publications_and_keeps_its_snapshot(db: TestDb) {
    db.insert_generated(2, 45, "1m", 3).await;
    let mut s = syncer(&db);
    s.pass(false).await.unwrap();
    let reader = reader(&db);
    let before = series(&db, "SYM002", "1m").await;

    // A stream opened now reads the version published now, even after the daemon deletes it.
    let request = BarsRequest::new(sym("SYM002"), tf("1m"));
    let mut open = reader.stream(&request).await.unwrap();
    let mut kept = Vec::new();
    let first = open.next().await.unwrap().unwrap();
    quiver::read::decode_bars(&first, &mut kept).unwrap();

    let cut: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap();
    db.store
        .delete_bars(&BarFilter {
            symbol: Some(sym("SYM002")),
            start: Some(cut),
            ..BarFilter::default()
        })
        .await
        .unwrap();
    s.pass(false).await.unwrap();
    // Two more publications retire the version the stream started on.
    for day in 1..=2 {
        db.store
            .delete_bars(&BarFilter {
                symbol: Some(sym("SYM001")),
                start: Some(Utc.with_ymd_and_hms(2024, 1, day + 1, 0, 0, 0).unwrap()),
                end: Some(Utc.with_ymd_and_hms(2024, 1, day + 1, 23, 59, 0).unwrap()),
                ..BarFilter::default()
            })
            .await
            .unwrap();
        s.pass(false).await.unwrap();
    }
    while let Some(batch) = open.next().await {
        quiver::read::decode_bars(&batch.unwrap(), &mut kept).unwrap();
    }
    assert_eq!(kept, before, "the open stream kept its version");

    // The next query sees the newest version, with no new reader.
    let latest = reader.latest(&sym("SYM002"), tf("1m")).await.unwrap();
    let now = series(&db, "SYM002", "1m").await;
    assert_eq!(latest.to_bars().unwrap(), vec![now.last().unwrap().clone()]);
    assert!(now.last().unwrap().ts < cut);
    let sql = reader
        .context()
        .sql("SELECT count(*) FROM market_data WHERE symbol = 'SYM002'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = sql[0]
        .column(0)
        .as_any()
        .downcast_ref::<quiver::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as usize, now.len());
    // Unchanged partitions stayed open across the publications (same inode).
    assert!(reader.stats().files.hits > 0, "{:?}", reader.stats());
}

/// Sums a metric over a plan tree, and collects the files its scans touched.
fn metrics(plan: &dyn ExecutionPlan, out: &mut (BTreeSet<String>, usize, usize, usize)) {
    use quiver::datafusion::physical_plan::metrics::MetricValue;
    if let Some(set) = plan.metrics() {
        for m in set.iter() {
            for l in m.labels() {
                if l.name() == "filename" {
                    out.0.insert(l.value().to_string());
                }
            }
            if let MetricValue::PruningMetrics {
                name,
                pruning_metrics,
            } = m.value()
            {
                match name.as_ref() {
                    "row_groups_pruned_statistics" => out.1 += pruning_metrics.matched(),
                    "page_index_pages_pruned" => {
                        out.2 += pruning_metrics.pruned();
                        out.3 += pruning_metrics.matched();
                    }
                    _ => {}
                }
            }
        }
    }
    for child in plan.children() {
        metrics(child.as_ref(), out);
    }
}

async fn a_one_week_read_opens_only_the_files_and_row_groups_it_needs(db: TestDb) {
    // 5 symbols x 45 trading days of 1m bars: 15 month files of 7-9k rows.
    db.store
        .insert_bars(&generated(5, 45, "1m", 9), OnConflict::Error)
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let reader = reader(&db);
    let sql = "SELECT * FROM market_data WHERE symbol = 'SYM004' AND timeframe = '1m' \
               AND ts >= TIMESTAMP '2024-01-08T00:00:00Z' AND ts < TIMESTAMP '2024-01-13T00:00:00Z'";
    let df = reader.context().sql(sql).await.unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), reader.context().task_ctx())
        .await
        .unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5 * 390, "one week of one symbol");

    let mut seen = (BTreeSet::new(), 0, 0, 0);
    metrics(plan.as_ref(), &mut seen);
    let (files, row_groups, pages_pruned, pages_read) = seen;
    assert_eq!(
        files.len(),
        1,
        "only SYM004's January file is opened, not the other 14: {files:?}"
    );
    assert!(files.iter().all(|f| f.contains("symbol=SYM004/2024-01_")));
    assert_eq!(row_groups, 1, "its one row group");
    assert!(
        pages_pruned > 0 && pages_read < pages_pruned + pages_read,
        "the page index skips the other weeks: {pages_pruned} pages pruned, {pages_read} read"
    );

    // Filters that cut files in the middle, on a query that does not select `ts`.
    let inner = "SELECT close FROM market_data WHERE symbol = 'SYM004' AND timeframe = '1m' \
                 AND ts > TIMESTAMP '2024-01-08T15:00:00Z' AND ts <= TIMESTAMP '2024-02-05T15:00:00Z' \
                 ORDER BY ts";
    let got: Vec<String> = reader
        .context()
        .sql(inner)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_any()
                .downcast_ref::<quiver::arrow::array::Decimal128Array>()
                .unwrap();
            (0..c.len())
                .map(|i| quiver::model::decimal_from_fixed8(c.value(i)).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let (from, to) = (
        DateTime::parse_from_rfc3339("2024-01-08T15:00:00Z").unwrap(),
        DateTime::parse_from_rfc3339("2024-02-05T15:00:00Z").unwrap(),
    );
    let expected: Vec<String> = series(&db, "SYM004", "1m")
        .await
        .into_iter()
        .filter(|b| b.ts > from && b.ts <= to)
        .map(|b| b.close.normalize().to_string())
        .collect();
    assert_eq!(got, expected);

    // The same through the bars API: statistics and declared order let DataFusion answer
    // without sorting, and min/max come straight from the files' statistics.
    let explain = reader
        .context()
        .sql(&format!("EXPLAIN {sql} ORDER BY ts"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = quiver::arrow::util::pretty::pretty_format_batches(&explain)
        .unwrap()
        .to_string();
    assert!(
        !text.contains("SortExec"),
        "the declared order spares a sort:\n{text}"
    );
}

fn quiver_cmd(db: &TestDb, args: &[&str]) -> std::process::Output {
    db.quiver(args).output().unwrap()
}

async fn bars_and_latest_commands_print_every_format(db: TestDb) {
    let at = |s: &str| match db.kind {
        Kind::Sqlite => DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
            .to_string(),
        Kind::Postgres => format!("'{s}'"),
    };
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES \
         ('BTC/USDT', '1m', {}, '0.00002853', '712345.12', '0.00002853', '1.5', '0.12345678'), \
         ('BTC/USDT', '1m', {}, '2', '3', '1', '2.5', '10');",
        at("2024-06-03T14:30:00Z"),
        at("2024-06-03T14:31:00Z")
    ))
    .await;
    syncer(&db).pass(false).await.unwrap();

    let out = quiver_cmd(
        &db,
        &["bars", "btc/usdt", "--timeframe", "1m", "--format", "csv"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "symbol,timeframe,ts,open,high,low,close,volume\n\
         BTC/USDT,1m,2024-06-03T14:30:00Z,0.00002853,712345.12,0.00002853,1.5,0.12345678\n\
         BTC/USDT,1m,2024-06-03T14:31:00Z,2,3,1,2.5,10\n"
    );
    let out = quiver_cmd(
        &db,
        &[
            "bars",
            "BTC/USDT",
            "--timeframe",
            "1m",
            "--start",
            "2024-06-03T14:31:00Z",
            "--warmup",
            "1",
            "--format",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["open"], "0.00002853");
    assert_eq!(json[1]["ts"], "2024-06-03T14:31:00Z");
    assert_eq!(json.as_array().unwrap().len(), 2);
    let out = quiver_cmd(&db, &["latest", "BTC/USDT", "--timeframe", "1m"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(
            "| BTC/USDT | 1m        | 2024-06-03T14:31:00Z | 2    | 3    | 1   | 2.5   | 10     |"
        ),
        "{table}"
    );

    // Errors: one line, exit 2.
    let out = quiver_cmd(&db, &["bars", "BTC/USDT", "--timeframe", "1h"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "quiver: no 1h bars of BTC/USDT in the cache; it holds BTC/USDT in 1m\n"
    );
    let out = quiver_cmd(
        &db,
        &[
            "bars",
            "BTC/USDT",
            "--timeframe",
            "1m",
            "--start",
            "2024-06-04",
            "--end",
            "2024-06-03",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is after end"));

    // Reads need only the cache: an unreachable database does not matter.
    let out = crate::harness::quiver_in(
        db.dir.path(),
        &["bars", "BTC/USDT", "--timeframe", "1m", "--format", "csv"],
    )
    .env("QUIVER_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
    .env("QUIVER_CACHE_DIR", &db.config.cache.dir)
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A read slower than read.slow_query is logged with its time.
    let config = db.file("slow.toml", "[read]\nslow_query = \"0s\"\n");
    let out = quiver_cmd(
        &db,
        &[
            "--config",
            config.to_str().unwrap(),
            "bars",
            "BTC/USDT",
            "--timeframe",
            "1m",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slow bars query") && stderr.contains("elapsed_ms="),
        "{stderr}"
    );
}

/// A SQL scan that reads values from files inside its `ts` filters decodes quiver's files
/// directly (no DataFusion Parquet scan, no opener per file) in any projection and order of
/// columns, and gives exactly the table's rows; scans of the series' columns and `ts` alone
/// keep DataFusion's scan, which answers from the files' statistics.
async fn sql_scans_of_values_decode_the_files_directly_and_exactly(db: TestDb) {
    db.store
        .insert_bars(&generated(3, 25, "1m", 11), OnConflict::Error)
        .await
        .unwrap();
    db.store
        .insert_bars(&generated(2, 30, "1d", 12), OnConflict::Error)
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let reader = reader(&db);
    let plan_of = |sql: &'static str| {
        let reader = reader.clone();
        async move {
            let df = reader.context().sql(sql).await.unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            quiver::datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string()
        }
    };
    for (sql, direct) in [
        ("SELECT * FROM market_data", true),
        (
            "SELECT close, symbol FROM market_data WHERE symbol = 'SYM002'",
            true,
        ),
        (
            "SELECT volume FROM market_data WHERE ts >= TIMESTAMP '2024-01-01T00:00:00Z'",
            true,
        ),
        // Answered from the files' statistics: no scan at all.
        ("SELECT count(*) FROM market_data", false),
        (
            "SELECT max(ts), symbol FROM market_data GROUP BY symbol",
            false,
        ),
        (
            "SELECT close FROM market_data WHERE ts > TIMESTAMP '2024-01-15T15:00:00Z'",
            false,
        ),
    ] {
        let plan = plan_of(sql).await;
        assert_eq!(
            plan.contains("StreamingTableExec"),
            direct,
            "{sql}:\n{plan}"
        );
        if direct {
            assert!(!plan.contains("DataSourceExec"), "{sql}:\n{plan}");
        }
    }

    // Every value, in the columns' own order and in another, equals the table's.
    let all = db.store.read_bars(&BarFilter::default()).await.unwrap();
    let batches = reader
        .context()
        .sql("SELECT * FROM market_data ORDER BY symbol, timeframe, ts")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut got = Vec::new();
    for b in &batches {
        quiver::read::decode_bars(b, &mut got).unwrap();
    }
    assert_eq!(got, all);
    let sums = reader
        .context()
        .sql(
            "SELECT symbol, timeframe, count(*) AS n, sum(close * volume) AS value, \
             max(high) AS high FROM market_data GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = quiver::arrow::util::pretty::pretty_format_batches(&sums)
        .unwrap()
        .to_string();
    for ((symbol, timeframe), bars) in &all
        .chunk_by(|a, b| (a.symbol == b.symbol) && (a.timeframe == b.timeframe))
        .map(|c| ((c[0].symbol.to_string(), c[0].timeframe.to_string()), c))
        .collect::<Vec<_>>()
    {
        let value: rust_decimal::Decimal = bars.iter().map(|b| b.close * b.volume).sum();
        let high = bars.iter().map(|b| b.high).max().unwrap();
        let line = format!("| {symbol} | {timeframe} ");
        let row = text
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert!(
            row.contains(&format!(" {} ", bars.len()))
                && row.contains(&value.normalize().to_string())
                && row.contains(&high.normalize().to_string()),
            "{row} against {value} {high}"
        );
    }
}
