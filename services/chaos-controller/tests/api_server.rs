//! The whole controller (`reconcile::controller`, gRPC to the pods, the system clock)
//! against the real API server of the local cluster (`make cluster-local`, Kubernetes 1.20;
//! its kubeconfig in $K8S_RUN, default /tmp/frlab-k8s). A missing cluster fails the test,
//! naming the command to run.
//!
//! The pods are API objects bound to a Node object of the test's own (no kubelet runs
//! them): their status says Running, Ready, IP 127.0.0.1, and their container port `admin`
//! is a real `lab.v1.Faults` server of this test on 127.0.0.1:0. So everything between a
//! `FaultInjection` and a pod's fault set is real: the CRD's schema, the watch, the
//! finalizer, the status subresource, the pod watch, the gRPC calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_controller::clock::SystemClock;
use chaos_controller::pod_faults::GrpcPodFaults;
use chaos_controller::reconcile::{FINALIZER, controller};
use chaos_controller::{Context, FaultInjection, Phase, crd, error_policy, reconcile};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use lab_chaos::{AdminAuth, FaultSet, FaultsAdmin, admin_server};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

const TOKEN: &str = "s3cret";
/// Marks the namespace and Node this test creates.
const TEST_LABEL: &str = "frlab.dev/test=chaos-controller";

async fn client() -> Client {
    let run = PathBuf::from(std::env::var("K8S_RUN").unwrap_or_else(|_| "/tmp/frlab-k8s".into()));
    let path = run.join("kubeconfig");
    let missing = |why: String| -> ! {
        panic!(
            "no local cluster at {} ({why}): start it with `make cluster-local` (root; builds \
             Kubernetes 1.20 into /opt/frlab-k8s the first time)",
            path.display()
        )
    };
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| missing(e.to_string()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| missing(e.to_string()));
    let client = Client::try_from(config).unwrap_or_else(|e| missing(e.to_string()));
    let version = client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| missing(e.to_string()));
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "20")
    );
    client
}

/// Polls `check` every 200 ms until it returns `Some`, or fails naming `what`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `lab.v1.Faults` server on 127.0.0.1:0 (the pod's admin port) and its fault set.
async fn spawn_admin() -> (SocketAddr, FaultSet, oneshot::Sender<()>) {
    let faults = FaultSet::new("payments", &mut Registry::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(admin_server(FaultsAdmin::new(
                faults.clone(),
                AdminAuth::Token(TOKEN.to_string()),
            )))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    (addr, faults, stop)
}

fn fault_names(faults: &FaultSet) -> Vec<String> {
    faults.list().into_iter().map(|f| f.name).collect()
}

/// The CRD as the chart installs it; waits until the API server serves it.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "faultinjections.lab.frlab.dev";
    crds.patch(
        name,
        &PatchParams::apply("chaos-controller-test").force(),
        &Patch::Apply(crd::crd()),
    )
    .await
    .expect("the API server accepts the CRD");
    wait_for("the CRD to be Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// A payments pod bound to `node`, made Running and Ready at 127.0.0.1 with its admin port
/// at `admin`.
async fn fake_pod(pods: &Api<Pod>, name: &str, node: &str, admin: SocketAddr) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "payments" } },
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "payments",
                "image": "frlab:dev",
                "ports": [{ "name": "admin", "containerPort": admin.port() }],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    set_pod_status(pods, name, 0).await
}

