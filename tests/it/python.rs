//! The Python side of the suite: a virtualenv with the packages pinned in
//! `tests/py/requirements.txt`, installed from PyPI on first use (once per version of that
//! file, under a lock so parallel tests share it), and the outside readers of the cache
//! (`tests/py/readers.py`) driven through it.
//!
//! The interpreter is `python3` on the PATH, or `QUIVER_TEST_PYTHON`. There is no skip: a
//! machine without Python 3.11 or without access to PyPI fails these tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use crate::sync::Row;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The requirements files the environment is built from, in install order.
const REQUIREMENTS: &[&str] = &["tests/py/requirements.txt"];

/// The virtualenv's folder, created and filled on first use.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let mut key = String::new();
        for r in REQUIREMENTS {
            key.push_str(&std::fs::read_to_string(repo().join(r)).expect("requirements"));
        }
        // FNV-1a: a stable name for this set of pins.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(root).expect("target tmp dir");
        let dir = root.join(format!("py-{hash:016x}"));
        let lock =
            std::fs::File::create(root.join(format!("py-{hash:016x}.lock"))).expect("lock file");
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor `lock` keeps open until the end of this closure.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
            0,
            "lock the venv"
        );
        let ready = dir.join(".ready");
        if !ready.is_file() {
            let _ = std::fs::remove_dir_all(&dir);
            let python = std::env::var("QUIVER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
            run(
                Command::new(&python).args(["-m", "venv"]).arg(&dir),
                "create the test virtualenv",
            );
            for r in REQUIREMENTS {
                run(
                    Command::new(dir.join("bin/python"))
                        .args([
                            "-m",
                            "pip",
                            "install",
                            "--disable-pip-version-check",
                            "-q",
                            "-r",
                        ])
                        .arg(repo().join(r)),
                    &format!("install {r} from PyPI"),
                );
            }
            std::fs::write(&ready, key).expect("mark the venv ready");
        }
        dir
    })
}

/// Runs `command`, failing the test with its output unless it succeeds.
pub fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's interpreter.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// A long-lived `readers.py`: each test pays the imports once.
pub struct Readers {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Readers {
    pub fn start() -> Readers {
        let mut child = Command::new(python())
            .arg(repo().join("tests/py/readers.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start readers.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Readers {
            child,
            stdin,
            stdout,
        }
    }

    /// The rows `reader` reads at `path` (the Delta table, or the plain view for the globs),
    /// at `version` (time travel) or the newest; sorted.
    pub fn try_rows(
        &mut self,
        reader: &str,
        path: &Path,
        version: Option<u64>,
    ) -> Result<Vec<Row>, String> {
        let request = serde_json::json!({
            "reader": reader,
            "path": path.display().to_string(),
            "version": version,
        });
        writeln!(self.stdin, "{request}").expect("write to readers.py");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read readers.py");
        let answer: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("readers.py said {line:?}: {e}"));
        if let Some(e) = answer.get("error") {
            return Err(e.as_str().unwrap_or_default().to_string());
        }
        let mut rows: Vec<Row> = answer["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let s = |i: usize| r[i].as_str().expect("a string").to_string();
                (
                    s(0),
                    s(1),
                    r[2].as_i64().expect("ts"),
                    [s(3), s(4), s(5), s(6), s(7)],
                )
            })
            .collect();
        rows.sort();
        Ok(rows)
    }

    pub fn rows(&mut self, reader: &str, path: &Path, version: Option<u64>) -> Vec<Row> {
        self.try_rows(reader, path, version)
            .unwrap_or_else(|e| panic!("{reader} on {}: {e}", path.display()))
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every outside reader of the newest version, by name.
pub const DELTA_READERS: [&str; 3] = ["deltalake", "polars_delta", "duckdb_delta"];
/// The glob readers of the plain view.
pub const GLOB_READERS: [&str; 2] = ["duckdb_glob", "polars_glob"];
