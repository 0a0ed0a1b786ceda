//! One way to run SQL on either backend: [`query`] with `$N` binds, run on a [`Db`] or in a
//! [`Tx`], answering owned [`Row`]s.
//!
//! On SQLite a statement runs **on the calling task's thread**, under the one connection's
//! async mutex: no worker thread, no channel, no hand-off (sqlx ran each SQLite connection
//! on a thread of its own, two thread switches per statement, which was a third of the
//! chain's CPU). A statement takes microseconds (WAL, `synchronous = NORMAL`), so blocking
//! the runtime's thread for it costs less than the switches did. A transaction holds the
//! connection from [`Db::begin`] to [`Tx::commit`] (or its drop, which rolls back).
//!
//! On Postgres a statement goes through sqlx's `PgPool` (prepared and cached per
//! connection), and rows are copied into [`Row`]s so callers see one type.

use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Postgres, Row as _, TypeInfo, ValueRef};
use tokio::sync::OwnedMutexGuard;

use crate::db::{Db, Engine};

/// A value bound to a `$N` placeholder or read from a column. `None` is SQL NULL (typed, so
/// Postgres knows the parameter's type).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn is_null(&self) -> bool {
        matches!(
            self,
            Value::Int(None) | Value::Real(None) | Value::Text(None) | Value::Bytes(None)
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

macro_rules! value_from {
    ($variant:ident: $($t:ty => $conv:expr),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                #[allow(clippy::redundant_closure_call)]
                Value::$variant(Some(($conv)(v)))
            }
        }
        impl From<Option<$t>> for Value {
            fn from(v: Option<$t>) -> Value {
                #[allow(clippy::redundant_closure_call)]
                Value::$variant(v.map($conv))
            }
        }
    )*};
}
value_from!(Int: i64 => |v| v, i32 => i64::from, bool => i64::from);
value_from!(Real: f64 => |v| v);
value_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
value_from!(Bytes: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec);

/// What went wrong running SQL.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] sqlx::Error),
    /// `fetch_one` found no row.
    #[error("the query returned no row")]
    RowNotFound,
    /// A column that is missing, or holds another type than asked for.
    #[error("column {column}: {reason}")]
    Column { column: String, reason: String },
    /// A placeholder the statement uses that was not bound (or is not `$N`).
    #[error("placeholder {name}: {reason}")]
    Placeholder { name: String, reason: String },
}

impl DbError {
    /// A unique or primary-key violation, on either backend.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            DbError::Postgres(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// The database is out of reach for now (pool exhausted or closed, connection lost, the
    /// SQLite file locked by another process past the busy timeout): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            DbError::Postgres(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => true,
            _ => false,
        }
    }
}

/// A statement and its binds; `$1` is the first [`Query::bind`]. Build with [`query`].
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query {
    sql: &'static str,
    args: Vec<Value>,
}

/// A statement to run on a [`Db`] or in a [`Tx`]. SQL is written once for both backends:
/// `$N` placeholders (SQLite binds them by number too).
pub fn query(sql: &'static str) -> Query {
    Query {
        sql,
        args: Vec::new(),
    }
}

/// Where a [`Query`] runs: a [`Db`] (a statement of its own) or a [`Tx`].
pub enum On<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Db> for On<'a> {
    fn from(db: &'a Db) -> Self {
        On::Db(db)
    }
}

impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// What one run of a statement gave.
struct Ran {
    rows: Vec<Row>,
    affected: u64,
}

impl Query {
    /// Binds the next `$N`.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs the statement; the number of rows it inserted, updated or deleted.
    pub async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<u64, DbError> {
        Ok(self.run(on.into(), false).await?.affected)
    }

    /// Every row the statement returns.
    pub async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>, DbError> {
        Ok(self.run(on.into(), true).await?.rows)
    }

