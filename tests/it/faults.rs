//! Faults the daemon must survive without losing a row, each on the real servers: its
//! PostgreSQL backends terminated mid-pass, its LISTEN connection killed, SQLite locked by
//! another writer past the busy timeout, the cache's disk full, the cache folder read-only,
//! and `kill -9` at random moments. After each, the cache converges to exactly the table, and
//! what was published meanwhile was always the table at some committed state.
//!
//! Every test prints how many faults it caused (`cargo test -- --nocapture faults` shows them);
//! the table of faults in docs/MANUAL.md comes from those lines.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use quiver::OnConflict;
use quiver::cache::Cache;
use sqlx::Connection;

use crate::both;
use crate::harness::{Kind, Spawned, TestDb, generated, pg_url};
use crate::sync::{Row, assert_mirrored, delta_rows, reader_rows, table_rows};

const CATCH_UP: Duration = Duration::from_secs(90);

/// The test's PostgreSQL URL with an `application_name` of its own, so the test can find (and
/// terminate) the daemon's backends and no other test's.
fn named_url(db: &TestDb) -> String {
    let url = &db.config.database.url;
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={}", app_name(db))
}

fn app_name(db: &TestDb) -> String {
    db.config
        .database
        .schema
        .clone()
        .expect("a PostgreSQL test")
}

/// Bars of `symbol` on day `day` (of March 2024), one an hour, every price `price`.
fn day_of_bars(symbol: &str, day: u32, price: &str) -> Vec<quiver::Bar> {
    let price = rust_decimal::Decimal::from_str_exact(price).unwrap();
    (0..24)
        .map(|h| quiver::Bar {
            symbol: quiver::Symbol::parse(symbol).unwrap(),
            timeframe: quiver::Timeframe::parse("1h").unwrap(),
            ts: format!("2024-03-{day:02}T{h:02}:00:00Z").parse().unwrap(),
            open: price,
            high: price,
            low: price,
            close: price,
            volume: rust_decimal::Decimal::new(15, 1),
        })
        .collect()
}

async fn insert(db: &TestDb, bars: &[quiver::Bar]) {
    db.store
        .insert_bars(bars, OnConflict::Replace)
        .await
        .unwrap();
}

/// Terminates every backend of the test's daemon whose last statement matches `query` (a
/// LIKE pattern); returns how many it terminated.
async fn terminate_backends(db: &TestDb, admin: &mut sqlx::PgConnection, query: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND query LIKE $2 AND pid <> pg_backend_pid()",
    )
    .bind(app_name(db))
    .bind(query)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// The daemon's PostgreSQL backends terminated again and again while writers commit: every
/// failed pass is retried, and the cache ends exactly equal to the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_its_backends_terminated_mid_pass() {
    let db = TestDb::new(Kind::Postgres).await;
    insert(&db, &generated(8, 5, "1h", 3)).await;
    let daemon = LoggedDaemon::start(&db);
    db.wait_mirrored(None, CATCH_UP).await;

    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    let mut terminated = 0;
    let mut commits = 0;
    for i in 0..60u32 {
        // A commit of one new day for one symbol, then (a moment into the pass it wakes)
        // every backend of the daemon terminated: the pool's, the listener's.
        let symbol = format!("W{:02}", i % 7);
        insert(
            &db,
            &day_of_bars(&symbol, 1 + i % 28, &format!("{i}.12345678")),
        )
        .await;
        commits += 1;
        tokio::time::sleep(Duration::from_millis(u64::from(i % 5) * 15)).await;
        terminated += terminate_backends(&db, &mut admin, "%").await;
    }
    assert!(terminated >= 60, "only {terminated} backends terminated");
    db.wait_mirrored(Some(db.count().await as u64), CATCH_UP)
        .await;
    assert_mirrored(&db, "after the terminations").await;
    let log = daemon.stop();
    assert!(
        log.contains("sync pass failed") || log.contains("reconnecting"),
        "{log}"
    );
    println!(
        "faults: {terminated} daemon backends terminated during {commits} commits; rows lost: 0"
    );
}

