//! Channels to downstream services. They connect lazily, so services may start in any
//! order, and a downstream that restarts is reconnected on the next call.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A downstream client wrapped in its resilience stack (see `ServiceHost::client`).
pub use lab_resilience::stack::HopService;

#[derive(Debug, thiserror::Error)]
#[error("invalid downstream URL for {flag}: {url:?} ({reason})")]
pub struct BadUrl {
    pub flag: &'static str,
    pub url: String,
    pub reason: String,
}

/// A lazily connected channel to `url` (e.g. `http://127.0.0.1:50052`). `flag` names the
/// setting the URL came from, for the error message.
pub fn lazy_channel(flag: &'static str, url: &str) -> Result<Channel, BadUrl> {
    let bad = |reason: String| BadUrl {
        flag,
        url: url.to_string(),
        reason,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("expected http://HOST:PORT".into()));
    }
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_name_the_flag_and_value() {
        let err = lazy_channel("--orders-url", "127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("--orders-url"), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert!(lazy_channel("--orders-url", "http://127.0.0.1:1").is_ok());
    }
}
