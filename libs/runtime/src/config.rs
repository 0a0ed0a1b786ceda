//! Flags every service takes. A service's own config flattens [`CommonArgs`] and implements
//! [`ServiceConfig`], which names the service and its default ports.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The environment variable that may hold the admin token.
pub const ADMIN_TOKEN_ENV: &str = "FRLAB_ADMIN_TOKEN";

/// Why the admin token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("--admin-token-file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--admin-token-file {path}: the file is empty")]
    Empty { path: String },
    #[error(
        "the admin token is given twice: --admin-token-file {path} and {ADMIN_TOKEN_ENV}; keep one"
    )]
    Twice { path: String },
}

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
    /// File holding the bearer token the admin port requires (`authorization: Bearer
    /// TOKEN`; surrounding whitespace ignored). The token may instead be in the
    /// FRLAB_ADMIN_TOKEN environment variable — never on the command line, where any user
    /// of the machine can read it. Without a token the admin port refuses every call,
    /// unless --insecure-admin is given.
    #[arg(long, env = "FRLAB_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token from the FRLAB_ADMIN_TOKEN environment variable (no flag: see
    /// --admin-token-file).
    #[arg(skip = std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()))]
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

    /// Who may call the admin port: the token of `--admin-token-file` or FRLAB_ADMIN_TOKEN
    /// (not both), else anyone with `--insecure-admin`, else nobody.
    pub fn admin_auth(&self) -> Result<lab_chaos::AdminAuth, AdminTokenError> {
        let token = match (&self.admin_token_file, &self.admin_token) {
            (Some(path), Some(_)) => {
                return Err(AdminTokenError::Twice {
                    path: path.display().to_string(),
                });
            }
            (Some(path), None) => {
                let shown = || path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
                        path: shown(),
                        source,
                    })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(AdminTokenError::Empty { path: shown() });
                }
                Some(token.to_owned())
            }
            (None, token) => token.clone(),
        };
        Ok(lab_chaos::AdminAuth::from_config(
            token.as_deref(),
            self.insecure_admin,
        ))
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

    /// The idempotency store: Redis when `--redis-url` is set, else in memory. Redis keys
    /// are prefixed with the service's database schema (default: the service name), so
    /// stacks that keep their tables apart (one schema prefix per experiment trial) keep
    /// their keys apart too, and a key never replays an answer from another database.
    pub async fn idempotency_store(
        &self,
        service: &str,
    ) -> Result<lab_store::IdempotencyStore, lab_store::StoreError> {
        let namespace = self.database_schema.as_deref().unwrap_or(service);
        lab_store::IdempotencyStore::connect(self.redis_url.as_deref(), namespace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use lab_chaos::AdminAuth;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<CommonArgs, clap::Error> {
        Args::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).map(|a| a.common)
    }

    #[test]
    fn the_admin_token_comes_from_a_file_or_the_environment_never_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut args = parse(&["--admin-token-file", file.to_str().unwrap()]).unwrap();
        args.admin_token = None;
        assert_eq!(
            args.admin_auth().unwrap(),
            AdminAuth::Token("s3cret".into())
        );

        // From the environment (the field clap fills from FRLAB_ADMIN_TOKEN).
        let env_only = CommonArgs {
            admin_token: Some("from-env".into()),
            ..CommonArgs::default()
        };
        assert_eq!(
            env_only.admin_auth().unwrap(),
            AdminAuth::Token("from-env".into())
        );
        let twice = CommonArgs {
            admin_token: Some("from-env".into()),
            ..args.clone()
        };
        let err = twice.admin_auth().unwrap_err().to_string();
        assert!(
            err.contains("twice") && err.contains("FRLAB_ADMIN_TOKEN"),
            "{err}"
        );

        std::fs::write(&file, " \n").unwrap();
        let err = args.admin_auth().unwrap_err().to_string();
        assert!(
            err.contains("--admin-token-file") && err.contains("empty"),
            "{err}"
        );
        let missing = CommonArgs {
            admin_token_file: Some(dir.path().join("absent")),
            ..CommonArgs::default()
        };
        let err = missing.admin_auth().unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");

        let err = parse(&["--admin-token", "s3cret"]).expect_err("refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let insecure = CommonArgs {
            insecure_admin: true,
            ..CommonArgs::default()
        };
        assert_eq!(insecure.admin_auth().unwrap(), AdminAuth::Insecure);
        assert_eq!(
            CommonArgs::default().admin_auth().unwrap(),
            AdminAuth::Refuse
        );
    }

    /// Stacks that keep their tables apart (a schema prefix per trial) keep their Redis keys
    /// apart too: a key never replays an answer from another database.
    #[tokio::test]
    async fn redis_keys_follow_the_database_schema() {
        let redis = lab_store::testing::redis_test_url();
        let trial = |schema: &str| CommonArgs {
            redis_url: Some(redis.clone()),
            database_schema: Some(schema.to_owned()),
            ..CommonArgs::default()
        };
        let tag = uuid_like();
        let a = trial(&format!("a{tag}_orders"))
            .idempotency_store("orders")
            .await
            .unwrap();
        let b = trial(&format!("b{tag}_orders"))
            .idempotency_store("orders")
            .await
            .unwrap();
        let lease = std::time::Duration::from_secs(5);
        assert_eq!(
            a.claim("k", b"h", lease).await.unwrap(),
            lab_store::Claim::Acquired
        );
        assert_eq!(
            b.claim("k", b"h", lease).await.unwrap(),
            lab_store::Claim::Acquired
        );
    }

    fn uuid_like() -> String {
        format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }
}
