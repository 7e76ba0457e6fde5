//! The SQL store on both backends: decimals, conflict policies, deletes, migrations and the
//! change log.

use chrono::{TimeZone, Utc};
use quiver::db::{BarFilter, OnConflict};
use quiver::feed::{ChangedDay, day_of};
use quiver::model::parse_decimal;
use quiver::{Bar, Error, Symbol, Timeframe};

use crate::both;
use crate::harness::{Kind, TestDb};

fn bar(symbol: &str, day: u32, o: &str, h: &str, l: &str, c: &str, v: &str) -> Bar {
    Bar {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: Timeframe::parse("1d").unwrap(),
        ts: Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap(),
        open: parse_decimal(o).unwrap(),
        high: parse_decimal(h).unwrap(),
        low: parse_decimal(l).unwrap(),
        close: parse_decimal(c).unwrap(),
        volume: parse_decimal(v).unwrap(),
    }
}

both!(
    decimals_round_trip_exactly,
    conflict_error_names_the_bar_and_writes_nothing,
    conflict_deep_in_a_large_write_names_that_bar,
    conflict_skip_keeps_stored_bars,
    conflict_replace_overwrites_changed_bars,
    delete_by_symbol_timeframe_and_range,
    migrations_are_idempotent_and_reversible,
    plain_sql_changes_reach_the_change_log,
    database_constraints_refuse_invalid_bars,
    the_writer_refuses_invalid_bars_and_leaves_the_checks_on,
    microsecond_timestamps_round_trip,
    quiver_writes_are_tracked_and_leave_the_trigger_on,
    series_scans_honour_every_combination_of_bounds,
    filters_honour_every_combination_on_reads_scans_and_deletes,
    read_only_connections_refuse_every_write,
    database_errors_name_the_operation,
);

/// A database error says which operation of the store failed, and is a fault (exit 3).
async fn database_errors_name_the_operation(db: TestDb) {
    db.plain_sql("DROP TABLE market_data").await;
    let read = db.store.read_bars(&BarFilter::default()).await.unwrap_err();
    assert!(matches!(read, Error::Database { .. }), "{read:?}");
    assert!(
        read.to_string().starts_with("database: reading bars: "),
        "{read}"
    );
    assert_eq!(read.exit_code(), 3);
    let count = db.store.count_rows().await.unwrap_err();
    assert!(
        count
            .to_string()
            .starts_with("database: counting market_data: "),
        "{count}"
    );
    let write = db
        .store
        .insert_bars(
            &[bar("GONE", 1, "1", "1", "1", "1", "1")],
            OnConflict::Error,
        )
        .await
        .unwrap_err();
    assert!(write.to_string().contains("bars: "), "{write}");
}

/// A series scan with no bound, either bound or both returns exactly the bars inside them
/// (PostgreSQL once dropped both bounds when only one was given).
async fn series_scans_honour_every_combination_of_bounds(db: TestDb) {
    use futures_util::StreamExt;
    let bars: Vec<Bar> = (1..=5)
        .map(|d| bar("BND", d, "1", "2", "0.5", "1.5", "10"))
        .chain([bar("OTHER", 3, "1", "1", "1", "1", "1")])
        .collect();
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let day = |d: u32| {
        Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0)
            .unwrap()
            .timestamp_micros()
    };
    for start in [None, Some(day(2))] {
        for end in [None, Some(day(4))] {
            let scan = quiver::db::Scan::Series {
                symbol: "BND".into(),
                timeframe: "1d".into(),
                start,
                end,
            };
            let got: Vec<i64> = db.store.scan(scan).map(|r| r.unwrap().ts).collect().await;
            let want: Vec<i64> = (1..=5)
                .map(day)
                .filter(|t| start.is_none_or(|s| *t >= s) && end.is_none_or(|e| *t < e))
                .collect();
            assert_eq!(got, want, "start {start:?}, end {end:?}");
        }
    }
}

