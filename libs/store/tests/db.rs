//! `Db` against SQLite (temp files) and the test Postgres (one fresh schema per test).

use lab_store::query::{FromValue, On};
use lab_store::testing::{drop_schema, postgres_test_config};
use lab_store::{Backend, Db, DbConfig, DbError, Migration, StoreError, Tx, now_ms, query};

const MIGRATIONS: &[Migration] = &[
    Migration::common(
        1,
        "items",
        "CREATE TABLE items (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            qty BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX items_by_name ON items (name);",
    ),
    Migration::per_backend(
        2,
        "events",
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)",
        "CREATE TABLE events (seq BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
    ),
];

const MORE: Migration = Migration::common(3, "notes", "CREATE TABLE notes (id TEXT PRIMARY KEY)");

fn sqlite_config(dir: &std::path::Path) -> DbConfig {
    DbConfig {
        url: lab_store::sqlite_url_for(&dir.join("data dir"), "orders"),
        schema: Some("orders".into()), // ignored on SQLite
        max_connections: 4,
    }
}

/// A migrated SQLite database in a fresh temp dir (kept alive by the returned guard).
async fn sqlite_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&sqlite_config(dir.path()), MIGRATIONS)
        .await
        .unwrap();
    (dir, db)
}

async fn insert_item(db: &Db, id: &str, name: &str) -> Result<(), DbError> {
    query("INSERT INTO items (id, name, qty, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(name)
        .bind(3_i64)
        .bind(now_ms())
        .execute(db)
        .await
        .map(|_| ())
}

async fn applied_versions(db: &Db) -> Vec<i64> {
    query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0usize).unwrap())
        .collect()
}

/// The first column of the one row `q` returns.
async fn scalar<'a, T: FromValue>(q: lab_store::query::Query, on: impl Into<On<'a>>) -> T {
    q.fetch_one(on).await.unwrap().try_get(0usize).unwrap()
}

// ---- bodies shared by both backends ----

async fn migrations_run_once_and_reconnect_is_fine(cfg: &DbConfig) {
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    assert_eq!(applied_versions(&db).await, [1, 2]);
    insert_item(&db, "a", "apple").await.unwrap();
    query("INSERT INTO events (body) VALUES ($1)")
        .bind("hello")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    // Same migrations again: nothing re-runs, data survives.
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    assert_eq!(applied_versions(&db).await, [1, 2]);
    let count: i64 = scalar(query("SELECT COUNT(*) FROM items"), &db).await;
    assert_eq!(count, 1);
    db.close().await;

    // One more migration: only it runs.
    let mut more = MIGRATIONS.to_vec();
    more.push(MORE);
    let db = Db::connect(cfg, &more).await.unwrap();
    assert_eq!(applied_versions(&db).await, [1, 2, 3]);
    query("INSERT INTO notes (id) VALUES ($1)")
        .bind("n1")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    // An older binary, without migration 3, still starts.
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    assert_eq!(applied_versions(&db).await, [1, 2, 3]);
    db.close().await;

    // A shipped migration whose SQL changed is refused, naming the database.
    let mut edited = more.clone();
    edited[0].sqlite = "CREATE TABLE items (id TEXT PRIMARY KEY)";
    edited[0].postgres = edited[0].sqlite;
    let err = Db::connect(cfg, &edited).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate { .. }), "{err:?}");
}

async fn placeholders_bind_by_number(cfg: &DbConfig) {
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    // $2 appears before $1, and $1 twice.
    query("INSERT INTO items (id, name, qty, created_ms) VALUES ($2, $1, $3, $3)")
        .bind("the-name")
        .bind("the-id")
        .bind(42_i64)
        .execute(&db)
        .await
        .unwrap();
    let row = query("SELECT id, name, qty FROM items WHERE name = $1 AND id = $2")
        .bind("the-name")
        .bind("the-id")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>("id").unwrap(), "the-id");
    assert_eq!(row.try_get::<String, _>("name").unwrap(), "the-name");
    assert_eq!(row.try_get::<i64, _>("qty").unwrap(), 42);
    db.close().await;
}

async fn unique_violation_is_detected(cfg: &DbConfig) {
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    insert_item(&db, "dup", "x").await.unwrap();
    let err = insert_item(&db, "dup", "y").await.unwrap_err();
    assert!(
        err.is_unique_violation(),
        "not seen as a unique violation: {err}"
    );

    // Other errors are not.
    let not_null = query("INSERT INTO items (id, name, qty, created_ms) VALUES ($1, NULL, 1, 1)")
        .bind("nn")
        .execute(&db)
        .await
        .unwrap_err();
    assert!(!not_null.is_unique_violation(), "{not_null}");
    let missing = query("SELECT * FROM no_such_table")
        .execute(&db)
        .await
        .unwrap_err();
    assert!(!missing.is_unique_violation(), "{missing}");

    // The failed insert did not poison the pool; a transaction still works.
    let mut tx = db.begin().await.unwrap();
    let err = insert_item_tx(&mut tx, "dup").await.unwrap_err();
    assert!(err.is_unique_violation());
    tx.rollback().await.unwrap();
    db.close().await;
}

