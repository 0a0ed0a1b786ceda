//! Serving one service: its gRPC routes plus health, reflection and server metrics on the
//! gRPC port, and `/metrics`, `/state`, `/healthz` on the HTTP side port.
//!
//! Server reflection describes only the business API the port serves (the gateway's
//! public port: `shop.v1.Gateway`), never the other services' internal APIs nor the lab's
//! plumbing ([`ServiceHost::add_lab_service`]: `lab.v1.Audit`).
//!
//! Shutdown order: health turns NOT_SERVING first (so load balancers stop sending), then the
//! gRPC server stops accepting and drains in-flight calls, bounded by a drain timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use lab_chaos::{AdminAuth, FaultLayer, FaultSet, FaultsAdmin};
use lab_resilience::Profile;
use lab_resilience::profiles::Named;
use lab_resilience::stack::{HopService, ServerStack};

use crate::metrics::{ServerMetrics, ServerMetricsLayer};
use crate::shutdown::Shutdown;
use crate::state::StateBoard;
use crate::telemetry::grpc::{ClientTrace, ServerTraceLayer};

/// Largest request a service decodes; larger ones are refused with OUT_OF_RANGE by tonic.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How long in-flight calls get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections `listener` accepts, with `TCP_NODELAY` set on each. tonic's
/// `Server::tcp_nodelay` applies only to listeners tonic binds itself; `serve_with_incoming`
/// takes sockets as they come, and with Nagle's algorithm on, a small response written while
/// the previous one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The listeners a service serves on: gRPC, and optionally the HTTP side port.
#[derive(Debug)]
pub struct Bound {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
    /// The admin port (lab.v1.Faults), if this service serves one.
    pub admin: Option<TcpListener>,
    /// Print the ready line ([`crate::READY_PREFIX`]) on stdout once serving. Service
    /// binaries set it (`frlab` waits for the line); tests don't need it.
    pub announce_ready: bool,
}

