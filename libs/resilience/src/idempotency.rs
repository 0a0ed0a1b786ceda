//! Idempotency keys: the client side forwards the incoming `idempotency-key` header (or the
//! one the caller put in the request) on every attempt, so retries of one logical request
//! carry one key; the server side is the claim / replay / in-flight store of lab-store,
//! used by orders and payments when the profile enables it.

use serde::{Deserialize, Serialize};

use crate::setting::ConfigError;

/// `idempotency:` in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(default)]
    pub enabled: bool,
    /// How long a completed answer is replayable.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
}

fn default_ttl_s() -> u64 {
    24 * 3600
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_s: default_ttl_s(),
        }
    }
}

impl IdempotencyConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.enabled && self.ttl_s == 0 {
            return Err(ConfigError::new(
                format!("{key}.ttl_s"),
                "must be at least 1 when idempotency is enabled",
            ));
        }
        Ok(())
    }
}

/// The metadata key carrying a logical request's idempotency key across hops.
pub const HEADER: &str = "idempotency-key";

tokio::task_local! {
    static INCOMING: Option<http::HeaderValue>;
}

/// The key of the request being served, if it carried one (set by [`IncomingKeyLayer`]).
pub fn incoming() -> Option<http::HeaderValue> {
    INCOMING.try_with(|k| k.clone()).ok().flatten()
}

/// Marks a header value that is new on (almost) every call as never-indexed for HPACK.
/// Otherwise h2 adds each such value to the connection's header table, where, first in first
/// out, it evicts the headers every call repeats (`:path`, `content-type`, `te`,
/// `grpc-timeout` ...): they then go out as literals again and are re-added, evicting
/// more, and the decoder on the other side does the same work.
fn never_indexed(value: &mut http::HeaderValue) {
    value.set_sensitive(true);
}

/// A fresh key: 128 random bits in hex.
pub fn fresh_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Client side: every call carries an `idempotency-key` header — the one the caller set,
/// else the one of the request being served (so one logical request keeps one key across
/// hops), else a fresh one. The layer sits outside the retry layer, so all attempts of a
/// call share the key.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyLayer;

impl<S> tower::Layer<S> for KeyLayer {
    type Service = KeyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KeyService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct KeyService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for KeyService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !req.headers().contains_key(HEADER) {
            let key = incoming().or_else(|| http::HeaderValue::from_str(&fresh_key()).ok());
            if let Some(mut key) = key {
                never_indexed(&mut key);
                req.headers_mut().insert(HEADER, key);
            }
        }
        self.inner.call(req)
    }
}

/// Server side: makes the incoming `idempotency-key` header visible to the handler's
/// downstream calls (see [`incoming`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct IncomingKeyLayer;

impl<S> tower::Layer<S> for IncomingKeyLayer {
    type Service = IncomingKeyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IncomingKeyService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct IncomingKeyService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for IncomingKeyService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let key = req.headers().get(HEADER).cloned();
        let fut = self.inner.call(req);
        Box::pin(INCOMING.scope(key, fut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn echo_key() -> impl Service<
        http::Request<()>,
        Response = Option<String>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(|req: http::Request<()>| async move {
            Ok(req
                .headers()
                .get(HEADER)
                .map(|v| v.to_str().unwrap().to_string()))
        })
    }

    #[tokio::test]
    async fn keeps_forwards_or_creates_the_key() {
        let mut client = KeyLayer.layer(echo_key());
        let with = http::Request::builder()
            .header(HEADER, "k1")
            .body(())
            .unwrap();
        assert_eq!(
            client
                .ready()
                .await
                .unwrap()
                .call(with)
                .await
                .unwrap()
                .as_deref(),
            Some("k1")
        );
        let fresh = client
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.len(), 32);

        // Inside a served request with key "k9", an outgoing call without one carries "k9".
        let mut server =
            IncomingKeyLayer.layer(tower::service_fn(|_req: http::Request<()>| async {
                let mut client = KeyLayer.layer(echo_key());
                client
                    .ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(()))
                    .await
            }));
        let incoming = http::Request::builder()
            .header(HEADER, "k9")
            .body(())
            .unwrap();
        assert_eq!(
            server
                .ready()
                .await
                .unwrap()
                .call(incoming)
                .await
                .unwrap()
                .as_deref(),
            Some("k9")
        );
    }

    #[tokio::test]
    async fn keys_it_adds_are_never_indexed() {
        let sensitive = || {
            tower::service_fn(|req: http::Request<()>| async move {
                Ok::<_, std::convert::Infallible>(req.headers()[HEADER].is_sensitive())
            })
        };
        let fresh = KeyLayer.layer(sensitive()).oneshot(http::Request::new(()));
        assert!(
            fresh.await.unwrap(),
            "a fresh key must go out never-indexed"
        );
        let forwarded = IncomingKeyLayer
            .layer(tower::service_fn(move |_req: http::Request<()>| {
                KeyLayer.layer(sensitive()).oneshot(http::Request::new(()))
            }))
            .oneshot(
                http::Request::builder()
                    .header(HEADER, "k9")
                    .body(())
                    .unwrap(),
            );
        assert!(forwarded.await.unwrap(), "a forwarded key too");
    }
}
