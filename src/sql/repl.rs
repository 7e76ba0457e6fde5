//! The interactive shell: line editing and history (rustyline), statements that span lines
//! until `;`, tab completion of tables, columns and keywords, and Ctrl-C that cancels the
//! running query without leaving.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use super::{Flow, Shell, ends_statement};
use crate::error::{Error, Result};

/// Where history is kept: `QUIVER_HISTORY`, else `<data dir>/quiver/history.txt` (for example
/// `~/.local/share/quiver/history.txt` on Linux); `None` when there is no such folder.
pub fn history_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QUIVER_HISTORY") {
        return Some(PathBuf::from(path));
    }
    dirs::data_dir().map(|d| d.join("quiver").join("history.txt"))
}

/// SQL keywords offered by tab completion.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "BETWEEN",
    "LIKE",
    "DISTINCT",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "OUTER",
    "FULL",
    "CROSS",
    "ON",
    "USING",
    "UNION",
    "ALL",
    "EXCEPT",
    "INTERSECT",
    "WITH",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "INTERVAL",
    "TIMESTAMP",
    "DATE",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "OVER",
    "PARTITION",
    "ROWS",
    "RANGE",
    "PRECEDING",
    "FOLLOWING",
    "UNBOUNDED",
    "CURRENT",
    "ROW",
    "EXPLAIN",
    "ANALYZE",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "CREATE",
    "VIEW",
    "DROP",
    "SET",
    "VALUES",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "FIRST_VALUE",
    "LAST_VALUE",
    "LAG",
    "LEAD",
    "DATE_TRUNC",
    "DATE_BIN",
    "TIME_BUCKET",
    "ROW_NUMBER",
    "RANK",
];

/// Completion and multi-line input for the editor.
struct SqlHelper {
    /// Tables, views and columns, refreshed before each prompt.
    names: Vec<String>,
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        let word = &before[start..];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let lower = word.to_lowercase();
        let upper_case = word.chars().any(char::is_uppercase);
        let mut candidates: Vec<Pair> = self
            .names
            .iter()
            .filter(|n| n.to_lowercase().starts_with(&lower))
            .map(|n| Pair {
                display: n.clone(),
                replacement: n.clone(),
            })
            .collect();
        candidates.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.to_lowercase().starts_with(&lower))
                .map(|k| {
                    let k = if upper_case {
                        k.to_string()
                    } else {
                        k.to_lowercase()
                    };
                    Pair {
                        display: k.clone(),
                        replacement: k,
                    }
                }),
        );
        candidates.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, candidates))
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}

impl Highlighter for SqlHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

/// Every line is taken as typed: the loop gathers a statement's lines itself, so each line
/// after the first gets the continuation prompt, as in psql.
impl Validator for SqlHelper {
    fn validate(&self, _ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(ValidationResult::Valid(None))
    }
}

/// The prompt of a new statement.
const PROMPT: &str = "quiver> ";
/// The prompt of a statement's next line (psql's `-#`/`->` in spirit).
const CONTINUATION: &str = "quiver-> ";

/// What a typed line does to the statement being gathered (`pending`, the lines before it).
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Leave: `exit` or `quit` on a line of its own, with nothing gathered (psql 11).
    Leave,
    /// Run what is gathered, this line included: it ends a statement or is a meta-command.
    Run,
    /// Keep gathering.
    More,
}

fn classify(pending: &str, line: &str) -> Line {
    let word = line.trim().trim_end_matches(';').trim();
    if pending.trim().is_empty()
        && (word.eq_ignore_ascii_case("exit") || word.eq_ignore_ascii_case("quit"))
    {
        return Line::Leave;
    }
    let all = format!("{pending}{line}");
    let all = all.trim();
    if (pending.trim().is_empty() && all.starts_with('\\')) || ends_statement(all) {
        Line::Run
    } else {
        Line::More
    }
}

impl Helper for SqlHelper {}