/// The LISTEN connection killed 100 times while commits keep coming. With the poll interval an
/// hour, only notifications wake the daemon: each commit is still mirrored, because the
/// listener re-LISTENs and wakes a pass after every reconnection (a notification sent while it
/// was away is lost, the change log is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_is_mirrored_while_the_listen_connection_is_killed() {
    let db = TestDb::new(Kind::Postgres).await;
    insert(&db, &day_of_bars("BASE", 1, "1")).await;
    let config = db.file("slow-poll.toml", "[sync]\npoll_interval = \"1h\"\n");
    let daemon = LoggedDaemon::start_with(&db, Some(config.to_str().unwrap()));
    db.wait_mirrored(Some(24), CATCH_UP).await;

    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    let mut kills = 0;
    let mut rows = 24;
    while kills < 100 {
        // Wait for the listener to be back, then kill it and commit while it is away.
        let started = Instant::now();
        loop {
            let n = terminate_backends(&db, &mut admin, "LISTEN%").await;
            if n > 0 {
                kills += n;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the listener never came back after {kills} kills"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let symbol = format!("L{:03}", kills);
        insert(&db, &day_of_bars(&symbol, 2, "2.5")).await;
        rows += 24;
        db.wait_mirrored(Some(rows), CATCH_UP).await;
    }
    assert_mirrored(&db, "after 100 listener kills").await;
    let log = daemon.stop();
    assert!(log.contains("reconnecting"), "{log}");
    println!("faults: LISTEN connection killed {kills} times; {kills} commits, all mirrored");
}

/// Another SQLite writer holds the write lock for longer than the busy timeout (10 s) while a
/// change waits to be mirrored: the daemon's pass fails (logged), is retried, and converges
/// once the lock is released; the locker's own commit is mirrored too. A quiver write that
/// meets the lock fails cleanly after the timeout and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_retries_while_sqlite_is_locked_past_the_busy_timeout() {
    let db = TestDb::new(Kind::Sqlite).await;
    insert(&db, &day_of_bars("BASE", 1, "1")).await;
    // Pending when the daemon starts: its first pass must take the write lock (to close the
    // change log's epoch), and another writer holds it.
    let mut locker = sqlx::SqliteConnection::connect(&db.config.database.url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO market_data VALUES ('LOCKED', '1h', 1709424000000000, '1', '1', '1', '1', '1')",
    )
    .execute(&mut locker)
    .await
    .unwrap();
    let daemon = LoggedDaemon::start(&db);
    let blocked = db
        .store
        .insert_bars(&day_of_bars("WAITING", 2, "2"), OnConflict::Error)
        .await;
    assert!(blocked.is_err(), "a write past the busy timeout fails");
    let failed = daemon.wait_for("sync pass failed");
    assert!(
        failed.contains("locked"),
        "the failure names the lock: {failed}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    db.wait_mirrored(Some(24 + 1), CATCH_UP).await;
    assert_mirrored(&db, "after the lock").await;
    daemon.kill();
    println!("faults: SQLite write lock held past the 10 s busy timeout; rows lost: 0");
}

/// A small filesystem of the test's own (tmpfs), unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "quiver-test"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} (needs root, as CI runs): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial block too.
    while f.write(&[7u8]).is_ok_and(|n| n > 0) {}
    path
}

/// `quiver sync --watch` with its log copied line by line to a file, so a test can wait for a
/// line while the daemon runs.
struct LoggedDaemon {
    child: Spawned,
    copy: std::thread::JoinHandle<()>,
    log: PathBuf,
}

impl LoggedDaemon {
    fn start(db: &TestDb) -> LoggedDaemon {
        LoggedDaemon::start_with(db, None)
    }