impl Bound {
    /// Binds the gRPC, HTTP side and admin ports.
    pub async fn bind(
        grpc: SocketAddr,
        http: SocketAddr,
        admin: SocketAddr,
    ) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(grpc).await?,
            http: Some(TcpListener::bind(http).await?),
            admin: Some(TcpListener::bind(admin).await?),
            announce_ready: false,
        })
    }

    /// Every port on 127.0.0.1:0, as tests use them.
    pub async fn ephemeral() -> std::io::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::bind(any, any, any).await
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP side port failed: {0}")]
    Http(#[from] std::io::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A tonic server (`XxxServer::new(..)`) the host can route to.
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Collects a service's gRPC routes, metrics and state, builds its resilience stacks from
/// the profile, then serves them.
pub struct ServiceHost {
    name: &'static str,
    profile: Named,
    registry: Registry,
    state: StateBoard,
    routes: RoutesBuilder,
    health_names: Vec<&'static str>,
    /// The business services, the ones reflection describes.
    listed_names: Vec<&'static str>,
    server_metrics: ServerMetrics,
    resilience: lab_resilience::stack::Metrics,
    faults: FaultSet,
    latency_in_handler: bool,
    admin_auth: AdminAuth,
}

impl ServiceHost {
    pub fn new(name: &'static str, profile: Named) -> Self {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Borrowed(name),
            )]
            .into_iter(),
        );
        let server_metrics = ServerMetrics::new(&mut registry);
        let resilience = lab_resilience::stack::Metrics::register(&mut registry);
        let faults = FaultSet::new(name, &mut registry);
        let state = StateBoard::default();
        let view = faults.clone();
        state.register("faults", move || view.snapshot());
        let profile_name = profile.name.clone();
        state.register("profile", move || serde_json::json!(profile_name));
        Self {
            name,
            profile,
            registry,
            state,
            routes: RoutesBuilder::default(),
            health_names: Vec::new(),
            listed_names: Vec::new(),
            server_metrics,
            resilience,
            faults,
            latency_in_handler: false,
            admin_auth: AdminAuth::Refuse,
        }
    }

    /// A host configured from the common flags: the profile (`--profile`) and who may call
    /// the admin port (`--admin-token-file` or FRLAB_ADMIN_TOKEN, `--insecure-admin`).
    pub fn from_args(name: &'static str, args: &crate::CommonArgs) -> anyhow::Result<Self> {
        let mut host = Self::new(name, args.profile()?);
        host.admin_auth = args.admin_auth()?;
        Ok(host)
    }

    /// Who may call the admin port (default: nobody).
    pub fn set_admin_auth(&mut self, auth: AdminAuth) {
        self.admin_auth = auth;
    }

    /// The service's live fault set, for the hooks it applies inside its own handlers
    /// (brownout, lock hold). `latency_in_handler`: the service draws injected latency itself
    /// (payments does, inside its capacity slot), so the fault layer must not add it again.
    pub fn faults(&mut self, latency_in_handler: bool) -> FaultSet {
        self.latency_in_handler |= latency_in_handler;
        self.faults.clone()
    }

    /// The resilience profile this service runs.
    pub fn profile(&self) -> &Profile {
        &self.profile.profile
    }

    /// A client for the downstream `hop` at `url`, wrapped in the profile's client stack;
    /// its breaker, bulkhead and budget show under `hops/<hop>` in `/state`. `flag` names
    /// the setting the URL came from, for the error message.
    pub fn client(
        &mut self,
        hop: &str,
        flag: &'static str,
        url: &str,
    ) -> Result<HopService, crate::client::BadUrl> {
        let channel = crate::client::lazy_channel(flag, url)?;
        // Innermost, below retries and hedges: one span and one `traceparent` per attempt.
        let channel = ClientTrace::new(hop, channel);
        let stack =
            lab_resilience::stack::client_stack(self.profile(), hop, &self.resilience, channel);
        let state = stack.state.clone();
        self.state.register(format!("hops/{hop}"), move || state());
        Ok(stack.service)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Register service-specific metrics here before [`ServiceHost::serve`].
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn state(&self) -> &StateBoard {
        &self.state
    }

    pub fn server_metrics(&self) -> &ServerMetrics {
        &self.server_metrics
    }

    /// Adds a business gRPC service: reported SERVING by gRPC health while up, and
    /// described by server reflection.
    pub fn add_service<S: GrpcService>(&mut self, svc: S) -> &mut Self {
        self.listed_names.push(S::NAME);
        self.add_lab_service(svc)
    }

    /// Adds a lab plumbing service (`lab.v1.Audit`): served and reported by gRPC health,
    /// but not advertised by reflection, which describes the business API only.
    pub fn add_lab_service<S: GrpcService>(&mut self, svc: S) -> &mut Self {
        self.health_names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Serves until `shutdown` fires, then drains. Returns once both ports are closed.
    pub async fn serve(mut self, bound: Bound, shutdown: Shutdown) -> Result<(), HostError> {
        let (grpc_addr, http_addr, admin_addr) =
            (bound.grpc_addr()?, bound.http_addr(), bound.admin_addr());
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in self.health_names.iter().copied().chain([""]) {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let described = described_files(&self.listed_names)?;
        let reflection = || {
            self.listed_names.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_file_descriptor_set(described.clone()),
                |b, name| b.with_service_name(*name),
            )
        };
        let reflection_v1 = reflection().build_v1()?;
        // grpcurl before 1.8.8 only speaks v1alpha.
        let reflection_v1alpha = reflection().build_v1alpha()?;
        self.routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes = self.routes.routes();

        let admin_task = bound.admin.map(|listener| {
            let admin = lab_chaos::admin_server(FaultsAdmin::new(
                self.faults.clone(),
                self.admin_auth.clone(),
            ));
            let shutdown = shutdown.clone();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(admin)
                    .serve_with_incoming_shutdown(incoming(listener), async move {
                        shutdown.wait().await
                    }),
            )
        });
        if bound.announce_ready {
            let ready = serde_json::json!({
                "service": self.name,
                "grpc": grpc_addr.to_string(),
                "http": http_addr.map(|a| a.to_string()),
                "admin": admin_addr.map(|a| a.to_string()),
            });
            // The listeners are bound and the routes built: connections are served from here on.
            println!("{}{ready}", crate::READY_PREFIX);
        }
        // One server stack: the layer below and the `/state` view share its handles.
        let server_stack = ServerStack::new(&self.profile.profile, self.name, &self.resilience);
        let state_view = server_stack.clone();
        self.state.register("server", move || state_view.state());
        let registry = Arc::new(self.registry);
        let http_task = bound.http.map(|listener| {
            let app = side_port_router(self.name, registry.clone(), self.state.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.wait().await })
                    .await
            })
        });

        // Health flips to NOT_SERVING before the server stops accepting.
        let stop_accepting = {
            let shutdown = shutdown.clone();
            let names = self.health_names.clone();
            async move {
                shutdown.wait().await;
                for name in names.into_iter().chain([""]) {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
            }
        };
        let server = tonic::transport::Server::builder()
            // Outermost: every arrival is counted before any refusal.
            .layer(ServerMetricsLayer::new(self.server_metrics.clone()))
            // Next: the RPC's span (parent from the incoming `traceparent`) covers every
            // refusal below and the handler, whose downstream calls become its children.
            .layer(ServerTraceLayer::new(self.name))
            .layer(server_stack)
            // Faults act where the service's own code would fail.
            .layer(FaultLayer::new(
                self.faults.clone(),
                self.latency_in_handler,
            ))
            // Innermost: a body that does not decode is the caller's error, named as such
            // (INVALID_ARGUMENT), before the layers above count and classify the answer.
            .layer(crate::errors::MalformedRequestLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(bound.grpc), stop_accepting);
        let drain_bound = async {
            shutdown.wait().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            res = server => res?,
            _ = drain_bound => tracing::warn!(service = self.name, "drain timeout: closing with calls in flight"),
        }
        if let Some(task) = admin_task {
            match task.await {
                Ok(res) => res?,
                Err(e) => tracing::error!(service = self.name, "admin port task failed: {e}"),
            }
        }
        if let Some(task) = http_task {
            match task.await {
                Ok(res) => res?,
                Err(e) => tracing::error!(service = self.name, "HTTP side port task failed: {e}"),
            }
        }
        Ok(())
    }
}