async fn set_pod_status(pods: &Api<Pod>, name: &str, restarts: i32) -> Pod {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": now }],
        "containerStatuses": [{
            "name": "payments", "image": "frlab:dev", "imageID": "", "ready": true,
            "restartCount": restarts, "state": { "running": { "startedAt": now } },
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap()
}

fn fault_injection(name: &str, spec: Value) -> FaultInjection {
    serde_json::from_value(json!({
        "apiVersion": "lab.frlab.dev/v1alpha1",
        "kind": "FaultInjection",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

async fn phase_is(api: &Api<FaultInjection>, name: &str, phase: Phase) -> Option<FaultInjection> {
    let fi = api.get(name).await.ok()?;
    (fi.status.as_ref()?.phase == phase).then_some(fi)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reconciles_fault_injections_on_a_real_api_server() {
    let client = client().await;
    install_crd(&client).await;

    // A namespace and a Node object of this test's own (unschedulable: the scheduler must
    // not place real pods on it), after removing those a failed run left behind.
    let id = std::process::id();
    let ns = format!("chaos-controller-test-{id}");
    let node = format!("chaos-controller-test-{id}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mine = ListParams::default().labels(TEST_LABEL);
    for old in nodes.list(&mine).await.unwrap() {
        let _ = nodes
            .delete(&old.name_any(), &DeleteParams::default())
            .await;
    }
    for old in namespaces.list(&mine).await.unwrap() {
        let _ = namespaces
            .delete(&old.name_any(), &DeleteParams::default())
            .await;
    }
    let (key, value) = TEST_LABEL.split_once('=').unwrap();
    let metadata = |name: &str| json!({ "name": name, "labels": { key: value } });
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": metadata(&ns) })).unwrap(),
        )
        .await
        .unwrap();
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": metadata(&node), "spec": { "unschedulable": true } }),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let injections: Api<FaultInjection> = Api::namespaced(client.clone(), &ns);
    // Pods are admitted once the namespace's default ServiceAccount has its token.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the namespace's default ServiceAccount token",
        Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move {
                let sa = accounts.get_opt("default").await.ok()??;
                (!sa.secrets?.is_empty()).then_some(())
            }
        },
    )
    .await;

    let (admin, faults, _stop_admin) = spawn_admin().await;
    let pod = fake_pod(&pods, "payments-a", &node, admin).await;
    let uid = pod.metadata.uid.clone().unwrap();

    // The controller, as main.rs runs it (watching this namespace only).
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(GrpcPodFaults::default()),
        Some(TOKEN.to_string()),
        Arc::new(SystemClock),
        50061,
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(
        controller(injections.clone(), pods.clone())
            .graceful_shutdown_on(async {
                let _ = stopped.await;
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );

    // The API server refuses what the CRD's schema refuses (sent untyped: the Rust type
    // cannot even hold it).
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<FaultInjection>(&()),
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "lab.frlab.dev/v1alpha1",
        "kind": "FaultInjection",
        "metadata": { "name": "bad-action" },
        "spec": { "selector": { "service": "payments" }, "action": "explode", "duration": "5s" },
    }))
    .unwrap();
    let err = untyped
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("explode"), "{err}");

    // A short fault: applied to the pod, then expired and cleared by the controller.
    let errors = json!({
        "selector": { "service": "payments" },
        "mode": "all",
        "action": "error",
        "error": { "code": "UNAVAILABLE", "probability": 0.2 },
        "duration": "4s",
        "seed": 42,
    });
    injections
        .create(
            &PostParams::default(),
            &fault_injection("payment-errors", errors),
        )
        .await
        .unwrap();
    let active = wait_for("payment-errors Active", Duration::from_secs(20), || {
        phase_is(&injections, "payment-errors", Phase::Active)
    })
    .await;
    let status = active.status.clone().unwrap();
    assert_eq!(status.injected_pods, [format!("payments-a/{uid}/0")]);
    assert_eq!(status.last_error, None);
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.start_time.is_some() && status.expiry_time.is_some());
    assert_eq!(
        active.metadata.finalizers,
        Some(vec![FINALIZER.to_string()])
    );
    assert_eq!(
        fault_names(&faults),
        ["payment-errors"],
        "the pod's admin API got it"
    );
    let expired = wait_for("payment-errors Expired", Duration::from_secs(20), || {
        phase_is(&injections, "payment-errors", Phase::Expired)
    })
    .await;
    assert!(expired.status.unwrap().injected_pods.is_empty());
    assert!(fault_names(&faults).is_empty());

    // An invalid spec the schema lets through: Failed, naming the field.
    let mut invalid = json!({
        "selector": { "service": "payments" },
        "action": "error",
        "error": { "code": "UNAVAILABLE", "probability": 1.5 },
        "duration": "30s",
    });
    injections
        .create(
            &PostParams::default(),
            &fault_injection("invalid", invalid.take()),
        )
        .await
        .unwrap();
    let failed = wait_for("invalid Failed", Duration::from_secs(20), || {
        phase_is(&injections, "invalid", Phase::Failed)
    })
    .await;
    let error = failed.status.unwrap().last_error.unwrap();
    assert!(error.contains("spec.error.probability"), "{error}");

    // A long outage: a container restart (seen through the pod watch) gets it again; a
    // delete clears it on the pod before the object goes.
    let outage = json!({
        "selector": { "service": "payments" },
        "action": "outage",
        "methods": ["/shop.v1.Payments/Charge"],
        "duration": "5m",
    });
    injections
        .create(
            &PostParams::default(),
            &fault_injection("payment-outage", outage),
        )
        .await
        .unwrap();
    wait_for("payment-outage Active", Duration::from_secs(20), || {
        phase_is(&injections, "payment-outage", Phase::Active)
    })
    .await;
    assert_eq!(fault_names(&faults), ["payment-outage"]);
    faults.clear(Some("payment-outage")); // the restarted process has lost it
    set_pod_status(&pods, "payments-a", 1).await;
    wait_for(
        "the restarted pod to get the fault again",
        Duration::from_secs(20),
        || {
            let injections = injections.clone();
            let faults = faults.clone();
            let key = format!("payments-a/{uid}/1");
            async move {
                let fi = injections.get("payment-outage").await.ok()?;
                (fi.status?.injected_pods == [key] && fault_names(&faults) == ["payment-outage"])
                    .then_some(())
            }
        },
    )
    .await;
    injections
        .delete("payment-outage", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("payment-outage to be gone", Duration::from_secs(20), || {
        let injections = injections.clone();
        async move {
            injections
                .get_opt("payment-outage")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        fault_names(&faults).is_empty(),
        "the delete cleared the pod's fault"
    );

    // Finished ones go at once (their finalizer has nothing to clear).
    for name in ["payment-errors", "invalid"] {
        injections
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_for(
        "every FaultInjection to be gone",
        Duration::from_secs(20),
        || {
            let injections = injections.clone();
            async move {
                injections
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the controller stops on its shutdown signal")
        .unwrap();
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
}
