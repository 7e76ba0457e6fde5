//! The change feed that the sync daemon consumes: every committed change is reported once a
//! position passes it, nothing is lost, and an idle poll writes nothing.

use chrono::{TimeZone, Utc};
use quiver::feed::{ChangedDay, DayChange, FeedPosition, day_of};
use sqlx::Connection;

use crate::both;
use crate::harness::{Kind, TestDb, pg_url};

fn ts(kind: Kind, day: u32) -> String {
    let t = Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap();
    match kind {
        Kind::Sqlite => t.timestamp_micros().to_string(),
        Kind::Postgres => format!("'{}'", t.to_rfc3339()),
    }
}

fn day(symbol: &str, d: u32) -> ChangedDay {
    ChangedDay {
        symbol: Some(symbol.into()),
        timeframe: Some("1d".into()),
        day: Some(day_of(&Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap())),
    }
}

fn insert(kind: Kind, symbol: &str, d: u32) -> String {
    format!(
        "INSERT INTO market_data VALUES ('{symbol}', '1d', {}, '1', '2', '1', '2', '5');",
        ts(kind, d)
    )
}

both!(feed_reports_each_change_once_and_idles_quietly);

async fn feed_reports_each_change_once_and_idles_quietly(db: TestDb) {
    let k = db.kind;
    let empty = db.store.changes_since(&FeedPosition::Start).await.unwrap();
    assert!(empty.days.is_empty());

    db.plain_sql(&format!("{}{}", insert(k, "AAA", 1), insert(k, "BBB", 2)))
        .await;
    let b1 = db.store.changes_since(&empty.next).await.unwrap();
    assert_eq!(
        b1.days.keys().cloned().collect::<Vec<_>>(),
        vec![day("AAA", 1), day("BBB", 2)]
    );
    // Inserts, each with its earliest bar: what lets a pass append instead of rewriting.
    let first = |d: u32| {
        Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0)
            .unwrap()
            .timestamp_micros()
    };
    assert_eq!(b1.days[&day("AAA", 1)], DayChange::insert(first(1)));
    assert_eq!(b1.days[&day("BBB", 2)], DayChange::insert(first(2)));

    // Idle: nothing reported, same position, and (SQLite) no write to the database.
    let before = db.store.change_log().await.unwrap();
    let idle = db.store.changes_since(&b1.next).await.unwrap();
    assert!(idle.days.is_empty());
    // SQLite's position stays put; PostgreSQL's may move forward as other sessions'
    // transactions (the parallel tests) finish, but never back past what was consumed.
    match (&idle.next, &b1.next) {
        (
            FeedPosition::Postgres { xmin, done },
            FeedPosition::Postgres {
                xmin: xmin0,
                done: done0,
            },
        ) => {
            assert!(xmin >= xmin0, "{:?} after {:?}", idle.next, b1.next);
            assert!(
                done0.iter().all(|t| t < xmin || done.contains(t)),
                "{:?} forgets what {:?} consumed",
                idle.next,
                b1.next
            );
        }
        (next, before) => assert_eq!(next, before),
    }
    if k == Kind::Sqlite {
        let v: i64 = sqlx::query_scalar("SELECT epoch FROM quiver_clock")
            .fetch_one(db.store.sqlite_pool().unwrap())
            .await
            .unwrap();
        let again = db.store.changes_since(&idle.next).await.unwrap();
        let v2: i64 = sqlx::query_scalar("SELECT epoch FROM quiver_clock")
            .fetch_one(db.store.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!((v, again.next), (v2, idle.next.clone()));
    }
    assert_eq!(db.store.change_log().await.unwrap().len(), before.len());

    // An update moving a bar reports both days; a delete reports its day.
    db.plain_sql(&format!(
        "UPDATE market_data SET ts = {} WHERE symbol = 'AAA'",
        ts(k, 5)
    ))
    .await;
    db.plain_sql("DELETE FROM market_data WHERE symbol = 'BBB'")
        .await;
    let b2 = db.store.changes_since(&idle.next).await.unwrap();
    assert_eq!(
        b2.days.keys().cloned().collect::<Vec<_>>(),
        vec![day("AAA", 1), day("AAA", 5), day("BBB", 2)]
    );
    assert!(
        b2.days.values().all(|c| c.rewrite),
        "updates and deletes: {:?}",
        b2.days
    );

    // Pruning consumed entries never hides a later change; positions survive JSON.
    db.store.prune_changes(&b2.next).await.unwrap();
    let json = serde_json::to_string(&b2.next).unwrap();
    let restored: FeedPosition = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, b2.next);
    db.plain_sql(&insert(k, "CCC", 3)).await;
    let b3 = db.store.changes_since(&restored).await.unwrap();
    assert_eq!(
        b3.days.keys().cloned().collect::<Vec<_>>(),
        vec![day("CCC", 3)]
    );
}

/// PostgreSQL commits in any order: a transaction that started first (smaller id) and commits
/// after a later one, and after a read of the log, must still be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_commit_is_not_lost() {
    let db = TestDb::new(Kind::Postgres).await;
    let schema = db.config.database.schema.clone().unwrap();
    let start = db.store.changes_since(&FeedPosition::Start).await.unwrap();

    let mut slow = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
        .execute(&mut slow)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(insert(Kind::Postgres, "SLOW", 1)))
        .execute(&mut slow)
        .await
        .unwrap();

    db.plain_sql(&insert(Kind::Postgres, "FAST", 2)).await;
    let b1 = db.store.changes_since(&start.next).await.unwrap();
    assert_eq!(
        b1.days.keys().cloned().collect::<Vec<_>>(),
        vec![day("FAST", 2)]
    );
    db.store.prune_changes(&b1.next).await.unwrap();

    sqlx::raw_sql("COMMIT").execute(&mut slow).await.unwrap();
    let b2 = db.store.changes_since(&b1.next).await.unwrap();
    assert_eq!(
        b2.days.keys().cloned().collect::<Vec<_>>(),
        vec![day("SLOW", 1)],
        "the late commit was lost"
    );
    let b3 = db.store.changes_since(&b2.next).await.unwrap();
    assert!(b3.days.is_empty(), "reported twice: {:?}", b3.days);
}