    /// The first row, if any.
    pub async fn fetch_optional<'a>(self, on: impl Into<On<'a>>) -> Result<Option<Row>, DbError> {
        Ok(self.run(on.into(), true).await?.rows.into_iter().next())
    }

    /// The first row; [`DbError::RowNotFound`] when there is none.
    pub async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> Result<Row, DbError> {
        self.fetch_optional(on).await?.ok_or(DbError::RowNotFound)
    }

    async fn run(self, on: On<'_>, rows: bool) -> Result<Ran, DbError> {
        match on {
            On::Db(db) => match db.engine() {
                Engine::Sqlite(conn) => sqlite_run(&*conn.lock().await, self.sql, &self.args),
                Engine::Postgres(pool) => pg_run(self.pg_query(), pool, rows).await,
            },
            On::Tx(tx) => match &mut tx.0 {
                TxInner::Sqlite(conn) => sqlite_run(conn, self.sql, &self.args),
                TxInner::Postgres(tx) => pg_run(self.pg_query(), &mut ***tx, rows).await,
                TxInner::Done => unreachable!("a transaction is used only until commit"),
            },
        }
    }

    fn pg_query(self) -> sqlx::query::Query<'static, Postgres, PgArguments> {
        let mut q = sqlx::query::<Postgres>(self.sql);
        for arg in self.args {
            q = match arg {
                Value::Int(v) => q.bind(v),
                Value::Real(v) => q.bind(v),
                Value::Text(v) => q.bind(v),
                Value::Bytes(v) => q.bind(v),
            };
        }
        q
    }
}

/// A transaction: from [`Db::begin`] until [`Tx::commit`]; dropped uncommitted, it rolls
/// back. On SQLite it holds the file's one connection throughout.
pub struct Tx(TxInner);

enum TxInner {
    Sqlite(OwnedMutexGuard<rusqlite::Connection>),
    Postgres(Box<sqlx::Transaction<'static, Postgres>>),
    Done,
}

impl Tx {
    pub(crate) async fn begin(db: &Db) -> Result<Tx, DbError> {
        Ok(Tx(match db.engine() {
            Engine::Sqlite(conn) => {
                let conn = conn.clone().lock_owned().await;
                // IMMEDIATE: take the write lock now, so another process on the file makes
                // this wait (busy timeout) at BEGIN rather than fail halfway.
                conn.execute_batch("BEGIN IMMEDIATE")?;
                TxInner::Sqlite(conn)
            }
            Engine::Postgres(pool) => TxInner::Postgres(Box::new(pool.begin().await?)),
        }))
    }

