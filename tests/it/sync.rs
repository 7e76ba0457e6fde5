//! The sync pass: the cache equals the table after every pass, checked twice, by `verify` and
//! by reading the Parquet files directly with the parquet crate.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use quiver::cache::Cache;
use quiver::datafusion::arrow::array::{
    Array, Decimal128Array, StringArray, TimestampMicrosecondArray,
};
use quiver::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver::feed::FeedPosition;
use quiver::sync::{Syncer, verify};
use quiver::{BarFilter, OnConflict};
use rust_decimal::Decimal;
use sqlx::Connection;

use crate::both;
use crate::harness::generated;
use crate::harness::{Kind, TestDb, pg_url};

/// A row as plain strings: symbol, timeframe, ts (µs), open, high, low, close, volume.
pub type Row = (String, String, i64, [String; 5]);

/// Reads every `*.parquet` file under `<cache>/market_data` (the plain view) with the parquet
/// crate alone.
pub fn parquet_rows(cache_dir: &Path) -> Vec<Row> {
    let mut files = Vec::new();
    let mut stack = vec![cache_dir.join("market_data")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    rows_of_files(&files)
}

/// The rows of these Parquet files, read with the parquet crate alone, sorted.
pub fn rows_of_files(files: &[PathBuf]) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.num_columns(), 8, "{}", f.display());
            let s = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
            };
            let ts = batch
                .column(2)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            assert_eq!(ts.timezone(), Some("UTC"));
            let d = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<Decimal128Array>()
                    .unwrap()
            };
            for r in 0..batch.num_rows() {
                let dec = |i: usize| {
                    assert_eq!(d(i).scale(), 8);
                    Decimal::from_i128_with_scale(d(i).value(r), 8)
                        .normalize()
                        .to_string()
                };
                rows.push((
                    s(0).value(r).to_string(),
                    s(1).value(r).to_string(),
                    ts.value(r),
                    [dec(3), dec(4), dec(5), dec(6), dec(7)],
                ));
            }
        }
    }
    rows.sort();
    rows
}

