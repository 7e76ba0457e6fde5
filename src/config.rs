//! Layered configuration: built-in defaults, then `config.toml`, then `QUIVER_*` variables,
//! then command-line flags (applied by the caller).
//!
//! Relative paths inside a configuration file are resolved against that file's folder, so
//! `quiver --config /srv/quiver/config.toml` works from any directory; relative paths given in
//! variables or flags are relative to the working directory, as users expect of a shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default SQLite database, embedded, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/market.db";
/// The default cache folder.
pub const DEFAULT_CACHE_DIR: &str = "data/cache";

/// All of quiver's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the SQL table lives.
    pub database: DatabaseConfig,
    /// Where the Parquet mirror lives.
    pub cache: CacheConfig,
    /// How the sync daemon behaves.
    pub sync: SyncConfig,
    /// How readers of the cache behave.
    pub read: ReadConfig,
}

/// `[database]`. Its `Debug` shows the URL with any password replaced by `***`.
#[derive(Clone, PartialEq)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user@host:port/db`.
    pub url: String,
    /// PostgreSQL only: the schema holding `market_data` (default: the server's `search_path`).
    pub schema: Option<String>,
    /// PostgreSQL only: the most connections the pool opens.
    pub max_connections: u32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `[cache]`
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Folder of the cache: the Delta table in `<dir>/delta/market_data/`, the plain view in
    /// `<dir>/market_data/`.
    pub dir: PathBuf,
    /// How long a replaced version stays readable (time travel, and queries still running on
    /// it); vacuum deletes files only older versions need.
    pub retention: Duration,
    /// A checkpoint of the Delta log every this many commits.
    pub checkpoint_interval: u64,
    /// A partition with more files than this (appends of a live feed) is compacted after the
    /// pass that grew it.
    pub compact_files: usize,
}

impl CacheConfig {
    /// The default retention: one day (see docs/MANUAL.md for why).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
    /// The default checkpoint interval.
    pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100;
    /// The default compaction threshold (files per partition).
    pub const DEFAULT_COMPACT_FILES: usize = 8;

    /// The cache under `dir` with the default settings.
    pub fn new(dir: impl Into<PathBuf>) -> CacheConfig {
        CacheConfig {
            dir: dir.into(),
            retention: Self::DEFAULT_RETENTION,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
            compact_files: Self::DEFAULT_COMPACT_FILES,
        }
    }
}

/// `[sync]`
#[derive(Clone, Debug, PartialEq)]
pub struct SyncConfig {
    /// How often the daemon polls when no change notification arrives.
    pub poll_interval: Duration,
    /// How often the daemon repeats its warning while partitions are held back.
    pub held_warning: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            poll_interval: Duration::from_secs(1),
            held_warning: Duration::from_secs(600),
        }
    }
}

