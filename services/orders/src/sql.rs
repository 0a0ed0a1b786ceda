//! Every statement orders runs (public for tests of its migrations). `$N` placeholders work
//! on both SQLite and Postgres.

use lab_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration::common(
        1,
        "orders and outbox",
        "CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        items_json TEXT NOT NULL,
        total_minor BIGINT NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT 'USD',
        status TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        charge_id TEXT NOT NULL DEFAULT '',
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX orders_by_key ON orders (idempotency_key);
    CREATE TABLE outbox (
        event_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        delivered_at_ms BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_pending ON outbox (delivered_at_ms, created_at_ms);",
    ),
    // The W3C traceparent of the request that wrote the event (NULL when traces are off),
    // so the relay's delivery continues the order's trace.
    Migration::common(
        2,
        "outbox traceparent",
        "ALTER TABLE outbox ADD COLUMN traceparent TEXT",
    ),
    // The saga: its state is the order's status (PENDING, RESERVED, CONFIRMED,
    // COMPENSATING, FAILED). `dedup_key` is the idempotency key when idempotency is on
    // (unique: one saga per key) and NULL when off (every attempt its own saga). `driver`
    // names the process driving the saga; `saga_drivers` holds each process's heartbeat, so
    // the recovery worker can tell a saga whose driver died from one still being driven.
    // Orders left PENDING by the code before the saga may have been charged: their
    // compensation voids them at payments too.
    Migration::common(
        3,
        "order saga",
        "ALTER TABLE orders ADD COLUMN dedup_key TEXT;
    ALTER TABLE orders ADD COLUMN failure_code BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN refund_needed BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN driver TEXT NOT NULL DEFAULT '';
    ALTER TABLE orders ADD COLUMN recovery_attempts BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN next_attempt_at_ms BIGINT NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX orders_dedup ON orders (dedup_key);
    CREATE INDEX orders_unfinished ON orders (updated_at_ms)
        WHERE status IN ('PENDING', 'RESERVED', 'COMPENSATING');
    CREATE TABLE saga_drivers (
        driver TEXT PRIMARY KEY,
        alive_until_ms BIGINT NOT NULL
    );
    UPDATE orders SET refund_needed = 1 WHERE status = 'PENDING';",
    ),
    // The same index, its condition written without a three-value IN: SQLite evaluates a
    // partial index's condition for the old and the new row of every write to `orders`,
    // and codes an IN of three or more constants as a temporary table built and dropped
    // each time (two per saga transition, 7 % of the SQLite chain's CPU). A saga's status
    // is one of five, so "not finished" is the same set. The queries that use the index
    // repeat its condition word for word (SQLite's rule for using a partial index).
    Migration::common(
        4,
        "unfinished sagas index without IN",
        "DROP INDEX orders_unfinished;
    CREATE INDEX orders_unfinished ON orders (updated_at_ms)
        WHERE status NOT IN ('CONFIRMED', 'FAILED');",
    ),
];

/// The saga's first step. With a `dedup_key`, a second saga for the key inserts nothing.
pub const INSERT_SAGA: &str = "INSERT INTO orders
    (order_id, idempotency_key, dedup_key, customer_id, items_json, status, driver,
     created_at_ms, updated_at_ms)
    VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $7)
    ON CONFLICT (dedup_key) DO NOTHING";
// Every transition names the driver and the state it leaves: a driver that lost the saga
// to another (its process was presumed dead) changes nothing.
pub const MARK_RESERVED: &str = "UPDATE orders
    SET status = 'RESERVED', total_minor = $3, currency = $4, updated_at_ms = $5
    WHERE order_id = $1 AND driver = $2 AND status = 'PENDING'";
/// The charge's outcome and the confirmation, in one statement (with the outbox row in the
/// same transaction).
pub const CONFIRM: &str = "UPDATE orders
    SET status = 'CONFIRMED', charge_id = $3, updated_at_ms = $4
    WHERE order_id = $1 AND driver = $2 AND status = 'RESERVED'";
/// Postgres: CONFIRM and the outbox row in one statement (one round trip instead of four
/// with BEGIN and COMMIT); inserts nothing when the confirmation is fenced off. SQLite has
/// no UPDATE in a WITH clause: there the two run in a transaction, in-process.
pub const CONFIRM_WITH_EVENT_PG: &str = "WITH confirmed AS (
        UPDATE orders SET status = 'CONFIRMED', charge_id = $3, updated_at_ms = $4
        WHERE order_id = $1 AND driver = $2 AND status = 'RESERVED'
        RETURNING order_id)
    INSERT INTO outbox (event_id, order_id, kind, payload_json, created_at_ms, traceparent)
    SELECT $5, order_id, $6, $7, $4, $8 FROM confirmed";
pub const START_COMPENSATION: &str = "UPDATE orders
    SET status = 'COMPENSATING', failure_reason = $3, failure_code = $4, refund_needed = $5,
        updated_at_ms = $6
    WHERE order_id = $1 AND driver = $2 AND status IN ('PENDING', 'RESERVED')";
