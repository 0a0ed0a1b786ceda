//! Test harness: the reconciler against a scripted, mocked Kubernetes API server (kube's
//! client over a `tower_test` mock) and a fake `PodFaults` that records its calls.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaos_controller::clock::ManualClock;
use chaos_controller::pod_faults::{PodCallError, PodFaults};
use chaos_controller::pods::PodTarget;
use chaos_controller::reconcile::FINALIZER;
use chaos_controller::{Context, FaultInjection, FaultInjectionStatus};
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use lab_proto::lab::v1::Fault;
use serde_json::{Value, json};

pub const NAMESPACE: &str = "lab";
pub const TOKEN: &str = "s3cret";
/// The container port named `admin` in every test pod (differs from the fallback).
pub const ADMIN_PORT: u16 = 7061;
pub const FALLBACK_PORT: u16 = 50061;
const FI_PATH: &str = "/apis/lab.frlab.dev/v1alpha1/namespaces/lab/faultinjections";

/// 2026-11-27T12:00:00Z: when every test's window starts.
pub fn t0() -> Timestamp {
    "2026-11-27T12:00:00Z".parse().unwrap()
}

pub fn at(seconds: u64) -> Timestamp {
    t0() + Duration::from_secs(seconds)
}

// ---------------------------------------------------------------------------------------
// the fake admin API
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Apply {
        pod: String,
        address: String,
        token: Option<String>,
        fault: Fault,
    },
    Clear {
        pod: String,
        name: String,
    },
}

/// Records every call; pods named in `unreachable` fail.
#[derive(Default)]
pub struct FakePods {
    calls: Mutex<Vec<Call>>,
    unreachable: Mutex<HashSet<String>>,
}

impl FakePods {
    pub fn set_unreachable(&self, pod: &str, unreachable: bool) {
        let mut set = self.unreachable.lock().unwrap();
        if unreachable {
            set.insert(pod.to_string());
        } else {
            set.remove(pod);
        }
    }

    /// The calls made so far, sorted by pod (calls to different pods run concurrently).
    pub fn take_calls(&self) -> Vec<Call> {
        let mut calls = std::mem::take(&mut *self.calls.lock().unwrap());
        calls.sort_by_key(|c| match c {
            Call::Apply { pod, .. } | Call::Clear { pod, .. } => pod.clone(),
        });
        calls
    }

    fn answer(&self, pod: &PodTarget, call: Call) -> Result<(), PodCallError> {
        self.calls.lock().unwrap().push(call);
        if self.unreachable.lock().unwrap().contains(&pod.name) {
            return Err(PodCallError::new(format!(
                "transport error: connect to {} timed out",
                pod.address
            )));
        }
        Ok(())
    }
}

impl PodFaults for FakePods {
    fn apply<'a>(
        &'a self,
        pod: &'a PodTarget,
        token: Option<&'a str>,
        fault: Fault,
    ) -> BoxFuture<'a, Result<(), PodCallError>> {
        let call = Call::Apply {
            pod: pod.name.clone(),
            address: pod.address.to_string(),
            token: token.map(str::to_string),
            fault,
        };
        Box::pin(async move { self.answer(pod, call) })
    }

    fn clear<'a>(
        &'a self,
        pod: &'a PodTarget,
        _token: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), PodCallError>> {
        let call = Call::Clear {
            pod: pod.name.clone(),
            name: name.to_string(),
        };
        Box::pin(async move { self.answer(pod, call) })
    }
}

// ---------------------------------------------------------------------------------------
// the mocked API server
// ---------------------------------------------------------------------------------------

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The API server side of the mock: each `expect_*` takes the next request, checks it is
/// the one expected, and answers as the API server would.
pub struct ApiServer {
    handle: Handle,
}

pub struct Received {
    pub method: Method,
    pub uri: String,
    pub content_type: Option<String>,
    pub body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Received {
    fn respond(self, body: &impl serde::Serialize) {
        self.send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }
}

impl ApiServer {
    pub async fn next(&mut self) -> Received {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .expect("the reconciler made no further API request")
                .expect("the client is gone: the reconciler made fewer API requests than expected");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Received {
            method: parts.method,
            uri: parts.uri.to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
            body,
            send,
        }
    }