/// Every combination of symbol, timeframe, start and end selects exactly the bars it names,
/// the same through `read_bars`, the filtered scan (the shell's `live.market_data`) and
/// `delete_bars`: the one filter builder of each backend, against the real servers.
async fn filters_honour_every_combination_on_reads_scans_and_deletes(db: TestDb) {
    use futures_util::StreamExt;
    let mut bars = Vec::new();
    for symbol in ["AAA", "BBB"] {
        for tf in ["1d", "1h"] {
            for d in 1..=5 {
                let mut b = bar(symbol, d, "1", "2", "0.5", "1.5", "10");
                b.timeframe = Timeframe::parse(tf).unwrap();
                bars.push(b);
            }
        }
    }
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let key = |b: &Bar| (b.symbol.to_string(), b.timeframe.to_string(), b.ts);
    let day = |d: u32| Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap();
    let mut combinations = 0;
    for symbol in [None, Some(Symbol::parse("BBB").unwrap())] {
        for timeframe in [None, Some(Timeframe::parse("1h").unwrap())] {
            for start in [None, Some(day(2))] {
                for end in [None, Some(day(4))] {
                    let filter = BarFilter {
                        symbol: symbol.clone(),
                        timeframe,
                        start,
                        end,
                    };
                    let mut want: Vec<_> = bars
                        .iter()
                        .filter(|b| {
                            symbol.as_ref().is_none_or(|s| &b.symbol == s)
                                && timeframe.is_none_or(|t| b.timeframe == t)
                                && start.is_none_or(|s| b.ts >= s)
                                && end.is_none_or(|e| b.ts <= e)
                        })
                        .map(key)
                        .collect();
                    want.sort();
                    let read: Vec<_> = db.store.read_bars(&filter).await.unwrap();
                    let mut got: Vec<_> = read.iter().map(key).collect();
                    got.sort();
                    assert_eq!(got, want, "read_bars {filter:?}");
                    let scanned: Vec<i64> = db
                        .store
                        .scan(quiver::db::Scan::Filter(filter.clone()))
                        .map(|r| r.unwrap().ts)
                        .collect()
                        .await;
                    assert_eq!(scanned.len(), want.len(), "scan {filter:?}");
                    let deleted = db.store.delete_bars(&filter).await.unwrap();
                    assert_eq!(deleted, want.len() as u64, "delete {filter:?}");
                    assert_eq!(
                        db.count().await as usize,
                        bars.len() - want.len(),
                        "delete {filter:?} removed other bars"
                    );
                    db.store.insert_bars(&bars, OnConflict::Skip).await.unwrap();
                    combinations += 1;
                }
            }
        }
    }
    assert_eq!(combinations, 16);
}

async fn quiver_writes_are_tracked_and_leave_the_trigger_on(db: TestDb) {
    let bars = [
        bar("A", 1, "1", "1", "1", "1", "1"),
        bar("A", 2, "1", "1", "1", "1", "1"),
        bar("B", 2, "1", "1", "1", "1", "1"),
    ];
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    // A failed write (conflict) rolls back whatever it switched off.
    assert!(
        db.store
            .insert_bars(&bars[..1], OnConflict::Error)
            .await
            .is_err()
    );
    let mut log = db.store.change_log().await.unwrap();
    log.sort();
    assert_eq!(
        log,
        vec![
            changed("A", "1d", 1),
            changed("A", "1d", 2),
            changed("B", "1d", 2)
        ]
    );
    // Another client's insert afterwards is still caught by the trigger.
    let t = match db.kind {
        Kind::Sqlite => "1704240000000000".to_string(),
        Kind::Postgres => "'2024-01-03T00:00:00Z'".to_string(),
    };
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('C', '1d', {t}, '1', '1', '1', '1', '1')"
    ))
    .await;
    assert!(
        db.store
            .change_log()
            .await
            .unwrap()
            .contains(&changed("C", "1d", 3))
    );
}

