//! One database chosen by URL — a SQLite file run in-process or a Postgres pool — with the
//! service's migrations applied at connect. Statements run through [`crate::query`].
//!
//! Services write their SQL once, with `$1, $2` placeholders (SQLite binds `$N` by number
//! too), timestamps as `BIGINT` unix milliseconds ([`now_ms`]), ids as `TEXT` and money as
//! `BIGINT` minor units. Where the dialects differ (auto-increment keys, say), a
//! [`Migration::per_backend`] carries one statement per backend.
//!
//! - **SQLite** (rusqlite, in-process): the file is created if missing and opened through
//!   **one** connection behind an async mutex, in WAL mode with `synchronous = NORMAL` and a
//!   5 s busy timeout. SQLite lets one writer in at a time; with several connections a
//!   writer that finds the lock taken waits in SQLite's busy handler, which sleeps 1 to
//!   100 ms per try and lets later writers overtake it (likely what made inventory
//!   reservations in the chain bench exceed their 500 ms per-try timeout). With one
//!   connection, statements queue on the mutex, first come first served, and run on the
//!   caller's thread (see [`crate::query`] for why). The migrations are recorded in sqlx's
//!   `_sqlx_migrations` table with sqlx's checksums, so files stay interchangeable with
//!   earlier versions of the lab.
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

use sqlx::migrate::{MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, SqlSafeStr};

use crate::error::{StoreError, redact_url};
use crate::query::{DbError, Tx};

/// How long a caller waits for a pooled connection (and the pool for a first connection)
/// before getting an error. sqlx's default of 30 s would hide an outage from the lab's
/// measurements behind long stalls.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle at least this long is pinged before it is handed out (and
/// replaced if the ping fails). sqlx pings on *every* acquire by default: one extra round
/// trip per statement to Postgres. A connection used
/// within the last second is taken as alive; if it is not, the statement fails as it would
/// have a moment later, and the pool replaces the connection.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a SQLite statement waits for another process's lock on the file.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Set on the SQLite connection, after the busy timeout (so that switching to WAL waits for
/// a concurrent process instead of failing).
/// `journal_size_limit`: a WAL grown past 64 MiB is cut back to it when it rewinds (see
/// [`Checkpointer`]).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA journal_size_limit = 67108864;
    PRAGMA foreign_keys = ON;";

/// Statements kept prepared on the SQLite connection (a service uses a few dozen).
const SQLITE_STATEMENT_CACHE: usize = 128;

/// How often the checkpoint thread copies the WAL into the database file.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A WAL this long (in pages) that writes kept ahead of the checkpoint is rewound (see
/// [`Checkpointer`]); SQLite's own automatic checkpoint starts at the same length.
const SQLITE_RESTART_AFTER_FRAMES: i64 = 1000;

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
}

/// Where the database is and how many connections to keep.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `sqlite://path/to/file.db?mode=rwc` or `postgres://user@host:5432/db`.
    pub url: String,
    /// Postgres only: the schema holding this service's tables (created if missing).
    /// `None` uses the server's default `search_path`. Ignored for SQLite.
    pub schema: Option<String>,
    /// Upper bound of the pool (0 is treated as 1). Postgres only: SQLite has one
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

/// A migrated database. Clones share the connection (SQLite) or the pool (Postgres).
#[derive(Clone, Debug)]
pub struct Db {
    engine: Engine,
    backend: Backend,
}

/// What runs the statements.
#[derive(Clone, Debug)]
pub(crate) enum Engine {
    Sqlite(Arc<tokio::sync::Mutex<rusqlite::Connection>>),
    Postgres(PgPool),
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
        let engine = match backend {
            Backend::Sqlite => {
                let url = cfg.url.clone();
                let migrations = migrations.to_vec();
                let (conn, checkpointer) =
                    tokio::task::spawn_blocking(move || open_sqlite(&url, &migrations))
                        .await
                        .map_err(|e| StoreError::Migrate {
                            url: redact_url(&cfg.url),
                            source: Box::new(e),
                        })??;
                let conn = Arc::new(tokio::sync::Mutex::new(conn));
                if let Some(checkpointer) = checkpointer
                    && let Err(e) = checkpointer.spawn(Arc::downgrade(&conn))
                {
                    tracing::warn!("cannot start the SQLite checkpoint thread: {e}");
                    // Nobody else holds it yet.
                    if let Ok(conn) = conn.try_lock() {
                        let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 1000");
                    }
                }
                Engine::Sqlite(conn)
            }
            Backend::Postgres => Engine::Postgres(connect_postgres(cfg, migrations).await?),
        };
        Ok(Db { engine, backend })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a transaction (on SQLite it holds the connection until it ends).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Tx::begin(self).await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the database, waiting for statements and transactions in flight to end.
    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(conn) => drop(conn.lock().await),
            Engine::Postgres(pool) => pool.close().await,
        }
    }
}

