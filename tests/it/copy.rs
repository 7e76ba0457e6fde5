//! `quiver copy`: the table moved between the real servers both ways (SQLite to PostgreSQL
//! from the `sqlite` test, PostgreSQL to SQLite from the `postgres` one), then compared.

use std::process::Output;
use std::str::FromStr;

use quiver::{Bar, BarFilter, OnConflict, Symbol, Timeframe};
use rust_decimal::Decimal;

use crate::both;
use crate::harness::{Kind, TestDb, generated};

both!(copies_to_the_other_backend_and_verifies_both_sides);

/// Runs `quiver copy` against `from`'s database with a clean environment.
fn copy(from: &TestDb, to: &TestDb, extra: &[&str]) -> Output {
    let mut args = vec!["copy", "--to", to.config.database.url.as_str()];
    if let Some(schema) = &to.config.database.schema {
        args.extend(["--to-schema", schema.as_str()]);
    }
    args.extend(extra);
    from.quiver(&args).output().expect("run quiver")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bars whose values a careless move would damage: 8-decimal prices, fractional volumes,
/// symbols with `/` and `^`.
fn awkward() -> Vec<Bar> {
    let d = |s: &str| Decimal::from_str(s).unwrap();
    let bar = |symbol: &str, tf: &str, ts: &str, o: &str, h: &str, l: &str, c: &str, v: &str| Bar {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: Timeframe::parse(tf).unwrap(),
        ts: ts.parse().unwrap(),
        open: d(o),
        high: d(h),
        low: d(l),
        close: d(c),
        volume: d(v),
    };
    vec![
        bar(
            "BTC/USDT",
            "1m",
            "2024-03-07T09:00:00Z",
            "66810.5",
            "66820",
            "66800.125",
            "66812.25",
            "0.00002853",
        ),
        bar(
            "BTC/USDT",
            "1m",
            "2024-03-07T09:01:00Z",
            "66812.25",
            "66830.12345678",
            "66812.25",
            "66829.99999999",
            "36304.2",
        ),
        bar(
            "SHIB/USDT",
            "1m",
            "2024-03-07T09:00:00Z",
            "0.00002853",
            "0.00002860",
            "0.00002850",
            "0.00002855",
            "712345.12",
        ),
        bar(
            "^STOXX50E",
            "1d",
            "2024-03-07T00:00:00Z",
            "4990.12",
            "5010.5",
            "4980.01",
            "5007.25",
            "0",
        ),
    ]
}

async fn copies_to_the_other_backend_and_verifies_both_sides(db: TestDb) {
    let target = TestDb::empty(match db.kind {
        Kind::Sqlite => Kind::Postgres,
        Kind::Postgres => Kind::Sqlite,
    })
    .await;
    let mut bars = awkward();
    bars.extend(generated(3, 2, "5m", 11));
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let all = BarFilter::default();

    // Into an empty, unmigrated database: migrated, copied, verified.
    let out = copy(&db, &target, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("copied {} bars to ", bars.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "both sides equal: 6 series, {} rows (counts and checksums)",
            bars.len()
        )),
        "{stdout}"
    );
    let source_bars = db.store.read_bars(&all).await.unwrap();
    let target_bars = target.store.read_bars(&all).await.unwrap();
    assert_eq!(
        target_bars, source_bars,
        "every value exact on the other side"
    );
    let shib = target_bars
        .iter()
        .find(|b| b.symbol.as_str() == "SHIB/USDT")
        .unwrap();
    assert_eq!(
        (shib.open.to_string(), shib.volume.to_string()),
        ("0.00002853".into(), "712345.12".into())
    );

    // Again with the default policy: the first existing bar is named, nothing changes.
    let out = copy(&db, &target, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(target.count().await, bars.len() as i64);

    // One digit changed on the target: skip keeps it, and the comparison names the series.
    target
        .plain_sql(
            "UPDATE market_data SET close = '66829.99999998' \
             WHERE symbol = 'BTC/USDT' AND close = '66829.99999999'",
        )
        .await;
    let out = copy(&db, &target, &["--on-conflict", "skip"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("differs: BTC/USDT 1m (source 2 rows, checksum "),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 6 series differ"), "{stdout}");
    // A series only the target holds is a difference too.
    target
        .store
        .insert_bars(&generated(1, 1, "1h", 3), OnConflict::Error)
        .await
        .unwrap();
    // Replace puts the digit back; the extra series still differs.
    let out = copy(&db, &target, &["--on-conflict", "replace"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("differs: SYM001 1h (source 0 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 7 series differ"), "{stdout}");
    assert!(!stdout.contains("BTC/USDT"), "{stdout}");
    let btc = BarFilter {
        symbol: Some(Symbol::parse("BTC/USDT").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        target.store.read_bars(&btc).await.unwrap(),
        db.store.read_bars(&btc).await.unwrap()
    );

    // Copying a database onto itself is refused.
    let out = copy(&db, &db, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the configured database itself"));
}