async fn decimals_round_trip_exactly(db: TestDb) {
    let bars = vec![
        bar(
            "SHIB/USDT",
            1,
            "0.00002853",
            "0.00002861",
            "0.00002849",
            "0.00002853",
            "36304.2",
        ),
        bar(
            "BRK.A",
            1,
            "712345.12",
            "712345.12",
            "712345.12",
            "712345.12",
            "0.00000001",
        ),
        bar(
            "BIG",
            1,
            "1234567890.12345678",
            "9999999999.99999999",
            "0.00000001",
            "1",
            "999999999999999999",
        ),
        bar("NEG", 1, "-37.63", "1.5", "-40.32", "-2", "0"),
    ];
    let report = db
        .store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    assert_eq!((report.received, report.written), (4, 4));
    let back = db.store.read_bars(&BarFilter::default()).await.unwrap();
    let mut want = bars.clone();
    want.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    assert_eq!(back, want);
    let text: Vec<String> = back
        .iter()
        .map(|b| format!("{} {} {}", b.symbol, b.open, b.volume))
        .collect();
    assert_eq!(
        text,
        [
            "BIG 1234567890.12345678 999999999999999999",
            "BRK.A 712345.12 0.00000001",
            "NEG -37.63 0",
            "SHIB/USDT 0.00002853 36304.2",
        ]
    );
}

async fn microsecond_timestamps_round_trip(db: TestDb) {
    let mut b = bar("X", 1, "1", "1", "1", "1", "1");
    b.ts = Utc.timestamp_micros(1_717_425_000_123_456).unwrap();
    let mut old = bar("X", 1, "1", "1", "1", "1", "1");
    old.ts = Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40).unwrap();
    db.store
        .insert_bars(&[b.clone(), old.clone()], OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(
        db.store.read_bars(&BarFilter::default()).await.unwrap(),
        vec![old, b]
    );
}

async fn conflict_error_names_the_bar_and_writes_nothing(db: TestDb) {
    db.store
        .insert_bars(
            &[bar("AAPL", 2, "1", "2", "1", "2", "10")],
            OnConflict::Error,
        )
        .await
        .unwrap();
    let batch = [
        bar("AAPL", 1, "1", "2", "1", "2", "10"),
        bar("AAPL", 2, "5", "6", "5", "6", "10"),
        bar("AAPL", 3, "1", "2", "1", "2", "10"),
    ];
    let err = db
        .store
        .insert_bars(&batch, OnConflict::Error)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "bar AAPL 1d 2024-01-02T00:00:00Z already exists (use --on-conflict skip or replace); nothing was written"
    );
    let stored = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(stored, vec![bar("AAPL", 2, "1", "2", "1", "2", "10")]);
}

/// A key already stored far into a write of several statements (SQLite's bulk writer sends
/// 1000 rows per statement) is named exactly, and nothing of the write is kept.
async fn conflict_deep_in_a_large_write_names_that_bar(db: TestDb) {
    let bars = crate::harness::generated(1, 10, "1m", 7);
    assert!(bars.len() > 3000, "{}", bars.len());
    let stored = bars[2500].clone();
    db.store
        .insert_bars(std::slice::from_ref(&stored), OnConflict::Error)
        .await
        .unwrap();
    let err = db
        .store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap_err();
    match &err {
        Error::Conflict {
            symbol,
            timeframe,
            ts,
        } => assert_eq!(
            (symbol.as_str(), timeframe.as_str(), ts.as_str()),
            (
                stored.symbol.as_str(),
                stored.timeframe.to_string().as_str(),
                quiver::model::format_ts(&stored.ts).as_str()
            ),
            "{err}"
        ),
        other => panic!("not a conflict: {other:?}"),
    }
    let kept = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(kept, vec![stored]);
}

