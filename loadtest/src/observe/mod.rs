//! Reading the services from outside: what frlab observes and the calls it makes.
//!
//! - [`prometheus`]: the Prometheus / OpenMetrics text parser ([`prometheus::Sample`]).
//! - [`scrape`]: one `GET` of a service's side port (`/metrics`, `/state`), with a timeout.
//! - [`grpc`]: the gRPC calls (one PlaceOrder, `lab.v1.Audit` snapshots) and how their
//!   answers print.
//! - [`faults`]: the `lab.v1.Faults` admin client, with its bearer token.

pub mod faults;
pub mod grpc;
pub mod prometheus;
pub mod scrape;