/// Opens a `sqlite:` URL (`sqlite://path?mode=rwc`, `sqlite:path`, `sqlite::memory:`), sets
/// the pragmas and applies `migrations`; with the [`Checkpointer`] of a writable file.
fn open_sqlite(
    url: &str,
    migrations: &[Migration],
) -> Result<(rusqlite::Connection, Option<Checkpointer>), StoreError> {
    use rusqlite::OpenFlags;
    let redacted = redact_url(url);
    let connect_error = |source: rusqlite::Error| StoreError::Connect {
        url: redacted.clone(),
        source: source.into(),
    };
    let rest = url.split_once(':').map_or("", |(_, rest)| rest);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut memory = path == ":memory:";
    for param in params.split('&').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("mode", "rwc")) => flags |= OpenFlags::SQLITE_OPEN_CREATE,
            Some(("mode", "rw")) => {}
            Some(("mode", "ro")) => {
                flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            }
            Some(("mode", "memory")) => memory = true,
            _ => {
                return Err(StoreError::InvalidSqliteUrl {
                    url: redacted.clone(),
                    reason: format!(
                        "unknown parameter `{param}` (expected mode=rwc, rw, ro or memory)"
                    ),
                });
            }
        }
    }
    let path = percent_decode(path);
    let mut conn = if memory {
        rusqlite::Connection::open_in_memory()
    } else {
        rusqlite::Connection::open_with_flags(&path, flags)
    }
    .map_err(connect_error)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
        .and_then(|()| conn.execute_batch(SQLITE_PRAGMAS))
        .map_err(connect_error)?;
    conn.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE);
    migrate_sqlite(&mut conn, migrations).map_err(|source| StoreError::Migrate {
        url: redacted.clone(),
        source,
    })?;
    let writable = !memory && !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY);
    let checkpointer = if writable {
        match Checkpointer::open(&path) {
            Ok(checkpointer) => {
                // The statements no longer checkpoint as they commit: the thread does.
                conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
                    .map_err(connect_error)?;
                Some(checkpointer)
            }
            Err(e) => {
                tracing::warn!(
                    url = redacted,
                    "SQLite checkpoints stay on the request path: {e}"
                );
                None
            }
        }
    } else {
        None
    };
    Ok((conn, checkpointer))
}

/// Copies the WAL into the database file from a thread of its own, on a second
/// connection, so that no request waits for it. With SQLite's default, the commit that
/// fills the WAL past 1 000 pages checkpoints it, fsyncs included, on the runtime thread
/// that runs the statement; the other tasks of that thread wait meanwhile.
///
/// A PASSIVE checkpoint never blocks the writer, but alone it never lets the WAL start
/// over under steady writes: SQLite rewinds the WAL only when a transaction begins with
/// every frame already copied, and a commit always lands while the copy runs. The WAL then
/// grew by every page ever written (614 MB for orders in the chain bench's 6 s), each
/// write extending the file (new page-cache pages, block reservations). So each turn is
/// two steps: PASSIVE, unlocked, copies the bulk; then, once the WAL is past
/// [`SQLITE_RESTART_AFTER_FRAMES`], RESTART copies the tail written meanwhile while holding
/// the service's connection, so that its next transaction rewinds the WAL. (RESTART does
/// not wait for another process: a busy one is tried again next turn.)
/// `journal_size_limit` (in [`SQLITE_PRAGMAS`]) then trims a WAL that grew past 64 MiB.
struct Checkpointer(rusqlite::Connection);

impl Checkpointer {
    fn open(path: &str) -> rusqlite::Result<Checkpointer> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Never wait for another process's reader or writer: RESTART runs with the service's
        // connection held, and a busy checkpoint is simply tried again next turn.
        conn.busy_timeout(Duration::ZERO)?;
        Ok(Checkpointer(conn))
    }

    /// A checkpoint (`PRAGMA wal_checkpoint(...)`): the frames in the WAL when it started.
    fn checkpoint(&self, restart: bool) -> rusqlite::Result<i64> {
        let sql = if restart {
            "PRAGMA wal_checkpoint(RESTART)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        self.0.query_row(sql, [], |r| r.get(1))
    }

    /// One turn: the bulk unlocked, then (if the WAL was `restart_after` frames or longer)
    /// the tail with `db`'s connection held, so that no transaction runs until the WAL has
    /// rewound; true when it took that second step. PASSIVE reports only the frames there
    /// were when it started: whether more came while it copied, it cannot tell.
    fn turn(
        &self,
        db: &tokio::sync::Mutex<rusqlite::Connection>,
        restart_after: i64,
    ) -> rusqlite::Result<bool> {
        if self.checkpoint(false)? < restart_after {
            return Ok(false);
        }
        let _writer = db.blocking_lock();
        self.checkpoint(true)?;
        Ok(true)
    }

    /// Runs until the database's connection is dropped.
    fn spawn(
        self,
        db: std::sync::Weak<tokio::sync::Mutex<rusqlite::Connection>>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SQLITE_CHECKPOINT_EVERY);
                    let Some(db) = db.upgrade() else { break };
                    if let Err(e) = self.turn(&db, SQLITE_RESTART_AFTER_FRAMES) {
                        tracing::warn!("SQLite checkpoint: {e}");
                    }
                }
            })
            .map(drop)
    }
}