    /// With `--config FILE`.
    fn start_with(db: &TestDb, config: Option<&str>) -> LoggedDaemon {
        let mut args = vec![];
        if let Some(c) = config {
            args.extend(["--config", c]);
        }
        args.extend(["sync", "--watch"]);
        let mut cmd = db.quiver(&args);
        if db.kind == Kind::Postgres {
            cmd.env("QUIVER_DATABASE_URL", named_url(db));
        }
        let mut child = db.spawn(cmd.stdout(Stdio::null()).stderr(Stdio::piped()));
        let stderr = child.stderr.take().unwrap();
        let log = db.path("daemon.log");
        let file = log.clone();
        let copy = std::thread::spawn(move || {
            use std::io::Write;
            let mut out = std::fs::File::create(&file).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
            }
        });
        LoggedDaemon { child, copy, log }
    }

    /// What it has logged so far.
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it has logged `what`; returns the log.
    fn wait_for(&self, what: &str) -> String {
        let started = Instant::now();
        loop {
            let said = self.said();
            if said.contains(what) {
                return said;
            }
            assert!(
                started.elapsed() < CATCH_UP,
                "the daemon never logged {what:?}: {said}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no destructor, no cleanup.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.copy.join().unwrap();
    }

    /// SIGTERM; asserts a clean exit (status 0) and returns the whole log.
    fn stop(mut self) -> String {
        // SAFETY: `kill` with our own child's pid and a standard signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        let LoggedDaemon { copy, log, .. } = self;
        copy.join().unwrap();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "the daemon failed: {log}");
        log
    }
}

/// The cache's disk fills up during a pass: the last version stays readable and exact, the
/// daemon retries, and it catches up once space is back.
async fn cache_disk_full(db: TestDb) {
    let _mount = Mount::tmpfs(&db.config.cache.dir, "6m");
    insert(&db, &generated(4, 3, "1h", 9)).await;
    let daemon = LoggedDaemon::start(&db);
    db.wait_mirrored(None, CATCH_UP).await;
    let before = table_rows(&db).await;

    let filler = fill(&db.config.cache.dir);
    // Enough new bars that their files cannot fit in what is left.
    insert(&db, &generated(40, 10, "1h", 10)).await;
    let failed = daemon.wait_for("sync pass failed");
    assert!(
        failed.contains("No space left on device"),
        "the failure names the cause: {failed}"
    );
    // The published version is the one before, whole, through quiver's reader and the files.
    assert_eq!(reader_rows(&db).await, before, "quiver's reader");
    let mut files = delta_rows(&db).await;
    files.sort();
    assert_eq!(files, before, "the Delta table's files");

    std::fs::remove_file(&filler).unwrap();
    db.wait_mirrored(Some(db.count().await as u64), CATCH_UP)
        .await;
    assert_mirrored(&db, "after space came back").await;
    daemon.kill();
    println!(
        "faults: cache disk full during a pass ({}); rows lost: 0",
        db.kind_name()
    );
}

/// The cache folder turns read-only (a remount): reads go on, passes fail and are retried, and
/// the daemon catches up once it is writable again.
async fn cache_folder_read_only(db: TestDb) {
    let mount = Mount::tmpfs(&db.config.cache.dir, "64m");
    insert(&db, &generated(3, 3, "1h", 11)).await;
    let daemon = LoggedDaemon::start(&db);
    db.wait_mirrored(None, CATCH_UP).await;
    let before = table_rows(&db).await;

    mount.remount("ro");
    insert(&db, &day_of_bars("READONLY", 4, "4.25")).await;
    let failed = daemon.wait_for("sync pass failed");
    assert!(failed.contains("Read-only file system"), "{failed}");
    assert_eq!(reader_rows(&db).await, before, "reads need no write access");

    mount.remount("rw");
    db.wait_mirrored(Some(before.len() as u64 + 24), CATCH_UP)
        .await;
    assert_mirrored(&db, "after the folder was writable again").await;
    daemon.kill();
    println!(
        "faults: cache folder read-only during passes ({}); rows lost: 0",
        db.kind_name()
    );
}

/// A deterministic generator (xorshift), the same sequence on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn digest(rows: &[Row]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rows.hash(&mut h);
    h.finish()
}