    /// A LIST of pods with `label_selector` (as it appears, unencoded); answers `pods`.
    pub async fn expect_list_pods(&mut self, label_selector: &str, pods: &[Pod]) {
        let req = self.next().await;
        assert_eq!(
            req.method,
            Method::GET,
            "expected a pod LIST, got {}",
            req.uri
        );
        let selector = req
            .uri
            .split_once("labelSelector=")
            .map(|(_, rest)| rest.split('&').next().unwrap_or_default());
        assert!(
            req.uri
                .starts_with(&format!("/api/v1/namespaces/{NAMESPACE}/pods?"))
                && selector == Some(url_encode(label_selector).as_str()),
            "expected a pod LIST with labelSelector={label_selector}, got {}",
            req.uri
        );
        req.respond(&json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": { "resourceVersion": "100" },
            "items": pods,
        }));
    }

    /// A merge patch of `fi`'s status; answers `fi` with that status and returns it.
    pub async fn expect_status_patch(&mut self, fi: &FaultInjection) -> FaultInjectionStatus {
        let req = self.next().await;
        let name = fi.metadata.name.as_deref().unwrap();
        assert_eq!(
            req.method,
            Method::PATCH,
            "expected a status PATCH, got {} {}",
            req.method,
            req.uri
        );
        assert!(
            req.uri.starts_with(&format!("{FI_PATH}/{name}/status")),
            "expected a status PATCH, got {}",
            req.uri
        );
        assert_eq!(
            req.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let status: FaultInjectionStatus = serde_json::from_value(req.body["status"].clone())
            .expect("the patch holds a whole status");
        let mut updated = fi.clone();
        updated.status = Some(status.clone());
        req.respond(&updated);
        status
    }

    /// The finalizer helper's JSON patch adding our finalizer.
    pub async fn expect_finalizer_added(&mut self, fi: &FaultInjection) {
        let req = self.next().await;
        let name = fi.metadata.name.as_deref().unwrap();
        assert_eq!(req.method, Method::PATCH);
        assert!(
            req.uri.starts_with(&format!("{FI_PATH}/{name}?")),
            "{}",
            req.uri
        );
        assert_eq!(
            req.content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert_eq!(
            req.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
            ])
        );
        let mut updated = fi.clone();
        updated.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        req.respond(&updated);
    }

    /// The finalizer helper's JSON patch removing our finalizer (index 0).
    pub async fn expect_finalizer_removed(&mut self, fi: &FaultInjection) {
        let req = self.next().await;
        let name = fi.metadata.name.as_deref().unwrap();
        assert_eq!(
            req.method,
            Method::PATCH,
            "expected the finalizer removal, got {}",
            req.uri
        );
        assert!(
            req.uri.starts_with(&format!("{FI_PATH}/{name}?")),
            "{}",
            req.uri
        );
        assert_eq!(
            req.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/0" },
            ])
        );
        let mut updated = fi.clone();
        updated.metadata.finalizers = None;
        req.respond(&updated);
    }

    /// No further request: the client (held by the context) must be dropped first.
    pub async fn expect_done(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
            .await
            .expect("the client was not dropped");
        if let Some((request, _)) = next {
            panic!(
                "unexpected API request: {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

fn url_encode(text: &str) -> String {
    text.replace('/', "%2F")
        .replace('=', "%3D")
        .replace(',', "%2C")
}

// ---------------------------------------------------------------------------------------
// the harness
// ---------------------------------------------------------------------------------------

pub struct Harness {
    pub ctx: Arc<Context>,
    pub server: ApiServer,
    pub pods: Arc<FakePods>,
    pub clock: Arc<ManualClock>,
}

impl Harness {
    pub fn new() -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let pods = Arc::new(FakePods::default());
        let clock = Arc::new(ManualClock::new(t0()));
        let ctx = Arc::new(Context::new(
            client,
            pods.clone(),
            Some(TOKEN.to_string()),
            clock.clone(),
            FALLBACK_PORT,
        ));
        Self {
            ctx,
            server: ApiServer { handle },
            pods,
            clock,
        }
    }

    /// Drops the client and checks that the reconciler made no request beyond the script.
    pub async fn finish(self) {
        let Harness { ctx, server, .. } = self;
        drop(ctx);
        server.expect_done().await;
    }
}

// ---------------------------------------------------------------------------------------
// objects
// ---------------------------------------------------------------------------------------

/// A FaultInjection named `name` in [`NAMESPACE`] with our finalizer and `spec` (JSON).
pub fn fault_injection(name: &str, spec: Value) -> FaultInjection {
    serde_json::from_value(json!({
        "apiVersion": "lab.frlab.dev/v1alpha1",
        "kind": "FaultInjection",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "generation": 1,
            "resourceVersion": "10",
            "finalizers": [FINALIZER],
        },
        "spec": spec,
    }))
    .unwrap()
}

/// 20 % UNAVAILABLE on every payments pod labelled `track: stable`, for 45 s, seed 42.
pub fn payment_errors_spec() -> Value {
    json!({
        "selector": { "service": "payments", "labels": { "track": "stable" } },
        "mode": "all",
        "action": "error",
        "error": { "code": "UNAVAILABLE", "probability": 0.2 },
        "duration": "45s",
        "seed": 42,
    })
}

/// The status of a window that started at [`t0`] and lasts 45 s, with `injected` pods.
pub fn active_status(injected: &[&str]) -> FaultInjectionStatus {
    serde_json::from_value(json!({
        "phase": "Active",
        "injectedPods": injected,
        "startTime": "2026-11-27T12:00:00Z",
        "expiryTime": "2026-11-27T12:00:45Z",
        "lastError": null,
        "observedGeneration": 1,
    }))
    .unwrap()
}

/// A payments pod, Running, labelled `track: stable`, admin port [`ADMIN_PORT`].
pub fn pod(name: &str, ip: &str, ready: bool, restarts: i32) -> Pod {
    pod_with(name, ip, ready, restarts, "stable")
}

pub fn pod_with(name: &str, ip: &str, ready: bool, restarts: i32, track: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "labels": { "app.kubernetes.io/name": "payments", "track": track },
        },
        "spec": {
            "containers": [{
                "name": "payments",
                "image": "frlab/payments:dev",
                "ports": [
                    { "name": "grpc", "containerPort": 50051 },
                    { "name": "admin", "containerPort": ADMIN_PORT },
                ],
            }],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "containerStatuses": [{
                "name": "payments",
                "image": "frlab/payments:dev",
                "imageID": "",
                "ready": ready,
                "restartCount": restarts,
            }],
        },
    }))
    .unwrap()
}

/// The `injectedPods` entry of [`pod`]`(name, _, _, restarts)`.
pub fn key(name: &str, restarts: i32) -> String {
    format!("{name}/uid-{name}/{restarts}")
}
