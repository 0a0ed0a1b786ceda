//! What every lab service shares, so that the five services differ only in their business
//! logic.
//!
//! - [`config`]: the flags every service takes (`--listen`, `--http-listen`, storage URLs,
//!   `--profile`) and the [`config::ServiceConfig`] trait a service's own config implements.
//! - [`host`]: serves a service's gRPC routes with health, reflection and server metrics,
//!   plus the HTTP side port (`/metrics`, `/state`), and drains on shutdown.
//! - [`launch`]: the body of every service's `main.rs`: parse flags, bind, print the ready
//!   line, stop on ctrl-c or SIGTERM.
//! - [`metrics`]: the Prometheus registry and the server-side request counters (attempts are
//!   counted on arrival, before any fault or admission check, so amplification is exact).
//! - [`state`]: the `/state` JSON board components publish into.
//! - [`shutdown`]: a cloneable shutdown signal.
//! - [`deadline`]: the deadline a caller set (`grpc-timeout`).
//! - [`validate`]: request validation whose errors name the field.
//! - [`testing`]: run a service in-process on 127.0.0.1:0 for tests ([`testing::TestApp`]).
//! - [`audit`]: `lab.v1.Audit/Snapshot` answers built from SQL.
//! - [`client`]: lazily connected channels to a downstream.
//! - [`errors`]: internal failures mapped to deliberate gRPC codes.
//! - [`telemetry`]: OTLP trace export and W3C trace context across gRPC hops, when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Every process that links this crate (the services, frlab, their tests and benches)
//! allocates with mimalloc: glibc's malloc and free were 10.7 % of an order's CPU in the
//! chain bench's profile, and mimalloc raised both the bare chain's and the lab's throughput
//! there (README, "What the lab's own code costs").

pub mod audit;
pub mod client;
pub mod config;
pub mod deadline;
pub mod errors;
pub mod host;
pub mod launch;
pub mod metrics;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod testing;
pub mod validate;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::{CommonArgs, ServiceConfig};
pub use host::{Bound, ServiceHost};
pub use shutdown::Shutdown;

/// The line prefix a service prints on stdout once it serves, followed by JSON
/// `{"service":..,"grpc":..,"http":..}`. `frlab` reads it to learn the bound ports.
pub const READY_PREFIX: &str = "FRLAB_READY ";

pub use lab_store::now_ms;
