//! The binary's sync commands as operators use them: `kill -9` in the middle of publication,
//! the daemon following writes and stopping on SIGTERM, `status` and `verify`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use quiver::cache::Cache;

use crate::both;
use crate::harness::{Kind, TestDb, sample};
use crate::sync::{assert_mirrored, parquet_rows, tree};

fn command(db: &TestDb, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quiver"));
    c.args(args)
        .current_dir(db.dir.path())
        .env_remove("QUIVER_DATABASE_URL")
        .env_remove("QUIVER_DATABASE_SCHEMA")
        .env_remove("QUIVER_CACHE_DIR")
        .env_remove("QUIVER_PAUSE_AT")
        .envs(db.env());
    c
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

/// Starts `quiver sync` paused at `point` and kills it there with SIGKILL.
fn kill_at(db: &TestDb, point: &str) {
    let mut child = command(db, &["sync"])
        .env("QUIVER_PAUSE_AT", point)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a line").unwrap();
    assert_eq!(line, format!("quiver: paused at {point}"));
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();
}

both!(
    daemon_stops_on_sigint,
    kill_9_at_every_step_leaves_the_published_cache_intact,
    daemon_follows_writes_and_stops_on_sigterm,
    status_and_verify_report_the_cache
);

async fn kill_9_at_every_step_leaves_the_published_cache_intact(db: TestDb) {
    let cache_dir = db.config.cache.dir.clone();
    import_sample(&db, "2006-min-005.txt", "^STOXX50E", "5m").await;

    // Killed during the very first snapshot: nothing is published, the next pass converges.
    kill_at(&db, "after-file");
    assert!(Cache::new(&cache_dir).current().unwrap().is_none());
    let out = run(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_mirrored(&db, "first pass after a crash").await;
    let published = parquet_rows(&cache_dir);

    // New data; each kill before the link swap leaves exactly the old version readable.
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    db.plain_sql(
        "DELETE FROM market_data WHERE symbol = '^STOXX50E' AND ts IN \
         (SELECT ts FROM market_data WHERE symbol = '^STOXX50E' ORDER BY ts LIMIT 10)",
    )
    .await;
    for point in ["after-file", "before-publish"] {
        kill_at(&db, point);
        let cache = Cache::new(&cache_dir);
        assert_eq!(cache.current().unwrap().unwrap().generation, 1, "{point}");
        assert_eq!(parquet_rows(&cache_dir), published, "killed at {point}");
    }
    // Killed right after the swap: the new version is complete and current.
    kill_at(&db, "after-publish");
    assert_eq!(
        Cache::new(&cache_dir)
            .current()
            .unwrap()
            .unwrap()
            .generation,
        2
    );
    assert_mirrored(&db, "killed after publishing").await;

    // One more pass converges and leaves nothing stray: the current version, the one before,
    // the link and the lock file.
    db.plain_sql("UPDATE market_data SET volume = '1.5' WHERE symbol = 'NVDA'")
        .await;
    kill_at(&db, "before-publish");
    let out = run(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_mirrored(&db, "after the last crash").await;
    let cache = Cache::new(&cache_dir);
    assert_eq!(cache.current().unwrap().unwrap().generation, 3);
    assert_eq!(cache.versions().unwrap(), vec!["v000002", "v000003"]);
    let mut top: Vec<String> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec![".quiver", ".quiver.lock", "market_data"]);
    let manifest = cache.current().unwrap().unwrap();
    let mut listed: Vec<String> = manifest
        .partitions
        .iter()
        .map(|p| p.file.clone())
        .chain(["manifest.json".to_string()])
        .collect();
    listed.sort();
    let on_disk: Vec<String> = tree(&cache_dir.join(".quiver/v000003"))
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        on_disk, listed,
        "every file of the version is in its manifest"
    );
}

/// Sends `signal` and returns how long the process took to exit, and its status.
fn terminate(mut child: Child, signal: i32) -> (Duration, Option<i32>, String) {
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

async fn daemon_follows_writes_and_stops_on_sigterm(db: TestDb) {
    import_sample(&db, "2006-01-02-volume-min-001.txt", "FESX", "1m").await;
    let child = command(&db, &["sync", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    assert!(stderr.contains("published"), "per-pass log lines: {stderr}");
    assert_mirrored(&db, "after the daemon stopped").await;
}

async fn status_and_verify_report_the_cache(db: TestDb) {
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    let out = run(&db, &["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(before["generation"], serde_json::Value::Null);
    assert!(before["pending_changes"].as_u64().unwrap() > 0);

    let out = run(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("published version 1 (snapshot): 4012 rows in 1 partitions"),
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
    assert_eq!(s["generation"], 1);
    assert_eq!(s["partitions"], 1);
    assert_eq!(s["files"], 1);
    assert_eq!(s["rows"], 4012);
    assert!(s["bytes"].as_u64().unwrap() > 1000);
    assert_eq!(s["pending_changes"], 0);
    assert_eq!(s["lag_seconds"], 0.0);

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
    let out = run(&db, &["status"]);
    let table = text(&out.stdout);
    assert!(table.contains("| pending changes |"), "{table}");
    assert!(table.contains("| partitions      | 1 "), "{table}");
}

async fn daemon_stops_on_sigint(db: TestDb) {
    import_sample(&db, "nvda-1999-2014.txt", "NVDA", "1d").await;
    let child = command(&db, &["sync", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.wait_mirrored(Some(4012), Duration::from_secs(20)).await;
    let (took, code, stderr) = terminate(child, libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    assert!(stderr.contains("SIGINT: stopping"), "{stderr}");
    assert_mirrored(&db, "after SIGINT").await;
}
