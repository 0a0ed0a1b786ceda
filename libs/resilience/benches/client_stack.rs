//! Per-call overhead of a full client stack (profile f-full on the payments hop: deadline,
//! retry, breaker, bulkhead, per-try timeout, idempotency key) against a bare tonic client,
//! measured in the same run against the same loopback server.
//!
//! `cargo bench -p lab-resilience --bench client_stack` (or `make bench`). Rounds alternate
//! bare and full so that drift on a busy machine hits both; each round is a closed loop of
//! CONCURRENCY callers for ROUND. Printed: throughput and p50/p99 per client, and the ratios
//! the goal is stated in (added p50 latency, throughput loss; goal: at most 5 % each).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab_proto::shop::v1 as shop;
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::payments_server::{Payments, PaymentsServer};
use lab_resilience::stack::{Metrics, client_stack};
use tonic::{Request, Response, Status};

const CONCURRENCY: usize = 16;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

struct Instant_;

#[tonic::async_trait]
impl Payments for Instant_ {
    async fn charge(
        &self,
        r: Request<shop::ChargeRequest>,
    ) -> Result<Response<shop::ChargeResponse>, Status> {
        Ok(Response::new(shop::ChargeResponse {
            charge_id: r.into_inner().order_id,
            replayed: false,
        }))
    }
    async fn refund(
        &self,
        _: Request<shop::RefundRequest>,
    ) -> Result<Response<shop::RefundResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn get_charge(
        &self,
        _: Request<shop::GetChargeRequest>,
    ) -> Result<Response<shop::ChargeRecord>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(PaymentsServer::new(Instant_));
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn request() -> shop::ChargeRequest {
    shop::ChargeRequest {
        order_id: "o1".into(),
        amount: Some(shop::Money {
            currency: "USD".into(),
            minor_units: 100,
        }),
        idempotency_key: "k1".into(),
    }
}

/// One closed-loop round; returns the latencies of successful calls and the elapsed time.
async fn round<T>(client: PaymentsClient<T>) -> (Vec<Duration>, Duration)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Future: Send,
{
    let started = Instant::now();
    let until = started + ROUND;
    let callers = (0..CONCURRENCY).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                if client.charge(request()).await.is_ok() {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        })
    });
    let mut all = Vec::new();
    for c in futures::future::join_all(callers).await {
        all.extend(c.unwrap());
    }
    (all, started.elapsed())
}

#[derive(Default)]
struct Totals {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Totals {
    fn add(&mut self, (l, e): (Vec<Duration>, Duration)) {
        self.latencies.extend(l);
        self.elapsed += e;
    }
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        self.latencies[((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1)]
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = server().await;
        let url = format!("http://{addr}");
        let channel = || tonic::transport::Endpoint::from_shared(url.clone()).unwrap().tcp_nodelay(true).connect_lazy();
        let bare = PaymentsClient::new(channel());
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let stacked = |name: &str| {
            let profile = lab_resilience::profiles::resolve(name).unwrap().profile;
            PaymentsClient::new(client_stack(&profile, "payments", &metrics, channel()).service)
        };
        let (baseline, full) = (stacked("a-baseline"), stacked("f-full"));
        // Warm every connection.
        round(bare.clone()).await;
        round(baseline.clone()).await;
        round(full.clone()).await;
        let (mut b, mut a, mut f) = (Totals::default(), Totals::default(), Totals::default());
        for _ in 0..ROUNDS {
            b.add(round(bare.clone()).await);
            a.add(round(baseline.clone()).await);
            f.add(round(full.clone()).await);
        }
        println!("unary Charge on loopback, {CONCURRENCY} closed-loop callers, {ROUNDS} alternating rounds of {}s", ROUND.as_secs());
        println!("{:<32} {:>9} {:>9} {:>9} {:>10} {:>10}", "client", "req/s", "p50 us", "p99 us", "p50 vs", "tput vs");
        let (bp50, btput) = (b.pct(0.5), b.throughput());
        for (name, t) in [("bare tonic", &mut b), ("a-baseline stack (payments hop)", &mut a), ("f-full stack (payments hop)", &mut f)] {
            let (p50, p99, tput) = (t.pct(0.5), t.pct(0.99), t.throughput());
            println!(
                "{name:<32} {tput:>9.0} {:>9} {:>9} {:>+9.1}% {:>+9.1}%",
                p50.as_micros(),
                p99.as_micros(),
                (p50.as_secs_f64() / bp50.as_secs_f64() - 1.0) * 100.0,
                (tput / btput - 1.0) * 100.0,
            );
        }
        println!("goal for f-full: at most +5 % p50 and -5 % throughput against bare tonic");
    });
}