/// The table's rows in the same shape, read through quiver's SQL reader.
pub async fn table_rows(db: &TestDb) -> Vec<Row> {
    let mut rows: Vec<Row> = db
        .store
        .read_bars(&BarFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|b| {
            (
                b.symbol.to_string(),
                b.timeframe.to_string(),
                b.ts_micros(),
                [b.open, b.high, b.low, b.close, b.volume].map(|d| d.normalize().to_string()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A bar as a [`Row`], its decimals in their shortest exact form.
pub fn row_of(b: &quiver::Bar) -> Row {
    (
        b.symbol.to_string(),
        b.timeframe.to_string(),
        b.ts_micros(),
        [b.open, b.high, b.low, b.close, b.volume].map(|d| d.normalize().to_string()),
    )
}

/// The rows quiver's own reader returns for `SELECT * FROM market_data`, in the same shape.
pub async fn reader_rows(db: &TestDb) -> Vec<Row> {
    let reader = quiver::read::Reader::open(&db.config).unwrap();
    let batches = reader
        .context()
        .sql("SELECT * FROM market_data")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut bars = Vec::new();
    for b in &batches {
        quiver::read::decode_bars(b, &mut bars).unwrap();
    }
    let mut rows: Vec<Row> = bars.iter().map(row_of).collect();
    rows.sort();
    rows
}

/// The rows of the table's newest version, read from its data files (not the plain view).
pub async fn delta_rows(db: &TestDb) -> Vec<Row> {
    let cache = Cache::new(&db.config.cache.dir);
    let state = cache.current().await.unwrap().unwrap();
    let table = cache.existing_table().unwrap().unwrap();
    let files: Vec<PathBuf> = state
        .files()
        .map(|f| table.local_path(&f.path).unwrap())
        .collect();
    rows_of_files(&files)
}

/// Both checks: `verify` finds no difference, and the files hold exactly the table's rows.
pub async fn assert_mirrored(db: &TestDb, context: &str) {
    let cache = Cache::new(&db.config.cache.dir);
    let report = verify(&db.store, &cache).await.unwrap();
    assert!(
        report.differences.is_empty(),
        "{context}: verify found {:?}",
        report.differences
    );
    let table = table_rows(db).await;
    assert_eq!(report.rows, table.len() as u64, "{context}");
    let files = parquet_rows(&db.config.cache.dir);
    assert!(
        files == table,
        "{context}: the Parquet files differ from the table ({} vs {} rows)",
        files.len(),
        table.len()
    );
}

pub fn syncer(db: &TestDb) -> Syncer {
    Syncer::new(
        db.store.clone(),
        &db.config.cache,
        db.config.database.schema.clone(),
    )
    .unwrap()
}

fn us(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .timestamp_micros()
}

/// A SQL literal for a timestamp in this backend's physical type.
fn ts_sql(kind: Kind, micros: i64) -> String {
    match kind {
        Kind::Sqlite => micros.to_string(),
        Kind::Postgres => format!(
            "'{}'",
            chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339()
        ),
    }
}

fn bar_sql(kind: Kind, symbol: &str, tf: &str, micros: i64, low: &str, high: &str) -> String {
    format!(
        "INSERT INTO market_data VALUES ('{symbol}', '{tf}', {}, '{low}', '{high}', '{low}', '{high}', '12.5');",
        ts_sql(kind, micros)
    )
}

both!(
    every_kind_of_change_is_mirrored_exactly,
    randomized_operations_stay_mirrored
);

async fn every_kind_of_change_is_mirrored_exactly(db: TestDb) {
    let k = db.kind;
    let bars = db.insert_generated(3, 45, "5m", 7).await;
    let mut s = syncer(&db);
    let first = s.pass(false).await.unwrap();
    assert!(first.snapshot);
    assert_eq!(first.version, Some(0), "the first pass creates the table");
    assert_eq!(first.rows, bars.len() as u64);
    assert_eq!(first.written, 9, "3 symbols x 3 months");
    assert_mirrored(&db, "after the snapshot").await;
    assert_eq!(s.pass(false).await.unwrap().version, None, "idle pass");

    // Plain SQL from any client: a late bar, an update of each column kind, a bar moved to
    // another month, a deleted bar, a new symbol with sub-cent prices, a symbol deleted.
    db.plain_sql(&bar_sql(
        k,
        "SYM001",
        "5m",
        us(2024, 1, 1, 3, 0),
        "10",
        "11",
    ))
    .await;
    db.plain_sql("UPDATE market_data SET volume = '123456789.12345678', high = '99999.00000001' WHERE symbol = 'SYM002' AND timeframe = '5m'").await;
    db.plain_sql(&format!(
        "UPDATE market_data SET ts = {} WHERE symbol = 'SYM001' AND ts = {}",
        ts_sql(k, us(2024, 3, 29, 23, 55)),
        ts_sql(k, bars[0].ts_micros())
    ))
    .await;
    db.plain_sql(&format!(
        "DELETE FROM market_data WHERE symbol = 'SYM001' AND ts = {}",
        ts_sql(k, bars[5].ts_micros())
    ))
    .await;
    db.plain_sql(&bar_sql(
        k,
        "BTC/USDT",
        "1m",
        us(2024, 2, 29, 23, 59),
        "0.00002853",
        "0.00002854",
    ))
    .await;
    db.plain_sql(&bar_sql(
        k,
        "^STOXX50E",
        "1d",
        us(1999, 12, 31, 0, 0),
        "4904.46",
        "4915.73",
    ))
    .await;
    db.plain_sql("DELETE FROM market_data WHERE symbol = 'SYM003'")
        .await;
    let second = s.pass(false).await.unwrap();
    assert_eq!(second.version, Some(1));
    assert!(!second.snapshot);
    assert_eq!(second.removed, 3, "SYM003's partitions: {second:?}");
    assert_mirrored(&db, "after mixed changes").await;

    // Writes through quiver's own bulk path are tracked too (SQLite marks them itself).
    let more = generated(4, 2, "1h", 8);
    db.store
        .insert_bars(&more, OnConflict::Replace)
        .await
        .unwrap();
    s.pass(false).await.unwrap();
    assert_mirrored(&db, "after a bulk write").await;

    // A full rebuild gives the same content, as one more version.
    let full = s.pass(true).await.unwrap();
    assert!(full.snapshot);
    assert_eq!(full.version, Some(3));
    assert_mirrored(&db, "after --full").await;
}

/// A small deterministic generator (xorshift), so the sequence is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn randomized_operations_stay_mirrored(db: TestDb) {
    let k = db.kind;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ if k == Kind::Sqlite { 1 } else { 2 });
    let symbols = ["AAA", "BBB", "C.D", "E/F"];
    let timeframes = [
        ("1m", 60_000_000i64),
        ("1h", 3_600_000_000),
        ("1d", 86_400_000_000),
    ];
    let start = us(2023, 12, 20, 0, 0);
    let mut s = syncer(&db);
    let mut readers = crate::python::Readers::start();
    let delta = db.config.cache.dir.join("delta/market_data");
    let mut ops = 0;
    for round in 0..12 {
        let mut batch = String::new();
        for _ in 0..200 {
            ops += 1;
            let symbol = symbols[rng.below(symbols.len() as u64) as usize];
            let (tf, step) = timeframes[rng.below(3) as usize];
            // Bars spread over ~3 months for 1m, longer for coarser bars: many partitions.
            let slot = rng.below(90) as i64;
            let ts = start
                + slot
                    * if tf == "1m" {
                        86_400_000_000 + 7 * step
                    } else {
                        step * 3
                    };
            let cents = rng.below(10_000_000_000);
            let low = format!("{}.{:08}", cents / 100_000_000, cents % 100_000_000);
            let high = format!("{}.{:08}", cents / 100_000_000 + 1, rng.below(100_000_000));
            let t = ts_sql(k, ts);
            let sql = match rng.below(10) {
                0..=3 => {
                    let upsert = if k == Kind::Sqlite {
                        "INSERT OR REPLACE INTO market_data"
                    } else {
                        "INSERT INTO market_data"
                    };
                    let conflict = if k == Kind::Sqlite {
                        ""
                    } else {
                        " ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, volume = excluded.volume"
                    };
                    format!(
                        "{upsert} VALUES ('{symbol}', '{tf}', {t}, '{low}', '{high}', '{low}', '{high}', '{}.{:08}'){conflict};",
                        rng.below(1_000_000),
                        rng.below(100_000_000)
                    )
                }
                4 | 5 => format!(
                    "UPDATE market_data SET close = low, volume = '{}.5' WHERE symbol = '{symbol}' AND timeframe = '{tf}' AND ts = {t};",
                    rng.below(1000)
                ),
                6 => format!(
                    "DELETE FROM market_data WHERE symbol = '{symbol}' AND timeframe = '{tf}' AND ts = {t};"
                ),
                7 => {
                    // Move a bar far away (another partition), unless the target is taken.
                    let to = ts_sql(k, ts + 40 * 86_400_000_000 + step);
                    format!(
                        "UPDATE market_data SET ts = {to} WHERE symbol = '{symbol}' AND timeframe = '{tf}' AND ts = {t} \
                         AND NOT EXISTS (SELECT 1 FROM market_data WHERE symbol = '{symbol}' AND timeframe = '{tf}' AND ts = {to});"
                    )
                }
                8 => format!(
                    "DELETE FROM market_data WHERE symbol = '{symbol}' AND timeframe = '{tf}' AND ts >= {t} AND ts < {};",
                    ts_sql(k, ts + 5 * step)
                ),
                _ => {
                    // Late, out-of-order bars: far in the past.
                    let past = ts_sql(k, ts - 400 * 86_400_000_000);
                    format!(
                        "INSERT INTO market_data VALUES ('{symbol}', '{tf}', {past}, '{low}', '{high}', '{low}', '{low}', '1') ON CONFLICT DO NOTHING;"
                    )
                }
            };
            batch.push_str(&sql);
            // Commit in varied transaction sizes.
            if rng.below(8) == 0 {
                exec(&db, &std::mem::take(&mut batch)).await;
            }
        }
        exec(&db, &batch).await;
        s.pass(false).await.unwrap();
        // Through verify and the plain view (parquet crate), quiver's reader, a Delta reader.
        let context = format!("round {round} after {ops} operations");
        assert_mirrored(&db, &context).await;
        let table = table_rows(&db).await;
        assert!(
            reader_rows(&db).await == table,
            "{context}: quiver's reader"
        );
        assert!(
            readers.rows("deltalake", &delta, None) == table,
            "{context}: deltalake"
        );
    }
    assert!(
        db.count().await > 100,
        "the operations left data to compare"
    );
}

async fn exec(db: &TestDb, sql: &str) {
    if sql.is_empty() {
        return;
    }
    let sql = format!("BEGIN; {sql} COMMIT;");
    match db.kind {
        Kind::Sqlite => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(db.store.sqlite_pool().unwrap())
                .await
                .unwrap();
        }
        Kind::Postgres => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(db.store.postgres_pool().unwrap())
                .await
                .unwrap();
        }
    }
}

/// A transaction open across a pass (smaller id, commits later) is synced by the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transaction_open_across_a_pass_is_synced_later() {
    let db = TestDb::new(Kind::Postgres).await;
    let schema = db.config.database.schema.clone().unwrap();
    let mut s = syncer(&db);
    s.pass(false).await.unwrap();

    let mut slow = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path = {schema}; BEGIN; {}",
        bar_sql(
            Kind::Postgres,
            "SLOW",
            "1m",
            us(2024, 5, 1, 10, 0),
            "1",
            "2"
        )
    )))
    .execute(&mut slow)
    .await
    .unwrap();
    db.plain_sql(&bar_sql(
        Kind::Postgres,
        "FAST",
        "1m",
        us(2024, 5, 1, 10, 1),
        "1",
        "2",
    ))
    .await;
    let report = s.pass(false).await.unwrap();
    assert_eq!(report.written, 1, "FAST only: {report:?}");
    assert_mirrored(&db, "with SLOW uncommitted").await;

    sqlx::raw_sql("COMMIT").execute(&mut slow).await.unwrap();
    let report = s.pass(false).await.unwrap();
    assert_eq!(report.written, 1, "SLOW's partition: {report:?}");
    assert_mirrored(&db, "after SLOW committed").await;
    let symbols: Vec<String> = parquet_rows(&db.config.cache.dir)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(symbols, vec!["FAST", "SLOW"]);
    assert!(matches!(
        s.state().unwrap().sync_mark().unwrap().position,
        FeedPosition::Postgres { .. }
    ));
}

