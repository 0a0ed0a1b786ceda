//! One sqlx [`AnyPool`] chosen by URL, with the service's migrations applied at connect.
//!
//! Services write their SQL once, with `$1, $2` placeholders (SQLite binds `$N` by number
//! too), timestamps as `BIGINT` unix milliseconds ([`now_ms`]), ids as `TEXT` and money as
//! `BIGINT` minor units. Where the dialects differ (auto-increment keys, say), a
//! [`Migration::per_backend`] carries one statement per backend.
//!
//! - **SQLite**: the file is created if missing and opened through **one** connection, in
//!   WAL mode with `synchronous = NORMAL` and a 5 s busy timeout. SQLite lets one writer in
//!   at a time; with several connections a writer that finds the lock taken waits in
//!   SQLite's busy handler, which sleeps 1 to 100 ms per try and lets later writers overtake
//!   it (likely what made inventory reservations in the chain bench exceed their 500 ms
//!   per-try timeout). With one connection, statements queue in the pool, first come first served.
//!   The busy timeout still covers another *process* on the same file (a restarted service
//!   while the old one exits). `NORMAL` in WAL mode keeps every committed transaction when
//!   the service crashes; only an operating-system crash or power loss can drop the last
//!   ones, which the lab never injects.
//! - **Postgres**: with [`DbConfig::schema`] set, the schema is created if missing and is
//!   every pooled connection's `search_path`, so a service's tables *and* its
//!   `_sqlx_migrations` table live in its own schema and several services can share one
//!   database.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Connection, Executor, SqlSafeStr};

use crate::error::{StoreError, redact_url};

/// How long a caller waits for a pooled connection (and the pool for a first connection)
/// before getting an error. sqlx's default of 30 s would hide an outage from the lab's
/// measurements behind long stalls.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle at least this long is pinged before it is handed out (and
/// replaced if the ping fails). sqlx pings on *every* acquire by default: one extra round
/// trip per statement (to Postgres over the network; to SQLite's worker thread, two more
/// thread hand-offs, which is where most of a service's CPU goes). A connection used
/// within the last second is taken as alive; if it is not, the statement fails as it would
/// have a moment later, and the pool replaces the connection.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Set on every SQLite connection. `busy_timeout` comes first so that switching to WAL
/// waits for a concurrent connection instead of failing.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
];

/// The database behind a [`Db`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite:` URLs).
    Sqlite,
    /// A Postgres server (`postgres:` or `postgresql:` URLs).
    Postgres,
}

impl Backend {
    /// The backend a URL asks for, or [`StoreError::UnsupportedUrl`].
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            }),
        }
    }

    /// The name sqlx's Any driver reports for a connection to this backend.
    fn driver_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// Where the database is and how many connections to keep.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `sqlite://path/to/file.db?mode=rwc` or `postgres://user@host:5432/db`.
    pub url: String,
    /// Postgres only: the schema holding this service's tables (created if missing).
    /// `None` uses the server's default `search_path`. Ignored for SQLite.
    pub schema: Option<String>,
    /// Upper bound of the pool (0 is treated as 1). Postgres only: a SQLite pool has one
    /// connection (see the module docs).
    pub max_connections: u32,
}

