//! The orders the console itself sends — one, a burst, or a steady load — and the log of
//! the last [`LOG_LEN`] of them.
//!
//! What the log can honestly say about each order: its outcome (order status, or the gRPC
//! code the gateway answered), its latency as the console measured it, and — for a single
//! order sent with "send one" — the *hops* it took: the increase of every service's
//! per-hop attempt counters (`resilience_client_attempts_total`) across the call, e.g.
//! `orders→payments ×3` when orders tried payments three times. Those counters are shared
//! by all traffic, so the entry also says whether other PlaceOrder calls reached the
//! gateway meanwhile (`overlapped`); then the hops are those of all of them. Orders of a
//! burst or of the steady load are not measured that way (they overlap by design).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, OrderStatus, PlaceOrderRequest};
use serde::Serialize;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use lab_proto::codes::code_name;
use lab_resilience::metric_names::CLIENT_ATTEMPTS_TOTAL;
use lab_runtime::metrics::SERVER_REQUESTS_TOTAL;

use super::poll::scrape;
use crate::load::{Pacer, Schedule};
use crate::measure::PLACE_ORDER;
use crate::observe::grpc as client;
use crate::stack::file::ServiceAddrs;

/// How many orders the log keeps.
pub const LOG_LEN: usize = 50;
/// The most orders one burst may send.
pub const MAX_BURST: u64 = 1000;
/// The highest rate of a burst or of the steady load, orders per second.
pub const MAX_RATE: f64 = 500.0;
/// Bursts running at once.
pub const MAX_BURSTS: usize = 4;
/// The console's deadline for one PlaceOrder (sent as grpc-timeout too).
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(3);

/// Which control sent an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Single,
    Burst,
    Load,
}

/// One hop's attempts during a measured order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopAttempts {
    pub from: String,
    pub to: String,
    pub attempts: u64,
}

/// One order of the log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub origin: Origin,
    /// Wall clock when it was sent (ms since the epoch).
    pub at_ms: i64,
    pub idempotency_key: String,
    /// The order id when the gateway answered with an order.
    pub order_id: Option<String>,
    /// CONFIRMED / FAILED (the order's status), or the gRPC code of the error.
    pub outcome: String,
    /// The order was placed and confirmed.
    pub ok: bool,
    /// The gRPC code name (OK when the gateway answered with an order).
    pub code: String,
    /// The error message, or the order's failure reason.
    pub message: String,
    pub latency_ms: f64,
    /// Attempts the gateway made at orders (from the gateway's attempt counter); only for
    /// measured orders.
    pub attempts: Option<u64>,
    /// Per-hop attempts during the call (see the module docs); only for measured orders.
    pub hops: Option<Vec<HopAttempts>>,
    /// Other PlaceOrder calls reached the gateway during this one: the hop counts are not
    /// this order's alone.
    pub overlapped: Option<bool>,
}

struct Load {
    rate: f64,
    started_ms: i64,
    task: JoinHandle<()>,
}

/// The console's own traffic.
pub struct Traffic {
    gateway: GatewayClient<Channel>,
    services: Vec<ServiceAddrs>,
    log: Mutex<VecDeque<LogEntry>>,
    load: Mutex<Option<Load>>,
    bursts: AtomicUsize,
    seq: AtomicU64,
    sent: AtomicU64,
    confirmed: AtomicU64,
}

impl Traffic {
    pub fn new(services: Vec<ServiceAddrs>) -> anyhow::Result<Arc<Self>> {
        let gateway = services
            .iter()
            .find(|s| s.service == "gateway")
            .ok_or_else(|| anyhow::anyhow!("no gateway in the stack"))?;
        let channel = client::channel(&gateway.grpc_url())?;
        Ok(Arc::new(Self {
            gateway: GatewayClient::new(channel),
            services,
            log: Mutex::new(VecDeque::new()),
            load: Mutex::new(None),
            bursts: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
        }))
    }

