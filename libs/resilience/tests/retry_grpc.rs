//! Retries and hedges through a real tonic `Channel` to a real server on 127.0.0.1:0: the
//! buffered body replays over HTTP/2, trailers-only errors are classified, the attempt
//! header reaches the server, and a losing hedge is cancelled on the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::inventory_server::{Inventory, InventoryServer};
use lab_proto::shop::v1::{
    GetStockRequest, GetStockResponse, ReleaseRequest, ReleaseResponse, ReserveRequest,
    ReserveResponse,
};
use lab_resilience::BoxError;
use lab_resilience::body::{BufferLayer, UnbufferLayer};
use lab_resilience::hedge::{HedgeConfig, HedgeLayer};
use lab_resilience::retry::{
    BackoffConfig, BackoffKind, CountLayer, RetryBudget, RetryConfig, RetryLayer, RetryMetrics,
};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tower::ServiceBuilder;
use tower::util::BoxCloneService;

const HOP: &str = "inventory";

/// GetStock fails UNAVAILABLE for its first `fail_first` calls; its first call takes
/// `slow_first`. Every call is recorded; calls dropped before finishing are counted.
#[derive(Default)]
struct Scripted {
    fail_first: usize,
    slow_first: Option<Duration>,
    calls: AtomicUsize,
    seen: Mutex<Vec<(Option<String>, String)>>,
    cancelled: Arc<AtomicUsize>,
}

/// The server's handle on the shared script.
struct Handler(Arc<Scripted>);

struct CountIfDropped(Arc<AtomicUsize>, bool);

impl Drop for CountIfDropped {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Inventory for Handler {
    async fn reserve(
        &self,
        _: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        Err(Status::unimplemented("reserve"))
    }

    async fn release(
        &self,
        _: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Err(Status::unimplemented("release"))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst);
        let previous = request
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_string());
        let product_id = request.into_inner().product_id;
        self.0
            .seen
            .lock()
            .unwrap()
            .push((previous, product_id.clone()));
        if n < self.0.fail_first {
            return Err(Status::unavailable(format!("call {n} fails")));
        }
        if n == 0
            && let Some(slow) = self.0.slow_first
        {
            let mut guard = CountIfDropped(self.0.cancelled.clone(), false);
            tokio::time::sleep(slow).await;
            guard.1 = true;
        }
        Ok(Response::new(GetStockResponse {
            product_id,
            available: n as i64,
            ..GetStockResponse::default()
        }))
    }
}

struct App {
    channel: Channel,
    _shutdown: oneshot::Sender<()>,
}

async fn spawn_app(service: Arc<Scripted>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(
        Server::builder()
            .add_service(InventoryServer::new(Handler(service)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    App {
        channel,
        _shutdown: tx,
    }
}

type Client = InventoryClient<
    BoxCloneService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, BoxError>,
>;

/// Buffer -> RequestCount -> [Hedge] -> Retry -> CountLayer::attempts -> Unbuffer -> Channel.
fn client(
    channel: Channel,
    retry: &RetryConfig,
    hedge: Option<&HedgeConfig>,
    metrics: &RetryMetrics,
) -> Client {
    let budget = RetryBudget::for_hop(retry);
    let svc = ServiceBuilder::new()
        .layer(BufferLayer::new())
        .layer(CountLayer::requests(HOP, metrics))
        .option_layer(hedge.map(|h| HedgeLayer::new(HOP, h, budget.clone(), metrics)))
        .layer(RetryLayer::new(HOP, retry, budget, metrics))
        .layer(CountLayer::attempts(HOP, metrics))
        .layer(UnbufferLayer::new())
        .service(channel);
    InventoryClient::new(BoxCloneService::new(svc))
}

fn retry(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        backoff: BackoffConfig {
            kind: BackoffKind::Fixed,
            base_ms: 5,
            ..BackoffConfig::default()
        },
        ..RetryConfig::default()
    }
}

fn get_stock(product_id: &str) -> GetStockRequest {
    GetStockRequest {
        product_id: product_id.into(),
    }
}

#[tokio::test]
async fn unavailable_is_retried_over_the_wire_with_the_same_message() {
    let server = Arc::new(Scripted {
        fail_first: 2,
        ..Scripted::default()
    });
    let app = spawn_app(server.clone()).await;
    let metrics = RetryMetrics::default();
    let mut client = client(app.channel.clone(), &retry(3), None, &metrics);

    let answer = client
        .get_stock(get_stock("sku-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.product_id, "sku-42");
    assert_eq!(answer.available, 2, "the third call answered");
    assert_eq!(
        *server.seen.lock().unwrap(),
        vec![
            (None, "sku-42".to_string()),
            (Some("1".to_string()), "sku-42".to_string()),
            (Some("2".to_string()), "sku-42".to_string()),
        ]
    );
    assert_eq!((metrics.requests(HOP), metrics.attempts(HOP)), (1, 3));
}

#[tokio::test]
async fn the_last_status_reaches_the_caller_when_attempts_run_out() {
    let server = Arc::new(Scripted {
        fail_first: 10,
        ..Scripted::default()
    });
    let app = spawn_app(server.clone()).await;
    let metrics = RetryMetrics::default();
    let mut client = client(app.channel.clone(), &retry(2), None, &metrics);

    let status = client.get_stock(get_stock("sku")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "call 1 fails");
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_slow_read_is_hedged_and_the_loser_cancelled_on_the_server() {
    let server = Arc::new(Scripted {
        slow_first: Some(Duration::from_secs(5)),
        ..Scripted::default()
    });
    let app = spawn_app(server.clone()).await;
    let metrics = RetryMetrics::default();
    let hedge = HedgeConfig {
        delay_ms: 20,
        max_extra: 1,
        methods: vec!["/shop.v1.Inventory/GetStock".into()],
    };
    let mut client = client(app.channel.clone(), &retry(1), Some(&hedge), &metrics);

    let started = tokio::time::Instant::now();
    let answer = client
        .get_stock(get_stock("sku"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.available, 1, "the hedge answered");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metrics.hedges(HOP), 1);
    assert_eq!((metrics.requests(HOP), metrics.attempts(HOP)), (1, 2));
    // The first attempt's stream is reset, and the server drops its handler.
    for _ in 0..100 {
        if server.cancelled.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the losing attempt was not cancelled on the server");
}