/// One schema change, applied once per database in version order.
///
/// Never edit a migration that has shipped: sqlx stores a checksum of the SQL it applied and
/// refuses to start if it changes. Add a new version instead.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in ascending order; unique within a service.
    pub version: i64,
    /// Recorded in `_sqlx_migrations`.
    pub description: &'static str,
    /// The SQL run on SQLite (may hold several statements).
    pub sqlite: &'static str,
    /// The SQL run on Postgres (may hold several statements).
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL is the same on both backends.
    pub const fn common(version: i64, description: &'static str, sql: &'static str) -> Self {
        Self::per_backend(version, description, sql, sql)
    }

    /// A migration with one SQL text per backend.
    pub const fn per_backend(
        version: i64,
        description: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Migration {
            version,
            description,
            sqlite,
            postgres,
        }
    }

    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// A migrated connection pool. Clones share the pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens the pool `cfg` describes and applies `migrations` that have not run yet.
    ///
    /// Safe to call again on the same database (another process, a restart): applied
    /// migrations are skipped, and on Postgres concurrent migrators wait on an advisory lock.
    /// Migrations applied by a newer binary but missing from `migrations` are tolerated;
    /// an applied migration whose SQL has since changed is an error.
    pub async fn connect(cfg: &DbConfig, migrations: &[Migration]) -> Result<Db, StoreError> {
        let backend = Backend::from_url(&cfg.url)?;
        let schema = match (backend, &cfg.schema) {
            (Backend::Postgres, Some(name)) => Some(validate_schema_name(name)?),
            _ => None,
        };
        let url = redact_url(&cfg.url);
        let connect_error = |source| StoreError::Connect {
            url: url.clone(),
            source,
        };

        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(&cfg.url).map_err(connect_error)?;
        let set_search_path: Option<Arc<str>> =
            schema.map(|s| format!("SET search_path TO \"{s}\"").into());

        let max_connections = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => cfg.max_connections.max(1),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                let set_search_path = set_search_path.clone();
                Box::pin(async move {
                    if conn.backend_name() == Backend::Sqlite.driver_name() {
                        for pragma in SQLITE_PRAGMAS {
                            conn.execute(pragma).await?;
                        }
                    } else if conn.backend_name() == Backend::Postgres.driver_name()
                        && let Some(sql) = set_search_path
                    {
                        conn.execute(AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;

        let mut migrator = Migrator::with_migrations(
            migrations
                .iter()
                .map(|m| {
                    sqlx::migrate::Migration::new(
                        m.version,
                        Cow::Borrowed(m.description),
                        MigrationType::Simple,
                        m.sql(backend).into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        // An older binary (a rolling update, a rollback) must still start against a database
        // that a newer one has already migrated further.
        migrator.set_ignore_missing(true);
        if let Some(name) = schema {
            // The migrator creates it after taking its advisory lock, so services starting
            // together do not race on `CREATE SCHEMA IF NOT EXISTS`.
            migrator.create_schema(format!("\"{name}\""));
        }
        if let Err(source) = migrator.run(&pool).await {
            pool.close().await;
            return Err(StoreError::Migrate { url, source });
        }

        Ok(Db { pool, backend })
    }

    /// The pool, for queries and transactions.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Returns `name` if it is a safe unquoted-style Postgres schema name (`[a-z0-9_]{1,63}`).
pub(crate) fn validate_schema_name(name: &str) -> Result<&str, StoreError> {
    let valid = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(StoreError::InvalidSchemaName {
            name: name.to_owned(),
        })
    }
}

/// Whether `err` is a unique or primary-key violation, on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db_err) => db_err.is_unique_violation(),
        _ => false,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The URL of `<data_dir>/<service>.db`, opened read-write and created if missing.
///
/// Creates `data_dir` if needed; if that fails, the failure surfaces (naming the URL) when
/// [`Db::connect`] opens the file.
pub fn sqlite_url_for(data_dir: &Path, service: &str) -> String {
    if let Err(err) = std::fs::create_dir_all(data_dir) {
        tracing::warn!(dir = %data_dir.display(), %err, "cannot create the SQLite data directory");
    }
    let path = data_dir.join(format!("{service}.db"));
    // sqlx percent-decodes the path and splits the query string at the first `?`.
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3F"),
            '#' => escaped.push_str("%23"),
            ' ' => escaped.push_str("%20"),
            c => escaped.push(c),
        }
    }
    format!("sqlite://{escaped}?mode=rwc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("SQLite://a.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        for bad in ["mysql://h/db", "", "nocolon", "redis://h"] {
            assert!(matches!(
                Backend::from_url(bad),
                Err(StoreError::UnsupportedUrl { .. })
            ));
        }
    }

    #[test]
    fn schema_names() {
        assert!(validate_schema_name("orders").is_ok());
        assert!(validate_schema_name("t_abc_0123abcd").is_ok());
        assert!(validate_schema_name(&"a".repeat(63)).is_ok());
        for bad in ["", "Orders", "a-b", "a\"b", "a b", "é"] {
            assert!(validate_schema_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_schema_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn sqlite_url_escapes_and_creates_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a b?#%");
        let url = sqlite_url_for(&data, "orders");
        assert!(data.is_dir());
        assert!(url.starts_with("sqlite://"));
        assert!(url.ends_with("/a%20b%3F%23%25/orders.db?mode=rwc"), "{url}");
    }
}
