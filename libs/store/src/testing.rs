//! Helpers for tests (this crate's and the services') that need a real Postgres or Redis.
//!
//! They never skip: when a server is unreachable they panic with a message naming the server,
//! its URL, and how to provide it, so a missing server fails the run loudly.
//!
//! - `FRLAB_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! - `FRLAB_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`)

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::db::{DbConfig, validate_schema_name};
use crate::error::redact_url;

/// Environment variable holding the Postgres URL tests use.
pub const DATABASE_URL_ENV: &str = "FRLAB_TEST_DATABASE_URL";
/// Environment variable holding the Redis URL tests use.
pub const REDIS_URL_ENV: &str = "FRLAB_TEST_REDIS_URL";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A config for the test Postgres with a fresh schema `t_<tag>_<8 hex>`, so concurrent tests
/// never see each other's tables. Drop it at the end with [`drop_schema`].
///
/// # Panics
/// If the server cannot be reached, with a message saying where and how to start it.
pub async fn postgres_test_config(tag: &str) -> DbConfig {
    let url = std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let probe = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect(&url)).await;
    match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(err)) => unreachable_server("Postgres", &url, DATABASE_URL_ENV, &err.to_string()),
        Err(_) => unreachable_server("Postgres", &url, DATABASE_URL_ENV, "timed out"),
    }

    let tag: String = tag
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .take(40)
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    DbConfig {
        url,
        schema: Some(format!("t_{tag}_{}", &suffix[..8])),
        max_connections: 5,
    }
}

/// Drops `cfg`'s schema and everything in it. Best effort: failures are only logged.
pub async fn drop_schema(cfg: &DbConfig) {
    let Some(schema) = cfg.schema.as_deref() else {
        return;
    };
    let Ok(schema) = validate_schema_name(schema) else {
        return;
    };
    let result = async {
        let mut conn = PgConnection::connect(&cfg.url).await?;
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        conn.execute(AssertSqlSafe(sql)).await?;
        conn.close().await
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(schema, %err, "could not drop test schema");
    }
}

/// The URL of the test Redis.
///
/// # Panics
/// If nothing accepts TCP connections at the URL's host and port, with a message saying
/// where and how to start it.
pub fn redis_test_url() -> String {
    let url = std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    if let Err(err) = tcp_probe(&url) {
        unreachable_server("Redis", &url, REDIS_URL_ENV, &err);
    }
    url
}

/// Connects to the `host:port` of a `redis://[user:pass@]host[:port][/db]` URL.
fn tcp_probe(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:6379")
    } else {
        host_port.to_owned()
    };
    let addrs = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host_port}`: {e}"))?;
    let mut last_error = format!("`{host_port}` resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    Err(last_error)
}

fn unreachable_server(server: &str, url: &str, env: &str, err: &str) -> ! {
    panic!(
        "{server} is unreachable at {url} ({err}).\n\
         These tests need a real {server}; they do not skip. `.ci/run` starts Postgres on \
         127.0.0.1:5432 (user postgres, trust auth, database `test`) and Redis on \
         127.0.0.1:6379 when they are not running, before `make test`. Locally, start the server (e.g. \
         `pg_ctlcluster 15 main start` / `redis-server --daemonize yes`) or set {env} to one \
         that is running.",
        url = redact_url(url),
    )
}
