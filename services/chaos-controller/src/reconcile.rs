//! The reconciler: one FaultInjection in, API calls to its pods out, `.status` written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::clock::{Clock, remaining, to_millis};
use crate::crd::{FaultInjection, FaultInjectionStatus, Phase};
use crate::pod_faults::PodFaults;
use crate::pods::{self, PodTarget, SERVICE_LABEL};

/// The finalizer that makes a delete wait until the fault is cleared on the pods.
pub const FINALIZER: &str = "lab.frlab.dev/faults";

/// While nothing changes, an active fault is still looked at this often (a missed pod
/// event costs at most this long); the expiry is never overslept.
pub const RESYNC: Duration = Duration::from_secs(60);

/// First retry after a failure; doubles per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a reconcile failed (the controller retries it with backoff, see [`error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("FaultInjection {0} has no namespace")]
    NoNamespace(String),
    /// Deleting waits until every pod that holds the fault confirmed the clear (or is gone,
    /// or the window has ended).
    #[error("could not clear the fault on {0}")]
    ClearFailed(String),
}

/// What the reconciler works with. Tests build it around a mocked API server, a fake
/// [`PodFaults`] and a [`crate::clock::ManualClock`].
pub struct Context {
    pub client: Client,
    pub pod_faults: Arc<dyn PodFaults>,
    /// Sent to every pod's admin API as `authorization: Bearer <token>`.
    pub token: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// The admin port of a pod that declares no container port named `admin`.
    pub admin_port: u16,
    /// Consecutive failures per FaultInjection (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        pod_faults: Arc<dyn PodFaults>,
        token: Option<String>,
        clock: Arc<dyn Clock>,
        admin_port: u16,
    ) -> Self {
        Self {
            client,
            pod_faults,
            token,
            clock,
            admin_port,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next try after one more failure of `fi`.
    pub fn backoff(&self, fi: &FaultInjection) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(object_key(fi)).or_insert(0);
        let delay = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(*n))
            .min(BACKOFF_MAX);
        *n = n.saturating_add(1);
        delay
    }

    fn reset_backoff(&self, fi: &FaultInjection) {
        self.failures
            .lock()
            .expect("backoff lock")
            .remove(&object_key(fi));
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

fn object_key(fi: &FaultInjection) -> String {
    format!("{}/{}", fi.namespace().unwrap_or_default(), fi.name_any())
}

/// Reconciles one FaultInjection; see the crate docs for the state machine.
pub async fn reconcile(fi: Arc<FaultInjection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = fi
        .namespace()
        .ok_or_else(|| Error::NoNamespace(fi.name_any()))?;
    let api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, fi, |event| async {
        match event {
            Event::Apply(fi) => apply(&fi, &api, &namespace, &ctx).await,
            Event::Cleanup(fi) => cleanup(&fi, &namespace, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// After a failed reconcile: log it and retry with exponential backoff.
pub fn error_policy(fi: Arc<FaultInjection>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&fi);
    tracing::warn!(faultinjection = %object_key(&fi), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The controller over `injections`, with a watch on the lab's `pods` (label
/// [`SERVICE_LABEL`]): a pod that appears, restarts or becomes ready re-runs the
/// FaultInjections that select its service, so a restarted pod gets the fault back at once.
/// The caller picks the shutdown and runs it with [`reconcile`] and [`error_policy`].
pub fn controller(injections: Api<FaultInjection>, pods: Api<Pod>) -> Controller<FaultInjection> {
    let controller = Controller::new(injections, watcher::Config::default());
    let store = controller.store();
    controller.watches(
        pods,
        watcher::Config::default().labels(SERVICE_LABEL),
        move |pod| injections_for_pod(&pod, &store.state()),
    )
}

/// The FaultInjections a pod event concerns: those in the pod's namespace that select the
/// pod's service and are not finished. The controller's pod watch maps through this.
pub fn injections_for_pod(
    pod: &Pod,
    injections: &[Arc<FaultInjection>],
) -> Vec<ObjectRef<FaultInjection>> {
    let Some(service) = pod.labels().get(SERVICE_LABEL) else {
        return Vec::new();
    };
    injections
        .iter()
        .filter(|fi| fi.namespace() == pod.namespace())
        .filter(|fi| &fi.spec.spec.selector.service == service)
        .filter(|fi| !is_finished(fi))
        .map(|fi| ObjectRef::from(fi.as_ref()))
        .collect()
}

/// Expired or Failed, and the status describes the current spec.
fn is_finished(fi: &FaultInjection) -> bool {
    fi.status.as_ref().is_some_and(|s| {
        matches!(s.phase, Phase::Expired | Phase::Failed)
            && s.observed_generation == fi.metadata.generation
    }) && fi.metadata.deletion_timestamp.is_none()
}

fn format_time(t: Timestamp) -> String {
    to_millis(t).to_string()
}

fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text?.parse().ok()
}

/// Writes `.status` with one JSON merge patch, skipping the call when the server already
/// holds exactly that status (a status write triggers a watch event, and so a reconcile:
/// writing only changes keeps that loop finite).
struct StatusWriter<'a> {
    api: &'a Api<FaultInjection>,
    name: String,
    /// What the server holds, as far as this reconcile knows.
    known: Option<FaultInjectionStatus>,
}

impl StatusWriter<'_> {
    async fn write(&mut self, status: &FaultInjectionStatus) -> Result<(), Error> {
        if self.known.as_ref() == Some(status) {
            return Ok(());
        }
        let patch = json!({ "status": status });
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.known = Some(status.clone());
        Ok(())
    }
}

/// `Event::Apply`: start, keep or end the fault window.
async fn apply(
    fi: &FaultInjection,
    api: &Api<FaultInjection>,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let mut writer = StatusWriter {
        api,
        name: fi.name_any(),
        known: fi.status.clone(),
    };
    let current = fi
        .status
        .clone()
        .filter(|s| s.observed_generation == fi.metadata.generation);
    let status = match current {
        // Finished for this spec: nothing left to do until the spec changes.
        Some(s) if matches!(s.phase, Phase::Expired | Phase::Failed) => {
            return Ok(Action::await_change());
        }
        // Pending or Active: carry on inside the recorded window.
        Some(s) if window(&s).is_some() => s,
        // New, or its spec changed (or its status is unreadable): a new window.
        _ => match start_window(fi, namespace, ctx, &mut writer, now).await? {
            Some(pending) => pending,
            None => return Ok(Action::await_change()),
        },
    };
    let (_, expiry) = window(&status).expect("a window was recorded");
    if now >= expiry {
        expire(fi, namespace, ctx, &mut writer, status).await?;
        return Ok(Action::await_change());
    }
    let left = remaining(now, expiry);
    let healthy = inject(fi, namespace, ctx, &mut writer, status, left).await?;
    let next = if healthy {
        ctx.reset_backoff(fi);
        left.min(RESYNC)
    } else {
        ctx.backoff(fi).min(left)
    };
    Ok(Action::requeue(next))
}

/// The recorded window (start, expiry), if both times are there and readable.
fn window(status: &FaultInjectionStatus) -> Option<(Timestamp, Timestamp)> {
    Some((
        parse_time(status.start_time.as_deref())?,
        parse_time(status.expiry_time.as_deref())?,
    ))
}

/// (none) → Pending, or → Failed (returns `None`) if the spec does not validate.
///
/// The window is written before any pod is touched, so that a controller that dies half-way
/// resumes the same window instead of starting a new one.
async fn start_window(
    fi: &FaultInjection,
    namespace: &str,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    now: Timestamp,
) -> Result<Option<FaultInjectionStatus>, Error> {
    let name = fi.name_any();
    let spec = &fi.spec.spec;
    // A previous spec's pods lose that fault first (best effort: the pods' own timers end
    // it anyway).
    let previous = fi
        .status
        .as_ref()
        .map(|s| s.injected_pods.clone())
        .unwrap_or_default();
    for (pod, err) in clear_pods(ctx, namespace, &name, &previous, None).await? {
        tracing::warn!(faultinjection = %name, %pod, %err, "could not clear the previous spec's fault");
    }
    if let Err(err) = spec.validate() {
        tracing::warn!(faultinjection = %name, %err, "invalid spec");
        let failed = FaultInjectionStatus {
            phase: Phase::Failed,
            last_error: Some(err.to_string()),
            observed_generation: fi.metadata.generation,
            ..FaultInjectionStatus::default()
        };
        writer.write(&failed).await?;
        ctx.reset_backoff(fi);
        return Ok(None);
    }
    let pending = FaultInjectionStatus {
        phase: Phase::Pending,
        injected_pods: Vec::new(),
        start_time: Some(format_time(now)),
        expiry_time: Some(format_time(now + spec.duration())),
        last_error: None,
        observed_generation: fi.metadata.generation,
    };
    writer.write(&pending).await?;
    tracing::info!(faultinjection = %name, until = ?pending.expiry_time, "fault window started");
    Ok(Some(pending))
}

/// Active → Expired: clear the pods (their own timers end the fault at the same moment;
/// this makes it exact) and stop.
async fn expire(
    fi: &FaultInjection,
    namespace: &str,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    mut status: FaultInjectionStatus,
) -> Result<(), Error> {
    let name = fi.name_any();
    let service = &fi.spec.spec.selector.service;
    let failures = clear_pods(ctx, namespace, &name, &status.injected_pods, Some(service)).await?;
    status.phase = Phase::Expired;
    status.injected_pods.clear();
    status.last_error = describe(&failures);
    writer.write(&status).await?;
    ctx.reset_backoff(fi);
    tracing::info!(faultinjection = %name, "fault window ended");
    Ok(())
}

/// Pending → Active, and Active → Active: apply the fault, for the `left` of the window, to
/// the chosen pods that do not hold it yet. Returns whether all went well (else the status
/// holds `lastError` and the caller retries with backoff).
async fn inject(
    fi: &FaultInjection,
    namespace: &str,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    mut status: FaultInjectionStatus,
    left: Duration,
) -> Result<bool, Error> {
    let name = fi.name_any();
    let spec = &fi.spec.spec;
    let pods = list_service_pods(ctx, namespace, &spec.selector.service).await?;
    let selection = pods::select(spec, &pods, &status.injected_pods, ctx.admin_port);
    let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
    let calls = selection.to_inject.iter().map(|(rank, target)| {
        // The remaining window, not the whole duration: a pod that joins late (a restart)
        // must not outlive the FaultInjection. Each pod draws from its own seed.
        let mut fault = spec.to_fault(&name, Some(spec.seed.wrapping_add(*rank as u64)));
        fault.duration_ms = left_ms;
        async move {
            let result = ctx.pod_faults.apply(target, ctx.token(), fault).await;
            (target, result)
        }
    });
    let mut injected = selection.kept.clone();
    let mut failures = Vec::new();
    for (target, result) in join_all(calls).await {
        match result {
            Ok(()) => {
                tracing::info!(faultinjection = %name, pod = %target.name, remaining_ms = left_ms, "fault applied");
                injected.push(target.key.clone());
            }
            Err(err) => {
                tracing::warn!(faultinjection = %name, pod = %target.name, %err, "could not apply the fault");
                failures.push((target.name.clone(), err.to_string()));
            }
        }
    }
    let nothing_selected = selection.selected == 0 && injected.is_empty();
    status.phase = Phase::Active;
    status.injected_pods = injected;
    status.last_error = describe(&failures).or_else(|| {
        nothing_selected.then(|| {
            format!(
                "no Running and Ready pod matches the selector ({})",
                selector_text(fi)
            )
        })
    });
    let healthy = status.last_error.is_none();
    writer.write(&status).await?;
    Ok(healthy)
}

fn selector_text(fi: &FaultInjection) -> String {
    let selector = &fi.spec.spec.selector;
    std::iter::once(pods::service_selector(&selector.service))
        .chain(selector.labels.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(failures: &[(String, String)]) -> Option<String> {
    (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(|(pod, err)| format!("pod {pod}: {err}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `Event::Cleanup` (the FaultInjection is being deleted): clear the fault on every pod that
/// holds it. Until that succeeded the finalizer stays, unless the window has ended (the
/// pods' own timers have then removed the fault).
async fn cleanup(fi: &FaultInjection, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let Some(status) = fi.status.as_ref() else {
        return Ok(Action::await_change());
    };
    let ended = parse_time(status.expiry_time.as_deref()).is_none_or(|e| ctx.clock.now() >= e);
    if status.injected_pods.is_empty() || ended {
        ctx.reset_backoff(fi);
        return Ok(Action::await_change());
    }
    let failures = clear_pods(ctx, namespace, &fi.name_any(), &status.injected_pods, None).await?;
    if let Some(text) = describe(&failures) {
        return Err(Error::ClearFailed(text));
    }
    ctx.reset_backoff(fi);
    Ok(Action::await_change())
}

/// The pods of `service` in `namespace`.
async fn list_service_pods(
    ctx: &Context,
    namespace: &str,
    service: &str,
) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&pods::service_selector(service)))
        .await?;
    Ok(list.items)
}

/// Clears fault `name` on the pods among `keys` that still exist unchanged (a replaced or
/// restarted pod no longer holds it). With `service` the listing is that service's pods;
/// without, every lab pod of the namespace (the service may have changed with the spec).
/// Returns the pods that could not be cleared.
async fn clear_pods(
    ctx: &Context,
    namespace: &str,
    name: &str,
    keys: &[String],
    service: Option<&str>,
) -> Result<Vec<(String, String)>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = match service {
        Some(service) => pods::service_selector(service),
        None => SERVICE_LABEL.to_string(),
    };
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let targets: Vec<PodTarget> = listed
        .items
        .iter()
        .filter(|p| keys.contains(&pods::pod_key(p)))
        .filter_map(|p| PodTarget::new(p, ctx.admin_port))
        .collect();
    let calls = targets.iter().map(|target| async move {
        let result = ctx.pod_faults.clear(target, ctx.token(), name).await;
        (target, result)
    });
    let mut failures = Vec::new();
    for (target, result) in join_all(calls).await {
        match result {
            Ok(()) => tracing::info!(faultinjection = %name, pod = %target.name, "fault cleared"),
            Err(err) => failures.push((target.name.clone(), err.to_string())),
        }
    }
    Ok(failures)
}
