//! chaos-controller: reconciles `FaultInjection` custom resources
//! (`lab.frlab.dev/v1alpha1`) into the `lab.v1.Faults` admin API of the pods they select.
//!
//! A FaultInjection names a service (`spec.selector.service`, matched against the pod label
//! `app.kubernetes.io/name`, plus any extra `spec.selector.labels`), a mode (`all`, `one` —
//! the first pod by name —, or `fixed-percent` of the selected pods, rounded up), an action
//! with its parameters, and a duration. The controller applies the fault to each chosen
//! Running and Ready pod (address: the pod IP and its container port named `admin`, else
//! `--admin-port`), records the pods in `.status.injectedPods`, and ends the fault when the
//! duration is over. Every fault sent to a pod carries the time left in the window, so a
//! pod drops it by itself even if the controller is gone.
//!
//! # State machine (`.status.phase`)
//!
//! ```text
//!            (new, or spec changed: window = now .. now + duration, written first)
//!   (none) ──────────────▶ Pending ──(pods injected)──▶ Active ──(now ≥ expiry: clear)──▶ Expired
//!      │                                                  │ ▲
//!      │ invalid spec                                     └─┘ pod restarted or replaced → apply
//!      ▼                                                      again with the time left;
//!   Failed                                                    pod unreachable → lastError,
//!                                                             retry with backoff
//! ```
//!
//! - **Pending → Active**: the window is persisted before any pod is called, so a
//!   controller restart resumes the same window. Then every chosen pod gets `Apply`; the
//!   reconcile requeues at the expiry (at most [`reconcile::RESYNC`] later).
//! - **Active → Active**: a pod whose `<name>/<uid>/<restarts>` key is not in
//!   `injectedPods` (a replacement pod, or a container restart: the fault lived in the
//!   process's memory) gets the fault again with the remaining duration. A pod that cannot
//!   be reached is named in `lastError`; the others keep the fault; the reconcile retries
//!   with exponential backoff (capped at the expiry).
//! - **Active → Expired**: at the expiry the pods get `Clear`, `injectedPods` empties, and
//!   nothing is requeued.
//! - **→ Failed**: the spec does not validate (`lab_chaos` names the field in `lastError`).
//! - **A new `metadata.generation`** (the spec was edited) clears the previous pods and
//!   starts a new window.
//! - **Delete**: the finalizer `lab.frlab.dev/faults` clears the fault on the pods that hold
//!   it, then removes itself. If a pod cannot be reached the delete waits (retrying with
//!   backoff) until it can, the pod is gone, or the window has ended.
//!
//! # Layout
//!
//! - [`crd`]: the `FaultInjection` custom resource (wrapping
//!   [`lab_chaos::spec::FaultInjectionSpec`], the single source of the schema), its status,
//!   and the CRD YAML that `crdgen` prints into `k8s/crds/faultinjection.yaml`.
//! - [`mod@reconcile`]: [`reconcile::reconcile`], [`reconcile::error_policy`], the
//!   [`reconcile::Context`] they share, and the pod → FaultInjection mapping.
//! - [`pods`]: pod selection, pod keys, admin addresses.
//! - [`pod_faults`]: the [`pod_faults::PodFaults`] trait (gRPC in production, faked in
//!   tests).
//! - [`clock`]: wall-clock time behind a trait.
//!
//! `main.rs` runs [`reconcile::controller`] (a `kube::runtime::Controller` over
//! FaultInjections and Pods). Tests drive [`reconcile::reconcile`] against a mocked API
//! server (exact request sequences, a manual clock), and run the whole controller against
//! the real API server of the local cluster (`make cluster-local`), with pods that stand for
//! the lab's and serve a real `lab.v1.Faults` on 127.0.0.1 (`tests/api_server.rs`).

pub mod clock;
pub mod crd;
pub mod pod_faults;
pub mod pods;
pub mod reconcile;

pub use crd::{FaultInjection, FaultInjectionCrdSpec, FaultInjectionStatus, Phase};
pub use reconcile::{Context, Error, error_policy, reconcile};
