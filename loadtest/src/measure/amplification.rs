//! Retry amplification (DESIGN.md): per hop, attempts received by the callee (counted on
//! arrival) / first attempts made by the caller; end to end, payments Charge attempts /
//! logical requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ratio;
use crate::observe::prometheus::{Sample, sum};

/// Received attempts of every callee, counted server side on arrival before any fault or
/// admission check (`lab_runtime::metrics::ServerMetricsLayer`).
pub const SERVER_REQUESTS: &str = lab_runtime::metrics::SERVER_REQUESTS_TOTAL;
/// Logical calls (first attempts) a caller made on a hop (`CountLayer::requests`).
pub const CLIENT_REQUESTS: &str = lab_resilience::metric_names::CLIENT_REQUESTS_TOTAL;
/// The load generator's call.
pub const PLACE_ORDER: &str = "/shop.v1.Gateway/PlaceOrder";
/// The call whose attempts measure end-to-end amplification.
pub const CHARGE: &str = "/shop.v1.Payments/Charge";

/// One hop of the request flow: which service calls which, and the gRPC methods the caller
/// sends through that hop's client (its `resilience_client_requests_total{hop}` counts all
/// of them, so the callee's received attempts are summed over the same methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The `hop` label of the caller's client metrics, also the callee's `service` label.
    pub name: &'static str,
    pub caller: &'static str,
    pub methods: &'static [&'static str],
}

/// Every hop, in request-flow order. Orders releases reservations through the inventory
/// hop, refunds the charges of compensated orders through the payments hop, and the
/// gateway forwards GetOrder through the orders hop, so those methods are counted with the
/// business call of their hop.
pub const HOPS: [Hop; 4] = [
    Hop {
        name: "orders",
        caller: "gateway",
        methods: &["/shop.v1.Orders/CreateOrder", "/shop.v1.Orders/GetOrder"],
    },
    Hop {
        name: "inventory",
        caller: "orders",
        methods: &["/shop.v1.Inventory/Reserve", "/shop.v1.Inventory/Release"],
    },
    Hop {
        name: "payments",
        caller: "orders",
        methods: &[CHARGE, "/shop.v1.Payments/Refund"],
    },
    Hop {
        name: "notifications",
        caller: "orders",
        methods: &["/shop.v1.Notifications/Deliver"],
    },
];

/// The counts behind one hop's amplification, kept so a reader can check the ratio.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HopCounts {
    /// Caller's `resilience_client_requests_total{service=caller,hop}`.
    pub first_attempts: f64,
    /// Callee's `rpc_server_requests_total{service=hop,method∈hop.methods}`.
    pub attempts_received: f64,
}

/// Retry amplification of one trial. Every ratio is `None` when its denominator is zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Amplification {
    /// Per hop (keyed by [`Hop::name`]): attempts received by the callee / first attempts
    /// made by the caller.
    pub per_hop: BTreeMap<String, Option<f64>>,
    /// Payments Charge attempts received / logical requests of the load generator.
    pub end_to_end: Option<f64>,
    /// Gateway PlaceOrder attempts received / logical requests: the load generator's own
    /// retries (1.0 when it does not retry).
    pub client: Option<f64>,
    /// The numerators and denominators of `per_hop`.
    pub counts: BTreeMap<String, HopCounts>,
    pub logical_requests: u64,
    pub place_order_attempts: f64,
    pub charge_attempts: f64,
}

impl Amplification {
    /// From the counter deltas of all five services' scrapes taken together (every series
    /// carries its `service` label) and the number of logical requests the load generator
    /// issued over the same interval.
    pub fn from_samples(deltas: &[Sample], logical_requests: u64) -> Amplification {
        let mut per_hop = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for hop in HOPS {
            let first_attempts = sum(
                deltas,
                CLIENT_REQUESTS,
                &[("service", hop.caller), ("hop", hop.name)],
            );
            let attempts_received = hop
                .methods
                .iter()
                .map(|m| {
                    sum(
                        deltas,
                        SERVER_REQUESTS,
                        &[("service", hop.name), ("method", m)],
                    )
                })
                .sum();
            per_hop.insert(
                hop.name.to_string(),
                ratio(attempts_received, first_attempts),
            );
            counts.insert(
                hop.name.to_string(),
                HopCounts {
                    first_attempts,
                    attempts_received,
                },
            );
        }
        let place_order_attempts = sum(
            deltas,
            SERVER_REQUESTS,
            &[("service", "gateway"), ("method", PLACE_ORDER)],
        );
        let charge_attempts = sum(
            deltas,
            SERVER_REQUESTS,
            &[("service", "payments"), ("method", CHARGE)],
        );
        let logical = logical_requests as f64;
        Amplification {
            per_hop,
            end_to_end: ratio(charge_attempts, logical),
            client: ratio(place_order_attempts, logical),
            counts,
            logical_requests,
            place_order_attempts,
            charge_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::prometheus::parse_prometheus;

    /// Two services' literal scrapes (gateway and payments are enough for the hops they
    /// name; the others are absent and give `None`, never NaN).
    #[test]
    fn amplification_per_hop_end_to_end_and_client() {
        let gateway = r#"
rpc_server_requests_total{service="gateway",method="/shop.v1.Gateway/PlaceOrder"} 120
rpc_server_requests_total{service="gateway",method="/grpc.health.v1.Health/Check"} 999
resilience_client_requests_total{service="gateway",hop="orders"} 100
resilience_client_attempts_total{service="gateway",hop="orders"} 260
"#;
        let orders = r#"
rpc_server_requests_total{service="orders",method="/shop.v1.Orders/CreateOrder"} 250
rpc_server_requests_total{service="orders",method="/shop.v1.Orders/GetOrder"} 10
rpc_server_requests_total{service="orders",method="/lab.v1.Audit/Snapshot"} 3
resilience_client_requests_total{service="orders",hop="payments"} 200
resilience_client_requests_total{service="orders",hop="inventory"} 0
"#;
        let payments = r#"
rpc_server_requests_total{service="payments",method="/shop.v1.Payments/Charge"} 520
rpc_server_requests_total{service="payments",method="/shop.v1.Payments/GetCharge"} 40
"#;
        let mut all = parse_prometheus(gateway).unwrap();
        all.extend(parse_prometheus(orders).unwrap());
        all.extend(parse_prometheus(payments).unwrap());
        let a = Amplification::from_samples(&all, 100);
        // gateway -> orders: (250 + 10) / 100; the Audit call is not the hop's.
        assert_eq!(a.per_hop["orders"], Some(2.6));
        // orders -> payments: 520 / 200.
        assert_eq!(a.per_hop["payments"], Some(2.6));
        // Zero and missing denominators.
        assert_eq!(a.per_hop["inventory"], None);
        assert_eq!(a.per_hop["notifications"], None);
        assert_eq!(a.end_to_end, Some(5.2));
        assert_eq!(a.client, Some(1.2));
        assert_eq!(a.counts["payments"].first_attempts, 200.0);
        assert_eq!(a.counts["payments"].attempts_received, 520.0);
        let none = Amplification::from_samples(&all, 0);
        assert_eq!((none.end_to_end, none.client), (None, None));
    }
}
