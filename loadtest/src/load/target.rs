//! Where the generator sends each attempt: the gateway's PlaceOrder (the workload) or its
//! health check (to measure the generator itself), over a few long-lived connections.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{OrderStatus, PlaceOrderRequest};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `connections` HTTP/2 connections to the gateway, used in turn: one connection is one
/// task framing every stream on each side, which caps the rate of a single connection on
/// a small machine.
#[derive(Clone)]
pub(crate) struct Channels {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
}

impl Channels {
    pub(crate) fn open(url: &str, connections: usize) -> Result<Self> {
        let channels = (0..connections.max(1))
            .map(|_| lab_runtime::client::lazy_channel("--gateway", url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn next(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

/// Where the generator sends one attempt of a logical request. The gRPC gateway in real
/// runs; a fake in the tests of the scheduling itself.
pub(crate) trait Target: Clone + Send + Sync + 'static {
    /// One attempt; `Err` holds the gRPC code name of a failure. The caller enforces the
    /// deadline; `timeout` is what is left of it, to send along as `grpc-timeout`.
    fn attempt(
        &self,
        request: PlaceOrderRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), &'static str>> + Send;
}

#[derive(Clone)]
pub(crate) struct GatewayTarget {
    pub(crate) channels: Channels,
}

impl Target for GatewayTarget {
    async fn attempt(
        &self,
        request: PlaceOrderRequest,
        timeout: Duration,
    ) -> Result<(), &'static str> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        match GatewayClient::new(self.channels.next())
            .place_order(request)
            .await
        {
            // An OK answer always carries a confirmed order today; anything else would be
            // a gateway bug, and is no success.
            Ok(answer) => match answer.into_inner().order {
                Some(order) if order.status == OrderStatus::Confirmed as i32 => Ok(()),
                _ => Err("OK_NOT_CONFIRMED"),
            },
            Err(status) => Err(lab_proto::codes::code_name(status.code())),
        }
    }
}

/// `grpc.health.v1.Health/Check` (the whole server) on the gateway; the order is unused.
#[derive(Clone)]
pub(crate) struct HealthTarget {
    pub(crate) channels: Channels,
}

impl Target for HealthTarget {
    async fn attempt(
        &self,
        _request: PlaceOrderRequest,
        timeout: Duration,
    ) -> Result<(), &'static str> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(timeout);
        match HealthClient::new(self.channels.next()).check(request).await {
            Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(_) => Err("NOT_SERVING"),
            Err(status) => Err(lab_proto::codes::code_name(status.code())),
        }
    }
}
