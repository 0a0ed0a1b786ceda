//! The gRPC handlers of the gateway.

use std::collections::HashMap;

use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::gateway_server::Gateway;
use lab_proto::shop::v1::orders_client::OrdersClient;
use lab_proto::shop::v1::{
    CreateOrderRequest, GetOrderRequest, Order, PlaceOrderRequest, PlaceOrderResponse,
};
use lab_runtime::client::HopService;
use lab_runtime::{errors, validate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct GatewayService {
    orders: OrdersClient<HopService>,
    placed: Family<OutcomeLabels, Counter>,
}

impl GatewayService {
    pub fn new(orders: HopService, registry: &mut Registry) -> Self {
        let placed = Family::default();
        registry.register(
            "gateway_place_order",
            "PlaceOrder calls by outcome (ok, error)",
            placed.clone(),
        );
        Self {
            orders: OrdersClient::new(orders),
            placed,
        }
    }

    fn count(&self, outcome: &'static str) -> u64 {
        self.placed.get_or_create(&OutcomeLabels { outcome }).get()
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let req = request.into_inner();
        validate::idempotency_key("idempotency_key", &req.idempotency_key)?;
        validate::id("customer_id", &req.customer_id, validate::MAX_ID_LEN)?;
        validate::line_items("items", &req.items)?;
        // The caller's deadline travels on (or not) as the profile's client stack says.
        let forward = CreateOrderRequest {
            idempotency_key: req.idempotency_key,
            customer_id: req.customer_id,
            items: req.items,
        };
        match self.orders.clone().create_order(forward).await {
            Ok(r) => {
                self.placed
                    .get_or_create(&OutcomeLabels { outcome: "ok" })
                    .inc();
                Ok(Response::new(PlaceOrderResponse {
                    order: r.into_inner().order,
                }))
            }
            Err(status) => {
                self.placed
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                Err(errors::downstream("orders", &status))
            }
        }
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        self.orders
            .clone()
            .get_order(req)
            .await
            .map_err(|s| errors::downstream("orders", &s))
    }
}

#[tonic::async_trait]
impl Audit for GatewayService {
    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let counters = HashMap::from([
            ("place_order_ok".to_string(), self.count("ok") as i64),
            ("place_order_error".to_string(), self.count("error") as i64),
        ]);
        Ok(Response::new(SnapshotResponse {
            service: "gateway".into(),
            counters,
            ids: HashMap::new(),
        }))
    }
}