async fn conflict_skip_keeps_stored_bars(db: TestDb) {
    db.store
        .insert_bars(
            &[bar("AAPL", 2, "1", "2", "1", "2", "10")],
            OnConflict::Error,
        )
        .await
        .unwrap();
    let batch = [
        bar("AAPL", 1, "1", "2", "1", "2", "10"),
        bar("AAPL", 2, "5", "6", "5", "6", "10"),
    ];
    let report = db
        .store
        .insert_bars(&batch, OnConflict::Skip)
        .await
        .unwrap();
    assert_eq!(
        (report.received, report.written, report.unchanged()),
        (2, 1, 1)
    );
    let stored = db.store.read_bars(&BarFilter::default()).await.unwrap();
    assert_eq!(
        stored,
        vec![
            bar("AAPL", 1, "1", "2", "1", "2", "10"),
            bar("AAPL", 2, "1", "2", "1", "2", "10")
        ]
    );
}

async fn conflict_replace_overwrites_changed_bars(db: TestDb) {
    let original = [
        bar("AAPL", 1, "1", "2", "1", "2", "10"),
        bar("AAPL", 2, "1", "2", "1", "2", "10"),
    ];
    db.store
        .insert_bars(&original, OnConflict::Error)
        .await
        .unwrap();
    let batch = [
        bar("AAPL", 1, "1", "2", "1", "2", "10"), // identical: unchanged
        bar("AAPL", 2, "5", "6", "5", "6", "10.5"), // different: replaced
        bar("AAPL", 3, "1", "2", "1", "2", "10"), // new
    ];
    let report = db
        .store
        .insert_bars(&batch, OnConflict::Replace)
        .await
        .unwrap();
    assert_eq!(
        (report.received, report.written, report.unchanged()),
        (3, 2, 1)
    );
    assert_eq!(
        db.store.read_bars(&BarFilter::default()).await.unwrap(),
        batch.to_vec()
    );
}

async fn delete_by_symbol_timeframe_and_range(db: TestDb) {
    let mut bars: Vec<Bar> = (1..=5)
        .map(|d| bar("A", d, "1", "1", "1", "1", "1"))
        .collect();
    bars.push(bar("B", 1, "1", "1", "1", "1", "1"));
    let mut hourly = bar("A", 3, "1", "1", "1", "1", "1");
    hourly.timeframe = Timeframe::parse("1h").unwrap();
    bars.push(hourly);
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let filter = BarFilter {
        symbol: Some(Symbol::parse("A").unwrap()),
        timeframe: Some(Timeframe::parse("1d").unwrap()),
        start: Some(Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap()),
        end: Some(Utc.with_ymd_and_hms(2024, 1, 4, 0, 0, 0).unwrap()),
    };
    assert_eq!(db.store.delete_bars(&filter).await.unwrap(), 3);
    let left: Vec<String> = db
        .store
        .read_bars(&BarFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|b| format!("{} {} {}", b.symbol, b.timeframe, b.ts.format("%d")))
        .collect();
    assert_eq!(left, ["A 1d 01", "A 1d 05", "A 1h 03", "B 1d 01"]);
    let all_a = BarFilter {
        symbol: Some(Symbol::parse("a").unwrap()),
        ..Default::default()
    };
    assert_eq!(db.store.delete_bars(&all_a).await.unwrap(), 3);
    assert_eq!(db.count().await, 1);
}

async fn migrations_are_idempotent_and_reversible(db: TestDb) {
    // TestDb::new applied them once already.
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i64>::new());
    let applied = db.store.applied_migrations().await.unwrap();
    assert!(!applied.is_empty());
    db.store
        .insert_bars(&[bar("A", 1, "1", "1", "1", "1", "1")], OnConflict::Error)
        .await
        .unwrap();

    // Revert everything, one migration at a time; the table is gone afterwards.
    for expected in applied.iter().rev() {
        assert_eq!(db.store.revert().await.unwrap(), Some(*expected));
    }
    assert_eq!(db.store.revert().await.unwrap(), None);
    assert!(
        db.store.read_bars(&BarFilter::default()).await.is_err(),
        "market_data survived revert"
    );

    // Re-apply: an empty, working table with change tracking again.
    assert_eq!(db.store.migrate().await.unwrap(), applied);
    assert_eq!(db.count().await, 0);
    db.store
        .insert_bars(&[bar("A", 1, "1", "1", "1", "1", "1")], OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(db.count().await, 1);
    assert_eq!(db.store.change_log().await.unwrap().len(), 1);
}

