//! Flags every service takes. A service's own config flattens [`CommonArgs`] and implements
//! [`ServiceConfig`], which names the service and its default ports.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags shared by all five services. Each can also be set by environment variable.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CommonArgs {
    /// gRPC address to listen on (port 0: any free port). Default: 127.0.0.1 and the
    /// service's own port.
    #[arg(long, env = "FRLAB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the HTTP side port serving /metrics and /state.
    #[arg(long, env = "FRLAB_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Directory for the embedded SQLite database (one file per service).
    #[arg(long, env = "FRLAB_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://…`). Default: SQLite under --data-dir.
    #[arg(long, env = "FRLAB_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Postgres schema holding this service's tables. Default: the service name.
    #[arg(long, env = "FRLAB_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Redis URL for idempotency keys (`redis://…`). Default: in memory.
    #[arg(long, env = "FRLAB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Address of the admin port serving lab.v1.Faults. Default: the gRPC address with its
    /// port + 10 (any free port when the gRPC port is 0).
    #[arg(long, env = "FRLAB_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin port requires (`authorization: Bearer TOKEN`). Without one
    /// the admin port refuses every call, unless --insecure-admin is given.
    #[arg(long, env = "FRLAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Accept admin calls without a token (local use only; `frlab up` passes it).
    #[arg(long, env = "FRLAB_INSECURE_ADMIN")]
    pub insecure_admin: bool,
    /// Resilience profile: a built-in name (a-baseline … g-adaptive) or a helm values YAML
    /// file with a `resilience:` key. Default: f-full.
    #[arg(long, env = "FRLAB_PROFILE", value_name = "NAME|FILE")]
    pub profile: Option<String>,
}

/// Implemented by each service's config so [`crate::launch`] can run it.
pub trait ServiceConfig: clap::Parser + Send + 'static {
    /// Short name: `gateway`, `orders`, `payments`, `inventory`, `notifications`.
    const NAME: &'static str;
    /// Default gRPC port on 127.0.0.1.
    const GRPC_PORT: u16;
    /// Default HTTP side port on 127.0.0.1.
    const HTTP_PORT: u16;
    fn common(&self) -> &CommonArgs;
}

impl CommonArgs {
    pub fn grpc_addr(&self, default_port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
    }

    pub fn admin_addr(&self, default_grpc_port: u16) -> SocketAddr {
        self.admin_listen.unwrap_or_else(|| {
            let mut addr = self.grpc_addr(default_grpc_port);
            if addr.port() != 0 {
                addr.set_port(addr.port().saturating_add(10));
            }
            addr
        })
    }

    /// Who may call the admin port.
    pub fn admin_auth(&self) -> lab_chaos::AdminAuth {
        match (&self.admin_token, self.insecure_admin) {
            (Some(token), _) if !token.is_empty() => lab_chaos::AdminAuth::Token(token.clone()),
            (_, true) => lab_chaos::AdminAuth::Insecure,
            _ => lab_chaos::AdminAuth::Refuse,
        }
    }

    pub fn http_addr(&self, default_port: u16) -> SocketAddr {
        self.http_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
    }
}

impl CommonArgs {
    /// The database this service uses: `--database-url`, or SQLite under `--data-dir`.
    /// On Postgres, the service's tables live in schema `--database-schema` (default: the
    /// service name), so all services can share one database.
    pub fn db_config(&self, service: &str) -> lab_store::DbConfig {
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| lab_store::sqlite_url_for(&self.data_dir, service));
        lab_store::DbConfig {
            url,
            schema: Some(
                self.database_schema
                    .clone()
                    .unwrap_or_else(|| service.to_string()),
            ),
            max_connections: 16,
        }
    }

    /// The resilience profile this service runs (`--profile`, default f-full).
    pub fn profile(
        &self,
    ) -> Result<lab_resilience::profiles::Named, lab_resilience::config::ProfileError> {
        lab_resilience::profiles::resolve(
            self.profile
                .as_deref()
                .unwrap_or(lab_resilience::profiles::DEFAULT),
        )
    }

    /// The idempotency store: Redis when `--redis-url` is set, else in memory.
    pub async fn idempotency_store(
        &self,
        namespace: &str,
    ) -> Result<lab_store::IdempotencyStore, lab_store::StoreError> {
        lab_store::IdempotencyStore::connect(self.redis_url.as_deref(), namespace).await
    }
}
