//! Resilience patterns as tower layers, and the profile config that selects them.
//!
//! Every pattern is a module of its own with its config struct (serde defaults,
//! `deny_unknown_fields`, a `validate()` whose errors name the key), its layer, its typed
//! error and its Prometheus metrics:
//!
//! - [`retry`]: attempts, backoff with jitter, retryable codes, server pushback, retry budget,
//!   deadline-aware; [`hedge`]: budgeted hedging of idempotent reads.
//! - [`breaker`]: a circuit breaker per downstream (CLOSED / OPEN / HALF_OPEN).
//! - [`bulkhead`]: bounded concurrency per downstream with a bounded wait.
//! - [`deadline`]: per-try timeouts and end-to-end deadline propagation (client and server).
//! - [`shed`]: load shedding at the gateway; [`adaptive`]: a gradient concurrency limit.
//! - [`idempotency`]: the `idempotency-key` header on the client side.
//! - [`body`]: makes unary requests replayable (for retries and hedges) and back.
//!
//! The layers work on `http::Request<tonic::body::Body>`, so they wrap a tonic `Channel` (client)
//! or a tonic `Routes` (server). [`status`] maps every error the layers raise to a deliberate
//! gRPC code in one place; [`classify`] reads the gRPC outcome of a response. [`config`] holds
//! the profile schema (`helm/profiles/*.yaml`, key `resilience:`), [`stack`] composes the
//! client and server stacks a profile describes. [`setting`] is the leaf every pattern's
//! config imports (the key-naming [`ConfigError`], gRPC codes by name); [`metric_names`] the
//! names of every family the patterns register, for producers and readers alike.

pub mod adaptive;
pub mod body;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod config;
pub mod deadline;
pub mod hedge;
pub mod idempotency;
pub mod metric_names;
pub mod profiles;
pub mod retry;
pub mod setting;
pub mod shed;
pub mod stack;
pub mod status;

/// The error type every layer's service returns: typed errors inside, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request every layer sees (client and server side).
pub type GrpcRequest = http::Request<tonic::body::Body>;
/// The response every layer sees.
pub type GrpcResponse = http::Response<tonic::body::Body>;

pub use config::{ConfigError, Profile};
