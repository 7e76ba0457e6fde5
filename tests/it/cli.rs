//! The binary end to end: exit statuses, one-line errors on stderr, and the quickstart.

use std::process::Output;

use crate::both;
use crate::harness::{TestDb, quiver_in, sample};

/// Runs `quiver` in the test's folder against its database, with a clean environment.
fn quiver(db: &TestDb, args: &[&str]) -> Output {
    db.quiver(args).output().expect("run quiver")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

both!(
    import_errors_exit_2_with_file_line_and_field,
    migrate_and_revert_from_the_command_line,
    exit_statuses_tell_mistakes_from_faults,
);

async fn import_errors_exit_2_with_file_line_and_field(db: TestDb) {
    db.file("bad.csv", "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,1,2,2,10\n2024-01-03,1,0.5,1,1,1,10\n");
    let out = quiver(
        &db,
        &["import", "bad.csv", "--symbol", "X", "--timeframe", "1d"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr, "quiver: bad.csv:3: High: high 0.5 is below low 1\n");
    assert!(out.stdout.is_empty());
    assert_eq!(db.count().await, 0);

    let out = quiver(
        &db,
        &["import", "bad.csv", "--symbol", "X", "--timeframe", "1y"],
    );
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(text(&out.stderr).contains("unit one of s m h d w mo"));

    let data = sample("nvda-1999-2014.txt");
    let data = data.to_str().unwrap();
    let out = quiver(
        &db,
        &["import", data, "--symbol", "nvda", "--timeframe", "1d"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("imported 4012 bars, 0 unchanged"),
        "{}",
        text(&out.stdout)
    );
    let out = quiver(
        &db,
        &["import", data, "--symbol", "NVDA", "--timeframe", "1d"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "quiver: bar NVDA 1d 1999-01-22T00:00:00Z already exists (use --on-conflict skip or replace); nothing was written\n"
    );

    let out = quiver(
        &db,
        &[
            "delete",
            "--symbol",
            "NVDA",
            "--start",
            "2014-01-01",
            "--end",
            "2014-12-31",
        ],
    );
    assert_eq!(text(&out.stdout), "deleted 252 bars\n");
    assert_eq!(db.count().await, 4012 - 252);
}

async fn migrate_and_revert_from_the_command_line(db: TestDb) {
    let out = quiver(&db, &["migrate"]);
    assert_eq!(text(&out.stdout), "database is up to date\n");
    let out = quiver(&db, &["migrate", "--revert"]);
    assert_eq!(text(&out.stdout), "reverted migration 20261202000001\n");
    let out = quiver(&db, &["migrate"]);
    assert_eq!(text(&out.stdout), "applied migration 20261202000001\n");
    let out = quiver(
        &db,
        &[
            "generate",
            "--symbols",
            "3",
            "--days",
            "2",
            "--timeframe",
            "1m",
            "--seed",
            "7",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("generated 2340 bars (2340 written)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(db.count().await, 2340);
}

/// The data files of the cache's Delta table.
fn data_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            out.extend(data_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// 2 for a mistake the user can mend on the command line, 1 for a failed check, 3 for a
/// fault: a database that is not there, a torn cache file.
async fn exit_statuses_tell_mistakes_from_faults(db: TestDb) {
    let ok = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    ok(&quiver(
        &db,
        &[
            "generate",
            "--symbols",
            "1",
            "--days",
            "1",
            "--timeframe",
            "1h",
        ],
    ));
    ok(&quiver(&db, &["sync"]));
    let bars = ["bars", "SYM001", "--timeframe", "1h"];
    ok(&quiver(&db, &bars));
    let out = quiver(&db, &["bars", "NOPE", "--timeframe", "1h"]);
    assert_eq!(out.status.code(), Some(2), "an unknown series is a mistake");

    // A data file torn behind quiver's back: reading it is a fault, verify names it.
    let files = data_files(&db.config.cache.dir.join("delta"));
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    let out = quiver(&db, &bars);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = quiver(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text(&out.stdout).contains(&format!("{name} does not read")),
        "{}",
        text(&out.stdout)
    );

    // A database that cannot be opened: a fault of the environment, not of the command.
    let broken = db.path("not-a-database.db");
    std::fs::write(
        &broken,
        "this is no SQLite file, and it is long enough to be read as one?",
    )
    .unwrap();
    let url = match db.kind {
        crate::harness::Kind::Sqlite => format!("sqlite://{}", broken.display()),
        crate::harness::Kind::Postgres => "postgres://postgres@127.0.0.1:1/test".to_string(),
    };
    let out = quiver(&db, &["--database-url", &url, "migrate"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// The quickstart on the embedded default: no configuration, no variables, a fresh folder.
#[tokio::test]
async fn quickstart_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let run = || quiver_in(dir.path(), &["quickstart"]).output().unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        dir.path().join("data/market.db").is_file(),
        "the default database is created"
    );
    assert!(
        stdout.contains("database: sqlite://data/market.db"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imported 37043 new bars (0 already present)"),
        "{stdout}"
    );
    for row in [
        "| FESX      | 1m        | 2006-01-02T08:01:00Z | 2006-02-27T21:00:00Z | 30889 |",
        "| NVDA      | 1d        | 1999-01-22T00:00:00Z | 2014-12-31T00:00:00Z | 4012  |",
        "| ^STOXX50E | 5m        | 2006-01-02T08:05:00Z | 2006-01-30T16:30:00Z | 2142  |",
    ] {
        assert!(stdout.contains(row), "missing {row}\n{stdout}");
    }
    // FESX 1m: 2 months; ^STOXX50E 5m: 1 month; NVDA 1d: one file.
    assert!(
        stdout.contains("sync: committed version 0 (snapshot): 37043 rows in 4 partitions written"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| rows                | 37043 "),
        "{stdout}"
    );
    assert!(stdout.contains("| pending changes     | 0 "), "{stdout}");
    // It ends reading the cache: a warmup read as a table, then a shell query.
    for line in [
        "(2 warmup bars, then the range):",
        "| FESX   | 1m        | 2006-01-02T19:01:00Z | 3618 | 3618 | 3617 | 3617  | 15     |",
        "| FESX   | 1m        | 2006-01-03T08:03:00Z | 3621 | 3621 | 3620 | 3621  | 854    |",
        "quiver sql: FESX's volume-weighted average price of its first three days:",
        "| 2006-01-02T00:00:00Z | 3613.13408818915215140109 | 161267 |",
        "(3 rows)",
    ] {
        assert!(stdout.contains(line), "missing {line}\n{stdout}");
    }
    assert!(
        dir.path()
            .join("data/cache/delta/market_data/_delta_log/00000000000000000000.json")
            .is_file()
    );
    let again = text(&run().stdout);
    assert!(
        again.contains("imported 0 new bars (37043 already present)"),
        "{again}"
    );
    assert!(again.contains("sync: cache is up to date"), "{again}");

    // It prints the import commands it runs, time zones included: run from the repository
    // root, each gives the same bars (refused here, each one as a bar already stored).
    for (command, first) in [
        (
            "quiver import data/samples/2006-min-005.txt --symbol '^STOXX50E' --timeframe 5m \
             --tz Europe/Berlin  # 2142 bars (backtrader)",
            "^STOXX50E 5m 2006-01-02T08:05:00Z",
        ),
        (
            "quiver import data/samples/2006-01-02-volume-min-001.txt --symbol FESX \
             --timeframe 1m --tz Europe/Berlin  # 30889 bars (backtrader)",
            "FESX 1m 2006-01-02T08:01:00Z",
        ),
        (
            "quiver import data/samples/nvda-1999-2014.txt --symbol NVDA --timeframe 1d --tz UTC  \
             # 4012 bars (yahoo)",
            "NVDA 1d 1999-01-22T00:00:00Z",
        ),
    ] {
        assert!(stdout.contains(command), "missing {command}\n{stdout}");
        let args: Vec<String> = command
            .split("  #")
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|a| a.trim_matches('\'').to_string())
            .map(|a| match a.strip_prefix("data/") {
                Some(rest) => sample(rest.trim_start_matches("samples/"))
                    .display()
                    .to_string(),
                None => a,
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = quiver_in(dir.path(), &args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "quiver: bar {first} already exists (use --on-conflict skip or replace); \
                 nothing was written\n"
            ),
            "{args:?}"
        );
    }
}

/// `--config` picks a file whose relative paths count from its own folder; the variables
/// override the file and the flags override both.
#[tokio::test]
async fn config_file_variables_and_flags_layer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("site")).unwrap();
    std::fs::write(
        dir.path().join("site/quiver.toml"),
        "[database]\nurl = \"sqlite://db/file.db\"\n[sync]\npoll_interval = \"250ms\"\n",
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = quiver_in(dir.path(), args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    run(&["--config", "site/quiver.toml", "migrate"], &[]);
    assert!(
        dir.path().join("site/db/file.db").is_file(),
        "relative to the config file"
    );
    run(
        &["--config", "site/quiver.toml", "migrate"],
        &[("QUIVER_DATABASE_URL", "sqlite://env.db")],
    );
    assert!(dir.path().join("env.db").is_file(), "variable over file");
    run(
        &[
            "--config",
            "site/quiver.toml",
            "--database-url",
            "sqlite://flag.db",
            "migrate",
        ],
        &[("QUIVER_DATABASE_URL", "sqlite://env2.db")],
    );
    assert!(dir.path().join("flag.db").is_file(), "flag over variable");
    assert!(!dir.path().join("env2.db").exists());

    let out = quiver_in(dir.path(), &["--config", "missing.toml", "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("quiver: missing.toml: "),
        "{}",
        text(&out.stderr)
    );
}
