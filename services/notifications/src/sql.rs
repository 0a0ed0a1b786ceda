//! Every statement notifications runs. `$N` placeholders work on both SQLite and Postgres. Public:
//! the chain bench runs the same writes without the lab's layers.

use lab_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration::common(
    1,
    "deliveries",
    "CREATE TABLE deliveries (
        event_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        receipts BIGINT NOT NULL,
        delivered_at_ms BIGINT NOT NULL
    );
    CREATE INDEX deliveries_by_order ON deliveries (order_id);",
)];

/// The side effect happens on insert; a repeat only counts the receipt.
pub const DELIVER: &str =
    "INSERT INTO deliveries (event_id, order_id, kind, payload_json, receipts, delivered_at_ms)
    VALUES ($1, $2, $3, $4, 1, $5)
    ON CONFLICT (event_id) DO UPDATE SET receipts = deliveries.receipts + 1
    RETURNING receipts";
pub const LIST_ALL: &str =
    "SELECT event_id, order_id, kind, receipts, delivered_at_ms FROM deliveries
    ORDER BY delivered_at_ms DESC, event_id LIMIT $1";
pub const LIST_FOR_ORDER: &str =
    "SELECT event_id, order_id, kind, receipts, delivered_at_ms FROM deliveries
    WHERE order_id = $1 ORDER BY delivered_at_ms DESC, event_id LIMIT $2";
pub const COUNTERS: &str = "SELECT
    COUNT(*) AS deliveries_total,
    CAST(COALESCE(SUM(receipts), 0) AS BIGINT) AS receipts_total,
    CAST(COALESCE(SUM(CASE WHEN receipts > 1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS events_received_more_than_once
    FROM deliveries";
pub const ORDERS_WITH_MORE_THAN_ONE_EVENT: &str =
    "SELECT COUNT(*) AS orders_notified_more_than_once FROM
    (SELECT order_id FROM deliveries GROUP BY order_id HAVING COUNT(*) > 1) AS t";
pub const DELIVERED_ORDER_IDS: &str = "SELECT DISTINCT order_id FROM deliveries";
