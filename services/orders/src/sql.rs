//! Every statement orders runs. `$N` placeholders work on both SQLite and Postgres.

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
];

pub const INSERT_ORDER: &str = "INSERT INTO orders
    (order_id, idempotency_key, customer_id, items_json, status, created_at_ms, updated_at_ms)
    VALUES ($1, $2, $3, $4, 'PENDING', $5, $5)";
pub const FAIL_ORDER: &str =
    "UPDATE orders SET status = 'FAILED', failure_reason = $2, total_minor = $3, updated_at_ms = $4
    WHERE order_id = $1";
pub const CONFIRM_ORDER: &str = "UPDATE orders SET status = 'CONFIRMED', total_minor = $2, currency = $3, charge_id = $4, updated_at_ms = $5
    WHERE order_id = $1";
pub const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (event_id, order_id, kind, payload_json, created_at_ms, traceparent)
    VALUES ($1, $2, $3, $4, $5, $6)";
pub const GET_ORDER: &str =
    "SELECT order_id, idempotency_key, customer_id, items_json, total_minor, currency,
    status, failure_reason, charge_id, created_at_ms FROM orders WHERE order_id = $1";
pub const PENDING_EVENTS: &str =
    "SELECT event_id, order_id, kind, payload_json, traceparent FROM outbox
    WHERE delivered_at_ms IS NULL ORDER BY created_at_ms, event_id LIMIT $1";
pub const MARK_DELIVERED: &str =
    "UPDATE outbox SET delivered_at_ms = $2, attempts = attempts + 1 WHERE event_id = $1";
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
