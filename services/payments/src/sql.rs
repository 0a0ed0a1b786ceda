//! Every statement payments runs. `$N` placeholders work on both SQLite and Postgres.

use lab_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration::common(
    1,
    "ledger",
    "CREATE TABLE charges (
        charge_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        refunded BIGINT NOT NULL DEFAULT 0,
        after_deadline BIGINT NOT NULL DEFAULT 0,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX charges_by_order ON charges (order_id);",
)];

pub const INSERT_CHARGE: &str = "INSERT INTO charges
    (charge_id, order_id, idempotency_key, amount_minor, currency, after_deadline, created_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const REFUND: &str = "UPDATE charges SET refunded = 1 WHERE charge_id = $1 AND refunded = 0";
pub const GET_CHARGE: &str =
    "SELECT charge_id, order_id, amount_minor, currency, refunded, created_at_ms
    FROM charges WHERE charge_id = $1";
pub const COUNTERS: &str = "SELECT
    COUNT(*) AS charges_total,
    COUNT(DISTINCT order_id) AS orders_charged,
    CAST(COALESCE(SUM(after_deadline), 0) AS BIGINT) AS charges_after_deadline,
    CAST(COALESCE(SUM(refunded), 0) AS BIGINT) AS refunds
    FROM charges";
pub const ORDERS_CHARGED_MORE_THAN_ONCE: &str =
    "SELECT COUNT(*) AS orders_charged_more_than_once FROM
    (SELECT order_id FROM charges GROUP BY order_id HAVING COUNT(*) > 1) AS t";
pub const CHARGED_ORDER_IDS: &str = "SELECT DISTINCT order_id FROM charges WHERE refunded = 0";
