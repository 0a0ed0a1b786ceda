//! Test support shared by every service's tests: run a service in-process on
//! `127.0.0.1:0` and talk to it. Binding port 0 and keeping the listener means no
//! find-a-free-port-then-rebind race.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{Bound, Shutdown};

/// One service running in this process.
pub struct TestApp {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The admin port (lab.v1.Faults).
    pub admin: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts `run(bound, config, shutdown)` on ephemeral ports and waits until gRPC health
    /// says SERVING. Panics with the service's own error if it fails to start.
    pub async fn spawn<C, F, Fut>(config: C, run: F) -> TestApp
    where
        F: FnOnce(Bound, C, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let bound = Bound::ephemeral().await.expect("bind 127.0.0.1:0");
        let grpc = bound.grpc_addr().expect("gRPC address");
        let http = bound.http_addr().expect("HTTP address");
        let admin = bound.admin_addr().expect("admin address");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(bound, config, shutdown.clone()));
        let mut app = TestApp {
            grpc,
            http,
            admin,
            shutdown,
            task,
        };
        app.wait_serving().await;
        app
    }

    async fn wait_serving(&mut self) {
        let mut health = HealthClient::new(self.channel());
        for _ in 0..300 {
            if self.task.is_finished() {
                let outcome = (&mut self.task).await;
                panic!("the service stopped while starting: {outcome:?}");
            }
            let req = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_millis(200), health.check(req)).await
                && resp.into_inner().status == ServingStatus::Serving as i32
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the service at {} did not become SERVING within 10 s",
            self.grpc
        );
    }

    /// `http://127.0.0.1:PORT` of the gRPC port.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A lazily connected channel to the gRPC port.
    pub fn channel(&self) -> Channel {
        crate::client::lazy_channel("test", &self.url()).expect("valid URL")
    }

    /// A lazily connected channel to the admin port.
    pub fn admin_channel(&self) -> Channel {
        crate::client::lazy_channel("test", &format!("http://{}", self.admin)).expect("valid URL")
    }

    /// GET `path` on the HTTP side port; returns (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
            .await
            .expect("HTTP GET on the side port")
    }

    /// The service's `/state` JSON.
    pub async fn state(&self) -> serde_json::Value {
        let (code, body) = self.http_get("/state").await;
        assert_eq!(code, 200, "/state answered {code}: {body}");
        serde_json::from_str(&body).expect("/state is JSON")
    }

    /// Triggers shutdown and waits for the service to drain and return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

pub use crate::client::http_get;