/// `kill -9` of the daemon at random moments, over many iterations, while a writer commits
/// inserts, appends, late bars, updates and deletes. After every kill the published version
/// (through quiver's reader and through the Delta table's files) is the table at some committed
/// state; at the end the cache equals the table.
async fn kill_9_at_random_moments(db: TestDb) {
    let k = db.kind;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ k as u64);
    insert(&db, &generated(3, 2, "1h", 21)).await;
    let mut committed: HashSet<u64> = HashSet::from([digest(&table_rows(&db).await)]);
    let iterations = 30;
    let mut kills = 0;
    let mut checked = 0;
    for i in 0..iterations {
        let daemon = LoggedDaemon::start(&db);
        // A few commits while the daemon starts and passes, then kill -9 at a random moment.
        for _ in 0..1 + rng.below(3) {
            let symbol = format!("SYM00{}", 1 + rng.below(3));
            match rng.below(4) {
                0 => {
                    let day = 1 + rng.below(28) as u32;
                    insert(&db, &day_of_bars(&symbol, day, &format!("{i}.5"))).await;
                }
                1 => {
                    db.plain_sql(&format!(
                        "UPDATE market_data SET close = high, volume = '{i}.00000001' \
                         WHERE symbol = '{symbol}' AND ts IN \
                         (SELECT ts FROM market_data WHERE symbol = '{symbol}' ORDER BY ts LIMIT 5)"
                    ))
                    .await;
                }
                2 => {
                    db.plain_sql(&format!(
                        "DELETE FROM market_data WHERE symbol = '{symbol}' AND ts IN \
                         (SELECT ts FROM market_data WHERE symbol = '{symbol}' ORDER BY ts DESC LIMIT 3)"
                    ))
                    .await;
                }
                _ => {
                    // Appends after the last bar of a series.
                    insert(&db, &day_of_bars(&symbol, 28 + (i % 2) as u32, "7.77")).await;
                }
            }
            committed.insert(digest(&table_rows(&db).await));
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        daemon.kill();
        kills += 1;

        if Cache::new(&db.config.cache.dir)
            .current()
            .await
            .unwrap()
            .is_some()
        {
            let read = reader_rows(&db).await;
            assert!(
                committed.contains(&digest(&read)),
                "iteration {i}: quiver's reader sees a state the table never had ({} rows)",
                read.len()
            );
            let mut files = delta_rows(&db).await;
            files.sort();
            assert!(
                committed.contains(&digest(&files)),
                "iteration {i}: the Delta files hold a state the table never had"
            );
            checked += 1;
        }
    }
    let daemon = LoggedDaemon::start(&db);
    db.wait_mirrored(Some(db.count().await as u64), CATCH_UP)
        .await;
    assert_mirrored(&db, "after the last kill -9").await;
    // The cache may have been mirrored before this daemon started (by the one killed last):
    // a SIGTERM before the daemon watches for it would kill it outright, so wait until it
    // runs.
    daemon.wait_for("watching for changes");
    daemon.stop();
    assert!(
        checked > iterations / 2,
        "only {checked} kills found a version"
    );
    println!(
        "faults: daemon killed with SIGKILL {kills} times ({k:?}), {checked} published versions checked; rows lost: 0"
    );
}

impl TestDb {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

both!(
    cache_disk_full,
    cache_folder_read_only,
    kill_9_at_random_moments
);

/// A PostgreSQL server of the test's own (initdb in a temp folder, a free port), so a test
/// can stop and start it without touching the developer's server. Stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if Self::as_root() {
            // initdb refuses to run as root: the server runs as `postgres`.
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster's folder");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, bin, port };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.up();
        cluster
    }

    fn as_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> std::process::Command {
        if Self::as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            std::process::Command::new(self.bin.join(tool))
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().expect(tool);
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The whole PostgreSQL server stopped under the running daemon, then started again (a
/// server of the test's own, never the developer's): the daemon retries with backoff, its
/// listener reconnects, and a commit made after the restart is mirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_a_postgres_restart() {
    let cluster = Cluster::start();
    let db = TestDb::postgres_on(&cluster.url()).await;
    insert(&db, &day_of_bars("BEFORE", 1, "1")).await;
    let daemon = LoggedDaemon::start(&db);
    db.wait_mirrored(Some(24), CATCH_UP).await;

    cluster.down();
    // Down until the daemon has noticed: a pass fails once the pool gives up waiting for a
    // connection (10 s), and says so.
    daemon.wait_for("sync pass failed");
    cluster.up();
    // The pool of this test reconnects by itself (connections are checked before use).
    insert(&db, &day_of_bars("AFTER", 2, "2")).await;
    db.wait_mirrored(Some(48), CATCH_UP).await;
    assert_mirrored(&db, "after the restart").await;
    let said = daemon.said();
    assert!(
        said.contains("cache caught up"),
        "the recovery is logged: {said}"
    );
    daemon.kill();
    println!("faults: PostgreSQL server stopped and started under the daemon; rows lost: 0");
}
