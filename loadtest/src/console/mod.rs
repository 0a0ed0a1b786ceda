//! `frlab console`: a live web console of a running stack at http://127.0.0.1:8080.
//!
//! The console polls every service's `/state` and `/metrics` twice a second, builds one
//! JSON snapshot (services, the edges between them with their circuit breakers, bulkheads
//! and retry rates, totals, sparklines, breaker transitions, the console's own orders) and
//! pushes it to the page by server-sent events. The page's controls call the console's
//! JSON API, which sends orders to the gateway and applies faults through the services'
//! `lab.v1.Faults` admin ports with the configured token. The page (one HTML, one JS, one
//! CSS file, no framework) is compiled into the binary: it works offline.
//!
//! Layout: [`poll`] builds the snapshot from the services' scrapes, [`traffic`] sends the
//! orders and keeps their log, [`input`] checks request bodies, this file serves the API.
//! The services' addresses come from the stack file (`crate::stack::file`, `host:port`
//! addresses, so a cluster's DNS names work); scraping, the gRPC calls and the admin
//! client are `crate::observe`'s; `frlab console`'s flags are in `cli::console`.
//!
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the page (`/app.js`, `/style.css`) |
//! | `GET /api/snapshot` | the latest snapshot |
//! | `GET /api/events` | server-sent events: one `snapshot` event per poll |
//! | `POST /api/order` | place one order; answers its log entry |
//! | `POST /api/burst {count, rate}` | send `count` orders at `rate` per second |
//! | `POST /api/load/start {rate}`, `POST /api/load/stop` | steady load |
//! | `POST /api/faults {service, kind, duration_s, …}` | inject a fault (payments or inventory) |
//! | `DELETE /api/faults` | clear every fault on every service |
//!
//! A bad request body is answered 400 with `{"error", "field", "value"}`.

pub mod input;
pub mod poll;
pub mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use lab_proto::lab::v1::{ApplyFaultRequest, ClearFaultRequest};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::input::BadInput;
use self::poll::Poller;
use self::traffic::Traffic;
use crate::observe::faults::faults_client;
use crate::observe::grpc::describe_status;
use crate::stack::file::ServiceAddrs;

/// How often the services are polled and a snapshot is pushed.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// The line `frlab console` prints once it listens, followed by the page's URL.
pub const READY_PREFIX: &str = "console listening on ";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// A bound console, ready to serve.
pub struct Console {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    poller: Poller,
    snapshots: watch::Sender<Arc<String>>,
}

struct Shared {
    services: Vec<ServiceAddrs>,
    token: Option<String>,
    traffic: Arc<Traffic>,
    snapshots: watch::Receiver<Arc<String>>,
}

impl Console {
    /// Binds `listen` (port 0: any free port). Fails when the address is taken or the
    /// stack has no gateway.
    pub async fn bind(
        listen: SocketAddr,
        services: Vec<ServiceAddrs>,
        token: Option<String>,
    ) -> Result<Console> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for the console"))?;
        let traffic = Traffic::new(services.clone())?;
        let (snapshots, receiver) = watch::channel(Arc::new(String::new()));
        Ok(Console {
            listener,
            shared: Arc::new(Shared {
                services: services.clone(),
                token,
                traffic,
                snapshots: receiver,
            }),
            poller: Poller::new(services),
            snapshots,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Polls the services and serves the page and the API until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Console {
            listener,
            shared,
            mut poller,
            snapshots,
        } = self;
        let traffic = shared.traffic.clone();
        let polling = tokio::spawn(async move {
            let mut every = tokio::time::interval(POLL_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let mut snapshot = poller.poll().await;
                snapshot["console"] = traffic.view();
                let text = Arc::new(snapshot.to_string());
                if snapshots.send(text).is_err() {
                    break;
                }
            }
        });
        let app = router(shared.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        polling.abort();
        shared.traffic.stop_load();
        served.context("serving the console")
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let asset = |body: &'static str, kind: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    Router::new()
        .route("/", asset(INDEX_HTML, "text/html; charset=utf-8"))
        .route("/app.js", asset(APP_JS, "text/javascript; charset=utf-8"))
        .route("/style.css", asset(STYLE_CSS, "text/css; charset=utf-8"))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .route("/api/order", post(order))
        .route("/api/burst", post(burst))
        .route("/api/load/start", post(load_start))
        .route("/api/load/stop", post(load_stop))
        .route("/api/faults", post(inject).delete(clear))
        .with_state(shared)
}

/// An API error: status and `{"error", "field"?, "value"?}`.
struct ApiError(StatusCode, Value);

impl From<BadInput> for ApiError {
    fn from(e: BadInput) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"error": e.to_string(), "field": e.field, "value": e.value}),
        )
    }
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, json!({"error": message.into()}))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn json_text(text: Arc<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        text.to_string(),
    )
        .into_response()
}