    /// Places one order and logs it.
    pub async fn place(&self, origin: Origin) -> LogEntry {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("console-{}", uuid::Uuid::new_v4());
        // sku-10 has only 5 in stock: the console would soon see it run out, not a fault.
        let product = format!("sku-{}", rand::random_range(1..=9u32));
        let request = PlaceOrderRequest {
            idempotency_key: key.clone(),
            customer_id: "console".into(),
            items: vec![LineItem {
                product_id: product,
                quantity: 1,
            }],
        };
        let at_ms = lab_runtime::now_ms();
        let started = Instant::now();
        self.sent.fetch_add(1, Ordering::Relaxed);
        let answer = client::place_order(&mut self.gateway.clone(), request, ORDER_TIMEOUT).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut entry = LogEntry {
            seq,
            origin,
            at_ms,
            idempotency_key: key,
            order_id: None,
            outcome: String::new(),
            ok: false,
            code: "OK".into(),
            message: String::new(),
            latency_ms,
            attempts: None,
            hops: None,
            overlapped: None,
        };
        match answer {
            Ok(placed) => {
                entry.order_id = Some(placed.order.order_id.clone());
                entry.outcome = client::status_name(placed.order.status);
                entry.ok = placed.order.status == OrderStatus::Confirmed as i32;
                entry.message = placed.order.failure_reason.clone();
            }
            Err(status) => {
                entry.code = code_name(status.code()).into();
                entry.outcome = entry.code.clone();
                entry.message = status.message().to_string();
            }
        }
        if entry.ok {
            self.confirmed.fetch_add(1, Ordering::Relaxed);
        }
        entry
    }

    /// Places one order, measuring the hops it took (see the module docs), and logs it.
    pub async fn place_measured(&self) -> LogEntry {
        let before = self.hop_counters().await;
        let mut entry = self.place(Origin::Single).await;
        let after = self.hop_counters().await;
        let (hops, requests) = hop_deltas(&before, &after);
        entry.attempts = hops
            .iter()
            .find(|h| h.from == "gateway" && h.to == "orders")
            .map(|h| h.attempts)
            .or(Some(0));
        entry.overlapped = Some(requests != 1);
        entry.hops = Some(hops);
        self.record(entry.clone());
        entry
    }

    /// Every service's attempt counters per hop, and the gateway's PlaceOrder requests.
    async fn hop_counters(&self) -> HopCounters {
        let scrapes = futures::future::join_all(self.services.iter().map(scrape)).await;
        let mut counters = HopCounters::default();
        for s in &scrapes {
            for x in &s.samples {
                if x.name == CLIENT_ATTEMPTS_TOTAL
                    && let Some(hop) = x.label("hop")
                {
                    *counters
                        .attempts
                        .entry((s.service.clone(), hop.to_string()))
                        .or_default() += x.value;
                }
                if s.service == "gateway"
                    && x.name == SERVER_REQUESTS_TOTAL
                    && x.label("method") == Some(PLACE_ORDER)
                {
                    counters.requests += x.value;
                }
            }
        }
        counters
    }