fn changed(symbol: &str, tf: &str, day: u32) -> ChangedDay {
    ChangedDay {
        symbol: Some(symbol.into()),
        timeframe: Some(tf.into()),
        day: Some(day_of(
            &Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap(),
        )),
    }
}

async fn plain_sql_changes_reach_the_change_log(db: TestDb) {
    let log = |db: &TestDb| {
        let store = db.store.clone();
        async move {
            let mut l = store.change_log().await.unwrap();
            l.sort();
            l.dedup();
            l
        }
    };
    assert_eq!(log(&db).await, vec![]);
    let (t1, t2, t5) = match db.kind {
        Kind::Sqlite => ("1704067200000000", "1704153600000000", "1704412800000000"),
        Kind::Postgres => (
            "'2024-01-01T00:00:00Z'",
            "'2024-01-02T00:00:00Z'",
            "'2024-01-05T00:00:00Z'",
        ),
    };
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('AAA', '1d', {t1}, '1', '2', '1', '2', '100');
         INSERT INTO market_data VALUES ('BBB', '1h', {t2}, '1', '2', '1', '2', '100');"
    ))
    .await;
    assert_eq!(
        log(&db).await,
        vec![changed("AAA", "1d", 1), changed("BBB", "1h", 2)]
    );

    // An update that moves a bar to another day touches both days.
    db.plain_sql(&format!(
        "UPDATE market_data SET ts = {t5} WHERE symbol = 'AAA'"
    ))
    .await;
    assert_eq!(
        log(&db).await,
        vec![
            changed("AAA", "1d", 1),
            changed("AAA", "1d", 5),
            changed("BBB", "1h", 2)
        ]
    );

    db.plain_sql("DELETE FROM market_data WHERE symbol = 'BBB'")
        .await;
    assert_eq!(db.count().await, 1);
    assert!(log(&db).await.contains(&changed("BBB", "1h", 2)));

    if db.kind == Kind::Postgres {
        // TRUNCATE has no rows to report: it marks the whole table as changed.
        db.plain_sql("TRUNCATE market_data").await;
        assert!(log(&db).await.contains(&ChangedDay {
            symbol: None,
            timeframe: None,
            day: None
        }));
    }
}

async fn database_constraints_refuse_invalid_bars(db: TestDb) {
    // What a careless plain-SQL writer might try; the CHECK constraints refuse all of it.
    let ts = match db.kind {
        Kind::Sqlite => "0",
        Kind::Postgres => "'2024-01-01T00:00:00Z'",
    };
    let bad_rows = [
        format!("('aapl', '1d', {ts}, '1', '1', '1', '1', '1')"),
        format!("('A B', '1d', {ts}, '1', '1', '1', '1', '1')"),
        format!("('A', '1y', {ts}, '1', '1', '1', '1', '1')"),
        format!("('A', '1d', {ts}, '2', '1', '1', '1', '1')"),
        format!("('A', '1d', {ts}, '1', '1', '1', '1', '-1')"),
    ];
    for row in bad_rows {
        let sql = format!("INSERT INTO market_data VALUES {row}");
        let result = match db.kind {
            Kind::Sqlite => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(db.store.sqlite_pool().unwrap())
                .await
                .map(|_| ()),
            Kind::Postgres => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(db.store.postgres_pool().unwrap())
                .await
                .map(|_| ()),
        };
        let err = result.expect_err(&row);
        assert!(
            err.to_string().to_lowercase().contains("check"),
            "{row}: {err}"
        );
    }
    assert_eq!(db.count().await, 0);
}

