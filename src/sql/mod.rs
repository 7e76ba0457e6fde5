//! `quiver sql`: DataFusion SQL over the cache (`market_data`) and, read-only, over the
//! database itself (`live.market_data`), with psql-style meta-commands.
//!
//! A [`Shell`] runs scripts: SQL statements ending in `;` (a statement may span lines) and
//! meta-commands on lines of their own (`\d`, `\timing`, ...). The interactive loop in
//! [`repl`] and the non-interactive `-c`/`-f`/stdin paths all go through [`Shell::run_script`].
//!
//! ```no_run
//! # async fn demo() -> quiver::Result<()> {
//! use quiver::sql::{Shell, ShellOptions};
//! let mut shell = Shell::open(&quiver::Config::load(None)?, ShellOptions::default())?;
//! let result = shell
//!     .query("SELECT symbol, count(*) AS bars FROM market_data GROUP BY symbol")
//!     .await?;
//! println!("{} rows", result.rows());
//! shell
//!     .run_script("SELECT * FROM market_data LIMIT 3;", "-c", &mut std::io::stdout())
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod live;
pub mod repl;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use datafusion::sql::sqlparser::dialect::GenericDialect;

pub use live::LiveTable;

use crate::config::{Config, DatabaseConfig};
use crate::error::{Error, Result};
use crate::output::{SqlFormat, write_expanded, write_result};
use crate::read::Reader;

/// Schema under which the database's own table appears.
pub const LIVE_SCHEMA: &str = "live";

/// How results are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShellOptions {
    /// Output format.
    pub format: SqlFormat,
    /// Rows a table shows at most (`None`: all).
    pub maxrows: Option<usize>,
    /// Print each statement's time.
    pub timing: bool,
    /// Tables show each row as a block of `column | value` lines (`\x`, psql's expanded
    /// display): for wide rows.
    pub expanded: bool,
}

impl Default for ShellOptions {
    fn default() -> Self {
        ShellOptions {
            format: SqlFormat::Table,
            maxrows: Some(40),
            timing: false,
            expanded: false,
        }
    }
}

/// What the caller does after a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on reading.
    Continue,
    /// `\q`: leave.
    Quit,
}

/// One statement's result.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
    /// Planning and execution time.
    pub elapsed: Duration,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A SQL session over the cache and the live table.
#[derive(Debug)]
pub struct Shell {
    reader: Reader,
    options: ShellOptions,
}

const HELP: &str = "\
Statements end with `;` and may span lines. Tables: market_data (the cache),
live.market_data (the database, read-only). Meta-commands:
  \\d                 list tables and views
  \\d NAME            columns and types of a table or view
  \\timing [on|off]   show each statement's time
  \\x [on|off]        expanded display: each row as `column | value` lines
  \\format NAME       output as table, csv, json or ndjson
  \\maxrows N         rows a table shows at most (0: all)
  \\i FILE            run the statements of FILE
  \\?                 this help
  \\q                 quit (or exit, quit, Ctrl-D); Ctrl-C cancels a running query";

impl Shell {
    /// A shell over the configured cache, with the configured database as `live`.
    pub fn open(config: &Config, options: ShellOptions) -> Result<Shell> {
        Shell::with_reader(Reader::open(config)?, config.database.clone(), options)
    }

    /// A shell over `reader`'s session, with the database `database` as `live`.
    pub fn with_reader(
        reader: Reader,
        database: DatabaseConfig,
        options: ShellOptions,
    ) -> Result<Shell> {
        let ctx = reader.context();
        let catalog_name = ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let catalog = ctx
            .catalog(&catalog_name)
            .ok_or_else(|| Error::invalid(format!("no catalog {catalog_name}")))?;
        let live = Arc::new(MemorySchemaProvider::new());
        live.register_table(
            crate::cache::TABLE.into(),
            Arc::new(LiveTable::new(database)),
        )?;
        catalog.register_schema(LIVE_SCHEMA, live)?;
        Ok(Shell { reader, options })
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        self.reader.context()
    }

    /// The current options.
    pub fn options(&self) -> ShellOptions {
        self.options
    }

