//! Server-side fault injection for the lab: the faults of the "Fault scenarios" table,
//! injected into a running service, on a schedule, reproducibly.
//!
//! Why server-side and in-process: the lab measures how *callers* cope with a failing
//! callee, so the callee must fail the way a real one does (real gRPC statuses, latency that
//! holds a capacity slot, a lock held while others wait), at a seeded rate, for a known
//! window. Faults injected inside the callee do that without a proxy and the same way
//! locally and on a cluster.
//!
//! Layout:
//! - [`spec`]: the FaultInjection document (YAML, also the controller's CustomResource
//!   spec), its validation (errors name the field) and its wire form for the admin API.
//! - [`faults`]: [`FaultSet`], the live faults of one service: expiry, seeded draws,
//!   `chaos_injected_total`, the `/state` view, and the hooks services call from their own
//!   code (`extra_latency`, `brownout_factor`, `lock_hold`).
//! - [`layer`]: [`FaultLayer`], the tower layer that answers outages and errors and adds
//!   latency in front of a service's handlers.
//! - [`admin`]: [`FaultsAdmin`], the token-protected `lab.v1.Faults` service (Apply, Clear,
//!   List) served on the admin port.

pub mod admin;
pub mod faults;
pub mod layer;
pub mod spec;

pub use admin::{AdminAuth, FaultsAdmin, admin_server};
pub use faults::{ActiveFaultView, FaultSet};
pub use layer::{FaultLayer, FaultService};
pub use spec::{FaultInjection, FaultInjectionSpec, SpecError, parse_documents};
