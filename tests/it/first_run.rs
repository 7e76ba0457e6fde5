//! What a newcomer meets in the first hour (issue 32): a database file that is whole when
//! quiver exits, a forgotten `migrate` named as such, `quiver series`, `delete --dry-run`,
//! and the conventions of command-line tools (a closed pipe, `NO_COLOR`, completions, help).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Output, Stdio};

use crate::both;
use crate::harness::{Kind, TestDb, quiver_in, sample};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Rows in the `market_data` of a copy of `db` made without its `-wal` and `-shm` files,
/// as a user who copies or backs up the database file alone gets it.
fn rows_in_a_copy_of(db: &Path) -> i64 {
    let copy = db.with_file_name("copied-alone.db");
    std::fs::copy(db, &copy).expect("copy the database file");
    let conn = rusqlite_open(&copy);
    let n = conn
        .query_row("SELECT count(*) FROM market_data", [], |r| r.get(0))
        .expect("count the copy's rows");
    drop(conn);
    let _ = std::fs::remove_file(&copy);
    n
}

fn rusqlite_open(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open a copy")
}

/// After quickstart, import, copy and a daemon stopped with SIGTERM, the database file alone
/// holds every row: quiver closes its pools, so SQLite checkpoints the write-ahead log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_alone_holds_every_row_when_quiver_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/market.db");
    ok(&quiver_in(dir.path(), &["quickstart"]).output().unwrap());
    assert_eq!(rows_in_a_copy_of(&db), 37043, "after quickstart");

    let bars = sample("nvda-1999-2014.txt");
    let bars = bars.to_str().unwrap();
    let import = ["import", bars, "--symbol", "MORE", "--timeframe", "1d"];
    ok(&quiver_in(dir.path(), &import).output().unwrap());
    assert_eq!(rows_in_a_copy_of(&db), 37043 + 4012, "after import");

    ok(
        &quiver_in(dir.path(), &["copy", "--to", "sqlite://back.db"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        rows_in_a_copy_of(&dir.path().join("back.db")),
        37043 + 4012,
        "the copy's target"
    );

    // The daemon: its change-log upkeep writes to the database too.
    let mut daemon = crate::harness::Spawned(
        quiver_in(dir.path(), &["sync", "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = daemon.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("watching for changes") {
            break;
        }
    }
    ok(&quiver_in(dir.path(), &["delete", "--symbol", "MORE"])
        .output()
        .unwrap());
    ok(&quiver_in(dir.path(), &import).output().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on the child's pid, which has not been reaped (Spawned waits on drop).
    assert_eq!(
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) },
        0
    );
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for _ in lines {}
    assert!(
        !dir.path().join("data/market.db-wal").exists()
            || std::fs::metadata(dir.path().join("data/market.db-wal"))
                .unwrap()
                .len()
                == 0,
        "the write-ahead log is checkpointed and emptied"
    );
    assert_eq!(rows_in_a_copy_of(&db), 37043 + 4012, "after the daemon");
}

both!(
    commands_on_a_database_without_quiver_tables_say_migrate,
    series_lists_the_cache_and_json_keeps_column_order,
    delete_dry_run_and_nothing_to_delete,
);

/// Forgetting `migrate`: every command says to run it (exit 2) instead of a driver's "no such
/// table", and creates no file.
async fn commands_on_a_database_without_quiver_tables_say_migrate(db: TestDb) {
    db.store.migrate().await.unwrap();
    let reverted = db.store.revert().await.unwrap();
    assert!(reverted.is_some());
    db.store.revert().await.unwrap();
    db.store.close().await;
    let bars = sample("nvda-1999-2014.txt");
    let bars = bars.to_str().unwrap();
    for args in [
        vec!["import", bars, "--symbol", "X", "--timeframe", "1d"],
        vec!["verify"],
        vec!["status"],
        vec!["sync"],
        vec!["delete", "--symbol", "X"],
    ] {
        let out = db.quiver(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("quiver: database ")
                && stderr.ends_with("has no quiver tables; run `quiver migrate` first\n"),
            "{args:?}: {stderr}"
        );
    }
    // One migration of two: the missing one is named.
    ok(&db.quiver(&["migrate"]).output().unwrap());
    ok(&db.quiver(&["migrate", "--revert"]).output().unwrap());
    let out = db.quiver(&["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("lacks migration 20261202000001; run `quiver migrate` first"),
        "{}",
        text(&out.stderr)
    );

    if db.kind == Kind::Sqlite {
        // In an empty folder, nothing is created: not the database, not its folder.
        let empty = tempfile::tempdir().unwrap();
        for args in [
            vec!["verify"],
            vec!["import", bars, "--symbol", "X"],
            vec!["import", bars, "--symbol", "X", "--timeframe", "1d"],
            vec!["sync", "--watch"],
        ] {
            let out = quiver_in(empty.path(), &args).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            let made: Vec<_> = std::fs::read_dir(empty.path()).unwrap().collect();
            assert!(made.is_empty(), "{args:?} created {made:?}");
        }
        let out = quiver_in(empty.path(), &["status"]).output().unwrap();
        assert_eq!(
            text(&out.stderr),
            "quiver: database sqlite://data/market.db does not exist (data/market.db is \
             missing); run `quiver migrate` first\n"
        );
    }
}

/// `quiver series` lists what the cache holds, from the manifest alone, in every format;
/// JSON keeps the columns in their order.
async fn series_lists_the_cache_and_json_keeps_column_order(db: TestDb) {
    let generate = [
        "generate",
        "--symbols",
        "2",
        "--days",
        "2",
        "--timeframe",
        "1h",
    ];
    ok(&db.quiver(&generate).output().unwrap());
    let bars = sample("nvda-1999-2014.txt");
    let import = ["import", bars.to_str().unwrap(), "--symbol", "SYM001"];
    ok(&db
        .quiver(&[&import[..], &["--timeframe", "1d"]].concat())
        .output()
        .unwrap());
    let out = db.quiver(&["series"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no cache yet");
    assert!(text(&out.stderr).contains("run `quiver sync` first"));
    ok(&db.quiver(&["sync"]).output().unwrap());
    // The database may go: the listing reads the cache only.
    db.store.close().await;
    let elsewhere = ["--database-url", "sqlite:///nonexistent/none.db"];
    let table = ok(&db
        .quiver(&[&elsewhere[..], &["series"]].concat())
        .output()
        .unwrap());
    let expected = "\
+--------+-----------+----------------------+----------------------+------+
| symbol | timeframe | first                | last                 | bars |
+--------+-----------+----------------------+----------------------+------+
| SYM001 | 1h        | 2024-01-01T14:30:00Z | 2024-01-02T19:30:00Z | 12   |
| SYM001 | 1d        | 1999-01-22T00:00:00Z | 2014-12-31T00:00:00Z | 4012 |
| SYM002 | 1h        | 2024-01-01T14:30:00Z | 2024-01-02T19:30:00Z | 12   |
+--------+-----------+----------------------+----------------------+------+
";
    assert_eq!(table, expected);
    let csv = ok(&db.quiver(&["series", "--format", "csv"]).output().unwrap());
    assert_eq!(
        csv.lines().take(2).collect::<Vec<_>>(),
        [
            "symbol,timeframe,first,last,bars",
            "SYM001,1h,2024-01-01T14:30:00Z,2024-01-02T19:30:00Z,12"
        ]
    );
    let json = ok(&db.quiver(&["series", "--format", "json"]).output().unwrap());
    let keys = |json: &str| -> Vec<String> {
        json.lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next().map(str::to_string))
            .take(5)
            .collect()
    };
    assert_eq!(
        keys(&json),
        ["symbol", "timeframe", "first", "last", "bars"]
    );
    let bars = ok(&db
        .quiver(&[
            "bars",
            "SYM001",
            "--timeframe",
            "1h",
            "--limit",
            "1",
            "--format",
            "json",
        ])
        .output()
        .unwrap());
    assert_eq!(
        keys(&bars),
        ["symbol", "timeframe", "ts", "open", "high"],
        "{bars}"
    );

    // An unknown symbol points to the listing.
    let out = db
        .quiver(&["bars", "NOPE", "--timeframe", "1h"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("`quiver series` lists what is there"),
        "{}",
        text(&out.stderr)
    );
}

/// `delete --dry-run` counts and deletes nothing; a delete that matches nothing is a mistake
/// (a typo in a symbol), not a success.
async fn delete_dry_run_and_nothing_to_delete(db: TestDb) {
    db.insert_generated(1, 2, "1h", 7).await;
    db.insert_generated(1, 1, "1m", 7).await;
    let out = ok(&db
        .quiver(&["delete", "--symbol", "SYM001", "--dry-run"])
        .output()
        .unwrap());
    assert_eq!(
        out,
        "would delete 402 bars (12 1h, 390 1m); nothing deleted (--dry-run)\n"
    );
    assert_eq!(db.count().await, 402);
    for (args, message) in [
        (
            vec!["delete", "--symbol", "SYM009"],
            "quiver: nothing to delete: the database holds no bars of SYM009\n",
        ),
        (
            vec!["delete", "--symbol", "SYM001", "--timeframe", "1d"],
            "quiver: nothing to delete: the database holds no 1d bars of SYM001\n",
        ),
        (
            vec!["delete", "--symbol", "SYM001", "--start", "2030-01-01"],
            "quiver: nothing to delete: the database holds no bars of SYM001 from 2030-01-01 \
             to the last\n",
        ),
    ] {
        let out = db.quiver(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stderr), message);
    }
    let out = ok(&db
        .quiver(&["delete", "--symbol", "SYM001", "--timeframe", "1m"])
        .output()
        .unwrap());
    assert_eq!(out, "deleted 390 bars\n");
    assert_eq!(db.count().await, 12);
}

/// `quiver bars … | head -2`: the reader closes the pipe early; quiver ends quietly with 0,
/// with stderr a pipe closed too (where `eprintln!` would panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let db = TestDb::new(Kind::Sqlite).await;
    db.insert_generated(1, 20, "1m", 3).await;
    ok(&db.quiver(&["sync"]).output().unwrap());
    for close_stderr in [false, true] {
        let mut child = db
            .quiver(&["bars", "SYM001", "--timeframe", "1m", "--format", "csv"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.starts_with("symbol,timeframe,ts"), "{first}");
        drop(stdout);
        let mut stderr = String::new();
        if close_stderr {
            drop(child.stderr.take());
        } else {
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
        }
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "stderr closed: {close_stderr}: {stderr}"
        );
        assert_eq!(stderr, "");
    }
}

/// Logs on a terminal are coloured unless `NO_COLOR` is set.
#[test]
fn no_color_turns_colours_off_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let run = |no_color: bool| -> String {
        // -vv: the connection's debug line, coloured by level on a terminal.
        let mut cmd = quiver_in(dir.path(), &["-vv", "migrate"]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let mut session = rexpect::session::spawn_command(cmd, Some(10_000)).unwrap();
        session.exp_eof().unwrap()
    };
    let coloured = run(false);
    assert!(coloured.contains("\u{1b}["), "{coloured:?}");
    let plain = run(true);
    assert!(!plain.contains("\u{1b}["), "{plain:?}");
    assert!(
        plain.contains("DEBUG") && plain.contains("connected"),
        "{plain:?}"
    );
}

/// `quiver completions SHELL` prints a script for that shell, made from the same flags.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_quiver()"),
        ("zsh", "#compdef quiver"),
        ("fish", "complete -c quiver"),
    ] {
        let out = ok(&quiver_in(dir.path(), &["completions", shell])
            .output()
            .unwrap());
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("dry-run"), "{shell} knows delete's flags");
    }
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(made.is_empty(), "completions create nothing: {made:?}");
}

/// Every command's `--help` lists its own options apart from the global ones.
#[test]
fn help_puts_global_options_under_their_own_heading() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().unwrap();
    let commands: Vec<String> = quiver::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(commands.len() >= 16, "{commands:?}");
    for command in &commands {
        let help = ok(&quiver_in(dir.path(), &[command, "--help"])
            .output()
            .unwrap());
        let (own, global) = help
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("{command}: no global heading: {help}"));
        assert!(!own.contains("--config"), "{command}: {help}");
        assert!(
            global.contains("--config") && global.contains("--database-url"),
            "{command}: {help}"
        );
    }
    let help = ok(&quiver_in(dir.path(), &["import", "--help"])
        .output()
        .unwrap());
    let (own, global) = help.split_once("Global options:").unwrap();
    assert!(own.contains("--timeframe"), "{help}");
    assert!(!global.contains("--timeframe"), "{help}");
}
