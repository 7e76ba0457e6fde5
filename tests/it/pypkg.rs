//! The Python package (`python/`): built into a wheel by maturin, installed into the test
//! virtualenv, and its pytest suite (`python/tests`) run on each backend against the real
//! servers and the real `quiver` binary (for the daemon and the quickstart).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::pg_url;
use crate::python::{python, repo, run, venv};

/// Builds the wheel (dev profile, in this build's target folder) and installs it into the
/// test virtualenv, once per test run and under a lock shared with other test processes.
fn installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let target = tmp.parent().expect("CARGO_TARGET_TMPDIR is <target>/tmp");
        let lock = std::fs::File::create(tmp.join("wheel.lock")).expect("lock file");
        // SAFETY: flock on a descriptor `lock` keeps open until the end of this closure.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
            0,
            "lock the wheel build"
        );
        let out = tmp.join("wheel");
        let _ = std::fs::remove_dir_all(&out);
        run(
            Command::new(venv().join("bin/maturin"))
                .args(["build", "--profile", "dev", "--quiet", "-m"])
                .arg(repo().join("python/Cargo.toml"))
                .arg("--interpreter")
                .arg(python())
                .arg("-o")
                .arg(&out)
                .env("CARGO_TARGET_DIR", target),
            "build the wheel with maturin",
        );
        let wheel: PathBuf = std::fs::read_dir(&out)
            .expect("the wheel folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .expect("maturin wrote a wheel");
        run(
            Command::new(python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    "--force-reinstall",
                    "--no-deps",
                ])
                .arg(&wheel),
            "install the wheel",
        );
    });
}

/// Runs the pytest suite on `backend` and checks that every test ran and passed.
fn pytest(backend: &str) {
    installed();
    let basetemp = tempfile::tempdir().expect("temp dir");
    let prefix = format!("quiver_py{}_{backend}_", std::process::id());
    let mut command = Command::new(python());
    command
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"])
        .arg("--basetemp")
        .arg(basetemp.path().join("pytest"))
        .arg(repo().join("python/tests"))
        // Not python/: from there `import quiver` would find the sources, not the wheel.
        .current_dir(basetemp.path())
        .env_remove("QUIVER_DATABASE_URL")
        .env_remove("QUIVER_DATABASE_SCHEMA")
        .env_remove("QUIVER_CACHE_DIR")
        .env("QUIVER_PY_BACKEND", backend)
        .env("QUIVER_TEST_PG_URL", pg_url())
        .env("QUIVER_PY_SCHEMA_PREFIX", &prefix)
        .env("QUIVER_BIN", env!("CARGO_BIN_EXE_quiver"));
    let result = command.output().expect("run pytest");
    if backend == "postgres" {
        drop_schemas(&prefix);
    }
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    println!("{text}");
    assert!(
        result.status.success(),
        "pytest failed on {backend}:\n{text}"
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary:\n{text}"));
    for word in ["skipped", "xfail", "deselected", "error"] {
        assert!(!summary.contains(word), "pytest on {backend}: {summary}");
    }
}

/// Drops the schemas the PostgreSQL run created (they are named after `prefix`).
fn drop_schemas(prefix: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg_url()).await.expect("connect");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
        )
        .bind(prefix)
        .fetch_all(&pool)
        .await
        .expect("list schemas");
        for name in names {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .expect("drop schema");
        }
    });
}

mod python_package {
    #[test]
    fn sqlite() {
        super::pytest("sqlite");
    }

    #[test]
    fn postgres() {
        super::pytest("postgres");
    }
}
