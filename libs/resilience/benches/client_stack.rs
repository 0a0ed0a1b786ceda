//! Per-call overhead of a full client stack (profile f-full on the payments hop: deadline,
//! retry, breaker, bulkhead, per-try timeout, idempotency key) against a bare tonic client,
//! measured in the same run against the same loopback server.
//!
//! `cargo bench -p lab-resilience --bench client_stack` (or `make bench`). Each round runs
//! every client in turn (bare first) as a closed loop of CONCURRENCY callers for ROUND; each
//! client's ratios are the median over the rounds of its ratio to bare in the same round.
//! Besides the whole stack, f-full is measured with one pattern taken out at a time (what
//! a pattern costs is its row's distance to the whole stack's) and a-baseline (no pattern
//! configured: the layers that are always there). Printed: throughput, pooled p50/p99, the
//! ratios, and the goal (f-full within 10 % of bare's p50).
//!
//! `FRLAB_BENCH_ONLY=<text>` runs only the stacks whose name contains it (bare always runs),
//! e.g. under `perf record`.
//!
//! The server sets `TCP_NODELAY` on accepted sockets itself: tonic's `Server::tcp_nodelay`
//! does not apply to `serve_with_incoming`, and with Nagle's algorithm every client's p99
//! was the 40 ms of a delayed ACK (until 702f019, this bench's and the lab's servers both).
//! The bench runs with mimalloc, as every lab service does (lab-runtime's allocator).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab_proto::shop::v1 as shop;
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::payments_server::{Payments, PaymentsServer};
use lab_resilience::config::Profile;
use lab_resilience::stack::{Metrics, client_stack};
use tonic::{Request, Response, Status};

const CONCURRENCY: usize = 16;
const ROUND: Duration = Duration::from_secs(1);
const ROUNDS: usize = 8;

// The allocator every lab service runs with (lab-runtime's), so the stack costs what it
// costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let router = tonic::transport::Server::builder().add_service(PaymentsServer::new(Instant_));
    // `Server::tcp_nodelay` does not apply to sockets from `serve_with_incoming`: set it here
    // (lab_runtime::host::incoming does the same for the lab's servers).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(router.serve_with_incoming(incoming));
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

/// One client's rounds: its pooled latencies, and each round's p50 and throughput.
#[derive(Default)]
struct Totals {
    latencies: Vec<Duration>,
    elapsed: Duration,
    rounds: Vec<(Duration, f64)>,
}

impl Totals {
    fn add(&mut self, (mut l, e): (Vec<Duration>, Duration)) {
        l.sort();
        let p50 = l.get(l.len() / 2).copied().unwrap_or_default();
        self.rounds.push((p50, l.len() as f64 / e.as_secs_f64()));
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
    /// Median over the rounds of (this round's p50 / bare's p50 of the same round), and the
    /// same for throughput: drift between rounds (tens of percent here) cancels out.
    fn ratios(&self, bare: &[(Duration, f64)]) -> (f64, f64) {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let pairs = || self.rounds.iter().zip(bare);
        (
            median(
                pairs()
                    .map(|(m, b)| m.0.as_secs_f64() / b.0.as_secs_f64())
                    .collect(),
            ),
            median(pairs().map(|(m, b)| m.1 / b.1).collect()),
        )
    }
}

/// f-full's payments hop with one pattern taken out: what that pattern costs is the
/// difference to the whole stack. Each variant's hop policy is f-full's, flattened into
/// `client` (no per-hop overrides).
fn variants() -> Vec<(&'static str, Profile)> {
    let full = lab_resilience::profiles::resolve("f-full").unwrap().profile;
    let mut flat = full.clone();
    flat.client = full.client_for("payments");
    flat.hops.clear();
    let without = |change: fn(&mut Profile)| {
        let mut p = flat.clone();
        change(&mut p);
        p
    };
    vec![
        ("f-full stack (payments hop)", flat.clone()),
        (
            "  without idempotency key",
            without(|p| p.idempotency.enabled = false),
        ),
        (
            "  without deadline",
            without(|p| {
                p.client.deadline.propagate = false;
                p.client.deadline.default_ms = None;
            }),
        ),
        (
            "  without any timer",
            without(|p| {
                p.client.deadline.propagate = false;
                p.client.deadline.default_ms = None;
                p.client.timeout = None;
            }),
        ),
        (
            "  without retries",
            without(|p| p.client.retry.max_attempts = 1),
        ),
        ("  without breaker", without(|p| p.client.breaker = None)),
        ("  without bulkhead", without(|p| p.client.bulkhead = None)),
        (
            "  without per-try timeout",
            without(|p| p.client.timeout = None),
        ),
        (
            "a-baseline stack",
            lab_resilience::profiles::resolve("a-baseline")
                .unwrap()
                .profile,
        ),
    ]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = server().await;
        let url = format!("http://{addr}");
        let channel = || {
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .tcp_nodelay(true)
                .connect_lazy()
        };
        let bare = PaymentsClient::new(channel());
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let only = std::env::var("FRLAB_BENCH_ONLY").ok();
        let mut stacks: Vec<_> = variants()
            .into_iter()
            .filter(|(n, _)| only.as_deref().is_none_or(|o| n.contains(o)))
            .map(|(name, profile)| {
                let client = PaymentsClient::new(
                    client_stack(&profile, "payments", &metrics, channel()).service,
                );
                (name, client, Totals::default())
            })
            .collect();
        // Warm every connection.
        round(bare.clone()).await;
        for (_, client, _) in &stacks {
            round(client.clone()).await;
        }
        let mut b = Totals::default();
        for r in 1..=ROUNDS {
            eprintln!("round {r}/{ROUNDS}");
            b.add(round(bare.clone()).await);
            for (_, client, totals) in &mut stacks {
                totals.add(round(client.clone()).await);
            }
        }
        println!(
            "unary Charge on loopback, {CONCURRENCY} closed-loop callers, {ROUNDS} alternating \
             rounds of {}s; ratios: median over the rounds of each round's ratio to bare",
            ROUND.as_secs()
        );
        println!(
            "{:<32} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "client", "req/s", "p50 us", "p99 us", "p50 vs", "tput vs"
        );
        let bare_rounds = b.rounds.clone();
        let mut rows = vec![("bare tonic", &mut b)];
        rows.extend(stacks.iter_mut().map(|(name, _, t)| (*name, t)));
        let mut full_p50 = None;
        for (name, t) in rows {
            let (p50, p99, tput) = (t.pct(0.5), t.pct(0.99), t.throughput());
            let (p50_ratio, tput_ratio) = t.ratios(&bare_rounds);
            if name.starts_with("f-full") {
                full_p50 = Some(p50_ratio);
            }
            println!(
                "{name:<32} {tput:>9.0} {:>9} {:>9} {:>+9.1}% {:>+9.1}%",
                p50.as_micros(),
                p99.as_micros(),
                (p50_ratio - 1.0) * 100.0,
                (tput_ratio - 1.0) * 100.0,
            );
        }
        if let Some(ratio) = full_p50 {
            println!(
                "goal for f-full: at most +10 % p50 against bare tonic: {} ({:+.1} %)",
                if ratio <= 1.10 { "met" } else { "not met" },
                (ratio - 1.0) * 100.0
            );
        }
    });
}