/// The files of [`lab_proto::FILE_DESCRIPTOR_SET`] that define the `services` (fully
/// qualified names), with the files they import: what reflection may describe.
fn described_files(
    services: &[&str],
) -> Result<prost_types::FileDescriptorSet, tonic_reflection::server::Error> {
    use prost::Message;
    let all = prost_types::FileDescriptorSet::decode(lab_proto::FILE_DESCRIPTOR_SET)
        .map_err(tonic_reflection::server::Error::DecodeError)?;
    let defines = |file: &prost_types::FileDescriptorProto, service: &str| {
        file.service
            .iter()
            .any(|s| format!("{}.{}", file.package(), s.name()) == service)
    };
    let mut wanted: Vec<String> = all
        .file
        .iter()
        .filter(|f| services.iter().any(|s| defines(f, s)))
        .map(|f| f.name().to_owned())
        .collect();
    // The closure over imports.
    let mut i = 0;
    while i < wanted.len() {
        if let Some(file) = all.file.iter().find(|f| f.name() == wanted[i]) {
            for dep in &file.dependency {
                if !wanted.contains(dep) {
                    wanted.push(dep.clone());
                }
            }
        }
        i += 1;
    }
    Ok(prost_types::FileDescriptorSet {
        file: all
            .file
            .into_iter()
            .filter(|f| wanted.iter().any(|w| w == f.name()))
            .collect(),
    })
}

fn side_port_router(
    name: &'static str,
    registry: Arc<Registry>,
    state: StateBoard,
) -> axum::Router {
    let started = Instant::now();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        crate::metrics::render(&registry),
                    )
                }
            }),
        )
        .route(
            "/state",
            get(move || {
                let state = state.clone();
                async move {
                    let mut body = serde_json::json!({
                        "service": name,
                        "uptime_s": started.elapsed().as_secs_f64(),
                    });
                    if let (Some(obj), serde_json::Value::Object(parts)) =
                        (body.as_object_mut(), state.snapshot())
                    {
                        obj.extend(parts);
                    }
                    axum::Json(body)
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_delayed_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(
            stream.nodelay().unwrap(),
            "TCP_NODELAY not set on an accepted socket"
        );
    }
}
