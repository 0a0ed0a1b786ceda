//! Every statement payments runs. `$N` placeholders work on both SQLite and Postgres. Public:
//! the chain bench runs the same writes without the lab's layers.

use lab_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration::common(
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
    ),
    // `dedup_key`: the idempotency key when idempotency is on (unique: a key is charged at
    // most once, even when the idempotency store lost its record), NULL when off.
    // `order_payments`: one row per order charged or voided; a charge locks its order's row,
    // so a void (refund by order) and a charge of the same order never interleave, and a
    // voided order takes no more charges.
    Migration::common(
        2,
        "dedup key and voids",
        "ALTER TABLE charges ADD COLUMN dedup_key TEXT;
    CREATE UNIQUE INDEX charges_dedup ON charges (dedup_key);
    CREATE TABLE order_payments (
        order_id TEXT PRIMARY KEY,
        voided_at_ms BIGINT
    );",
    ),
];

/// Takes the order's row lock (until commit) and says whether the order was voided.
pub const LOCK_ORDER: &str = "INSERT INTO order_payments (order_id) VALUES ($1)
    ON CONFLICT (order_id) DO UPDATE SET voided_at_ms = order_payments.voided_at_ms
    RETURNING voided_at_ms";
/// Inserts nothing when the key was charged already.
pub const INSERT_CHARGE: &str = "INSERT INTO charges
    (charge_id, order_id, idempotency_key, dedup_key, amount_minor, currency, after_deadline,
     created_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (dedup_key) DO NOTHING";
pub const CHARGE_BY_KEY: &str = "SELECT charge_id, order_id, amount_minor, currency, refunded
    FROM charges WHERE dedup_key = $1";
pub const REFUND: &str = "UPDATE charges SET refunded = 1 WHERE charge_id = $1 AND refunded = 0";
/// Voids the order (taking its row lock), keeping the first void's time.
pub const VOID_ORDER: &str = "INSERT INTO order_payments (order_id, voided_at_ms) VALUES ($1, $2)
    ON CONFLICT (order_id)
    DO UPDATE SET voided_at_ms = COALESCE(order_payments.voided_at_ms, excluded.voided_at_ms)";
pub const REFUND_ORDER: &str =
    "UPDATE charges SET refunded = 1 WHERE order_id = $1 AND refunded = 0";
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
/// Charges per idempotency key (the logical request), refunded or not, and unrefunded.
pub const PER_KEY: &str = "SELECT
    COUNT(*) AS keys_charged_more_than_once,
    CAST(COALESCE(SUM(n - 1), 0) AS BIGINT) AS duplicate_key_charges,
    CAST(COALESCE(SUM(CASE WHEN unrefunded > 1 THEN 1 ELSE 0 END), 0) AS BIGINT)
        AS keys_with_unrefunded_duplicates
    FROM (SELECT idempotency_key, COUNT(*) AS n,
          CAST(SUM(CASE WHEN refunded = 0 THEN 1 ELSE 0 END) AS BIGINT) AS unrefunded
          FROM charges GROUP BY idempotency_key HAVING COUNT(*) > 1) AS t";
pub const VOIDS: &str = "SELECT
    CAST(COALESCE(SUM(CASE WHEN voided_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT)
        AS voided_orders
    FROM order_payments";