/// `%XX` escapes decoded (as `sqlite_url_for` writes them).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// sqlx's migration bookkeeping, on the SQLite connection: the same table, the same
/// checksums; every pending migration and its record in one transaction.
fn migrate_sqlite(
    conn: &mut rusqlite::Connection,
    migrations: &[Migration],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: std::collections::HashMap<i64, (bool, Vec<u8>)> = tx
        .prepare("SELECT version, success, checksum FROM _sqlx_migrations")?
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<Result<_, _>>()?;
    if let Some(version) = applied.iter().find(|(_, (ok, _))| !ok).map(|(v, _)| v) {
        return Err(format!(
            "migration {version} is partially applied; fix the database and remove its row \
             from _sqlx_migrations"
        )
        .into());
    }
    let mut pending: Vec<&Migration> = migrations.iter().collect();
    pending.sort_by_key(|m| m.version);
    for m in pending {
        let checksum = sqlx_migration(m, Backend::Sqlite).checksum.into_owned();
        match applied.get(&m.version) {
            Some((_, stored)) if *stored == checksum => continue,
            Some(_) => {
                return Err(format!(
                    "migration {} ({}) was applied with other SQL than this binary's",
                    m.version, m.description
                )
                .into());
            }
            None => {}
        }
        let started = std::time::Instant::now();
        tx.execute_batch(m.sqlite)
            .map_err(|e| format!("migration {} ({}): {e}", m.version, m.description))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            rusqlite::params![
                m.version,
                m.description,
                checksum,
                i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn sqlx_migration(m: &Migration, backend: Backend) -> sqlx::migrate::Migration {
    sqlx::migrate::Migration::new(
        m.version,
        Cow::Borrowed(m.description),
        MigrationType::Simple,
        m.sql(backend).into_sql_str(),
        false,
    )
}

/// A Postgres pool for `cfg`, migrated.
async fn connect_postgres(cfg: &DbConfig, migrations: &[Migration]) -> Result<PgPool, StoreError> {
    let schema = cfg
        .schema
        .as_deref()
        .map(validate_schema_name)
        .transpose()?;
    let url = redact_url(&cfg.url);
    let connect_error = |source: sqlx::Error| StoreError::Connect {
        url: url.clone(),
        source: source.into(),
    };
    let options = PgConnectOptions::from_str(&cfg.url).map_err(connect_error)?;
    let set_search_path: Option<Arc<str>> =
        schema.map(|s| format!("SET search_path TO \"{s}\"").into());
    let pool = PgPoolOptions::new()
        .max_connections(cfg.max_connections.max(1))
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
                if let Some(sql) = set_search_path {
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
            .map(|m| sqlx_migration(m, Backend::Postgres))
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
        return Err(StoreError::Migrate {
            url,
            source: Box::new(source),
        });
    }
    Ok(pool)
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

    /// One connection writing without pause while checkpoint turns run beside it, as under
    /// load: the WAL must rewind. With PASSIVE checkpoints alone it never did, and grew by
    /// every page written.
    #[test]
    fn the_wal_rewinds_under_steady_writes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let (conn, checkpointer) = open_sqlite(&url, &[]).unwrap();
        let checkpointer = checkpointer.expect("a file database has a checkpointer");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let db = Arc::new(tokio::sync::Mutex::new(conn));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut written = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let row = "x".repeat(2000);
                    db.blocking_lock()
                        .execute("INSERT INTO t (v) VALUES (?1)", [row])
                        .unwrap();
                    written += 1;
                }
                written
            })
        };
        let restarted: Vec<bool> = (0..12)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(80));
                checkpointer.turn(&db, 20).unwrap()
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        // Each insert commits at least one page: a WAL that never rewound holds at least
        // one frame per insert.
        let frames = checkpointer.checkpoint(false).unwrap();
        assert!(written > 500, "too few writes to tell: {written}");
        assert!(
            restarted.iter().any(|r| *r),
            "no turn rewound the WAL: {restarted:?}"
        );
        assert!(
            frames < i64::try_from(written / 2).unwrap(),
            "the WAL holds {frames} frames after {written} commits: it did not rewind"
        );
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
