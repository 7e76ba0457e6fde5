//! Live bars: inserts after a partition's last published bar become small new files (appends),
//! every other change rewrites the partition, compaction merges the small files without
//! changing a row; and a randomized run of all of it, with `kill -9` at random steps, keeps
//! the cache equal to the table through quiver's reader, the plain view and a Delta reader.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use quiver::OnConflict;
use quiver::cache::{Cache, PartitionKey};
use quiver::config::CacheConfig;
use quiver::model::ts_from_micros;
use quiver::read::BarsRequest;
use quiver::sync::Syncer;

use crate::both;
use crate::harness::{Kind, TestDb};
use crate::python::Readers;
use crate::sync::{Row, assert_mirrored, reader_rows, row_of, table_rows};

fn ts_sql(kind: Kind, micros: i64) -> String {
    match kind {
        Kind::Sqlite => micros.to_string(),
        Kind::Postgres => format!("to_timestamp({micros} / 1e6)"),
    }
}

fn bar_sql(kind: Kind, symbol: &str, micros: i64, price: &str) -> String {
    format!(
        "INSERT INTO market_data VALUES ('{symbol}', '1m', {}, '{price}', '{price}', '{price}', \
         '{price}', '0.5');",
        ts_sql(kind, micros)
    )
}

/// A syncer of the test's cache whose compaction threshold is `files`.
fn syncer_compacting_at(db: &TestDb, files: usize) -> (CacheConfig, Syncer) {
    let settings = CacheConfig {
        compact_files: files,
        ..db.config.cache.clone()
    };
    let s = Syncer::new(
        db.store.clone(),
        &settings,
        db.config.database.schema.clone(),
    )
    .unwrap();
    (settings, s)
}

async fn files_of(db: &TestDb, key: &PartitionKey) -> Vec<String> {
    let state = Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .unwrap();
    state
        .partition(key)
        .iter()
        .map(|f| f.path.clone())
        .collect()
}

