//! Reading bars back from the cache: exact warmup across partitions, the latest bar, typed
//! errors, a reader seeing new publications, and `quiver bars` output.

use chrono::{DateTime, TimeZone, Utc};
use quiver::cache::Cache;
use quiver::read::{BarsRequest, Reader};
use quiver::{Bar, BarFilter, OnConflict, Symbol};

use crate::both;
use crate::harness::TestDb;
use crate::harness::generated;
use crate::sync::syncer;

both!(
    warmup_reads_are_exact_across_partitions,
    bars_command_prints_exact_csv
);

async fn series(db: &TestDb, symbol: &str) -> Vec<Bar> {
    db.store
        .read_bars(&BarFilter {
            symbol: Some(Symbol::parse(symbol).unwrap()),
            timeframe: Some("1m".parse().unwrap()),
            ..BarFilter::default()
        })
        .await
        .unwrap()
}

async fn warmup_reads_are_exact_across_partitions(db: TestDb) {
    // 2 symbols x 45 trading days of 1m bars: three month partitions per symbol.
    let bars = generated(2, 45, "1m", 11);
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let mut s = syncer(&db);
    s.pass(false).await.unwrap();
    let reader = Reader::new(Cache::new(&db.config.cache.dir));
    let all = series(&db, "SYM002").await;

    // The range starts on the first bar of February: the 200 warmup bars are January's last.
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap();
    let first = all.iter().position(|b| b.ts >= start).unwrap();
    let request = BarsRequest {
        start: Some(start),
        end: None,
        warmup: 200,
        limit: Some(1000),
        ..BarsRequest::new(Symbol::parse("SYM002").unwrap(), "1m".parse().unwrap())
    };
    let got = reader.bars(&request).await.unwrap();
    assert_eq!(got.warmup, 200);
    assert_eq!(
        got.to_bars().unwrap(),
        all[first - 200..first + 1000].to_vec()
    );

    // More warmup than history: what there is. A range with an end: inclusive.
    let early = BarsRequest {
        start: Some(all[10].ts),
        end: Some(all[20].ts),
        warmup: 50,
        limit: None,
        ..request.clone()
    };
    let got = reader.bars(&early).await.unwrap();
    assert_eq!(got.warmup, 10);
    assert_eq!(got.to_bars().unwrap(), all[0..21].to_vec());

    // Latest bar; typed errors for an unknown series and a reversed range.
    let latest = reader
        .latest(&Symbol::parse("SYM002").unwrap(), "1m".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(latest.to_bars().unwrap(), vec![all.last().unwrap().clone()]);
    let unknown = reader
        .bars(&BarsRequest::new(
            Symbol::parse("NOPE").unwrap(),
            "1m".parse().unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no 1m bars of NOPE"),
        "{unknown}"
    );
    let reversed = BarsRequest {
        start: Some(all[20].ts),
        end: Some(all[10].ts),
        ..request.clone()
    };
    let err = reader.bars(&reversed).await.unwrap_err();
    assert!(err.to_string().contains("is after end"), "{err}");

    // A version published after the reader was opened is seen by its next query.
    db.store
        .delete_bars(&BarFilter {
            symbol: Some(Symbol::parse("SYM002").unwrap()),
            start: Some(start),
            ..BarFilter::default()
        })
        .await
        .unwrap();
    s.pass(false).await.unwrap();
    let latest = reader
        .latest(&Symbol::parse("SYM002").unwrap(), "1m".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(latest.to_bars().unwrap(), vec![all[first - 1].clone()]);
}

async fn bars_command_prints_exact_csv(db: TestDb) {
    db.plain_sql(&format!(
        "INSERT INTO market_data VALUES ('BTC/USDT', '1m', {}, '0.00002853', '712345.12', '0.00002853', '1.5', '0.12345678');",
        match db.kind {
            crate::harness::Kind::Sqlite => "1717425000000000".to_string(),
            crate::harness::Kind::Postgres => "'2024-06-03T14:30:00Z'".to_string(),
        }
    ))
    .await;
    syncer(&db).pass(false).await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["bars", "btc/usdt", "--timeframe", "1m", "--format", "csv"])
        .current_dir(db.dir.path())
        .env_remove("QUIVER_DATABASE_SCHEMA")
        .envs(db.env())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "symbol,timeframe,ts,open,high,low,close,volume\n\
         BTC/USDT,1m,2024-06-03T14:30:00Z,0.00002853,712345.12,0.00002853,1.5,0.12345678\n"
    );
}
