//! Which pods a FaultInjection targets, and how to reach their admin API.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lab_chaos::spec::{FaultInjectionSpec, Mode};

/// The label every lab pod carries with its service's name (gateway, payments, ...).
pub const SERVICE_LABEL: &str = "app.kubernetes.io/name";

/// The name of the container port that serves `lab.v1.Faults`.
pub const ADMIN_PORT_NAME: &str = "admin";

/// The label selector that lists a service's pods (the spec's extra labels are checked on
/// the listed pods, see [`matches_labels`]).
pub fn service_selector(service: &str) -> String {
    format!("{SERVICE_LABEL}={service}")
}

/// A pod's identity in `.status.injectedPods`: `<name>/<uid>/<restarts>`.
///
/// A replaced pod has a new uid; a restarted container keeps the uid but counts one more
/// restart. Either way the process that held the fault in memory is gone, the key no longer
/// matches, and the controller applies the fault again.
pub fn pod_key(pod: &Pod) -> String {
    let restarts: i64 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    format!(
        "{}/{}/{}",
        pod.name_any(),
        pod.uid().unwrap_or_default(),
        restarts
    )
}

/// The pod name part of a [`pod_key`].
pub fn key_pod_name(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// Phase `Running` and condition `Ready` true: a pod that serves.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let running = status.phase.as_deref() == Some("Running");
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    running && ready && pod.metadata.deletion_timestamp.is_none()
}

/// The pod carries every extra label of the selector.
pub fn matches_labels(pod: &Pod, spec: &FaultInjectionSpec) -> bool {
    let labels = pod.labels();
    labels.get(SERVICE_LABEL) == Some(&spec.selector.service)
        && spec
            .selector
            .labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
}

/// How many of `selected` pods get the fault: all, one, or `value` percent rounded up.
pub fn quota(spec: &FaultInjectionSpec, selected: usize) -> usize {
    match spec.mode {
        Mode::All => selected,
        Mode::One => selected.min(1),
        Mode::FixedPercent => {
            let percent = spec.value.unwrap_or(100).min(100) as usize;
            (selected * percent).div_ceil(100)
        }
    }
}

/// Where a pod's admin API listens: its IP and the container port named `admin`, else
/// `fallback_port`.
pub fn admin_address(pod: &Pod, fallback_port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let port = pod
        .spec
        .as_ref()
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(fallback_port);
    Some(SocketAddr::new(ip, port))
}

/// One pod to call: its name, its [`pod_key`] and its admin address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    pub key: String,
    pub address: SocketAddr,
}

impl PodTarget {
    pub fn new(pod: &Pod, fallback_port: u16) -> Option<Self> {
        Some(Self {
            name: pod.name_any(),
            key: pod_key(pod),
            address: admin_address(pod, fallback_port)?,
        })
    }
}

/// The selection for one reconcile: which pods keep the fault and which get it now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Entries of `injectedPods` whose pod still exists unchanged: they keep the fault.
    pub kept: Vec<String>,
    /// Pods to apply the fault to, with their rank among the selected pods (the rank
    /// offsets the seed, so each replica draws its own sequence).
    pub to_inject: Vec<(usize, PodTarget)>,
    /// How many pods the selector matched (Running and Ready).
    pub selected: usize,
}

/// Chooses the pods that get the fault.
///
/// `pods` are the listed pods of the service; `injected` the current `injectedPods`.
/// Injected pods that still exist unchanged count towards the mode's quota whatever their
/// readiness (their process still holds the fault); the rest of the quota is filled from
/// the Running and Ready pods that match the selector, first by name. So mode `one` picks
/// the first pod by name and, when that pod is replaced, the first of those left.
pub fn select(
    spec: &FaultInjectionSpec,
    pods: &[Pod],
    injected: &[String],
    fallback_port: u16,
) -> Selection {
    let listed: BTreeSet<String> = pods.iter().map(pod_key).collect();
    let kept: Vec<String> = injected
        .iter()
        .filter(|k| listed.contains(*k))
        .cloned()
        .collect();
    let mut candidates: Vec<&Pod> = pods
        .iter()
        .filter(|p| matches_labels(p, spec) && is_running_and_ready(p))
        .collect();
    candidates.sort_by_key(|p| p.name_any());
    let need = quota(spec, candidates.len()).saturating_sub(kept.len());
    let to_inject = candidates
        .iter()
        .enumerate()
        .filter(|(_, p)| !kept.contains(&pod_key(p)))
        .filter_map(|(rank, p)| Some((rank, PodTarget::new(p, fallback_port)?)))
        .take(need)
        .collect();
    Selection {
        kept,
        to_inject,
        selected: candidates.len(),
    }
}