async fn insert_item_tx(tx: &mut Tx, id: &str) -> Result<(), DbError> {
    query("INSERT INTO items (id, name, qty, created_ms) VALUES ($1, 'n', 1, 1)")
        .bind(id)
        .execute(tx)
        .await
        .map(|_| ())
}

/// Writers that start transactions with a write wait for each other instead of failing.
async fn concurrent_write_transactions_succeed(cfg: &DbConfig) {
    let db = Db::connect(cfg, MIGRATIONS).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                for j in 0..5 {
                    insert_item_tx(&mut tx, &format!("w{i}-{j}")).await?;
                }
                query("UPDATE items SET qty = qty + 1 WHERE id = $1")
                    .bind(format!("w{i}-0"))
                    .execute(&mut tx)
                    .await?;
                tx.commit().await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let count: i64 = scalar(query("SELECT COUNT(*) FROM items"), &db).await;
    assert_eq!(count, 80);
    db.close().await;
}

// ---- SQLite ----

#[tokio::test]
async fn sqlite_creates_the_file_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sqlite_config(dir.path());
    assert!(!dir.path().join("data dir/orders.db").exists());
    migrations_run_once_and_reconnect_is_fine(&cfg).await;
    assert!(dir.path().join("data dir/orders.db").is_file());
}

#[tokio::test]
async fn sqlite_binds_placeholders_by_number() {
    let dir = tempfile::tempdir().unwrap();
    placeholders_bind_by_number(&sqlite_config(dir.path())).await;
}

