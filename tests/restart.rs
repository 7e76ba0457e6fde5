//! The daemon survives the real PostgreSQL server being stopped and started again.
//!
//! This is a test binary of its own: cargo runs test binaries one after another, so stopping
//! the server here cannot break the parallel tests of the main suite.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Kind, TestDb};

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster under /etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// Starts the server again even if the test fails half-way.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        let up = Command::new("pg_isready")
            .args(["-h", "127.0.0.1", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if !up {
            pg_ctl("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_a_postgres_restart() {
    let db = TestDb::new(Kind::Postgres).await;
    let insert = |symbol: &str| {
        format!(
            "INSERT INTO market_data VALUES ('{symbol}', '1d', '2024-06-03T00:00:00Z', '1', '2', '1', '2', '3');"
        )
    };
    db.plain_sql(&insert("BEFORE")).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["sync", "--watch"])
        .current_dir(db.dir.path())
        .envs(db.env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    db.wait_mirrored(Some(1), Duration::from_secs(20)).await;

    let _guard = Restart;
    pg_ctl("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg_ctl("start");
    for _ in 0..60 {
        let ready = Command::new("pg_isready")
            .args(["-h", "127.0.0.1", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The pool of this test reconnects by itself (connections are checked before use).
    let mut wrote = false;
    for _ in 0..40 {
        let ok = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET search_path = {}; {}",
            db.config.database.schema.clone().unwrap(),
            insert("AFTER")
        )))
        .execute(db.store.postgres_pool().unwrap())
        .await
        .is_ok();
        if ok {
            wrote = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(wrote, "could not write after the restart");
    db.wait_mirrored(Some(2), Duration::from_secs(30)).await;

    // SAFETY: `kill` with our own child's pid and a standard signal number.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("sync pass failed") || stderr.contains("notification connection"),
        "the outage is logged: {stderr}"
    );
}
