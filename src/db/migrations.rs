//! The embedded migrations of each backend, as sqlx's migrator runs them.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

/// The embedded migrations of one backend, as sqlx's migrator runs them.
pub fn migrator(backend: Backend) -> Migrator {
    macro_rules! pair {
        ($dir:literal, $name:literal, $version:expr, $desc:literal) => {
            [
                migration(
                    $version,
                    $desc,
                    MigrationType::ReversibleUp,
                    include_str!(concat!("../../migrations/", $dir, "/", $name, ".up.sql")),
                ),
                migration(
                    $version,
                    $desc,
                    MigrationType::ReversibleDown,
                    include_str!(concat!("../../migrations/", $dir, "/", $name, ".down.sql")),
                ),
            ]
        };
    }
    let migrations: Vec<Migration> = match backend {
        Backend::Sqlite => [
            pair!(
                "sqlite",
                "20261123000001_market_data",
                20261123000001,
                "market data"
            ),
            pair!(
                "sqlite",
                "20261202000001_change_kinds",
                20261202000001,
                "change kinds"
            ),
        ]
        .concat(),
        Backend::Postgres => [
            pair!(
                "postgres",
                "20261123000001_market_data",
                20261123000001,
                "market data"
            ),
            pair!(
                "postgres",
                "20261202000001_change_kinds",
                20261202000001,
                "change kinds"
            ),
        ]
        .concat(),
    };
    Migrator::with_migrations(migrations)
}

/// The versions of `backend`'s migrations, oldest first.
pub(super) fn versions(backend: Backend) -> Vec<i64> {
    let mut out: Vec<i64> = migrator(backend)
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub(super) fn migration(
    version: i64,
    description: &'static str,
    kind: MigrationType,
    sql: &'static str,
) -> Migration {
    use sqlx::SqlSafeStr;
    Migration::new(
        version,
        Cow::Borrowed(description),
        kind,
        sql.into_sql_str(),
        false,
    )
}
