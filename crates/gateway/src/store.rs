//! The database: SQLite in the data directory by default (WAL), Postgres when `[state] database_url`
//! names one. One pool type (`sqlx::Any`) serves both, so each query is written once, with `$N`
//! placeholders (which SQLite reads as numbered parameters too); each backend has its own migrations.

use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
}

pub(crate) fn db_error(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("store: {e}"))
}

/// Every SQLite connection's settings (see [`Store::open`]).
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;";

/// `sqlite://…` for a file path.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Store {
    /// Opens (creating, for SQLite) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::internal(format!(
                "[state] database_url must start with sqlite: or postgres:// (got `{}`)",
                redact(url)
            )));
        };
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(db_error)?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            // A database that is down must not hold requests: the callers have their own fallbacks.
            .acquire_timeout(Duration::from_secs(3));
        if backend == Backend::Sqlite {
            // sqlx leaves SQLite in its rollback-journal mode with `synchronous = FULL`: every commit
            // then fsyncs the journal and the database (a tenth of the gateway's CPU under load, in
            // the kernel). WAL with `synchronous = NORMAL` commits without an fsync and is still safe
            // against a crash of the process; the usage journal already holds what a row needs to
            // survive one. Readers no longer wait for the writer either.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|e| db_error(format!("cannot open {}: {e}", redact(url))))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&pool).await.map_err(db_error)?;
        Ok(Store { pool, backend })
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings that keep a commit from costing two fsyncs hold on every pooled connection.
    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_without_fsync_per_commit() {
        let dir = std::env::temp_dir().join(format!("sy-store-{:x}", rand::random::<u64>()));
        let store = Store::open(&sqlite_url(&dir.join("db.sqlite"))).await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut c = store.pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(mode.to_lowercase(), "wal");
            assert_eq!(sync, 1, "synchronous should be NORMAL (1)");
            conns.push(c);
        }
        drop(conns);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