/// Files under the cache folder, relative, sorted (to show that nothing stray is left).
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

both!(readers_never_see_a_partial_or_mixed_partition);

/// While passes keep rewriting a partition (each version sets every volume of it to the
/// version's number), a reader of the plain view that lists the partition's folder and reads
/// every file in it sees it whole and of one version, or finds a file swapped away between
/// listing and opening (and tries again), never anything else; and every version, read back
/// by time travel, holds exactly its own rows.
async fn readers_never_see_a_partial_or_mixed_partition(db: TestDb) {
    let bars = generated(2, 25, "1m", 3);
    let rows = bars.len();
    let january = bars
        .iter()
        .filter(|b| b.symbol.as_str() == "SYM001" && b.ts_micros() < us(2024, 2, 1, 0, 0))
        .count();
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let mut s = syncer(&db);
    let update = |version: u32| {
        format!(
            "UPDATE market_data SET volume = '{version}' WHERE symbol = 'SYM001' AND ts < {}",
            ts_sql(db.kind, us(2024, 2, 1, 0, 0))
        )
    };
    db.plain_sql(&update(0)).await;
    s.pass(false).await.unwrap();
    let folder = db
        .config
        .cache
        .dir
        .join("market_data/tf=1m/sym=SYM001/period=2024-01");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (folder, stop) = (folder.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut raced) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let files: Vec<PathBuf> = std::fs::read_dir(&folder)
                    .expect("the partition's folder is always there")
                    .map(|e| e.unwrap().path())
                    .collect();
                let mut volumes = std::collections::BTreeSet::new();
                let mut count = 0;
                let mut whole = true;
                for f in &files {
                    match quiver::cache::read_file(f) {
                        Ok((_, data)) => {
                            count += data.len();
                            volumes.extend(data.values[4].iter().copied());
                        }
                        Err(quiver::Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            whole = false;
                        }
                        Err(e) => panic!("a partial or unreadable file: {e}"),
                    }
                }
                if !whole {
                    raced += 1;
                    continue;
                }
                assert_eq!(volumes.len(), 1, "one version per partition: {volumes:?}");
                assert_eq!(count, january, "every row once: {files:?}");
                reads += 1;
            }
            (reads, raced)
        })
    };
    for version in 1..=15 {
        db.plain_sql(&update(version)).await;
        s.pass(false).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, raced) = reader
        .join()
        .expect("the reader saw only whole, single-version partitions");
    assert!(
        reads > 15,
        "the reader ran alongside ({reads} reads, {raced} raced)"
    );
    assert_mirrored(&db, "after concurrent reads").await;
    assert_eq!(db.count().await as usize, rows);

    // Time travel: version v holds the volumes of update v, and only those.
    let table = Cache::new(&db.config.cache.dir)
        .existing_table()
        .unwrap()
        .unwrap();
    let key = quiver::cache::PartitionKey {
        timeframe: "1m".into(),
        symbol: "SYM001".into(),
        period: "2024-01".into(),
    };
    for version in 0..=15u64 {
        let state = table
            .load_at(quiver::cache::AsOf::Version(version), Default::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.version(), version);
        let mut volumes = std::collections::BTreeSet::new();
        for f in state.partition(&key) {
            let (_, data) = quiver::cache::read_file(&table.local_path(&f.path).unwrap()).unwrap();
            volumes.extend(data.values[4].iter().copied());
        }
        assert_eq!(
            volumes,
            std::collections::BTreeSet::from([version as i128 * 100_000_000]),
            "version {version}"
        );
    }
}

