//! Reading a service's HTTP side port: `/metrics` (Prometheus text) and `/state` (JSON).
//! The experiment, the breaker sampler and the console all scrape through here.

use std::time::Duration;

use super::prometheus::{Sample, parse_prometheus};

/// `GET path` on a side port (`host:port`, a socket address or a DNS name), waiting at
/// most `timeout`: the body of a 200 answer. The error starts with the path and says what
/// went wrong (no answer in time, a connection error, another HTTP status).
pub async fn get(http: &str, path: &str, timeout: Duration) -> Result<String, String> {
    match tokio::time::timeout(timeout, lab_runtime::client::http_get(http, path)).await {
        Err(_) => Err(format!("{path}: no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{path}: {e}")),
        Ok(Ok((200, body))) => Ok(body),
        Ok(Ok((code, _))) => Err(format!("{path}: HTTP {code}")),
    }
}

/// A service's `/metrics`, parsed; the error names the path, or the line that is not
/// Prometheus text.
pub async fn metrics(http: &str, timeout: Duration) -> Result<Vec<Sample>, String> {
    let body = get(http, "/metrics", timeout).await?;
    parse_prometheus(&body).map_err(|e| format!("/metrics: {e}"))
}