/// The latest snapshot; before the first poll has finished, 503.
async fn snapshot(State(s): State<Arc<Shared>>) -> ApiResult {
    let mut rx = s.snapshots.clone();
    // Wait for the first poll (a few seconds at most) rather than answer nothing.
    let ready = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|t| !t.is_empty()))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !ready {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot yet: the first poll has not finished",
        ));
    }
    let text = rx.borrow().clone();
    Ok(json_text(text))
}

/// One `snapshot` event per poll, the latest first.
async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = s.snapshots.clone();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first || rx.borrow().is_empty() {
            rx.changed().await.ok()?;
        }
        let text = rx.borrow_and_update().clone();
        Some((
            Ok(Event::default().event("snapshot").data(text.as_str())),
            (rx, false),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn order(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    input::object(&body, &[])?;
    let entry = s.traffic.place_measured().await;
    Ok(axum::Json(entry).into_response())
}

async fn burst(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let (count, rate) = input::burst(&body)?;
    s.traffic
        .burst(count, rate)
        .map_err(|e| ApiError::new(StatusCode::TOO_MANY_REQUESTS, e))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"count": count, "rate": rate, "seconds": count as f64 / rate})),
    )
        .into_response())
}

async fn load_start(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let rate = input::load(&body)?;
    s.traffic.start_load(rate);
    Ok(axum::Json(json!({"running": true, "rate": rate})).into_response())
}

async fn load_stop(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    input::object(&body, &[])?;
    let was_running = s.traffic.stop_load();
    Ok(axum::Json(json!({"running": false, "was_running": was_running})).into_response())
}

fn admin_of<'a>(s: &'a Shared, service: &str) -> Result<&'a str, ApiError> {
    s.services
        .iter()
        .find(|e| e.service == service)
        .and_then(|e| e.admin.as_deref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("{service} has no admin port in the stack file"),
            )
        })
}

fn admin_failed(service: &str, status: &tonic::Status) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("{service} admin API: {}", describe_status(status)),
    )
}

async fn inject(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request = input::fault(&body)?;
    let admin = admin_of(&s, &request.service)?;
    let mut client = faults_client(admin, s.token.as_deref())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let fault = request.spec.to_fault(&request.name, None);
    let answer = client
        .apply(ApplyFaultRequest { fault: Some(fault) })
        .await
        .map_err(|st| admin_failed(&request.service, &st))?
        .into_inner();
    Ok(axum::Json(json!({
        "name": request.name,
        "service": request.service,
        "kind": request.spec.action.as_str(),
        "duration": request.spec.duration,
        "expires_at_ms": answer.expires_at_ms,
    }))
    .into_response())
}

async fn clear(State(s): State<Arc<Shared>>) -> ApiResult {
    let mut cleared = serde_json::Map::new();
    let mut errors = Vec::new();
    for e in s.services.iter().filter(|e| e.admin.is_some()) {
        let admin = e.admin.as_deref().unwrap_or_default();
        let answer = match faults_client(admin, s.token.as_deref()) {
            Ok(mut client) => client
                .clear(ClearFaultRequest {
                    name: String::new(),
                })
                .await
                .map(|a| a.into_inner().cleared)
                .map_err(|st| format!("{}: {}", e.service, describe_status(&st))),
            Err(err) => Err(format!("{err:#}")),
        };
        match answer {
            Ok(n) => {
                cleared.insert(e.service.clone(), json!(n));
            }
            Err(err) => errors.push(err),
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((
        status,
        axum::Json(json!({"cleared": cleared, "errors": errors})),
    )
        .into_response())
}

/// `frlab up`'s console: bound on `listen` over the stack's endpoints and served in the
/// background. When it cannot bind (the port is taken), `frlab up` warns and goes on
/// without it: the stack matters more than its dashboard.
pub async fn start_in_background(
    listen: SocketAddr,
    stack: &[crate::stack::Endpoint],
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let services = stack.iter().map(ServiceAddrs::from).collect();
    let console = Console::bind(listen, services, None).await?;
    let addr = console.local_addr();
    let task = tokio::spawn(async move {
        if let Err(e) = console.serve(std::future::pending()).await {
            eprintln!("warning: the console stopped: {e:#}");
        }
    });
    Ok((addr, task))
}
