//! The benchmark dataset of DESIGN.md §5, built once and reused across runs:
//! `quiver generate --symbols 50 --days 252 --timeframe 1m --seed 42` (4.9M bars), in a SQLite
//! file under `$QUIVER_BENCH_DIR` (default `/var/tmp/quiver-bench`) and in the PostgreSQL
//! schema `quiver_bench_data` of `QUIVER_TEST_PG_URL`.

#![allow(dead_code)]

use std::path::PathBuf;

use quiver::config::DatabaseConfig;
use quiver::generate::{GenerateOptions, bar_count, generate_into};
use quiver::{OnConflict, Store};

/// The sync daemon over `syncer` (polling every second) until `stop` fires or its sender
/// is dropped.
pub async fn daemon_until(
    mut syncer: quiver::Syncer,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> quiver::Result<()> {
    let metrics = quiver::metrics::Metrics::default();
    let stop = async {
        let _ = stop.await;
    };
    quiver::daemon::run(&mut syncer, &Default::default(), stop, &metrics).await
}

pub fn options() -> GenerateOptions {
    GenerateOptions::new(50, 252, "1m".parse().expect("timeframe"), 42)
}

pub fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("QUIVER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/quiver-bench"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

pub fn config(backend: &str) -> DatabaseConfig {
    match backend {
        "sqlite" => DatabaseConfig {
            url: format!("sqlite://{}", bench_dir().join("dataset.db").display()),
            schema: None,
            max_connections: 4,
        },
        _ => DatabaseConfig {
            url: std::env::var("QUIVER_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            schema: Some("quiver_bench_data".into()),
            max_connections: 4,
        },
    }
}

/// The dataset in `backend` (`sqlite` or `postgres`), generated if missing or incomplete.
pub async fn dataset(backend: &str) -> Store {
    let store = Store::connect(&config(backend)).await.expect("connect");
    store.migrate().await.expect("migrate");
    let expected = bar_count(&options()).expect("count");
    let have = store.count_rows().await.expect("count rows");
    if have != expected {
        eprintln!("building the {backend} dataset ({expected} bars, once)...");
        while store.revert().await.expect("revert").is_some() {}
        store.migrate().await.expect("migrate");
        generate_into(&store, &options(), OnConflict::Error)
            .await
            .expect("generate");
    }
    store
}

/// Runs `sql` on `ctx` and counts the rows it returns.
pub async fn sql_rows(ctx: &quiver::datafusion::prelude::SessionContext, sql: &str) -> usize {
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    batches.iter().map(|b| b.num_rows()).sum()
}
