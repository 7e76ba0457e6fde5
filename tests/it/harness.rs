//! The shared test harness: every test gets its own temp dir and its own database (a SQLite
//! file, or a PostgreSQL schema on the real server), so the suite runs in parallel.
//!
//! PostgreSQL is never optional here: if the server named by `QUIVER_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) is unreachable, the PostgreSQL tests fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use quiver::Store;
use quiver::config::{CacheConfig, Config, DatabaseConfig, ReadConfig, SyncConfig};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("QUIVER_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// One test's database and folder.
pub struct TestDb {
    pub kind: Kind,
    pub config: Config,
    pub store: Store,
    pub dir: tempfile::TempDir,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// A fresh, empty database (no migrations applied).
    pub async fn empty(kind: Kind) -> TestDb {
        TestDb::empty_on(kind, &pg_url()).await
    }

    /// A fresh database with quiver's migrations applied, in a schema of its own on the
    /// PostgreSQL server at `url` (a private server of a test's own, say).
    pub async fn postgres_on(url: &str) -> TestDb {
        let db = TestDb::empty_on(Kind::Postgres, url).await;
        db.store.migrate().await.expect("migrate");
        db
    }

    async fn empty_on(kind: Kind, pg_url: &str) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = match kind {
            Kind::Sqlite => DatabaseConfig {
                url: format!("sqlite://{}", dir.path().join("market.db").display()),
                schema: None,
                max_connections: 4,
            },
            Kind::Postgres => {
                let schema = format!(
                    "quiver_t{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let admin = sqlx::PgPool::connect(pg_url)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {pg_url} is required: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&admin)
                .await
                .expect("drop stale schema");
                admin.close().await;
                DatabaseConfig {
                    url: pg_url.to_string(),
                    schema: Some(schema),
                    max_connections: 4,
                }
            }
        };
        let config = Config {
            database,
            cache: CacheConfig::new(dir.path().join("cache")),
            sync: SyncConfig {
                poll_interval: std::time::Duration::from_millis(100),
                ..SyncConfig::default()
            },
            read: ReadConfig::default(),
        };
        let store = Store::connect(&config.database).await.expect("connect");
        TestDb {
            kind,
            config,
            store,
            dir,
        }
    }

    /// A fresh database with quiver's migrations applied.
    pub async fn new(kind: Kind) -> TestDb {
        let db = TestDb::empty(kind).await;
        db.store.migrate().await.expect("migrate");
        db
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to a file in the test's folder and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    /// Environment for running the binary against this database.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("QUIVER_DATABASE_URL", self.config.database.url.clone()),
            (
                "QUIVER_CACHE_DIR",
                self.config.cache.dir.display().to_string(),
            ),
        ];
        if let Some(s) = &self.config.database.schema {
            env.push(("QUIVER_DATABASE_SCHEMA", s.clone()));
        }
        env
    }

    /// The `quiver` binary in the test's folder, pointed at this database and cache, with
    /// every other `QUIVER_*` setting of the developer's environment removed.
    pub fn quiver(&self, args: &[&str]) -> std::process::Command {
        let mut c = quiver_in(self.dir.path(), args);
        c.envs(self.env());
        c
    }

    /// Starts `quiver <args>` (stdout and stderr as `cmd` says) as a [`Spawned`] process,
    /// which is killed if the test ends before it does.
    pub fn spawn(&self, cmd: &mut std::process::Command) -> Spawned {
        Spawned(cmd.spawn().expect("start quiver"))
    }

    /// Number of rows in market_data.
    pub async fn count(&self) -> i64 {
        match self.kind {
            Kind::Sqlite => sqlx::query_scalar("SELECT count(*) FROM market_data")
                .fetch_one(self.store.sqlite_pool().unwrap())
                .await
                .unwrap(),
            Kind::Postgres => sqlx::query_scalar("SELECT count(*) FROM market_data")
                .fetch_one(self.store.postgres_pool().unwrap())
                .await
                .unwrap(),
        }
    }

    /// Polls `verify` until the cache equals the table (holding `rows` rows, when given, else
    /// at least one); panics after `limit`. For tests of the daemon, which syncs on its own.
    pub async fn wait_mirrored(&self, rows: Option<u64>, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        let cache = quiver::cache::Cache::new(&self.config.cache.dir);
        loop {
            if cache.current().await.ok().flatten().is_some()
                && let Ok(r) = quiver::sync::verify(&self.store, &cache).await
                && r.differences.is_empty()
                && rows.map_or(r.rows > 0, |n| r.rows == n)
            {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the daemon did not catch up within {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs plain SQL through a separate, raw connection: what `sqlite3` or `psql` would do.
    pub async fn plain_sql(&self, sql: &str) {
        use sqlx::Connection;
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.config.database.url)
                    .await
                    .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.config.database.url)
                    .await
                    .unwrap();
                let schema = self.config.database.schema.clone().unwrap();
                let sql = format!("SET search_path = {schema}; {sql}");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.config.database.schema.clone() {
            let url = self.config.database.url.clone();
            // Drop runs outside async context: a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&url).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&pool)
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

/// The `quiver` binary run in `dir` with every `QUIVER_*` setting of the developer's
/// environment removed: the one way the tests run the binary.
pub fn quiver_in(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
    c.args(args).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("QUIVER_") {
            c.env_remove(name);
        }
    }
    c
}

/// Deterministic synthetic bars: `symbols` symbols, `days` trading days of `timeframe` bars.
pub fn generated(symbols: usize, days: usize, timeframe: &str, seed: u64) -> Vec<quiver::Bar> {
    quiver::generate::generate_vec(&quiver::generate::GenerateOptions::new(
        symbols,
        days,
        timeframe.parse().expect("timeframe"),
        seed,
    ))
    .expect("generate")
}

impl TestDb {
    /// Writes [`generated`] bars into the table with quiver's bulk writer and returns them.
    pub async fn insert_generated(
        &self,
        symbols: usize,
        days: usize,
        timeframe: &str,
        seed: u64,
    ) -> Vec<quiver::Bar> {
        let bars = generated(symbols, days, timeframe, seed);
        self.store
            .insert_bars(&bars, quiver::OnConflict::Error)
            .await
            .expect("insert generated bars");
        bars
    }
}

/// The repo's bundled sample data.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/samples")
        .join(name)
}

/// Runs one async test body against both backends: `both!(name)` makes `name::sqlite` and
/// `name::postgres` from `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::harness::{Kind, TestDb};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(TestDb::new(Kind::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(TestDb::new(Kind::Postgres).await).await
            }
        }
    )*};
}

/// A child process (a daemon, a paused crash-test run) that is killed with SIGKILL and reaped
/// when dropped: a failing test never leaves a daemon running, or writing its cache.
pub struct Spawned(pub std::process::Child);

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
