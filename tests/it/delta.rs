//! The cache as a Delta table, checked by real outside readers (deltalake, Polars
//! `scan_delta`, DuckDB `delta_scan`, and DuckDB and Polars globs over the plain view), through
//! time travel, checkpoints, vacuum, two syncers on one cache and the conversion of a cache of
//! the earlier layout.

use std::process::Output;

use quiver::cache::{AsOf, Cache};
use quiver::config::CacheConfig;
use quiver::read::{BarsRequest, Reader};
use quiver::sync::Syncer;

use crate::both;
use crate::harness::{Kind, TestDb};
use crate::python::{DELTA_READERS, GLOB_READERS, Readers};
use crate::sync::{Row, assert_mirrored, parquet_rows, reader_rows, table_rows};

fn quiver(db: &TestDb, args: &[&str]) -> Output {
    db.quiver(args).output().expect("run quiver")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn syncer(db: &TestDb, settings: &CacheConfig) -> Syncer {
    Syncer::new(
        db.store.clone(),
        settings,
        db.config.database.schema.clone(),
    )
    .unwrap()
}

/// A timestamp literal of this backend.
fn ts_sql(kind: Kind, micros: i64) -> String {
    match kind {
        Kind::Sqlite => micros.to_string(),
        Kind::Postgres => format!("to_timestamp({micros} / 1e6)"),
    }
}

/// Bars with every hard case: 8-decimal prices, fractional volumes, symbols that need
/// encoding in folder names, three timeframes, microseconds in `ts`.
async fn awkward_bars(db: &TestDb) {
    let k = db.kind;
    let mut sql = String::new();
    for (i, (symbol, tf)) in [
        ("BTC/USDT", "1m"),
        ("^STOXX50E", "5m"),
        ("ES=F", "1h"),
        ("NVDA", "1d"),
    ]
    .iter()
    .enumerate()
    {
        for j in 0..40i64 {
            let ts = 1_704_067_200_000_000 + j * 86_400_000_000 / 3 + i as i64 * 7 + 123;
            sql.push_str(&format!(
                "INSERT INTO market_data VALUES ('{symbol}', '{tf}', {}, '0.00002853', \
                 '712345.12', '0.00000001', '36304.2', '{j}.12345678');",
                ts_sql(k, ts)
            ));
        }
    }
    db.plain_sql(&sql).await;
}

/// Every outside reader returns exactly the table's rows.
fn assert_outside_readers_agree(readers: &mut Readers, db: &TestDb, table: &[Row], context: &str) {
    let delta = db.config.cache.dir.join("delta/market_data");
    for reader in DELTA_READERS {
        assert!(
            readers.rows(reader, &delta, None) == table,
            "{context}: {reader} differs from the table"
        );
    }
    let view = db.config.cache.dir.join("market_data");
    for reader in GLOB_READERS {
        assert!(
            readers.rows(reader, &view, None) == table,
            "{context}: {reader} over the plain view differs from the table"
        );
    }
}

both!(
    outside_readers_read_every_version_exactly,
    two_syncers_cannot_both_commit,
    a_cache_of_the_earlier_layout_is_converted_by_the_first_pass,
    time_travel_in_the_library_the_cli_and_the_shell,
    vacuum_deletes_only_what_no_retained_version_needs
);

async fn outside_readers_read_every_version_exactly(db: TestDb) {
    let mut readers = Readers::start();
    // A checkpoint every other commit, so readers go through checkpoints and commits both.
    let settings = CacheConfig {
        checkpoint_interval: 2,
        ..db.config.cache.clone()
    };
    awkward_bars(&db).await;
    let mut s = syncer(&db, &settings);
    s.pass(false).await.unwrap();
    let v0 = table_rows(&db).await;
    assert_mirrored(&db, "version 0").await;
    assert_outside_readers_agree(&mut readers, &db, &v0, "version 0");

    let k = db.kind;
    let mut versions = vec![v0];
    for step in 0..4i64 {
        db.plain_sql(&format!(
            "UPDATE market_data SET volume = '{step}.5' WHERE symbol = 'BTC/USDT'; \
             DELETE FROM market_data WHERE symbol = 'NVDA' AND ts < {}; \
             INSERT INTO market_data VALUES ('NEW{step}', '1m', {}, '1', '2', '0.5', '1.5', '0.001');",
            ts_sql(k, 1_704_067_200_000_000 + (step + 1) * 86_400_000_000),
            ts_sql(k, 1_709_000_000_000_000 + step * 60_000_000),
        ))
        .await;
        let report = s.pass(false).await.unwrap();
        assert_eq!(report.version, Some(step as u64 + 1));
        let rows = table_rows(&db).await;
        assert_mirrored(&db, &format!("version {}", step + 1)).await;
        assert_outside_readers_agree(&mut readers, &db, &rows, &format!("version {}", step + 1));
        versions.push(rows);
    }
    let table = Cache::new(&db.config.cache.dir)
        .existing_table()
        .unwrap()
        .unwrap();
    assert_eq!(
        table.last_checkpoint().await.unwrap(),
        Some(3),
        "checkpoints at 1 and 3"
    );

    // Time travel: every version, through both Delta readers that have it.
    let delta = db.config.cache.dir.join("delta/market_data");
    for (v, rows) in versions.iter().enumerate() {
        for reader in ["deltalake", "polars_delta"] {
            assert!(
                readers.rows(reader, &delta, Some(v as u64)) == *rows,
                "{reader} at version {v} differs"
            );
        }
    }
}

async fn two_syncers_cannot_both_commit(db: TestDb) {
    db.store
        .insert_bars(
            &crate::harness::generated(2, 3, "1h", 1),
            quiver::OnConflict::Error,
        )
        .await
        .unwrap();
    let mut first = syncer(&db, &db.config.cache);
    let mut second = syncer(&db, &db.config.cache);
    assert_eq!(first.pass(false).await.unwrap().version, Some(0));
    // The second finds version 0 and nothing to do.
    assert_eq!(second.pass(false).await.unwrap().version, None);
    db.plain_sql("UPDATE market_data SET volume = '7' WHERE symbol = 'SYM001'")
        .await;
    assert_eq!(first.pass(false).await.unwrap().version, Some(1));
    db.plain_sql("UPDATE market_data SET volume = '8' WHERE symbol = 'SYM001'")
        .await;
    // The second still believes version 0 is the newest: its commit of version 1 is refused.
    let err = second.pass(false).await.unwrap_err();
    assert!(
        matches!(err, quiver::Error::CommitConflict { version: 1, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("was committed by another writer (quiver ")
            && message.contains(&format!("pid {}", std::process::id()))
            && message.contains("only one `quiver sync` may write a cache"),
        "{message}"
    );
    // The winner goes on; the cache is exact.
    assert_eq!(first.pass(false).await.unwrap().version, Some(2));
    assert_mirrored(&db, "after the refused commit").await;

    // A daemon that loses the race stops with that message and exit status 2.
    let mut daemon = db.spawn(
        db.quiver(&["sync", "--watch"])
            .env("QUIVER_LOG", "quiver=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(daemon.stderr.take().unwrap());
    let mut log = String::new();
    // Its first pass found nothing to do: it has loaded version 2.
    while !log.contains("nothing to publish") {
        if stderr.read_line(&mut log).unwrap() == 0 {
            panic!("the daemon ended: {log}");
        }
    }
    // Version 3 behind its back (a rebuild: no change in the database it could see), then a
    // change it does see: its commit of version 3 is refused.
    assert_eq!(first.pass(true).await.unwrap().version, Some(3));
    db.plain_sql("UPDATE market_data SET volume = '9' WHERE symbol = 'SYM002'")
        .await;
    use std::io::Read;
    stderr.read_to_string(&mut log).unwrap();
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a fault, not a mistake: {log}");
    assert!(log.contains("version 3 of"), "{log}");
    assert!(log.contains("was committed by another writer"), "{log}");
}

async fn a_cache_of_the_earlier_layout_is_converted_by_the_first_pass(db: TestDb) {
    use quiver::OnConflict;
    db.store
        .insert_bars(&crate::harness::generated(1, 2, "1d", 3), OnConflict::Error)
        .await
        .unwrap();
    // The earlier layout: market_data -> .quiver/v000001, a manifest, a lock file.
    let cache = db.config.cache.dir.clone();
    let version = cache.join(".quiver/v000001/tf=1d/sym=SYM001/period=all");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("data.parquet"), b"PAR1 not really").unwrap();
    std::fs::write(cache.join(".quiver/v000001/manifest.json"), b"{}").unwrap();
    std::os::unix::fs::symlink(".quiver/v000001", cache.join("market_data")).unwrap();
    std::fs::write(cache.join(".quiver.lock"), b"").unwrap();

    let out = quiver(&db, &["bars", "SYM001", "--timeframe", "1d"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is a cache of quiver's earlier layout; run `quiver sync` once"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!cache.join(".quiver/v000001").exists());
    assert!(!cache.join(".quiver.lock").exists());
    assert!(cache.join("market_data").is_dir() && !cache.join("market_data").is_symlink());
    assert_mirrored(&db, "after the conversion").await;
    let out = quiver(
        &db,
        &["bars", "SYM001", "--timeframe", "1d", "--format", "csv"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "a header and two bars"
    );
}

async fn time_travel_in_the_library_the_cli_and_the_shell(db: TestDb) {
    db.store
        .insert_bars(
            &crate::harness::generated(1, 2, "1h", 4),
            quiver::OnConflict::Error,
        )
        .await
        .unwrap();
    let mut s = syncer(&db, &db.config.cache);
    s.pass(false).await.unwrap();
    let v0 = table_rows(&db).await;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    db.plain_sql(
        "DELETE FROM market_data WHERE ts IN (SELECT ts FROM market_data ORDER BY ts LIMIT 3)",
    )
    .await;
    s.pass(false).await.unwrap();
    let v1 = table_rows(&db).await;
    assert_eq!(v0.len(), v1.len() + 3);

    // The library: a request as of a version or a time; the newest by default.
    let reader = Reader::open(&db.config).unwrap();
    let request = BarsRequest::new("SYM001".parse().unwrap(), "1h".parse().unwrap());
    let count = |r: &BarsRequest| {
        let reader = reader.clone();
        let r = r.clone();
        async move { reader.bars(&r).await.map(|b| b.len()) }
    };
    assert_eq!(count(&request).await.unwrap(), v1.len());
    assert_eq!(
        count(&request.clone().with_as_of(AsOf::Version(0)))
            .await
            .unwrap(),
        v0.len()
    );
    assert_eq!(
        count(&request.clone().with_as_of(AsOf::Time(between)))
            .await
            .unwrap(),
        v0.len()
    );
    let err = count(&request.clone().with_as_of(AsOf::Version(9)))
        .await
        .unwrap_err();
    assert!(matches!(err, quiver::Error::NoSuchVersion(_)), "{err:?}");

    // The CLI: --as-of VERSION|TIME.
    let lines = |args: &[&str]| {
        let out = quiver(&db, args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).lines().count() - 1
    };
    let base = ["bars", "SYM001", "--timeframe", "1h", "--format", "csv"];
    assert_eq!(lines(&base), v1.len());
    assert_eq!(lines(&[&base[..], &["--as-of", "0"]].concat()), v0.len());
    let at = between.to_rfc3339();
    assert_eq!(lines(&[&base[..], &["--as-of", &at]].concat()), v0.len());
    let out = quiver(&db, &[&base[..], &["--as-of", "9"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("version 9 is not in the table"),
        "{}",
        text(&out.stderr)
    );
    let out = quiver(&db, &[&base[..], &["--as-of", "soon"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("neither a version number nor a time"));

    // The shell: market_data_as_of(version | time) beside market_data.
    let sql = |q: &str| {
        let out = quiver(&db, &["sql", "--format", "csv", "-c", q]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(
        sql("SELECT count(*) AS n FROM market_data_as_of(0)"),
        format!("n\n{}\n", v0.len())
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*) AS n FROM market_data_as_of('{at}')"
        )),
        format!("n\n{}\n", v0.len())
    );
    assert_eq!(
        sql(
            "SELECT count(*) AS n FROM (SELECT * FROM market_data_as_of(0) EXCEPT SELECT * FROM market_data)"
        ),
        "n\n3\n"
    );

    // Status lists the retained versions.
    let out = quiver(&db, &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["history"]["oldest"], 0);
    assert_eq!(status["history"]["newest"], 1);
    let recent: Vec<u64> = status["history"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(recent, vec![0, 1]);
    assert_eq!(status["history"]["recent"][1]["removed"], 1);
    assert_eq!(status["history"]["recent"][1]["operation"], "WRITE");
    let out = quiver(&db, &["status"]);
    assert!(text(&out.stdout).contains("| retained versions   | 2 (versions 0 to 1)"));
}

async fn vacuum_deletes_only_what_no_retained_version_needs(db: TestDb) {
    db.store
        .insert_bars(
            &crate::harness::generated(2, 2, "1h", 5),
            quiver::OnConflict::Error,
        )
        .await
        .unwrap();
    let mut readers = Readers::start();
    let keep = CacheConfig {
        retention: std::time::Duration::from_secs(3600),
        checkpoint_interval: 2,
        ..db.config.cache.clone()
    };
    let mut s = syncer(&db, &keep);
    s.pass(false).await.unwrap();
    let v0 = table_rows(&db).await;
    for step in 0..3 {
        db.plain_sql(&format!("UPDATE market_data SET volume = '{step}'"))
            .await;
        s.pass(false).await.unwrap();
    }
    let data_files = |db: &TestDb| {
        crate::sync::tree(&db.config.cache.dir.join("delta/market_data"))
            .into_iter()
            .filter(|p| !p.starts_with("_delta_log"))
            .count()
    };
    let before = data_files(&db);
    // Within the retention every version's files stay: nothing to delete, time travel works.
    let report = s.vacuum().await.unwrap();
    assert_eq!(
        (report.files, report.orphans, report.log_entries),
        (0, 0, 0)
    );
    assert_eq!(data_files(&db), before);
    let delta = db.config.cache.dir.join("delta/market_data");
    assert!(readers.rows("deltalake", &delta, Some(0)) == v0);

    // A file no version references (left by a crashed pass) is an orphan: deleted once older
    // than the retention, not before.
    let orphan = delta.join("timeframe=1h/symbol=SYM001/2024-01_crashed.parquet");
    std::fs::write(&orphan, b"half a file").unwrap();
    let staged = delta.join("_delta_log/00000000000000000009.json#1");
    std::fs::write(&staged, b"{\"commitInfo\"").unwrap();
    drop(s);
    let drop_all = CacheConfig {
        retention: std::time::Duration::ZERO,
        ..keep.clone()
    };
    let mut s = syncer(&db, &drop_all);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let report = s.vacuum().await.unwrap();
    assert!(!orphan.exists() && !staged.exists());
    assert_eq!(report.orphans, 2, "{report:?}");
    // With no retention, only the newest version's files are left, and it stays exact.
    let live = Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data_files(&db), live.file_count());
    assert!(report.files + report.orphans > 1, "{report:?}");
    assert!(
        report.log_entries > 0,
        "commits before the newest checkpoint: {report:?}"
    );
    assert_mirrored(&db, "after vacuum").await;
    assert_outside_readers_agree(&mut readers, &db, &table_rows(&db).await, "after vacuum");
    assert_eq!(reader_rows(&db).await, table_rows(&db).await);
    assert_eq!(parquet_rows(&db.config.cache.dir), table_rows(&db).await);
}
