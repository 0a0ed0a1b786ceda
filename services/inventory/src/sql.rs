//! Every statement inventory runs. `$N` placeholders work on both SQLite and Postgres. Public:
//! the chain bench runs the same writes without the lab's layers.

use lab_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration::common(
    1,
    "products and reservations",
    "CREATE TABLE products (
        product_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        available BIGINT NOT NULL,
        reserved BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE reservations (
        order_id TEXT PRIMARY KEY,
        reservation_id TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        released_at_ms BIGINT
    );
    CREATE TABLE reservation_items (
        order_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        PRIMARY KEY (order_id, product_id)
    );
    INSERT INTO products (product_id, name, price_minor, currency, available) VALUES
        ('sku-1', 'Widget', 199, 'USD', 1000000),
        ('sku-2', 'Gadget', 299, 'USD', 1000000),
        ('sku-3', 'Gizmo', 399, 'USD', 1000000),
        ('sku-4', 'Doohickey', 499, 'USD', 1000000),
        ('sku-5', 'Sprocket', 599, 'USD', 1000000),
        ('sku-6', 'Flange', 699, 'USD', 1000000),
        ('sku-7', 'Grommet', 799, 'USD', 1000000),
        ('sku-8', 'Bracket', 899, 'USD', 1000000),
        ('sku-9', 'Ratchet', 999, 'USD', 1000000),
        ('sku-10', 'Limited edition', 10000, 'USD', 5);",
)];

/// Starts the reservation with a write, so the transaction holds the write lock from its
/// first statement (SQLite) and a duplicate order id is detected at once.
pub const INSERT_RESERVATION: &str =
    "INSERT INTO reservations (order_id, reservation_id, total_minor, status, created_at_ms)
     VALUES ($1, $2, $4, 'OPEN', $3) ON CONFLICT (order_id) DO NOTHING";
pub const SELECT_RESERVATION: &str =
    "SELECT reservation_id, total_minor, status FROM reservations WHERE order_id = $1";
/// The price a reservation is charged at (read without a lock; TAKE_STOCK checks it).
pub const PRICE: &str = "SELECT price_minor, currency FROM products WHERE product_id = $1";
/// Takes the product's row lock until commit; nothing when too few are available or the
/// price is no longer `$3`.
pub const TAKE_STOCK: &str =
    "UPDATE products SET available = available - $1, reserved = reserved + $1
     WHERE product_id = $2 AND available >= $1 AND price_minor = $3";
pub const PRODUCT_EXISTS: &str = "SELECT available FROM products WHERE product_id = $1";
pub const INSERT_ITEM: &str =
    "INSERT INTO reservation_items (order_id, product_id, quantity) VALUES ($1, $2, $3)";
/// Takes the reservation's row lock — waiting for a Reserve of the order still in flight —
/// and returns its status; when the order has no reservation, inserts a CANCELLED one, so a
/// Reserve arriving after its Release is refused instead of taking stock nobody releases.
pub const LOCK_RESERVATION: &str =
    "INSERT INTO reservations (order_id, reservation_id, total_minor, status, created_at_ms, released_at_ms)
     VALUES ($1, '', 0, 'CANCELLED', $2, $2)
     ON CONFLICT (order_id) DO UPDATE SET status = reservations.status
     RETURNING status";
pub const RELEASE: &str = "UPDATE reservations SET status = 'RELEASED', released_at_ms = $2
     WHERE order_id = $1 AND status = 'OPEN'";
pub const RESERVATION_ITEMS: &str =
    "SELECT product_id, quantity FROM reservation_items WHERE order_id = $1 ORDER BY product_id";
pub const RETURN_STOCK: &str =
    "UPDATE products SET available = available + $1, reserved = reserved - $1
     WHERE product_id = $2";
pub const GET_STOCK: &str = "SELECT product_id, available, reserved, price_minor, currency FROM products WHERE product_id = $1";
pub const COUNT_BY_STATUS: &str = "SELECT status, COUNT(*) AS n FROM reservations GROUP BY status";
pub const OPEN_ORDER_IDS: &str = "SELECT order_id FROM reservations WHERE status = 'OPEN'";