/// quiver's writer checks every bar exactly before sending any (SQLite's CHECKs stand aside
/// for its own inserts only): a bad bar names its row and field, nothing is kept, and every
/// connection of the pool still refuses a bad plain-SQL row afterwards.
async fn the_writer_refuses_invalid_bars_and_leaves_the_checks_on(db: TestDb) {
    let good: Vec<Bar> = (1..=20)
        .map(|d| bar("AAA", d, "10", "11", "9", "10.5", "100"))
        .collect();
    db.store
        .insert_bars(&good[..10], OnConflict::Error)
        .await
        .unwrap();
    // A low one satoshi above a high of a billion: equal as floats (which SQLite's CHECKs
    // compare), wrong as decimals.
    let (billion, above) = ("1000000000", "1000000000.00000001");
    let cases = [
        (
            bar("AAA", 25, billion, billion, above, billion, "1"),
            "high",
        ),
        (bar("AAA", 25, "1", "2", "1", "3", "1"), "high"),
        (bar("AAA", 25, "0.5", "2", "1", "1", "1"), "low"),
        (bar("AAA", 25, "1", "2", "1", "1", "-0.00000001"), "volume"),
    ];
    for (bad, field) in cases {
        let mut batch = good[10..].to_vec();
        batch.insert(4, bad);
        let mut writer = db.store.writer(OnConflict::Error).await.unwrap();
        writer.write(&good[10..12]).await.unwrap();
        let err = writer.write(&batch).await.unwrap_err();
        match &err {
            Error::Row { row, field: f, .. } => {
                assert_eq!((*row, f.as_str()), (2 + 4, field), "{err}");
            }
            other => panic!("expected a row error, got {other:?}"),
        }
        assert!(err.to_string().contains("AAA 1d 2024-01-25"), "{err}");
        drop(writer);
        assert_eq!(db.count().await, 10, "{err}");
    }
    let rest = db
        .store
        .insert_bars(&good[10..], OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(rest.written, 10);
    if let Some(pool) = db.store.sqlite_pool() {
        // Every connection at once, so none escapes the look.
        let mut connections = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            connections.push(pool.acquire().await.unwrap());
        }
        for c in &mut connections {
            let skipped: i64 = sqlx::query_scalar("PRAGMA ignore_check_constraints")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            assert_eq!(skipped, 0);
            let err = sqlx::query(
                "INSERT INTO market_data VALUES ('AAA', '1d', 0, '2', '1', '1', '1', '1')",
            )
            .execute(&mut **c)
            .await
            .unwrap_err();
            assert!(err.to_string().contains("CHECK"), "{err}");
        }
    } else if let Some(pool) = db.store.postgres_pool() {
        let err = sqlx::query(
            "INSERT INTO market_data VALUES ('AAA', '1d', '2024-01-01T00:00:00Z', '2', '1', '1', '1', '1')",
        )
        .execute(pool)
        .await
        .unwrap_err();
        assert!(err.to_string().contains("check"), "{err}");
    }
    assert_eq!(db.count().await, 20);
}

/// WAL, synchronous=NORMAL and a busy timeout on every SQLite connection of the pool.
#[tokio::test]
async fn sqlite_connections_use_wal_normal_sync_and_a_busy_timeout() {
    let db = TestDb::new(Kind::Sqlite).await;
    let pool = db.store.sqlite_pool().unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!((mode.as_str(), sync, busy), ("wal", 1, 10_000));
}

/// The PostgreSQL pool checks a connection before handing it out: a connection killed by the
/// server (restart, idle timeout, admin) is replaced instead of failing the next query.
#[tokio::test]
async fn postgres_pool_replaces_a_connection_the_server_killed() {
    let db = TestDb::new(Kind::Postgres).await;
    let mut config = db.config.database.clone();
    config.max_connections = 1;
    let store = quiver::Store::connect(&config).await.unwrap();
    let pool = store.postgres_pool().unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap();
    let admin = sqlx::PgPool::connect(&crate::harness::pg_url())
        .await
        .unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(killed);
    let summary = store.summary().await.expect("the pool reconnects");
    assert!(summary.is_empty());
    let new_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_ne!(pid, new_pid);
}