both!(partition_files_carry_the_promised_properties);

/// DESIGN.md §4's file properties, read from the footer of every published file.
async fn partition_files_carry_the_promised_properties(db: TestDb) {
    use quiver::datafusion::parquet::basic::Compression;
    use quiver::datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    db.store
        .insert_bars(&generated(2, 30, "1m", 5), OnConflict::Error)
        .await
        .unwrap();
    syncer(&db).pass(false).await.unwrap();
    let state = Cache::new(&db.config.cache.dir)
        .current()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.partitions().len(), 4, "2 symbols x 2 months");
    for p in state.files() {
        let path = db.config.cache.dir.join("delta/market_data").join(&p.path);
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows() as u64, p.rows);
        for rg in meta.row_groups() {
            let sorted: Vec<i32> = rg
                .sorting_columns()
                .expect("sorting_columns recorded")
                .iter()
                .map(|c| c.column_idx)
                .collect();
            assert_eq!(sorted, vec![0, 1, 2], "sorted by symbol, timeframe, ts");
            for c in rg.columns() {
                assert!(
                    matches!(c.compression(), Compression::LZ4_RAW),
                    "{}",
                    c.column_path()
                );
                assert!(
                    c.statistics().is_some(),
                    "statistics for {}",
                    c.column_path()
                );
                assert!(
                    c.column_index_offset().is_some(),
                    "page index for {}",
                    c.column_path()
                );
                assert!(
                    c.offset_index_offset().is_some(),
                    "offset index for {}",
                    c.column_path()
                );
            }
        }
    }
}