pub const MARK_FAILED: &str = "UPDATE orders SET status = 'FAILED', updated_at_ms = $3
    WHERE order_id = $1 AND driver = $2 AND status = 'COMPENSATING'";
/// A driver that could not finish the saga: the recovery worker tries again after a backoff.
pub const DEFER: &str = "UPDATE orders
    SET recovery_attempts = recovery_attempts + 1, next_attempt_at_ms = $3
    WHERE order_id = $1 AND driver = $2";
/// Unfinished sagas due for recovery whose driver is not alive, or is this process.
pub const RECOVERABLE: &str = "SELECT o.order_id, o.driver FROM orders o
    LEFT JOIN saga_drivers d ON d.driver = o.driver
    WHERE o.status NOT IN ('CONFIRMED', 'FAILED')
      AND o.next_attempt_at_ms <= $1
      AND (d.alive_until_ms IS NULL OR d.alive_until_ms < $1 OR o.driver = $2)
    ORDER BY o.updated_at_ms LIMIT $3";
/// Takes a saga over from its (dead) driver; no row when another process took it first.
pub const TAKE_OVER: &str = "UPDATE orders SET driver = $2, updated_at_ms = $4
    WHERE order_id = $1 AND driver = $3 AND status NOT IN ('CONFIRMED', 'FAILED')";
pub const HEARTBEAT: &str = "INSERT INTO saga_drivers (driver, alive_until_ms) VALUES ($1, $2)
    ON CONFLICT (driver) DO UPDATE SET alive_until_ms = excluded.alive_until_ms";
pub const RETIRE_DRIVER: &str = "DELETE FROM saga_drivers WHERE driver = $1";
pub const FORGET_DEAD_DRIVERS: &str = "DELETE FROM saga_drivers WHERE alive_until_ms < $1";
pub const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (event_id, order_id, kind, payload_json, created_at_ms, traceparent)
    VALUES ($1, $2, $3, $4, $5, $6)";
/// Everything a saga needs to be answered from or driven on.
macro_rules! select_saga {
    ($where:literal) => {
        concat!(
            "SELECT order_id, idempotency_key, dedup_key, customer_id, items_json, total_minor,
            currency, status, failure_reason, failure_code, refund_needed, charge_id,
            created_at_ms, recovery_attempts FROM orders ",
            $where
        )
    };
}
pub const GET_ORDER: &str = select_saga!("WHERE order_id = $1");
pub const SAGA_BY_KEY: &str = select_saga!("WHERE dedup_key = $1");
pub const PENDING_EVENTS: &str =
    "SELECT event_id, order_id, kind, payload_json, traceparent FROM outbox
    WHERE delivered_at_ms IS NULL ORDER BY created_at_ms, event_id LIMIT $1";
/// The events whose ids `$1` lists (a JSON array of strings) delivered at `$2`.
pub const MARK_DELIVERED_SQLITE: &str = "UPDATE outbox
    SET delivered_at_ms = $2, attempts = attempts + 1
    WHERE event_id IN (SELECT value FROM json_each($1))";
pub const MARK_DELIVERED_PG: &str = "UPDATE outbox
    SET delivered_at_ms = $2, attempts = attempts + 1
    WHERE event_id IN (SELECT jsonb_array_elements_text($1::jsonb))";
pub const MARK_FAILED_ATTEMPT: &str =
    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE event_id = $1";
pub const COUNT_BY_STATUS: &str = "SELECT status, COUNT(*) AS n FROM orders GROUP BY status";
pub const DUPLICATE_CONFIRMED: &str =
    "SELECT COUNT(*) AS keys_with_duplicate_orders, CAST(COALESCE(SUM(n - 1), 0) AS BIGINT) AS duplicate_orders FROM
    (SELECT idempotency_key, COUNT(*) AS n FROM orders WHERE status = 'CONFIRMED'
     GROUP BY idempotency_key HAVING COUNT(*) > 1) AS t";
pub const KEYS_WITH_MULTIPLE_ORDERS: &str = "SELECT COUNT(*) AS keys_with_multiple_orders FROM
    (SELECT idempotency_key FROM orders GROUP BY idempotency_key HAVING COUNT(*) > 1) AS t";
pub const OUTBOX_COUNTERS: &str = "SELECT
    CAST(COALESCE(SUM(CASE WHEN delivered_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS outbox_backlog,
    CAST(COALESCE(SUM(CASE WHEN delivered_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS outbox_delivered
    FROM outbox";
pub const CONFIRMED_IDS: &str = "SELECT order_id FROM orders WHERE status = 'CONFIRMED'";
/// Sagas not finished, and those among them older than `$1` (unix ms).
pub const UNFINISHED: &str = "SELECT COUNT(*) AS sagas_unfinished,
    CAST(COALESCE(SUM(CASE WHEN created_at_ms < $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS sagas_overdue
    FROM orders WHERE status NOT IN ('CONFIRMED', 'FAILED')";
pub const UNFINISHED_IDS: &str =
    "SELECT order_id FROM orders WHERE status NOT IN ('CONFIRMED', 'FAILED')";
