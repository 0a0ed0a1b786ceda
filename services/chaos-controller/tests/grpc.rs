//! `GrpcPodFaults` against the real `lab.v1.Faults` admin service of `lab-chaos`, served on
//! 127.0.0.1:0: the token goes out as a bearer token, Apply and Clear reach the pod, and an
//! unreachable pod or a wrong token is an error that names the cause.

use std::net::SocketAddr;
use std::time::Duration;

use chaos_controller::pod_faults::{GrpcPodFaults, PodFaults};
use chaos_controller::pods::PodTarget;
use lab_chaos::{AdminAuth, FaultSet, FaultsAdmin, admin_server};
use lab_proto::lab::v1::ListFaultsRequest;
use lab_proto::lab::v1::faults_client::FaultsClient;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

const TOKEN: &str = "s3cret";

/// Serves a payments admin API; the sender stops it when dropped.
async fn spawn_admin() -> (SocketAddr, oneshot::Sender<()>) {
    let faults = FaultSet::new("payments", &mut Registry::default());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(admin_server(FaultsAdmin::new(
            faults,
            AdminAuth::Token(TOKEN.to_string()),
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    (addr, stop)
}

fn target(address: SocketAddr) -> PodTarget {
    PodTarget {
        name: "payments-a".into(),
        key: "payments-a/uid/0".into(),
        address,
    }
}

fn payment_errors() -> lab_chaos::spec::FaultInjectionSpec {
    serde_json::from_value(serde_json::json!({
        "selector": { "service": "payments" },
        "action": "error",
        "error": { "code": "UNAVAILABLE", "probability": 0.2 },
        "duration": "60s",
        "seed": 42,
    }))
    .unwrap()
}

async fn active_faults(addr: SocketAddr) -> Vec<(String, i64)> {
    let mut client = FaultsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(ListFaultsRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client
        .list(request)
        .await
        .unwrap()
        .into_inner()
        .faults
        .into_iter()
        .map(|f| {
            let fault = f.fault.unwrap();
            (fault.name, fault.duration_ms)
        })
        .collect()
}

#[tokio::test]
async fn apply_and_clear_reach_the_pods_admin_api_with_the_token() {
    let (addr, _stop) = spawn_admin().await;
    let pods = GrpcPodFaults::default();
    let mut fault = payment_errors().to_fault("payment-errors", Some(43));
    fault.duration_ms = 30_000;

    pods.apply(&target(addr), Some(TOKEN), fault).await.unwrap();
    assert_eq!(
        active_faults(addr).await,
        [("payment-errors".to_string(), 30_000)]
    );

    pods.clear(&target(addr), Some(TOKEN), "payment-errors")
        .await
        .unwrap();
    assert!(active_faults(addr).await.is_empty());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_an_error() {
    let (addr, _stop) = spawn_admin().await;
    let pods = GrpcPodFaults::default();
    let fault = payment_errors().to_fault("payment-errors", None);

    let err = pods
        .apply(&target(addr), Some("wrong"), fault.clone())
        .await
        .unwrap_err();
    assert!(err.message.contains("Unauthenticated"), "{err}");
    let err = pods.apply(&target(addr), None, fault).await.unwrap_err();
    assert!(err.message.contains("Unauthenticated"), "{err}");
    assert!(active_faults(addr).await.is_empty());
}

#[tokio::test]
async fn an_unreachable_pod_is_an_error_within_the_connect_timeout() {
    // A port nobody listens on: bind, note the address, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pods = GrpcPodFaults {
        connect_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_secs(1),
    };
    let fault = payment_errors().to_fault("payment-errors", None);

    let started = std::time::Instant::now();
    let err = pods
        .apply(&target(addr), Some(TOKEN), fault)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.message.contains("Connection refused"), "{err}");
}
