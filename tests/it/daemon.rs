//! The binary's sync commands as operators use them: `kill -9` in the middle of publication,
//! the daemon following writes and stopping on SIGTERM, `status` and `verify`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use quiver::cache::Cache;

use crate::both;
use crate::harness::{Kind, Spawned, TestDb, sample};
use crate::sync::{
    Row, assert_mirrored, delta_rows, parquet_rows, rows_of_files, table_rows, tree,
};

fn command(db: &TestDb, args: &[&str]) -> Command {
    db.quiver(args)
}

fn run(db: &TestDb, args: &[&str]) -> Output {
    command(db, args).output().expect("run quiver")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn import_sample(db: &TestDb, file: &str, symbol: &str, tf: &str) {
    let path = sample(file);
    let out = run(
        db,
        &[
            "import",
            path.to_str().unwrap(),
            "--symbol",
            symbol,
            "--timeframe",
            tf,
            "--on-conflict",
            "skip",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Starts `quiver <args>` paused at `point` and kills it there with SIGKILL.
fn kill_at(db: &TestDb, args: &[&str], point: &str) {
    let mut child = db.spawn(
        command(db, args)
            .env("QUIVER_PAUSE_AT", point)
            .stderr(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut before = Vec::new();
    let line = loop {
        let Some(line) = lines.next() else {
            panic!("quiver {args:?} ended before {point}: {before:#?}");
        };
        let line = line.unwrap();
        if line.starts_with("quiver: paused at") {
            break line;
        }
        before.push(line);
    };
    assert_eq!(line, format!("quiver: paused at {point}"));
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();
}

fn sync_ok(db: &TestDb) {
    let out = run(db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

async fn version(db: &TestDb) -> Option<u64> {
    Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .map(|s| s.version())
}

/// Every partition folder of the plain view holds the rows of one version of it: the
/// partition as in `old` or as in `new`, whole.
fn view_partitions_are_whole(db: &TestDb, old: &[Row], new: &[Row]) {
    let view = db.config.cache.dir.join("market_data");
    for tf in std::fs::read_dir(&view).unwrap() {
        for sym in std::fs::read_dir(tf.unwrap().path()).unwrap() {
            for period in std::fs::read_dir(sym.unwrap().path()).unwrap() {
                let dir = period.unwrap().path();
                let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                let rows = rows_of_files(&files);
                let (symbol, tf) = (&rows[0].0, &rows[0].1);
                let (lo, hi) = (rows[0].2, rows[rows.len() - 1].2);
                let part = |all: &[Row]| -> Vec<Row> {
                    all.iter()
                        .filter(|r| &r.0 == symbol && &r.1 == tf && r.2 >= lo && r.2 <= hi)
                        .cloned()
                        .collect()
                };
                assert!(
                    rows == part(old) || rows == part(new),
                    "{} holds neither version of its partition",
                    dir.display()
                );
            }
        }
    }
}

both!(
    metrics_endpoint_reports_passes_rows_and_lag,
    daemon_stops_on_sigint,
    kill_9_at_every_step_leaves_the_cache_readable_and_exact,
    daemon_follows_writes_and_stops_on_sigterm,
    status_and_verify_report_the_cache,
    a_bad_row_holds_back_only_its_partition,
    monitoring_counts_a_held_partition_while_it_is_held,
);

async fn kill_9_at_every_step_leaves_the_cache_readable_and_exact(db: TestDb) {
    let cache_dir = db.config.cache.dir.clone();
    // Checkpoint after every commit and keep nothing old, so both can be interrupted too.
    std::fs::write(
        db.dir.path().join("config.toml"),
        "[cache]\ncheckpoint_interval = 1\nretention = \"0s\"\n",
    )
    .unwrap();
    import_sample(&db, "2006-min-005.txt", "^STOXX50E", "5m").await;

    // Killed during the very first snapshot: no version exists, the next pass converges.
    kill_at(&db, &["sync"], "after-file");
    assert_eq!(version(&db).await, None);
    sync_ok(&db);
    assert_mirrored(&db, "first pass after a crash").await;
    let v0 = parquet_rows(&cache_dir);

    // New data. Killed after writing a file: the cache stays at its version, whole.
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    db.plain_sql(
        "DELETE FROM market_data WHERE symbol = '^STOXX50E' AND ts IN \
         (SELECT ts FROM market_data WHERE symbol = '^STOXX50E' ORDER BY ts LIMIT 10)",
    )
    .await;
    kill_at(&db, &["sync"], "after-file");
    assert_eq!(version(&db).await, Some(0));
    assert_eq!(delta_rows(&db).await, v0, "the table at version 0");
    assert_eq!(parquet_rows(&cache_dir), v0, "the plain view at version 0");

    // Killed right after the commit: the table is at the new version and exact; the plain
    // view is still whole at the old one; the next pass brings it along.
    kill_at(&db, &["sync"], "after-commit");
    assert_eq!(version(&db).await, Some(1));
    assert_eq!(delta_rows(&db).await, table_rows(&db).await);
    assert_eq!(
        parquet_rows(&cache_dir),
        v0,
        "the plain view not yet updated"
    );
    sync_ok(&db);
    assert_mirrored(&db, "killed after the commit").await;
    let v1 = parquet_rows(&cache_dir);

    // Killed while the plain view is being updated: each partition whole, old or new.
    db.plain_sql("UPDATE market_data SET volume = '1.5'").await;
    kill_at(&db, &["sync"], "view-partition");
    assert_eq!(version(&db).await, Some(2));
    let v2 = table_rows(&db).await;
    assert_eq!(delta_rows(&db).await, v2);
    view_partitions_are_whole(&db, &v1, &v2);
    sync_ok(&db);
    assert_mirrored(&db, "killed during the plain view's update").await;

    // Killed while a checkpoint is written: the table stays readable, the next pass converges.
    db.plain_sql("UPDATE market_data SET volume = '2.5' WHERE symbol = 'NVDA'")
        .await;
    kill_at(&db, &["sync"], "checkpoint-before-pointer");
    assert_eq!(delta_rows(&db).await, table_rows(&db).await);
    db.plain_sql("UPDATE market_data SET volume = '3.5' WHERE symbol = 'NVDA'")
        .await;
    sync_ok(&db);
    assert_mirrored(&db, "killed during a checkpoint").await;

    // Killed while vacuuming: what is left is still exact; vacuuming again finishes the job.
    kill_at(&db, &["vacuum"], "vacuum-file");
    assert_mirrored(&db, "killed during vacuum").await;
    let out = run(&db, &["vacuum"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_mirrored(&db, "after vacuum").await;
    let state = Cache::new(&cache_dir).current().await.unwrap().unwrap();
    let data_files: Vec<_> = tree(&cache_dir.join("delta/market_data"))
        .into_iter()
        .filter(|p| !p.starts_with("_delta_log"))
        .collect();
    assert_eq!(
        data_files.len(),
        state.file_count(),
        "vacuum left only the live files: {data_files:?}"
    );

    // Nothing stray for a reader to list: no staging or temporary file anywhere, and the
    // plain view holds exactly the live files.
    let mut top: Vec<String> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec![".quiver", "delta", "market_data"]);
    let stray: Vec<_> = tree(&cache_dir)
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.contains('#') || name.contains("staging") || name.ends_with(".tmp")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    let view_files = tree(&cache_dir.join("market_data")).len();
    assert_eq!(view_files, state.file_count());
}

/// Sends `signal` and returns how long the process took to exit, and its status.
fn terminate(mut child: Spawned, signal: i32) -> (Duration, Option<i32>, String) {
    let started = Instant::now();
    // SAFETY: `kill` with a valid pid of our own child and a standard signal number.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        e.read_to_string(&mut err).unwrap();
    }
    (started.elapsed(), status.code(), err)
}

/// A plain HTTP GET of `path` on `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

/// Starts the daemon with `args` (which serve metrics) and waits for its endpoint: the
/// daemon, the endpoint's address, and a thread draining its log (so it never blocks on a
/// full pipe) that returns the whole log once the daemon ends.
fn daemon_with_metrics(
    db: &TestDb,
    args: &[&str],
) -> (Spawned, String, std::thread::JoinHandle<String>) {
    let mut child = db.spawn(
        command(db, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut l = String::new();
        assert!(
            stderr.read_line(&mut l).unwrap() > 0,
            "the daemon ended: {log}"
        );
        log.push_str(&l);
        if let Some(rest) = l.split("metrics at http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        log + &rest
    });
    (child, addr, drain)
}

async fn metrics_endpoint_reports_passes_rows_and_lag(db: TestDb) {
    import_sample(&db, "2006-01-02-volume-min-001.txt", "FESX", "1m").await;
    let (mut child, addr, drain) = daemon_with_metrics(
        &db,
        &[
            "--log-format",
            "json",
            "sync",
            "--watch",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    db.wait_mirrored(None, Duration::from_secs(20)).await;
    let rows = db.count().await as f64;
    // The counters move just after the version is visible: scrape until they show it.
    let scrape_until = |want: f64| {
        let started = Instant::now();
        loop {
            let (status, body) = http_get(&addr, "/metrics");
            if metric(&body, "quiver_sync_rows_published_total") >= want
                || started.elapsed() > Duration::from_secs(10)
            {
                return (status, body);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (status, body) = scrape_until(rows);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(metric(&body, "quiver_sync_passes_total") >= 1.0, "{body}");
    assert_eq!(metric(&body, "quiver_sync_failures_total"), 0.0);
    assert_eq!(
        metric(&body, "quiver_sync_rows_published_total"),
        rows,
        "{body}"
    );
    assert!(metric(&body, "quiver_sync_bytes_published_total") > 0.0);
    assert_eq!(metric(&body, "quiver_sync_pending_changes"), 0.0, "{body}");
    assert_eq!(metric(&body, "quiver_sync_lag_seconds"), 0.0);
    assert_eq!(metric(&body, "quiver_sync_held_back_partitions"), 0.0);
    assert_eq!(metric(&body, "quiver_sync_up"), 1.0);
    assert!(metric(&body, "quiver_sync_pass_duration_seconds_count") >= 1.0);
    assert!(body.contains("quiver_sync_pass_duration_seconds_bucket{le=\"+Inf\"}"));

    // One bar after the last: published as one more row.
    let ts = match db.kind {
        Kind::Sqlite => "1717425000000000".to_string(),
        Kind::Postgres => "to_timestamp(1717425000)".to_string(),
    };
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('FESX', '1m', {ts}, '1.5', '2', '1', '1.75', '0.001');"
    ))
    .await;
    db.wait_mirrored(None, Duration::from_secs(10)).await;
    let (_, body) = scrape_until(rows + 1.0);
    assert_eq!(
        metric(&body, "quiver_sync_rows_published_total"),
        rows + 1.0,
        "{body}"
    );
    assert!(metric(&body, "quiver_sync_commits_total") >= 2.0);

    assert_eq!(
        http_get(&addr, "/healthz"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(http_get(&addr, "/nope").0, "HTTP/1.1 404 Not Found");
    // SAFETY: `kill` with a valid pid of our own child and a standard signal number.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = drain.join().unwrap();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    // --log-format json: every line one object with its level and message.
    for l in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
    assert!(log.contains("\"message\":\"published\""), "{log}");
}

async fn daemon_follows_writes_and_stops_on_sigterm(db: TestDb) {
    import_sample(&db, "2006-01-02-volume-min-001.txt", "FESX", "1m").await;
    let child = db.spawn(
        command(&db, &["sync", "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    db.wait_mirrored(None, Duration::from_secs(20)).await;

    // Plain SQL writes are picked up without restarting the daemon: insert, update, delete.
    let ts = |micros: i64| match db.kind {
        Kind::Sqlite => micros.to_string(),
        Kind::Postgres => format!("to_timestamp({micros} / 1e6)"),
    };
    for i in 0..5i64 {
        db.plain_sql(&format!(
            "INSERT INTO market_data VALUES ('NEW{i}', '1m', {}, '1.5', '2', '1', '1.75', '0.001');",
            ts(1_717_425_000_000_000 + i * 60_000_000)
        ))
        .await;
    }
    db.plain_sql("UPDATE market_data SET close = high WHERE symbol = 'FESX'")
        .await;
    db.plain_sql("DELETE FROM market_data WHERE symbol = 'NEW0'")
        .await;
    db.wait_mirrored(None, Duration::from_secs(10)).await;

    let (took, code, stderr) = terminate(child, libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    // The grace for a running pass is 0.7 s; the margin is for a loaded runner.
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    assert!(stderr.contains("published"), "per-pass log lines: {stderr}");
    assert_mirrored(&db, "after the daemon stopped").await;
}

async fn status_and_verify_report_the_cache(db: TestDb) {
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    let out = run(&db, &["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(before["version"], serde_json::Value::Null);
    assert!(before["pending_changes"].as_u64().unwrap() > 0);
    let out = run(&db, &["status", "--max-lag", "1h"]);
    assert_eq!(out.status.code(), Some(1), "no version yet fails the check");
    assert!(
        text(&out.stderr).contains("no version yet"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("committed version 0 (snapshot): 4012 rows in 1 partitions"),
        "{}",
        text(&out.stdout)
    );

    let out = run(&db, &["status", "--format", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s["backend"],
        if db.kind == Kind::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(s["version"], 0);
    assert_eq!(s["partitions"], 1);
    assert_eq!(s["files"], 1);
    assert_eq!(s["rows"], 4012);
    assert!(s["bytes"].as_u64().unwrap() > 1000);
    assert_eq!(s["pending_changes"], 0);
    assert_eq!(s["lag_seconds"], 0.0);
    let out = run(&db, &["status", "--max-lag", "0s"]);
    assert_eq!(out.status.code(), Some(0), "current: {}", text(&out.stderr));

    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "cache equals the table: 1 partitions, 4012 rows\n"
    );

    // The table moves on without a sync: verify names the partition with both counts.
    db.plain_sql("DELETE FROM market_data WHERE symbol = 'NVDA' AND ts IN (SELECT ts FROM market_data WHERE symbol = 'NVDA' ORDER BY ts LIMIT 2)").await;
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "differs: tf=1d/sym=NVDA/period=all (database 4010 rows, cache 4012 rows): row counts differ\n\
         1 of 1 partitions differ\n"
    );
    let out = run(&db, &["status", "--max-lag", "0s"]);
    assert_eq!(out.status.code(), Some(1), "behind: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("behind the table (--max-lag 0s)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        run(&db, &["status", "--max-lag", "1h"]).status.code(),
        Some(0)
    );
    let out = run(&db, &["status"]);
    let table = text(&out.stdout);
    assert!(table.contains("| pending changes     | 2 "), "{table}");
    assert!(table.contains("| partitions          | 1 "), "{table}");
}

async fn daemon_stops_on_sigint(db: TestDb) {
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    let child = db.spawn(
        command(&db, &["sync", "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    db.wait_mirrored(Some(4012), Duration::from_secs(20)).await;
    let (took, code, stderr) = terminate(child, libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(5), "SIGINT took {took:?}");
    assert!(stderr.contains("SIGINT: stopping"), "{stderr}");
    assert_mirrored(&db, "after SIGINT").await;
}

/// A row the cache cannot hold exactly, written by a plain SQL client (SQLite: a ninth
/// decimal, which its REAL CHECKs let through; PostgreSQL: `NaN`, which NUMERIC accepts),
/// holds back only its own partition at its last good version: the pass succeeds, every other
/// partition is published, the reason is logged once, `status` lists it and `verify` names
/// it; once the row is fixed in SQL the next pass converges.
async fn a_bad_row_holds_back_only_its_partition(db: TestDb) {
    use quiver::OnConflict;
    let bars = crate::harness::generated(2, 3, "1m", 7);
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    sync_ok(&db);
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let ts = |micros: i64| match db.kind {
        Kind::Sqlite => micros.to_string(),
        Kind::Postgres => format!("to_timestamp({micros} / 1e6)"),
    };
    let bad = match db.kind {
        Kind::Sqlite => "'1.123456789', '2', '1', '1.5', '10'",
        Kind::Postgres => "'NaN', 'NaN', 'NaN', 'NaN', '10'",
    };
    let bad_ts = last + 60_000_000;
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('SYM001', '1m', {}, {bad}); \
         INSERT INTO market_data VALUES ('SYM002', '1m', {}, '7.5', '8', '7', '7.25', '3');",
        ts(bad_ts),
        ts(last + 60_000_000),
    ))
    .await;
    let held = quiver::cache::PartitionKey::of("SYM001", "1m", bad_ts)
        .unwrap()
        .dir();
    let first = run(&db, &["sync"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let said = text(&first.stderr);
    assert!(
        said.contains("held back") && said.contains("open"),
        "{said}"
    );
    assert!(
        text(&first.stdout).contains("1 held back"),
        "{}",
        text(&first.stdout)
    );

    // SYM002 is published; SYM001's partition is what it was.
    let cache = Cache::new(&db.config.cache.dir);
    let state = cache.current().await.unwrap().unwrap();
    assert!(
        state
            .series("1m", "SYM002")
            .last()
            .is_some_and(|f| f.max_ts == last + 60_000_000)
    );
    assert!(
        state
            .series("1m", "SYM001")
            .last()
            .is_some_and(|f| f.max_ts < bad_ts)
    );

    let out = run(&db, &["status", "--format", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = s["held_back"][&held]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("SYM001") && reason.contains("open"), "{s}");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("differs: {held}")) && said.contains("held back"),
        "{said}"
    );
    assert!(
        said.contains("1 of "),
        "only the bad row's partition differs: {said}"
    );

    // Said once: a pass with nothing new does not repeat it, and it stays held.
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('SYM002', '1m', {}, '7.5', '8', '7', '7.25', '3');",
        ts(last + 120_000_000)
    ))
    .await;
    let again = run(&db, &["sync"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        !text(&again.stderr).contains("held back at"),
        "{}",
        text(&again.stderr)
    );
    let out = run(&db, &["status", "--format", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["held_back"].get(&held).is_some(), "{s}");

    // Fixed in SQL: the next pass publishes the partition and nothing is held.
    db.plain_sql(&format!(
        "UPDATE market_data SET open = '1.5', high = '2', low = '1', close = '1.5' \
         WHERE symbol = 'SYM001' AND ts = {};",
        ts(bad_ts)
    ))
    .await;
    sync_ok(&db);
    let out = run(&db, &["status", "--format", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["held_back"], serde_json::json!({}), "{s}");
    assert_mirrored(&db, "after the bad row was fixed").await;
}

/// While a partition is held back, every monitor says so for as long as it lasts: the gauge
/// (also after passes with nothing new), `/healthz` (200, naming it), `status --max-lag`
/// (behind since the first held change), and a warning repeated at `sync.held_warning`. A
/// `status` against another database says the cache mirrors a different one.
async fn monitoring_counts_a_held_partition_while_it_is_held(db: TestDb) {
    let bars = crate::harness::generated(2, 2, "1h", 5);
    db.store
        .insert_bars(&bars, quiver::OnConflict::Error)
        .await
        .unwrap();
    let config = db.file(
        "monitor.toml",
        "[sync]\npoll_interval = \"100ms\"\nheld_warning = \"300ms\"\n",
    );
    let config = config.to_str().unwrap();
    let (child, addr, drain) = daemon_with_metrics(
        &db,
        &[
            "--config",
            config,
            "sync",
            "--watch",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    db.wait_mirrored(None, Duration::from_secs(20)).await;
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let bad_ts = last + 3_600_000_000;
    let (ts, bad) = match db.kind {
        Kind::Sqlite => (bad_ts.to_string(), "'1.123456789', '2', '1', '1.5', '10'"),
        Kind::Postgres => (
            format!("to_timestamp({bad_ts} / 1e6)"),
            "'NaN', 'NaN', 'NaN', 'NaN', '10'",
        ),
    };
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('SYM001', '1h', {ts}, {bad});"
    ))
    .await;
    let held = quiver::cache::PartitionKey::of("SYM001", "1h", bad_ts)
        .unwrap()
        .dir();
    let started = Instant::now();
    loop {
        let (_, body) = http_get(&addr, "/metrics");
        if metric(&body, "quiver_sync_held_back_partitions") == 1.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Many passes with nothing new later, it is still held and still counted.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        metric(&body, "quiver_sync_held_back_partitions"),
        1.0,
        "{body}"
    );
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "a live daemon is healthy");
    assert_eq!(body, format!("ok; partitions held back: 1\n{held}\n"));

    let out = run(&db, &["status", "--max-lag", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("s behind the table (--max-lag 1s)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("{held} since ")),
        "{}",
        text(&out.stdout)
    );
    let out = run(&db, &["status", "--format", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["lag_seconds"].as_f64().unwrap() >= 1.5, "{s}");
    assert!(s["held_back_since"][&held].is_string(), "{s}");
    assert_eq!(s["mirrors_other"], serde_json::Value::Null, "{s}");

    let (_, code, _) = terminate(child, libc::SIGTERM);
    assert_eq!(code, Some(0));
    let log = drain.join().unwrap();
    assert!(
        log.matches("partitions still held back").count() >= 2,
        "the warning repeats: {log}"
    );
    assert!(log.contains(&held), "{log}");

    // Fixed in SQL, one pass later nothing is behind.
    let fix = match db.kind {
        Kind::Sqlite => format!("UPDATE market_data SET open = '1.5' WHERE ts = {ts};"),
        Kind::Postgres => format!(
            "UPDATE market_data SET open = 1.5, high = 2, low = 1, close = 1.5 WHERE ts = {ts};"
        ),
    };
    db.plain_sql(&fix).await;
    sync_ok(&db);
    let out = run(&db, &["status", "--max-lag", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Another database: status says the cache is not its mirror.
    let other = format!("sqlite://{}", db.path("other.db").display());
    let out = run(&db, &["--database-url", &other, "migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(
        &db,
        &["--database-url", &other, "status", "--format", "json"],
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = s["mirrors_other"].as_str().unwrap_or_default();
    assert!(
        said.contains("the cache mirrors ") && said.contains("quiver sync --full"),
        "{s}"
    );
    let out = run(&db, &["--database-url", &other, "status"]);
    assert!(
        text(&out.stdout).contains("| warning "),
        "{}",
        text(&out.stdout)
    );
}