    /// Makes the transaction's writes durable and visible.
    pub async fn commit(mut self) -> Result<(), DbError> {
        match std::mem::replace(&mut self.0, TxInner::Done) {
            TxInner::Sqlite(conn) => {
                if let Err(e) = conn.execute_batch("COMMIT") {
                    // Still open: roll back before the connection is free again.
                    self.0 = TxInner::Sqlite(conn);
                    return Err(e.into());
                }
                Ok(())
            }
            TxInner::Postgres(tx) => Ok(tx.commit().await?),
            TxInner::Done => Ok(()),
        }
    }
}

impl Tx {
    /// Undoes the transaction's writes (dropping it does the same).
    pub async fn rollback(mut self) -> Result<(), DbError> {
        match std::mem::replace(&mut self.0, TxInner::Done) {
            TxInner::Sqlite(conn) => Ok(conn.execute_batch("ROLLBACK")?),
            TxInner::Postgres(tx) => Ok(tx.rollback().await?),
            TxInner::Done => Ok(()),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let TxInner::Sqlite(conn) = &self.0
            && !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::warn!("SQLite rollback failed: {e}");
        }
        // A Postgres transaction rolls back on drop by itself.
    }
}

/// One row, owned: column names shared by the rows of one result.
#[derive(Clone, Debug)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

/// A column by name (`"status"`) or position (`0`).
pub trait ColumnIndex {
    fn find(&self, columns: &[String]) -> Option<usize>;
    fn describe(&self) -> String;
}

impl ColumnIndex for &str {
    fn find(&self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl ColumnIndex for usize {
    fn find(&self, columns: &[String]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
    fn describe(&self) -> String {
        format!("#{self}")
    }
}

/// A Rust type a column converts to.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

fn wrong(value: &Value, want: &str) -> String {
    if value.is_null() {
        format!("is NULL, expected {want}")
    } else {
        format!("is {}, expected {want}", value.kind())
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(Some(v)) => Ok(*v),
            _ => Err(wrong(value, "an integer")),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Real(Some(v)) => Ok(*v),
            Value::Int(Some(v)) => Ok(*v as f64),
            _ => Err(wrong(value, "a number")),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(Some(v)) => Ok(v.clone()),
            _ => Err(wrong(value, "text")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bytes(Some(v)) => Ok(v.clone()),
            Value::Text(Some(v)) => Ok(v.as_bytes().to_vec()),
            _ => Err(wrong(value, "bytes")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        if value.is_null() {
            Ok(None)
        } else {
            T::from_value(value).map(Some)
        }
    }
}

impl Row {
    /// The column's value as `T`; an error naming the column when it is missing or of
    /// another type.
    pub fn try_get<T: FromValue, I: ColumnIndex>(&self, index: I) -> Result<T, DbError> {
        let at = index.find(&self.columns).ok_or_else(|| DbError::Column {
            column: index.describe(),
            reason: format!("not in the result (columns: {})", self.columns.join(", ")),
        })?;
        T::from_value(&self.values[at]).map_err(|reason| DbError::Column {
            column: index.describe(),
            reason,
        })
    }
}

/// Binds `$N` (or `?N`) placeholders by their number; `$1` is `args[0]`.
fn sqlite_bind(stmt: &mut rusqlite::Statement<'_>, args: &[Value]) -> Result<(), DbError> {
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).unwrap_or("?").to_owned();
        let n: usize = name
            .strip_prefix(['$', '?'])
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| DbError::Placeholder {
                name: name.clone(),
                reason: "use numbered placeholders ($1, $2, …)".into(),
            })?;
        let value = args.get(n - 1).ok_or_else(|| DbError::Placeholder {
            name: name.clone(),
            reason: format!("only {} values were bound", args.len()),
        })?;
        match value {
            Value::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Value::Real(v) => stmt.raw_bind_parameter(index, v)?,
            Value::Text(v) => stmt.raw_bind_parameter(index, v)?,
            Value::Bytes(v) => stmt.raw_bind_parameter(index, v)?,
        }
    }
    Ok(())
}

fn sqlite_run(conn: &rusqlite::Connection, sql: &str, args: &[Value]) -> Result<Ran, DbError> {
    use rusqlite::types::ValueRef as V;
    let mut stmt = conn.prepare_cached(sql)?;
    sqlite_bind(&mut stmt, args)?;
    let columns: Arc<[String]> = stmt.column_names().map(String::from).collect();
    let width = columns.len();
    let readonly = stmt.readonly();
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                V::Null => Value::Int(None),
                V::Integer(v) => Value::Int(Some(v)),
                V::Real(v) => Value::Real(Some(v)),
                V::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
                V::Blob(b) => Value::Bytes(Some(b.to_vec())),
            });
        }
        rows.push(Row {
            columns: columns.clone(),
            values,
        });
    }
    drop(cursor);
    let affected = if readonly { 0 } else { conn.changes() };
    Ok(Ran { rows, affected })
}

async fn pg_run<'c, E>(
    query: sqlx::query::Query<'static, Postgres, PgArguments>,
    on: E,
    rows: bool,
) -> Result<Ran, DbError>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    if !rows {
        let done = query.execute(on).await?;
        return Ok(Ran {
            rows: Vec::new(),
            affected: done.rows_affected(),
        });
    }
    let fetched = query.fetch_all(on).await?;
    let Some(first) = fetched.first() else {
        return Ok(Ran {
            rows: Vec::new(),
            affected: 0,
        });
    };
    let columns: Arc<[String]> = {
        use sqlx::Column;
        first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    };
    let rows = fetched
        .iter()
        .map(|row| pg_row(row, columns.clone()))
        .collect::<Result<_, _>>()?;
    Ok(Ran { rows, affected: 0 })
}

fn pg_row(row: &PgRow, columns: Arc<[String]>) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let type_info = raw.type_info();
        let null = raw.is_null();
        let value = match type_info.name() {
            "INT8" => Value::Int(row.try_get(i)?),
            "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(row.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Int(row.try_get::<Option<bool>, _>(i)?.map(i64::from)),
            "FLOAT8" => Value::Real(row.try_get(i)?),
            "FLOAT4" => Value::Real(row.try_get::<Option<f32>, _>(i)?.map(f64::from)),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i)?),
            "BYTEA" => Value::Bytes(row.try_get(i)?),
            _ if null => Value::Int(None),
            other => {
                return Err(DbError::Column {
                    column: format!("{name:?}"),
                    reason: format!(
                        "Postgres type {other} is not read by lab-store (cast it to BIGINT, \
                         TEXT, BYTEA or DOUBLE PRECISION)"
                    ),
                });
            }
        };
        values.push(value);
    }
    Ok(Row { columns, values })
}