    /// Plans and runs the statements of `sql` (read-only), returning the last one's result.
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        let mut last = None;
        for statement in DFParser::parse_sql_with_dialect(sql, &GenericDialect {})? {
            last = Some(self.statement(statement, sql).await?);
        }
        last.ok_or_else(|| Error::invalid("no statement to run"))
    }

    /// Plans and runs one statement parsed from `source` (logged when slow).
    async fn statement(
        &self,
        statement: datafusion::sql::parser::Statement,
        source: &str,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let ctx = self.context();
        let plan = ctx.state().statement_to_plan(statement).await?;
        refuse_writes(&plan)?;
        let frame = ctx.execute_logical_plan(plan).await?;
        tracing::debug!(sql = source.trim(), "statement running");
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        let elapsed = started.elapsed();
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        crate::read::log_query(self.reader.options(), elapsed, rows, Some(source.trim()));
        Ok(QueryResult {
            schema,
            batches,
            elapsed,
        })
    }

    /// Runs a script: statements (ending in `;`, or at the end of the text) and meta-commands
    /// on lines of their own, in order, printing results to `out`. Stops at the first error,
    /// which names `origin` and the line where the failing statement starts.
    pub async fn run_script(
        &mut self,
        text: &str,
        origin: &str,
        out: &mut dyn Write,
    ) -> Result<Flow> {
        let mut statement = String::new();
        let mut first_line = 0;
        let at = |line: usize, e: Error| match e {
            located @ Error::At { .. } => located,
            e => Error::At {
                origin: origin.to_string(),
                line: line + 1,
                inner: Box::new(e),
            },
        };
        for (n, line) in text.lines().enumerate() {
            if is_blank_sql(&statement) {
                // Errors point at the statement's first line, not at comments above it.
                first_line = n;
                if line.trim_start().starts_with('\\') {
                    statement.clear();
                    match self.meta(line.trim(), out).await {
                        Ok(Flow::Quit) => return Ok(Flow::Quit),
                        Ok(Flow::Continue) => continue,
                        Err(e) => return Err(at(n, e)),
                    }
                }
            }
            statement.push_str(line);
            statement.push('\n');
            if ends_statement(&statement) {
                self.run_statements(&statement, out)
                    .await
                    .map_err(|e| at(first_line, e))?;
                statement.clear();
            }
        }
        if !is_blank_sql(&statement) {
            self.run_statements(&statement, out)
                .await
                .map_err(|e| at(first_line, e))?;
        }
        Ok(Flow::Continue)
    }

    /// Runs every statement of `sql` and prints each result.
    pub async fn run_statements(&mut self, sql: &str, out: &mut dyn Write) -> Result<()> {
        for statement in DFParser::parse_sql_with_dialect(sql, &GenericDialect {})? {
            let result = self.statement(statement, sql).await?;
            if self.options.expanded && self.options.format == SqlFormat::Table {
                write_expanded(&result.schema, &result.batches, self.options.maxrows, out)?;
            } else {
                write_result(
                    &result.schema,
                    &result.batches,
                    self.options.format,
                    self.options.maxrows,
                    out,
                )?;
            }
            if self.options.timing {
                let line = format!("Time: {:.3} ms", result.elapsed.as_secs_f64() * 1e3);
                if self.options.format == SqlFormat::Table {
                    writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
                } else {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
        Ok(())
    }

    /// Runs one meta-command line (`\d`, `\timing`, ...).
    pub async fn meta(&mut self, line: &str, out: &mut dyn Write) -> Result<Flow> {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let argument = words.next();
        let write = |out: &mut dyn Write, text: &str| {
            writeln!(out, "{text}").map_err(|e| Error::io("<stdout>", e))
        };
        match (command, argument) {
            ("\\q", None) => return Ok(Flow::Quit),
            ("\\?", None) => write(out, HELP)?,
            ("\\d", None) => {
                let sql = "SELECT table_schema AS schema, table_name AS name, \
                           lower(table_type) AS type FROM information_schema.tables \
                           WHERE table_schema <> 'information_schema' ORDER BY 1, 2;";
                self.run_statements(sql, out).await?;
            }
            ("\\d", Some(name)) => {
                let (schema, table) = match name.split_once('.') {
                    Some((s, t)) => (Some(s), t),
                    None => (None, name),
                };
                let quote = |s: &str| s.replace('\'', "''");
                let sql = format!(
                    "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
                     FROM information_schema.columns WHERE table_name = '{}' {} \
                     ORDER BY table_schema, ordinal_position;",
                    quote(table),
                    match schema {
                        Some(s) => format!("AND table_schema = '{}'", quote(s)),
                        None => "AND table_schema = 'public'".into(),
                    }
                );
                let result = self.query(&sql).await?;
                if result.rows() == 0 {
                    return Err(Error::invalid(format!(
                        "no table or view named {name}; \\d lists them"
                    )));
                }
                write_result(
                    &result.schema,
                    &result.batches,
                    self.options.format,
                    None,
                    out,
                )?;
            }
            ("\\timing", arg) => {
                self.options.timing = toggle(command, arg, self.options.timing)?;
                let state = if self.options.timing { "on" } else { "off" };
                write(out, &format!("Timing is {state}."))?;
            }
            ("\\x", arg) => {
                self.options.expanded = toggle(command, arg, self.options.expanded)?;
                let state = if self.options.expanded { "on" } else { "off" };
                write(out, &format!("Expanded display is {state}."))?;
            }
            ("\\format", Some(name)) => {
                self.options.format = SqlFormat::parse(name)?;
                write(out, &format!("Output format is {}.", self.options.format))?;
            }
            ("\\maxrows", Some(n)) => {
                let n: usize = n.parse().map_err(|_| {
                    Error::invalid(format!("\\maxrows takes a number of rows, not {n:?}"))
                })?;
                self.options.maxrows = (n > 0).then_some(n);
                write(out, &format!("Tables show at most {n} rows (0: all)."))?;
            }
            ("\\i", Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
                if Box::pin(self.run_script(&text, file, out)).await? == Flow::Quit {
                    return Ok(Flow::Quit);
                }
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown or incomplete meta-command `{line}`; \\? lists them"
                )));
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs a file as a script.
    pub async fn run_file(&mut self, path: &Path, out: &mut dyn Write) -> Result<Flow> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        self.run_script(&text, &path.display().to_string(), out)
            .await
    }

    /// Names for tab completion: tables and views (qualified outside the default schema) and
    /// their columns.
    pub async fn completion_names(&self) -> Vec<String> {
        let ctx = self.context();
        let mut names = Vec::new();
        for catalog in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table in schema.table_names() {
                    if schema_name == "public" {
                        names.push(table.clone());
                    } else {
                        names.push(format!("{schema_name}.{table}"));
                    }
                    if let Ok(Some(provider)) = schema.table(&table).await {
                        names.extend(provider.schema().fields().iter().map(|f| f.name().clone()));
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

/// Writes stay with the database: the shell reads. Views of the session are allowed.
fn refuse_writes(plan: &LogicalPlan) -> Result<()> {
    let refused = match plan {
        LogicalPlan::Dml(dml) => Some(dml.op.to_string().to_uppercase()),
        LogicalPlan::Copy(_) => Some("COPY".into()),
        LogicalPlan::Ddl(DdlStatement::CreateView(_) | DdlStatement::DropView(_)) => None,
        LogicalPlan::Ddl(ddl) => Some(ddl.name().to_string()),
        _ => None,
    };
    if let Some(what) = refused {
        return Err(Error::ReadOnly(what));
    }
    plan.inputs().into_iter().try_for_each(refuse_writes)
}

/// True when `text` ends with `;` outside quotes and comments.
fn ends_statement(text: &str) -> bool {
    let mut last = None;
    scan_sql(text, |c| {
        if !c.is_whitespace() {
            last = Some(c);
        }
    });
    last == Some(';')
}

/// A meta-command's `on`/`off` argument; none flips the setting.
fn toggle(command: &str, argument: Option<&str>, current: bool) -> Result<bool> {
    match argument {
        None => Ok(!current),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(Error::invalid(format!(
            "{command} takes on or off, not {other:?}"
        ))),
    }
}

/// True when `text` holds nothing but whitespace and comments.
fn is_blank_sql(text: &str) -> bool {
    let mut blank = true;
    scan_sql(text, |c| blank &= c.is_whitespace());
    blank
}

/// Calls `f` with every character of `text` outside comments; quoted text is passed as a
/// placeholder letter, so a `;` inside a string does not end a statement.
fn scan_sql(text: &str, mut f: impl FnMut(char)) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for c in chars.by_ref() {
                    if star && c == '/' {
                        break;
                    }
                    star = c == '*';
                }
            }
            '\'' | '"' => {
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                }
                f('q');
            }
            c => f(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        assert!(ends_statement("SELECT 1;"));
        assert!(ends_statement("SELECT 1;  -- done\n"));
        assert!(!ends_statement("SELECT ';'"));
        assert!(!ends_statement("SELECT 1 -- ;"));
        assert!(!ends_statement("SELECT 1 /* ; */"));
        assert!(ends_statement("SELECT 'a''b';"));
        assert!(is_blank_sql("  -- nothing\n /* at all */ \n"));
        assert!(!is_blank_sql("-- c\nSELECT 1"));
    }
}