#[tokio::test]
async fn sqlite_detects_unique_violations() {
    let dir = tempfile::tempdir().unwrap();
    unique_violation_is_detected(&sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writers_wait_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_write_transactions_succeed(&sqlite_config(dir.path())).await;
}

#[tokio::test]
async fn sqlite_has_one_connection_in_wal_mode_with_busy_timeout_and_foreign_keys() {
    let (_dir, db) = sqlite_db().await;
    assert_eq!(db.backend(), Backend::Sqlite);
    let mode: String = scalar(query("PRAGMA journal_mode"), &db).await;
    let timeout: i64 = scalar(query("PRAGMA busy_timeout"), &db).await;
    let sync: i64 = scalar(query("PRAGMA synchronous"), &db).await;
    let fks: i64 = scalar(query("PRAGMA foreign_keys"), &db).await;
    assert_eq!((mode.as_str(), timeout, sync, fks), ("wal", 5000, 1, 1));

    // One connection per file, whatever the config asks for (4 here): while a transaction
    // holds it, another caller's statement waits for it.
    let tx = db.begin().await.unwrap();
    let waiting = tokio::spawn({
        let db = db.clone();
        async move {
            let started = std::time::Instant::now();
            insert_item(&db, "late", "waited").await.unwrap();
            started.elapsed()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "a statement ran beside an open transaction"
    );
    tx.commit().await.unwrap();
    let waited = waiting.await.unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(150),
        "{waited:?}"
    );
}

/// Commits do not checkpoint (the WAL grows, the database file does not); the checkpoint
/// thread copies the WAL into the file within a second.
#[tokio::test]
async fn sqlite_checkpoints_off_the_request_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sqlite_config(dir.path());
    let db = Db::connect(&cfg, MIGRATIONS).await.unwrap();
    let autocheckpoint: i64 = scalar(query("PRAGMA wal_autocheckpoint"), &db).await;
    assert_eq!(autocheckpoint, 0);
    let file = dir.path().join("data dir").join("orders.db");
    let size = || std::fs::metadata(&file).unwrap().len();
    // Enough pages for the file to grow once they are copied.
    let before = size();
    for i in 0..2000 {
        insert_item(&db, &format!("k{i:05}"), &"x".repeat(200))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while size() <= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        size() > before,
        "the database file stayed at {before} bytes: nothing checkpointed the WAL"
    );
}

#[tokio::test]
async fn sqlite_dropped_transaction_rolls_back_and_frees_the_connection() {
    let (_dir, db) = sqlite_db().await;
    {
        let mut tx = db.begin().await.unwrap();
        insert_item_tx(&mut tx, "gone").await.unwrap();
        // Dropped here: a cancelled request handler does the same.
    }
    insert_item(&db, "kept", "k").await.unwrap();
    let ids: Vec<String> = query("SELECT id FROM items ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("id").unwrap())
        .collect();
    assert_eq!(ids, ["kept"]);
}

#[tokio::test]
async fn sqlite_reports_missing_columns_and_wrong_types_by_name() {
    let (_dir, db) = sqlite_db().await;
    insert_item(&db, "a", "apple").await.unwrap();
    let row = query("SELECT id, qty FROM items")
        .fetch_one(&db)
        .await
        .unwrap();
    let missing = row.try_get::<String, _>("nope").unwrap_err().to_string();
    assert!(
        missing.contains("\"nope\"") && missing.contains("id, qty"),
        "{missing}"
    );
    let wrong = row.try_get::<String, _>("qty").unwrap_err().to_string();
    assert!(
        wrong.contains("\"qty\"") && wrong.contains("integer"),
        "{wrong}"
    );
    let unbound = query("SELECT id FROM items WHERE id = $2")
        .bind("a")
        .fetch_all(&db)
        .await
        .unwrap_err()
        .to_string();
    assert!(unbound.contains("$2"), "{unbound}");
}

#[tokio::test]
async fn unsupported_url_scheme_is_an_error_naming_the_url() {
    let cfg = DbConfig {
        url: "mysql://app:hunter2@db.example:3306/shop".into(),
        schema: None,
        max_connections: 1,
    };
    let err = Db::connect(&cfg, MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("mysql://app:***@db.example:3306/shop"),
        "{msg}"
    );
    assert!(msg.contains("postgres"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn unopenable_sqlite_file_is_an_error_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/x.db", dir.path().display()); // no mode=rwc, no dir
    let cfg = DbConfig {
        url: url.clone(),
        schema: None,
        max_connections: 1,
    };
    let err = Db::connect(&cfg, MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

// ---- Postgres ----

/// Runs `body` against a fresh schema and drops it afterwards, even if `body` panicked.
async fn with_postgres<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(DbConfig) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cfg = postgres_test_config(tag).await;
    let result = tokio::spawn(body(cfg.clone())).await;
    drop_schema(&cfg).await;
    if let Err(err) = result {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test]
async fn postgres_migrates_once_into_its_schema() {
    with_postgres("migrate", |cfg| async move {
        migrations_run_once_and_reconnect_is_fine(&cfg).await;
        let db = Db::connect(&cfg, MIGRATIONS).await.unwrap();
        assert_eq!(db.backend(), Backend::Postgres);
        // Tables and the migrations table live in the service's schema, not in public.
        let in_schema: i64 = scalar(
            query(
                "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema::text = $1 AND table_name::text IN ('items', 'events', '_sqlx_migrations')",
            )
            .bind(cfg.schema.clone().unwrap()),
            &db,
        )
        .await;
        assert_eq!(in_schema, 3);
        db.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_binds_placeholders_by_number() {
    with_postgres("bind", |cfg| async move {
        placeholders_bind_by_number(&cfg).await
    })
    .await;
}

#[tokio::test]
async fn postgres_detects_unique_violations() {
    with_postgres("unique", |cfg| async move {
        unique_violation_is_detected(&cfg).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_write_transactions_succeed() {
    with_postgres("writers", |cfg| async move {
        concurrent_write_transactions_succeed(&cfg).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schemas_on_one_database_are_isolated() {
    let a = postgres_test_config("iso_a").await;
    let b = postgres_test_config("iso_b").await;
    let (a2, b2) = (a.clone(), b.clone());
    let result = tokio::spawn(async move {
        // Connect both at once: migrations and schema creation must not trip over each other.
        let (da, db) = tokio::join!(Db::connect(&a2, MIGRATIONS), Db::connect(&b2, MIGRATIONS));
        let (da, db) = (da.unwrap(), db.unwrap());
        insert_item(&da, "1", "in a").await.unwrap();
        insert_item(&db, "1", "in b").await.unwrap(); // same id, no conflict
        insert_item(&db, "2", "also in b").await.unwrap();
        let names = |d: Db| async move {
            query("SELECT name FROM items ORDER BY id")
                .fetch_all(&d)
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get::<String, _>(0usize).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(da.clone()).await, ["in a"]);
        assert_eq!(names(db.clone()).await, ["in b", "also in b"]);
        // Every pooled connection, not just the first, uses its schema.
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut tx = da.begin().await.unwrap();
            let n: i64 = scalar(query("SELECT COUNT(*) FROM items"), &mut tx).await;
            assert_eq!(n, 1);
            held.push(tx);
        }
    })
    .await;
    drop_schema(&a).await;
    drop_schema(&b).await;
    if let Err(err) = result {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test]
async fn postgres_bad_schema_name_is_an_error_naming_it() {
    let mut cfg = postgres_test_config("badname").await;
    for bad in ["Orders", "orders; DROP SCHEMA public", "", "a\"b"] {
        cfg.schema = Some(bad.to_owned());
        let err = Db::connect(&cfg, MIGRATIONS).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidSchemaName { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
}

#[tokio::test]
async fn postgres_unreachable_is_an_error_naming_the_url_without_password() {
    let cfg = DbConfig {
        url: "postgres://app:hunter2@127.0.0.1:1/test".into(),
        schema: None,
        max_connections: 1,
    };
    let err = Db::connect(&cfg, MIGRATIONS).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("postgres://app:***@127.0.0.1:1/test"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}
