//! The shell's SQL behaviour as sqllogictest files (`tests/slt/*.slt`, the format DataFusion
//! tests its own SQL with): `time_bucket`, the fast `date_trunc`, exact `ts` filters at
//! partition and page boundaries, `live.market_data` and its pushdown, time travel, the
//! read-only refusals. Each file runs on both backends over the same data, so the live
//! table's answers are the same from SQLite and PostgreSQL.
//!
//! `QUIVER_SLT_COMPLETE=1 cargo test --test it slt::` rewrites the expected results from what
//! quiver answers (sqllogictest's completion mode); review the diff before committing it.

use std::path::{Path, PathBuf};

use quiver::OnConflict;
use quiver::datafusion::arrow::datatypes::DataType;
use quiver::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use quiver::sql::{Shell, ShellOptions};
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::both;
use crate::harness::{TestDb, generated};
use crate::sync::syncer;

/// The shell as a sqllogictest database: every record runs as a `quiver sql` statement.
struct ShellDb(Shell);

#[derive(Debug)]
struct SltError(quiver::Error);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for SltError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for ShellDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let result = self.0.query(sql).await.map_err(SltError)?;
        if result.schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                    DefaultColumnType::FloatingPoint
                }
                _ => DefaultColumnType::Text,
            })
            .collect();
        // Each value as the shell prints it (exact decimals, RFC 3339 times); NULL as NULL.
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &result.batches {
            let batch = quiver::output::printable(batch).map_err(SltError)?;
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| {
                    SltError(quiver::Error::Arrow {
                        what: "formatting a result".into(),
                        source,
                    })
                })?;
            for i in 0..batch.num_rows() {
                let cells: Vec<String> =
                    formatters.iter().map(|f| f.value(i).to_string()).collect();
                if cells.iter().any(|c| c.contains('\n')) {
                    // A plan over several lines: one record line per line, as a .slt file
                    // writes it (without the spaces some lines end in).
                    for line in cells.join(" ").lines() {
                        rows.push(vec![line.trim_end().to_string()]);
                    }
                } else {
                    rows.push(cells);
                }
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quiver"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// The data every file reads: two symbols of minute bars from 2024-01-02 over the January to
/// February partition boundary (8,970 January rows a symbol: pages of 2,048 rows), one symbol of
/// daily bars, published as version 0; then the daily bars deleted and published as version 1,
/// so the files can read the past.
async fn fixture(db: &TestDb) {
    let mut bars = generated(2, 25, "1m", 7);
    bars.extend(generated(1, 30, "1d", 8));
    db.store
        .insert_bars(&bars, OnConflict::Error)
        .await
        .unwrap();
    let mut s = syncer(db);
    s.pass(false).await.unwrap();
    db.plain_sql("DELETE FROM market_data WHERE timeframe = '1d'")
        .await;
    s.pass(false).await.unwrap();
}

async fn sql_logic(db: TestDb) {
    fixture(&db).await;
    let config = db.config.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let config = config.clone();
        async move {
            Shell::open(&config, ShellOptions::default())
                .map(ShellDb)
                .map_err(SltError)
        }
    });
    let complete = std::env::var_os("QUIVER_SLT_COMPLETE").is_some();
    for file in files() {
        if complete && db.kind == crate::harness::Kind::Sqlite {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else {
            runner
                .run_file_async(&file)
                .await
                .unwrap_or_else(|e| panic!("{}:\n{}", file.display(), e.display(false)));
        }
    }
}

both!(sql_logic);
