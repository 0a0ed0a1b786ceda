//! The `health-probe` binary (the chart's exec probe before Kubernetes 1.24) against real
//! gRPC health servers on 127.0.0.1:0: exit 0 only for SERVING, 1 with the reason otherwise.

use std::net::SocketAddr;
use std::process::{Command, Output};

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A gRPC health server whose overall status is `status`; "shop.v1.Payments" is SERVING.
async fn serve(status: ServingStatus) -> (SocketAddr, HealthReporter, oneshot::Sender<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status("shop.v1.Payments", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    (addr, reporter, stop)
}

async fn probe(args: &[String]) -> Output {
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_health-probe"))
            .args(&args)
            .output()
            .expect("run health-probe")
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn serving_exits_0_and_not_serving_exits_1_naming_the_status() {
    let (addr, reporter, _stop) = serve(ServingStatus::Serving).await;
    let out = probe(&[addr.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A bare port means 127.0.0.1.
    let out = probe(&[addr.port().to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let out = probe(&[addr.to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NOT_SERVING"), "{}", stderr(&out));

    // A named service is asked for itself.
    let out = probe(&[
        addr.to_string(),
        "--service".into(),
        "shop.v1.Payments".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = probe(&[addr.to_string(), "--service".into(), "shop.v1.Nope".into()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

#[tokio::test]
async fn nothing_listening_exits_1_saying_it_cannot_connect() {
    // Bind, learn the port, close: nothing listens there any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = probe(&[addr.to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&addr.to_string()) && text.contains("cannot connect"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_exits_1() {
    // Accepts TCP but never speaks HTTP/2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let out = probe(&[addr.to_string(), "--timeout-ms".into(), "300".into()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no answer within 300 ms"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_bad_address_is_refused_naming_it() {
    let out = probe(&["frlab-gateway:50051".into()]).await;
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(
        stderr(&out).contains("frlab-gateway:50051"),
        "{}",
        stderr(&out)
    );
}