fn readline_error(e: ReadlineError) -> Error {
    Error::invalid(format!("terminal: {e}"))
}

/// Runs the interactive shell on the terminal until `\q` or Ctrl-D.
pub async fn run(shell: &mut Shell, out: &mut dyn Write) -> Result<()> {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)
        .map_err(readline_error)?
        .build();
    let mut editor: Editor<SqlHelper, FileHistory> =
        Editor::with_config(config).map_err(readline_error)?;
    editor.set_helper(Some(SqlHelper { names: Vec::new() }));
    let history = history_file();
    if let Some(path) = &history {
        // A first run has no history yet.
        let _ = editor.load_history(path);
    }
    writeln!(
        out,
        "quiver sql over {}: \\? for help, \\q to quit.",
        shell.reader.cache().root().display()
    )
    .map_err(|e| Error::io("<stdout>", e))?;
    // One SIGINT listener for the whole session, registered before any statement runs, so a
    // Ctrl-C that comes the moment a statement starts still cancels it.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::invalid(format!("cannot watch Ctrl-C: {e}")))?;
    // The lines of a statement typed so far.
    let mut pending = String::new();
    loop {
        if pending.is_empty() {
            let names = shell.completion_names().await;
            if let Some(helper) = editor.helper_mut() {
                helper.names = names;
            }
        }
        let prompt = if pending.is_empty() {
            PROMPT
        } else {
            CONTINUATION
        };
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        let line = match line {
            Ok(line) => line,
            // Ctrl-C at the prompt drops what was typed, as in psql.
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(readline_error(e)),
        };
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        match classify(&pending, &line) {
            Line::Leave => break,
            Line::More => {
                pending.push_str(&line);
                pending.push('\n');
                continue;
            }
            Line::Run => {}
        }
        let input = std::mem::take(&mut pending) + &line;
        let _ = editor.add_history_entry(input.as_str());
        let outcome = tokio::select! {
            r = shell.run_script(&input, "<stdin>", out) => Some(r),
            _ = interrupt.recv() => None,
        };
        let _ = out.flush();
        match outcome {
            Some(Ok(Flow::Quit)) => break,
            Some(Ok(Flow::Continue)) => {}
            Some(Err(e)) => eprintln!("error: {}", one_line(&shell_error(e))),
            None => eprintln!("cancelled"),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Statements may hold secrets: the history is readable by its owner only.
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let private = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)));
        if let Err(e) = private
            .map_err(ReadlineError::Io)
            .and_then(|()| editor.save_history(path))
        {
            tracing::warn!(file = %path.display(), "history not saved: {e}");
        } else {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(())
}

/// Interactive errors need no location: the statement is the one just typed.
fn shell_error(e: Error) -> Error {
    match e {
        Error::At { origin, inner, .. } if origin == "<stdin>" => *inner,
        e => e,
    }
}

/// The error of a non-interactive script, on one line: with the file and line of the
/// failing statement, except for `-c`, whose statement is on the command line.
pub fn script_error(e: Error) -> String {
    let e = match e {
        Error::At { origin, inner, .. } if origin == "-c" => *inner,
        e => e,
    };
    one_line(&e)
}

/// An error on one line: DataFusion's messages may hold line breaks.
pub fn one_line(e: &Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::{Line, classify};

    #[test]
    fn lines_gather_until_a_statement_ends() {
        assert_eq!(classify("", "SELECT 1"), Line::More);
        assert_eq!(classify("SELECT 1\n", "FROM t;"), Line::Run);
        assert_eq!(classify("", "SELECT 1;"), Line::Run);
        assert_eq!(classify("", "\\d"), Line::Run);
        assert_eq!(classify("", "  exit  "), Line::Leave);
        assert_eq!(classify("", "QUIT;"), Line::Leave);
        // Inside a statement, `exit` is a column name like any other.
        assert_eq!(classify("SELECT\n", "exit"), Line::More);
        assert_eq!(classify("SELECT 'a;\n", "b'"), Line::More);
    }
}