/// What `live.market_data` connects with cannot write, whatever the statement.
async fn read_only_connections_refuse_every_write(db: TestDb) {
    let bars = [bar("RO", 2, "1", "2", "0.5", "1.5", "10")];
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let ro = quiver::Store::connect_read_only(&db.config.database)
        .await
        .unwrap();
    assert_eq!(ro.read_bars(&BarFilter::default()).await.unwrap(), bars);
    let more = [bar("RO", 3, "1", "2", "0.5", "1.5", "10")];
    assert!(ro.insert_bars(&more, OnConflict::Error).await.is_err());
    assert!(ro.delete_bars(&BarFilter::default()).await.is_err());
    assert!(ro.revert().await.is_err());
    let raw = "DELETE FROM market_data";
    let refused = match db.kind {
        Kind::Sqlite => sqlx::query(raw)
            .execute(ro.sqlite_pool().unwrap())
            .await
            .unwrap_err(),
        Kind::Postgres => sqlx::query(raw)
            .execute(ro.postgres_pool().unwrap())
            .await
            .unwrap_err(),
    };
    let why = refused.to_string();
    assert!(
        why.contains("read-only") || why.contains("readonly"),
        "{why}"
    );
    assert_eq!(
        db.count().await,
        1,
        "nothing written through the read-only store"
    );
}

/// A password in the database URL never reaches a log line, an error, `Debug` output or
/// `status`, whatever the command (PostgreSQL: trust authentication ignores the password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_logs_errors_debug_or_status() {
    let db = TestDb::new(Kind::Postgres).await;
    let secret = "s3cr3t-Pw0rd";
    let mut url = url::Url::parse(&crate::harness::pg_url()).unwrap();
    url.set_password(Some(secret)).unwrap();
    let url = url.to_string();
    let mut config = db.config.database.clone();
    config.url = url.clone();
    let mut seen = String::new();
    let run = |args: &[&str], seen: &mut String| {
        let out = db
            .quiver(args)
            .env("QUIVER_DATABASE_URL", &url)
            .output()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
        out.status.code()
    };
    assert_eq!(
        run(
            &[
                "-v",
                "generate",
                "--symbols",
                "1",
                "--days",
                "1",
                "--timeframe",
                "1h"
            ],
            &mut seen
        ),
        Some(0),
        "{seen}"
    );
    assert_eq!(run(&["-v", "sync"], &mut seen), Some(0), "{seen}");
    assert_eq!(run(&["status"], &mut seen), Some(0), "{seen}");
    assert_eq!(
        run(&["status", "--format", "json"], &mut seen),
        Some(0),
        "{seen}"
    );
    assert_eq!(run(&["-v", "verify"], &mut seen), Some(0), "{seen}");
    let copy_to = format!("sqlite://{}", db.path("copy.db").display());
    assert_eq!(
        run(&["-v", "copy", "--to", &copy_to], &mut seen),
        Some(0),
        "{seen}"
    );
    // Errors that quote the URL: a server that is not there, a URL of no known scheme.
    let away = format!("postgres://postgres:{secret}@127.0.0.1:1/test");
    assert_eq!(
        run(&["--database-url", &away, "-v", "migrate"], &mut seen),
        Some(3)
    );
    let odd = format!("mysql://root:{secret}@127.0.0.1/test");
    assert_eq!(
        run(&["--database-url", &odd, "migrate"], &mut seen),
        Some(2)
    );
    assert!(seen.contains("***") || seen.contains("127.0.0.1"), "{seen}");
    // Debug of everything that holds the URL.
    let store = quiver::Store::connect(&config).await.unwrap();
    let syncer =
        quiver::Syncer::new(store.clone(), &db.config.cache, config.schema.clone()).unwrap();
    let mut full = db.config.clone();
    full.database = config.clone();
    seen.push_str(&format!(
        "{store:?} {config:?} {syncer:?} {full:?} {}",
        store.redacted_url()
    ));
    assert!(!seen.contains(secret), "the password leaked:\n{seen}");
}
