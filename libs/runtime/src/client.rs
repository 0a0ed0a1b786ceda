//! Channels to downstream services. They connect lazily, so services may start in any
//! order, and a downstream that restarts is reconnected on the next call.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A minimal HTTP/1.1 GET of a service's side port (`/metrics`, `/state`): plain HTTP/1.1,
/// `Connection: close`; returns (status code, body). `addr` is a socket address or a
/// `host:port` string (resolved here, e.g. a Kubernetes service name).
pub async fn http_get(
    addr: impl tokio::net::ToSocketAddrs + std::fmt::Display,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let host = addr.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
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
