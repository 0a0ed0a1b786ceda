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

/// Calls `read` every `every` until `stop` fires, keeping `(seconds since the start, value)`
/// for each call that returned a value (a scrape that failed is skipped, not recorded as a
/// zero). The breaker sampler of a trial and the payments sampler of a calibration use it.
pub async fn sample_until<T, F, Fut>(
    every: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    mut read: F,
) -> Vec<(f64, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return samples,
            _ = tick.tick() => {}
        }
        let at = start.elapsed().as_secs_f64();
        if let Some(value) = read().await {
            samples.push((at, value));
        }
    }
}