/// `[read]`
#[derive(Clone, Debug, PartialEq)]
pub struct ReadConfig {
    /// How partition files are read: memory maps (`mmap`, the default, measured faster) or
    /// plain reads (`pread`).
    pub io: IoMode,
    /// Partition files a reader keeps open between queries, with their parsed footers and page
    /// indexes.
    pub open_files: usize,
    /// Reads and SQL statements slower than this are logged at warn level with their time.
    pub slow_query: Duration,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            io: IoMode::Mmap,
            open_files: 1024,
            slow_query: Duration::from_secs(1),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseConfig {
                url: DEFAULT_DATABASE_URL.into(),
                schema: None,
                max_connections: 8,
            },
            cache: CacheConfig::new(DEFAULT_CACHE_DIR),
            sync: SyncConfig::default(),
            read: ReadConfig::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    sync: FileSync,
    #[serde(default)]
    read: FileRead,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRead {
    io: Option<String>,
    open_files: Option<usize>,
    slow_query: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    schema: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCache {
    dir: Option<PathBuf>,
    retention: Option<String>,
    checkpoint_interval: Option<u64>,
    compact_files: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSync {
    poll_interval: Option<String>,
    held_warning: Option<String>,
}

impl Config {
    /// Loads the configuration the way the binary does.
    ///
    /// `path` is the `--config` flag: when given, the file must exist; when absent,
    /// `./config.toml` is read if present and built-in defaults are used otherwise.
    /// `QUIVER_DATABASE_URL`, `QUIVER_DATABASE_SCHEMA` and `QUIVER_CACHE_DIR` then override.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None if Path::new("config.toml").is_file() => {
                Self::from_file(Path::new("config.toml"))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Reads one TOML file over the defaults, resolving its relative paths against its folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::from_toml(&text, base).map_err(|message| Error::Config {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut config = Config::default();
        if let Some(url) = file.database.url {
            config.database.url = resolve_sqlite_url(&url, base);
        } else {
            config.database.url = resolve_sqlite_url(DEFAULT_DATABASE_URL, base);
        }
        config.database.schema = file.database.schema;
        if let Some(n) = file.database.max_connections {
            if n == 0 {
                return Err("database.max_connections must be at least 1".into());
            }
            config.database.max_connections = n;
        }
        config.cache.dir = base.join(file.cache.dir.unwrap_or_else(|| DEFAULT_CACHE_DIR.into()));
        if let Some(r) = file.cache.retention {
            config.cache.retention =
                humantime::parse_duration(&r).map_err(|e| format!("cache.retention {r:?}: {e}"))?;
        }
        if let Some(n) = file.cache.checkpoint_interval {
            if n == 0 {
                return Err("cache.checkpoint_interval must be at least 1".into());
            }
            config.cache.checkpoint_interval = n;
        }
        if let Some(n) = file.cache.compact_files {
            if n < 2 {
                return Err("cache.compact_files must be at least 2".into());
            }
            config.cache.compact_files = n;
        }
        if let Some(p) = file.sync.poll_interval {
            config.sync.poll_interval = humantime::parse_duration(&p)
                .map_err(|e| format!("sync.poll_interval {p:?}: {e}"))?;
        }
        if let Some(p) = file.sync.held_warning {
            config.sync.held_warning = humantime::parse_duration(&p)
                .map_err(|e| format!("sync.held_warning {p:?}: {e}"))?;
        }
        if let Some(io) = file.read.io {
            config.read.io = io.parse().map_err(|e| format!("read.io: {e}"))?;
        }
        if let Some(n) = file.read.open_files {
            if n == 0 {
                return Err("read.open_files must be at least 1".into());
            }
            config.read.open_files = n;
        }
        if let Some(t) = file.read.slow_query {
            config.read.slow_query =
                humantime::parse_duration(&t).map_err(|e| format!("read.slow_query {t:?}: {e}"))?;
        }
        Ok(config)
    }

    /// Applies the `QUIVER_*` environment overrides, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(url) = var("QUIVER_DATABASE_URL").filter(|s| !s.is_empty()) {
            self.database.url = url;
        }
        if let Some(schema) = var("QUIVER_DATABASE_SCHEMA").filter(|s| !s.is_empty()) {
            self.database.schema = Some(schema);
        }
        if let Some(dir) = var("QUIVER_CACHE_DIR").filter(|s| !s.is_empty()) {
            self.cache.dir = dir.into();
        }
        Ok(())
    }

    /// The database URL with any password replaced by `***`, safe for logs and status output.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.database.url)
    }
}

/// Makes a relative `sqlite://` path relative to `base` instead of the working directory.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return url.to_string();
    };
    let (path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(p, q)| (p, Some(q)));
    if path.is_empty() || path.starts_with('/') || path == ":memory:" || base.as_os_str().is_empty()
    {
        return url.to_string();
    }
    let joined = base.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

/// Replaces the password of a URL with `***` (and drops a `password=` query parameter).
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_string();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let has_secret = url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if has_secret {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    url.to_string()
}

/// How file bytes reach the Parquet decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// A read-only shared mapping per file; pages are sliced out of it without copying.
    #[default]
    Mmap,
    /// `pread` into a fresh buffer for every range the decoder asks for.
    Pread,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mmap" => Ok(IoMode::Mmap),
            "pread" => Ok(IoMode::Pread),
            _ => Err(format!("{s:?} is not an I/O mode (mmap or pread)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_parses_and_resolves_against_its_folder() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("config.toml ships with the repo");
        let c = Config::from_toml(&text, Path::new("/srv/q")).unwrap();
        assert_eq!(c.database.url, "sqlite:///srv/q/data/market.db");
        assert_eq!(c.cache.dir, PathBuf::from("/srv/q/data/cache"));
        assert_eq!(c.sync.poll_interval, Duration::from_secs(1));
        assert_eq!(c.cache.retention, CacheConfig::DEFAULT_RETENTION);
        assert_eq!(
            c.cache.checkpoint_interval,
            CacheConfig::DEFAULT_CHECKPOINT_INTERVAL
        );
    }

    #[test]
    fn environment_overrides_file() {
        let mut c =
            Config::from_toml("[database]\nurl = \"sqlite://a.db\"\n", Path::new("")).unwrap();
        c.apply_env(|k| match k {
            "QUIVER_DATABASE_URL" => Some("postgres://u:pw@h/db".into()),
            "QUIVER_CACHE_DIR" => Some("/tmp/c".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.database.url, "postgres://u:pw@h/db");
        assert_eq!(c.cache.dir, PathBuf::from("/tmp/c"));
        assert_eq!(c.redacted_url(), "postgres://u:***@h/db");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        assert!(Config::from_toml("[database]\nuri = \"x\"\n", Path::new("")).is_err());
        let e = Config::from_toml("[sync]\npoll_interval = \"soon\"\n", Path::new("")).unwrap_err();
        assert!(e.contains("poll_interval"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let mut c = Config::default();
        c.database.url = "postgres://trader:hunter2@db:5432/market?password=hunter2".into();
        let shown = format!("{c:?} {:?}", c.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("trader:***@db"), "{shown}");
    }

    #[test]
    fn redaction_removes_passwords() {
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(
            redact_url("postgres://a:secret@h:5432/d"),
            "postgres://a:***@h:5432/d"
        );
        assert!(!redact_url("postgres://h/d?password=secret&sslmode=disable").contains("secret"));
    }
}