fn last_commit(db: &TestDb) -> Vec<serde_json::Value> {
    let log = db.config.cache.dir.join("delta/market_data/_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let text = std::fs::read_to_string(commits.last().unwrap()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

both!(
    appends_add_a_file_and_every_other_change_rewrites,
    compaction_merges_small_files_and_changes_no_row,
    idle_compaction_merges_before_the_threshold,
    the_daemon_compacts_between_bursts,
    status_shows_files_per_partition_and_the_backlog,
    random_live_changes_and_crashes_stay_exact
);

async fn appends_add_a_file_and_every_other_change_rewrites(db: TestDb) {
    let k = db.kind;
    let bars = db.insert_generated(2, 3, "1m", 11).await;
    let settings = CacheConfig {
        compact_files: 100,
        ..db.config.cache.clone()
    };
    let mut s = Syncer::new(
        db.store.clone(),
        &settings,
        db.config.database.schema.clone(),
    )
    .unwrap();
    s.pass(false).await.unwrap();
    let last = bars
        .iter()
        .filter(|b| b.symbol.as_str() == "SYM001")
        .map(|b| b.ts_micros())
        .max()
        .unwrap();
    let key = PartitionKey::of("SYM001", "1m", last).unwrap();
    let base = files_of(&db, &key).await;
    assert_eq!(base.len(), 1);

    // A plain client inserts the next minute: one new small file, the old one untouched.
    db.plain_sql(&bar_sql(k, "SYM001", last + 60_000_000, "101.5"))
        .await;
    let report = s.pass(false).await.unwrap();
    assert_eq!(
        (report.written, report.appended, report.rows),
        (1, 1, 1),
        "{report:?}"
    );
    let files = files_of(&db, &key).await;
    assert_eq!(files.len(), 2);
    assert!(
        files.contains(&base[0]),
        "the partition's file was not rewritten"
    );
    let commit = last_commit(&db);
    assert!(
        commit.iter().all(|a| a.get("remove").is_none()),
        "an append removes nothing"
    );
    assert_mirrored(&db, "after a plain append").await;

    // quiver's own bulk writer appends too, and a bar of another symbol in the same commit.
    let next = quiver::Bar {
        ts: chrono::DateTime::from_timestamp_micros(last + 120_000_000).unwrap(),
        ..bars
            .iter()
            .find(|b| b.symbol.as_str() == "SYM001")
            .unwrap()
            .clone()
    };
    db.store
        .insert_bars(&[next], OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(s.pass(false).await.unwrap().appended, 1);
    assert_eq!(files_of(&db, &key).await.len(), 3);
    assert_mirrored(&db, "after a bulk append").await;

    // Everything else rewrites the partition into one file: a late bar, an update, a delete,
    // and a replace of the last bar (SQLite's REPLACE runs only the insert trigger).
    let late = bars
        .iter()
        .filter(|b| b.symbol.as_str() == "SYM001")
        .map(|b| b.ts_micros())
        .min()
        .unwrap()
        + 30_000_000;
    let replace = match k {
        Kind::Sqlite => format!(
            "INSERT OR REPLACE INTO market_data VALUES ('SYM001', '1m', {}, '7', '7', '7', '7', '7');",
            last + 120_000_000
        ),
        Kind::Postgres => format!(
            "INSERT INTO market_data VALUES ('SYM001', '1m', {}, '7', '7', '7', '7', '7') \
             ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET close = excluded.close, \
             open = excluded.open, high = excluded.high, low = excluded.low, volume = excluded.volume;",
            ts_sql(k, last + 120_000_000)
        ),
    };
    let changes = [
        ("a late bar", bar_sql(k, "SYM001", late, "100")),
        (
            "an update",
            format!(
                "UPDATE market_data SET volume = '3' WHERE symbol = 'SYM001' AND ts = {}",
                ts_sql(k, last)
            ),
        ),
        (
            "a delete",
            format!(
                "DELETE FROM market_data WHERE symbol = 'SYM001' AND ts = {}",
                ts_sql(k, last + 60_000_000)
            ),
        ),
        ("a replace", replace),
    ];
    for (n, (what, sql)) in changes.into_iter().enumerate() {
        // An append first, so the rewrite has several files to replace.
        let grown = files_of(&db, &key).await.len();
        db.plain_sql(&sql).await;
        let report = s.pass(false).await.unwrap();
        assert_eq!(report.appended, 0, "{what}: {report:?}");
        assert_eq!(
            files_of(&db, &key).await.len(),
            1,
            "{what} rewrites ({grown} files)"
        );
        assert_mirrored(&db, what).await;
        let filler = last + (10 + n as i64) * 60_000_000;
        db.plain_sql(&bar_sql(k, "SYM001", filler, "1")).await;
        s.pass(false).await.unwrap();
    }
    // An insert after the last bar, in the same transaction as an update of an older one: a
    // rewrite, never an append that would miss the update.
    db.plain_sql(&format!(
        "BEGIN; {} UPDATE market_data SET volume = '9' WHERE symbol = 'SYM001' AND ts = {}; COMMIT;",
        bar_sql(k, "SYM001", last + 3_600_000_000, "2"),
        ts_sql(k, last)
    ))
    .await;
    assert_eq!(s.pass(false).await.unwrap().appended, 0);
    assert_mirrored(&db, "an append with an update").await;
    assert_eq!(reader_rows(&db).await, table_rows(&db).await);
}

async fn compaction_merges_small_files_and_changes_no_row(db: TestDb) {
    let k = db.kind;
    let bars = db.insert_generated(2, 2, "1m", 12).await;
    let (settings, mut s) = syncer_compacting_at(&db, 4);
    s.pass(false).await.unwrap();
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let key = PartitionKey::of("SYM002", "1m", last).unwrap();
    let mut most = 0;
    let mut compactions = 0;
    for i in 1..=12 {
        db.plain_sql(&bar_sql(k, "SYM002", last + i * 60_000_000, "5.00000001"))
            .await;
        let report = s.pass(false).await.unwrap();
        assert_eq!(report.appended, 1);
        most = most.max(files_of(&db, &key).await.len());
        if report.compacted > 0 {
            compactions += 1;
            // The compaction is its own commit: rows rearranged, none changed.
            let commit = last_commit(&db);
            let info = commit[0]["commitInfo"].clone();
            assert_eq!(info["operation"], "OPTIMIZE", "{info}");
            for a in &commit[1..] {
                let action = a.get("add").or_else(|| a.get("remove")).unwrap();
                assert_eq!(action["dataChange"], false, "{a}");
            }
        }
        assert_mirrored(&db, &format!("append {i}")).await;
    }
    assert!(compactions >= 2, "compacted {compactions} times");
    assert!(
        most <= settings.compact_files + 1,
        "at most the threshold + 1 files: {most}"
    );

    // `quiver compact` merges every partition that has more than one file into one.
    db.plain_sql(&bar_sql(k, "SYM001", last + 60_000_000, "1"))
        .await;
    s.pass(false).await.unwrap();
    let before = table_rows(&db).await;
    let report = s.compact().await.unwrap();
    assert!(
        report.version.is_some() && report.partitions >= 1,
        "{report:?}"
    );
    let state = Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .unwrap();
    assert!(state.partitions().values().all(|files| files.len() == 1));
    assert_eq!(table_rows(&db).await, before);
    assert_mirrored(&db, "after quiver compact").await;
    let mut readers = Readers::start();
    let delta = db.config.cache.dir.join("delta/market_data");
    assert!(readers.rows("deltalake", &delta, None) == before);
    assert_eq!(
        s.compact().await.unwrap().version,
        None,
        "nothing left to compact"
    );
}

/// `quiver status` reports files per partition (max and mean) and the partitions past the
/// compaction threshold (8 by default); `quiver compact` clears them.
async fn status_shows_files_per_partition_and_the_backlog(db: TestDb) {
    let k = db.kind;
    let bars = db.insert_generated(2, 2, "1m", 13).await;
    let partitions: std::collections::BTreeSet<PartitionKey> = bars
        .iter()
        .map(|b| PartitionKey::of(b.symbol.as_str(), "1m", b.ts_micros()).unwrap())
        .collect();
    // A syncer that never compacts, so one partition grows past the CLI's threshold.
    let (_, mut s) = syncer_compacting_at(&db, 100);
    s.pass(false).await.unwrap();
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let key = PartitionKey::of("SYM002", "1m", last).unwrap();
    for i in 1..=9 {
        db.plain_sql(&bar_sql(k, "SYM002", last + i * 60_000_000, "5"))
            .await;
        assert_eq!(s.pass(false).await.unwrap().appended, 1);
    }
    assert_eq!(files_of(&db, &key).await.len(), 10);

    let status = |args: &[&str]| {
        let out = db.quiver(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value =
        serde_json::from_str(&status(&["status", "--format", "json"])).unwrap();
    let n = partitions.len() as f64;
    assert_eq!(json["partitions"], partitions.len());
    assert_eq!(json["max_files_per_partition"], 10);
    let mean = json["mean_files_per_partition"].as_f64().unwrap();
    assert!((mean - (n - 1.0 + 10.0) / n).abs() < 1e-9, "{json}");
    assert_eq!(json["compaction_backlog"], 1);
    let text = status(&["status"]);
    assert!(
        text.contains(&format!(
            "{:.2} on average, 10 at most; 1 partitions due for compaction",
            (n + 9.0) / n
        )),
        "{text}"
    );

    status(&["compact"]);
    let json: serde_json::Value =
        serde_json::from_str(&status(&["status", "--format", "json"])).unwrap();
    assert_eq!(json["max_files_per_partition"], 1, "{json}");
    assert_eq!(json["mean_files_per_partition"], 1.0, "{json}");
    assert_eq!(json["compaction_backlog"], 0, "{json}");
    assert_mirrored(&db, "after quiver compact").await;
}

/// Between passes, [`Syncer::compact_idle`] merges partitions holding half the threshold of
/// files, most first, a chunk per commit, and says when none is due.
async fn idle_compaction_merges_before_the_threshold(db: TestDb) {
    let k = db.kind;
    let bars = db.insert_generated(3, 2, "1m", 12).await;
    let (_, mut s) = syncer_compacting_at(&db, 8);
    s.pass(false).await.unwrap();
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let keys: Vec<PartitionKey> = ["SYM001", "SYM002", "SYM003"]
        .iter()
        .map(|s| PartitionKey::of(s, "1m", last).unwrap())
        .collect();
    // SYM001 gets four appends, SYM002 two, SYM003 none.
    for i in 1..=4i64 {
        let mut sql = bar_sql(k, "SYM001", last + i * 60_000_000, "1.00000001");
        if i <= 2 {
            sql.push_str(&bar_sql(k, "SYM002", last + i * 60_000_000, "2.5"));
        }
        db.plain_sql(&sql).await;
        s.pass(false).await.unwrap();
    }
    assert_eq!(files_of(&db, &keys[0]).await.len(), 5);
    assert_eq!(files_of(&db, &keys[1]).await.len(), 3);
    let before = table_rows(&db).await;
    let report = s.compact_idle().await.unwrap().expect("SYM001 is due");
    assert_eq!(report.partitions, 1, "{report:?}");
    // The month's big file stays; the four appended files become one.
    assert_eq!(files_of(&db, &keys[0]).await.len(), 2);
    assert_eq!(
        files_of(&db, &keys[1]).await.len(),
        3,
        "below half the threshold"
    );
    assert_eq!(files_of(&db, &keys[2]).await.len(), 1);
    assert!(
        s.compact_idle().await.unwrap().is_none(),
        "nothing else due"
    );
    assert_eq!(table_rows(&db).await, before);
    assert_mirrored(&db, "after idle compaction").await;
    let commit = last_commit(&db);
    assert_eq!(commit[0]["commitInfo"]["operation"], "OPTIMIZE");
}

/// Kills the daemon when the test ends, failed or not.
/// The daemon merges an appended-to partition while it is idle, long before the partition
/// reaches the threshold.
async fn the_daemon_compacts_between_bursts(db: TestDb) {
    let k = db.kind;
    std::fs::write(
        db.dir.path().join("config.toml"),
        "[cache]\ncompact_files = 4\n",
    )
    .unwrap();
    let bars = db.insert_generated(1, 2, "1m", 12).await;
    let _daemon = db.spawn(
        quiver(&db)
            .args(["sync", "--watch", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let limit = std::time::Duration::from_secs(30);
    db.wait_mirrored(Some(bars.len() as u64), limit).await;
    let last = bars.iter().map(|b| b.ts_micros()).max().unwrap();
    let key = PartitionKey::of("SYM001", "1m", last).unwrap();
    for i in 1..=3i64 {
        db.plain_sql(&bar_sql(k, "SYM001", last + i * 60_000_000, "3.14159265"))
            .await;
        db.wait_mirrored(Some(bars.len() as u64 + i as u64), limit)
            .await;
    }
    // Four files would be within the threshold; idle compaction merges the appended ones.
    let started = std::time::Instant::now();
    while files_of(&db, &key).await.len() > 2 {
        assert!(started.elapsed() < limit, "the daemon never compacted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_mirrored(&db, "after the daemon compacted").await;
}

/// A deterministic generator (xorshift), the same sequence on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn quiver(db: &TestDb) -> Command {
    db.quiver(&[])
}

/// Runs `quiver <args>`; with a failpoint, kills it with SIGKILL if it gets there. Returns
/// whether it was killed.
fn run_maybe_killed(db: &TestDb, args: &[&str], point: Option<&str>) -> bool {
    let mut cmd = quiver(db);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(p) = point {
        cmd.env("QUIVER_PAUSE_AT", p);
    }
    let mut child = db.spawn(&mut cmd);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if point.is_some_and(|p| line == format!("quiver: paused at {p}")) {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        said.push(line);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "quiver {args:?} failed: {said:#?}");
    false
}

async fn random_live_changes_and_crashes_stay_exact(db: TestDb) {
    let k = db.kind;
    std::fs::write(
        db.dir.path().join("config.toml"),
        "[cache]\ncompact_files = 3\ncheckpoint_interval = 4\n",
    )
    .unwrap();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ if k == Kind::Sqlite { 3 } else { 4 });
    let symbols = ["AAA", "BTC/USDT", "^IDX"];
    let base = 1_717_200_000_000_000i64; // 2024-06-01
    // Each symbol's newest bar, so most inserts are appends, as a live feed writes them.
    let mut newest = [base; 3];
    let mut readers = Readers::start();
    let delta = db.config.cache.dir.join("delta/market_data");
    let points = [
        "after-file",
        "after-commit",
        "view-partition",
        "checkpoint-before-pointer",
    ];
    let mut kills = 0;
    for step in 0..40 {
        let mut sql = String::new();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(3) as usize;
            let symbol = symbols[i];
            let op = rng.below(10);
            let price = format!("{}.{:08}", 1 + rng.below(1000), rng.below(100_000_000));
            let stmt = match op {
                // Appends: the next minute or two after the newest bar (sometimes a new month).
                0..=5 => {
                    newest[i] += (1 + rng.below(2) as i64) * 60_000_000
                        + if rng.below(20) == 0 {
                            31 * 86_400_000_000
                        } else {
                            0
                        };
                    bar_sql(k, symbol, newest[i], &price)
                }
                // A late bar somewhere in the past (another partition), if the slot is free.
                6 => {
                    let ts = ts_sql(k, base - 1_000_000 - rng.below(40) as i64 * 3_600_000_000);
                    let values = format!(
                        "('{symbol}', '1m', {ts}, '{price}', '{price}', '{price}', '{price}', '1')"
                    );
                    match k {
                        Kind::Sqlite => {
                            format!("INSERT OR IGNORE INTO market_data VALUES {values};")
                        }
                        Kind::Postgres => format!(
                            "INSERT INTO market_data VALUES {values} ON CONFLICT DO NOTHING;"
                        ),
                    }
                }
                7 => format!(
                    "UPDATE market_data SET volume = '{price}' WHERE symbol = '{symbol}' AND ts >= {};",
                    ts_sql(k, newest[i] - rng.below(5) as i64 * 60_000_000)
                ),
                _ => format!(
                    "DELETE FROM market_data WHERE symbol = '{symbol}' AND ts = {};",
                    ts_sql(k, newest[i] - rng.below(3) as i64 * 60_000_000)
                ),
            };
            sql.push_str(&stmt);
        }
        db.plain_sql(&format!("BEGIN; {sql} COMMIT;")).await;
        // A pass, a compaction, or one of them killed at a random step; then a pass that
        // completes.
        let args: &[&str] = if rng.below(5) == 0 {
            &["compact"]
        } else {
            &["sync"]
        };
        let point = (rng.below(3) == 0).then(|| points[rng.below(points.len() as u64) as usize]);
        if run_maybe_killed(&db, args, point) {
            kills += 1;
        }
        run_maybe_killed(&db, &["sync"], None);
        let context = format!("step {step} ({args:?}, killed at {point:?})");
        assert_mirrored(&db, &context).await;
        let table = table_rows(&db).await;
        assert!(
            reader_rows(&db).await == table,
            "{context}: quiver's reader"
        );
        assert!(
            readers.rows("deltalake", &delta, None) == table,
            "{context}: deltalake"
        );
        // A backtest's read of each series: a warmup and a limit around a random bar, over
        // partitions of one or several files.
        let reader = quiver::read::Reader::open(&db.config).unwrap();
        for symbol in symbols {
            let series: Vec<&Row> = table.iter().filter(|r| r.0 == symbol).collect();
            if series.is_empty() {
                continue;
            }
            let at = rng.below(series.len() as u64) as usize;
            let (warmup, limit) = (rng.below(40) as usize, 1 + rng.below(40) as usize);
            let request = BarsRequest::new(symbol.parse().unwrap(), "1m".parse().unwrap())
                .with_start(ts_from_micros(series[at].2).unwrap())
                .with_warmup(warmup)
                .with_limit(limit);
            let bars = reader.bars(&request).await.unwrap();
            let got: Vec<Row> = bars.to_bars().unwrap().iter().map(row_of).collect();
            let want: Vec<Row> = series[at.saturating_sub(warmup)..(at + limit).min(series.len())]
                .iter()
                .map(|r| (*r).clone())
                .collect();
            assert!(
                got == want,
                "{context}: {symbol} from its bar {at}, warmup {warmup}, limit {limit}"
            );
            assert_eq!(bars.warmup, at.min(warmup), "{context}: {symbol} warmup");
        }
    }
    assert!(kills >= 3, "the run was killed {kills} times");
    let state = Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .unwrap();
    assert!(
        state.rows() > 50,
        "the run left data to compare ({})",
        state.rows()
    );
}