    fn record(&self, entry: LogEntry) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_back(entry);
        while log.len() > LOG_LEN {
            log.pop_front();
        }
    }

    /// Starts a burst of `count` orders at `rate` per second (open loop: each order is
    /// sent on schedule whether or not the previous ones answered). Refused when
    /// [`MAX_BURSTS`] are already running.
    pub fn burst(self: &Arc<Self>, count: u64, rate: f64) -> Result<(), String> {
        if self
            .bursts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BURSTS).then_some(n + 1)
            })
            .is_err()
        {
            return Err(format!(
                "{MAX_BURSTS} bursts are already running; wait for one to finish"
            ));
        }
        let traffic = self.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut pace = pacer(rate);
            for _ in 0..count {
                pace.next().await;
                let t = traffic.clone();
                sent.push(tokio::spawn(async move {
                    let entry = t.place(Origin::Burst).await;
                    t.record(entry);
                }));
            }
            for task in sent {
                let _ = task.await;
            }
            traffic.bursts.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    /// Starts (or re-rates) the steady load.
    pub fn start_load(self: &Arc<Self>, rate: f64) {
        let traffic = self.clone();
        let task = tokio::spawn(async move {
            let mut pace = pacer(rate);
            while pace.next().await.is_some() {
                let t = traffic.clone();
                tokio::spawn(async move {
                    let entry = t.place(Origin::Load).await;
                    t.record(entry);
                });
            }
        });
        let mut load = self.load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = load.replace(Load {
            rate,
            started_ms: lab_runtime::now_ms(),
            task,
        }) {
            old.task.abort();
        }
    }

    /// Stops the steady load (orders in flight still finish); false when none ran.
    pub fn stop_load(&self) -> bool {
        let old = self.load.lock().unwrap_or_else(|p| p.into_inner()).take();
        old.map(|l| l.task.abort()).is_some()
    }

    /// The console's part of the snapshot: load, bursts, counts and the log (newest first).
    pub fn view(&self) -> serde_json::Value {
        let load = self.load.lock().unwrap_or_else(|p| p.into_inner());
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "load": load.as_ref().map(|l| serde_json::json!({"rate": l.rate, "started_ms": l.started_ms})),
            "bursts_running": self.bursts.load(Ordering::Acquire),
            "sent": self.sent.load(Ordering::Relaxed),
            "confirmed": self.confirmed.load(Ordering::Relaxed),
            "log": log.iter().rev().collect::<Vec<_>>(),
        })
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop_load();
    }
}

/// `rate` orders a second from now, for as long as asked: open loop, as the load
/// generator paces its requests (a late order is sent at once, never skipped).
fn pacer(rate: f64) -> Pacer {
    Pacer::new(
        Schedule::Constant { rate },
        None,
        tokio::time::Instant::now(),
    )
}

#[derive(Debug, Default, Clone)]
struct HopCounters {
    attempts: BTreeMap<(String, String), f64>,
    requests: f64,
}

/// The hops whose attempt counters grew, in request-flow order, and how many PlaceOrder
/// requests the gateway received meanwhile.
fn hop_deltas(before: &HopCounters, after: &HopCounters) -> (Vec<HopAttempts>, u64) {
    const ORDER: [&str; 5] = [
        "gateway",
        "orders",
        "inventory",
        "payments",
        "notifications",
    ];
    let rank = |s: &str| ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len());
    let mut hops: Vec<HopAttempts> = after
        .attempts
        .iter()
        .filter_map(|((from, to), &n)| {
            let grew = n - before
                .attempts
                .get(&(from.clone(), to.clone()))
                .copied()
                .unwrap_or(0.0);
            (grew >= 1.0).then(|| HopAttempts {
                from: from.clone(),
                to: to.clone(),
                attempts: grew as u64,
            })
        })
        .collect();
    hops.sort_by_key(|h| (rank(&h.from), rank(&h.to)));
    (hops, (after.requests - before.requests).max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_are_counter_increases_in_flow_order() {
        let mut before = HopCounters::default();
        before
            .attempts
            .insert(("orders".into(), "payments".into()), 5.0);
        before
            .attempts
            .insert(("gateway".into(), "orders".into()), 2.0);
        let mut after = before.clone();
        after
            .attempts
            .insert(("orders".into(), "payments".into()), 8.0);
        after
            .attempts
            .insert(("orders".into(), "inventory".into()), 1.0);
        after
            .attempts
            .insert(("gateway".into(), "orders".into()), 3.0);
        after.requests = 1.0;
        let (hops, requests) = hop_deltas(&before, &after);
        let seen: Vec<(&str, &str, u64)> = hops
            .iter()
            .map(|h| (h.from.as_str(), h.to.as_str(), h.attempts))
            .collect();
        assert_eq!(
            seen,
            [
                ("gateway", "orders", 1),
                ("orders", "inventory", 1),
                ("orders", "payments", 3)
            ]
        );
        assert_eq!(requests, 1);
    }
}
