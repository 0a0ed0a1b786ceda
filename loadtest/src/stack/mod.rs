//! The local stack: the five service binaries started as child processes on 127.0.0.1.
//!
//! [`LocalStack::start`] launches inventory, payments and notifications, then orders
//! (pointed at those three), then the gateway (pointed at orders). Each service announces
//! its addresses with one `FRLAB_READY {json}` line on stdout; the stack then waits for
//! its gRPC health to report SERVING. Children die with frlab (`PR_SET_PDEATHSIG`), sit in
//! their own process group (a terminal ctrl-c reaches frlab, which stops them in order)
//! and are SIGKILLed when the stack is dropped, so a panicking test leaves no orphans.
//!
//! [`file`] is the stack file: where a running stack's services listen, as `frlab up`
//! writes it and `frlab chaos` / `frlab console` read it.

mod binary;
pub mod cpu;
pub mod file;
mod process;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use binary::find_binary;
pub use process::{ExitedBeforeReady, READY_PREFIX, log_tail, parse_ready_line};
use process::{Launch, exited_early, kill_quietly, sigkill_now, spawn_ready, tail_note, terminate};

/// The services in start order; [`LocalStack::stop`] goes in reverse.
pub const SERVICES: [&str; 5] = [
    "inventory",
    "payments",
    "notifications",
    "orders",
    "gateway",
];

/// gRPC port of the gateway when ports are not ephemeral; the others follow it:
/// orders +1, inventory +2, payments +3, notifications +4.
pub const DEFAULT_GRPC_BASE_PORT: u16 = 50051;
/// HTTP side port (`/metrics`, `/state`) of the gateway; the others follow in the same order.
pub const DEFAULT_HTTP_BASE_PORT: u16 = 9101;

/// The services read these as defaults for their flags (lab-runtime's `CommonArgs`).
/// Children do not inherit them: what [`StackOptions`] says is what runs.
const SERVICE_ENV: &[&str] = &[
    "FRLAB_LISTEN",
    "FRLAB_HTTP_LISTEN",
    "FRLAB_DATA_DIR",
    "FRLAB_DATABASE_URL",
    "FRLAB_DATABASE_SCHEMA",
    "FRLAB_REDIS_URL",
    "FRLAB_PROFILE",
    "FRLAB_ADMIN_LISTEN",
    "FRLAB_ADMIN_TOKEN",
    "FRLAB_ADMIN_TOKEN_FILE",
    "FRLAB_INSECURE_ADMIN",
];

/// How long [`LocalStack::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often [`LocalStack::restart`] tries again when the new process exits before it
/// is ready (typically EADDRINUSE while the old socket is being torn down).
const RESTART_ATTEMPTS: u32 = 5;

/// How to start the stack. [`StackOptions::new`] gives the defaults of `frlab up`.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where the service binaries are; see [`find_binary`] for the fallbacks.
    pub bin_dir: Option<PathBuf>,
    /// `--data-dir` of every service (one SQLite file each); created if missing.
    pub data_dir: PathBuf,
    /// Postgres URL; overrides SQLite.
    pub database_url: Option<String>,
    /// Postgres schema of each service is this prefix + the service name; when unset the
    /// services use their own default (the service name).
    pub schema_prefix: Option<String>,
    /// Redis URL for idempotency keys; in memory when unset.
    pub redis_url: Option<String>,
    /// Resilience profile (built-in name or YAML file), passed to every service.
    pub profile: Option<String>,
    /// Bind every port (gRPC and HTTP) to port 0 and use what the services report.
    pub ephemeral_ports: bool,
    /// Gateway gRPC port when not ephemeral; the others follow (see [`DEFAULT_GRPC_BASE_PORT`]).
    pub grpc_base_port: u16,
    /// Gateway HTTP side port when not ephemeral; the others follow.
    pub http_base_port: u16,
    /// Extra flags per service name, appended last (e.g. test-only tuning).
    pub extra_args: HashMap<String, Vec<String>>,
    /// How long each service may take to print its ready line and report SERVING.
    pub ready_timeout: Duration,
    /// Each service's stderr goes to `<dir>/<service>.log`; inherited when unset.
    pub log_dir: Option<PathBuf>,
    /// Environment variables set for every service (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// the services also inherit frlab's own environment, less [`SERVICE_ENV`]).
    pub env: Vec<(String, String)>,
}

impl StackOptions {
    /// Default ports, SQLite under `data_dir`, in-memory idempotency, 30 s ready timeout.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: None,
            data_dir: data_dir.into(),
            database_url: None,
            schema_prefix: None,
            redis_url: None,
            profile: None,
            ephemeral_ports: false,
            grpc_base_port: DEFAULT_GRPC_BASE_PORT,
            http_base_port: DEFAULT_HTTP_BASE_PORT,
            extra_args: HashMap::new(),
            ready_timeout: Duration::from_secs(30),
            log_dir: None,
            env: Vec::new(),
        }
    }

    fn ports(&self, service: &str) -> Result<(u16, u16)> {
        if self.ephemeral_ports {
            return Ok((0, 0));
        }
        let offset = match service {
            "gateway" => 0,
            "orders" => 1,
            "inventory" => 2,
            "payments" => 3,
            _ => 4,
        };
        let port = |base: u16| {
            base.checked_add(offset)
                .ok_or_else(|| anyhow!("base port {base} + {offset} for {service} exceeds 65535"))
        };
        Ok((port(self.grpc_base_port)?, port(self.http_base_port)?))
    }
}

/// Where one running service listens, as it announced in its ready line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub service: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The admin port (lab.v1.Faults).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

impl Endpoint {
    /// `http://ADDR`, what tonic clients and the services' `--*-url` flags take.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The Prometheus endpoint on the HTTP side port.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.http)
    }
}

/// How one service ended in [`LocalStack::stop_each`].
#[derive(Debug)]
pub struct StopOutcome {
    pub service: String,
    /// `None` when it was not running any more (killed earlier) or could not be waited for.
    pub status: Option<ExitStatus>,
    /// It ignored SIGTERM for the grace period and was SIGKILLed.
    pub sigkilled: bool,
    pub took: Duration,
    pub error: Option<String>,
}

impl StopOutcome {
    /// Exited 0 after SIGTERM, or was not running.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && !self.sigkilled && self.status.is_none_or(|s| s.success())
    }
}

impl std::fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let took = self.took.as_millis();
        match (&self.error, self.status) {
            (Some(e), _) => write!(f, "{}: failed to stop: {e}", self.service),
            (None, None) => write!(f, "{}: was not running", self.service),
            (None, Some(s)) if self.sigkilled => write!(
                f,
                "{}: ignored SIGTERM for {}s, SIGKILLed ({s})",
                self.service,
                STOP_GRACE.as_secs()
            ),
            (None, Some(s)) => write!(f, "{}: {s} after SIGTERM in {took} ms", self.service),
        }
    }
}

/// A service that exited while the stack was up; see [`LocalStack::exited`].
#[derive(Debug)]
pub struct Exited {
    pub service: String,
    pub status: String,
    /// The end of its log (or a note saying where its stderr went).
    pub log_tail: String,
}

struct Member {
    launch: Launch,
    child: Option<Child>,
}

/// The five services running as child processes. Stop it with [`LocalStack::stop`];
/// dropping it SIGKILLs whatever still runs.
pub struct LocalStack {
    opts: StackOptions,
    endpoints: Vec<Endpoint>,
    members: Vec<Member>,
}

impl LocalStack {
    /// Starts the services in [`SERVICES`] order, each once the previous one is serving.
    /// Spawns from the calling thread, which must outlive the stack (see the module docs).
    pub async fn start(opts: StackOptions) -> Result<LocalStack> {
        // Resolve every binary first: a missing one should fail before anything starts.
        let programs = SERVICES
            .iter()
            .map(|s| find_binary(s, opts.bin_dir.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
        if let Some(dir) = &opts.log_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
        }
        let mut stack = LocalStack {
            opts,
            endpoints: Vec::new(),
            members: Vec::new(),
        };
        for (service, program) in SERVICES.into_iter().zip(programs) {
            let (grpc, http) = stack.opts.ports(service)?;
            let launch = Launch {
                service: service.to_string(),
                program,
                args: stack.args(service)?,
                log: stack
                    .opts
                    .log_dir
                    .as_ref()
                    .map(|d| d.join(format!("{service}.log"))),
                env_remove: SERVICE_ENV,
                env: stack.opts.env.clone(),
            };
            let listen = with_listen(&launch, grpc, http, 0);
            let timeout = stack.opts.ready_timeout;
            // On an error the child is dropped, which kills it; the stack's Drop kills the
            // services started before.
            let (mut child, endpoint) = spawn_ready(&listen, timeout, false).await?;
            wait_serving(&mut child, &listen, &endpoint, timeout).await?;
            stack.members.push(Member {
                launch,
                child: Some(child),
            });
            tracing::info!(service, grpc = %endpoint.grpc, http = %endpoint.http, "service ready");
            stack.endpoints.push(endpoint);
        }
        Ok(stack)
    }

    /// Every service's addresses, in start order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn endpoint(&self, service: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.service == service)
    }

    /// `http://127.0.0.1:PORT` of the gateway.
    pub fn gateway_url(&self) -> String {
        self.endpoint("gateway")
            .map(Endpoint::grpc_url)
            .unwrap_or_default()
    }

    /// The pid of a running service; `None` once it was killed or exited.
    pub fn pid(&self, service: &str) -> Option<u32> {
        let i = self.index(service).ok()?;
        self.members[i].child.as_ref()?.id()
    }

    /// Where a service's stderr goes, when the stack has a log dir.
    pub fn log_path(&self, service: &str) -> Option<&Path> {
        let i = self.index(service).ok()?;
        self.members[i].launch.log.as_deref()
    }

    /// SIGKILLs a service (a crash, as the fault scenarios want it) and reaps it.
    pub async fn kill(&mut self, service: &str) -> Result<()> {
        let i = self.index(service)?;
        let mut child = self.members[i]
            .child
            .take()
            .ok_or_else(|| anyhow!("{service} is not running"))?;
        kill_quietly(&mut child).await;
        tracing::info!(service, "killed");
        Ok(())
    }

    /// Starts a service again on the same ports with the same flags and waits until it is
    /// serving. A service still running is stopped first (SIGTERM).
    pub async fn restart(&mut self, service: &str) -> Result<()> {
        let i = self.index(service)?;
        if let Some(mut child) = self.members[i].child.take() {
            terminate(&mut child, STOP_GRACE).await?;
        }
        let old = self.endpoints[i].clone();
        let admin = old.admin.map_or(0, |a| a.port());
        let launch = with_listen(
            &self.members[i].launch,
            old.grpc.port(),
            old.http.port(),
            admin,
        );
        let mut attempt = 1;
        let (mut child, endpoint) = loop {
            match spawn_ready(&launch, self.opts.ready_timeout, true).await {
                Ok(started) => break started,
                Err(e) if attempt < RESTART_ATTEMPTS && e.is::<ExitedBeforeReady>() => {
                    tracing::debug!(service, attempt, "restart failed, retrying: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!("restarting {service} on {}", old.grpc)));
                }
            }
        };
        if endpoint != old {
            bail!("{service} came back on {endpoint:?}, expected {old:?}");
        }
        wait_serving(&mut child, &launch, &endpoint, self.opts.ready_timeout).await?;
        self.members[i].child = Some(child);
        tracing::info!(service, attempt, "restarted");
        Ok(())
    }

    /// Waits until some running service exits on its own and reports which, how, and the
    /// end of its log. Never resolves while all of them keep running (or none is).
    /// Cancel-safe: use it in `select!` next to a shutdown signal.
    pub async fn exited(&mut self) -> Exited {
        let waits: Vec<_> = self
            .members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| {
                let child = m.child.as_mut()?;
                Some(Box::pin(async move { (i, child.wait().await) }))
            })
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        let ((i, status), _, _) = futures::future::select_all(waits).await;
        let member = &mut self.members[i];
        member.child = None;
        Exited {
            service: member.launch.service.clone(),
            status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            log_tail: tail_note(member.launch.log.as_deref()),
        }
    }

    /// Stops every service in reverse start order (gateway first): SIGTERM, up to 10 s to
    /// drain and exit, then SIGKILL. Fails, after stopping them all, if any did not exit 0.
    pub async fn stop(self) -> Result<()> {
        let unclean: Vec<String> = self
            .stop_each()
            .await
            .into_iter()
            .filter(|o| !o.is_clean())
            .map(|o| o.to_string())
            .collect();
        if !unclean.is_empty() {
            bail!("not every service stopped cleanly: {}", unclean.join("; "));
        }
        Ok(())
    }

    /// [`LocalStack::stop`], reporting how each service ended instead of judging it.
    pub async fn stop_each(mut self) -> Vec<StopOutcome> {
        let mut outcomes = Vec::new();
        for member in self.members.iter_mut().rev() {
            let started = Instant::now();
            let mut outcome = StopOutcome {
                service: member.launch.service.clone(),
                status: None,
                sigkilled: false,
                took: Duration::ZERO,
                error: None,
            };
            if let Some(mut child) = member.child.take() {
                match terminate(&mut child, STOP_GRACE).await {
                    Ok((status, sigkilled)) => {
                        outcome.status = Some(status);
                        outcome.sigkilled = sigkilled;
                    }
                    Err(e) => {
                        kill_quietly(&mut child).await;
                        outcome.error = Some(format!("{e:#}"));
                    }
                }
            }
            outcome.took = started.elapsed();
            outcomes.push(outcome);
        }
        outcomes
    }

    fn index(&self, service: &str) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.launch.service == service)
            .ok_or_else(|| anyhow!("no service `{service}` in the stack"))
    }

    /// Every flag of a service except the listen addresses.
    fn args(&self, service: &str) -> Result<Vec<OsString>> {
        let o = &self.opts;
        // Local stacks are for one user on 127.0.0.1: the admin port takes no token.
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            o.data_dir.clone().into(),
            "--insecure-admin".into(),
        ];
        if let Some(url) = &o.database_url {
            args.extend(["--database-url".into(), url.into()]);
            if let Some(prefix) = &o.schema_prefix {
                args.extend([
                    "--database-schema".into(),
                    format!("{prefix}{service}").into(),
                ]);
            }
        }
        if let Some(url) = &o.redis_url {
            args.extend(["--redis-url".into(), url.into()]);
        }
        if let Some(profile) = &o.profile {
            args.extend(["--profile".into(), profile.clone().into()]);
        }
        let deps: &[&str] = match service {
            "orders" => &["inventory", "payments", "notifications"],
            "gateway" => &["orders"],
            _ => &[],
        };
        for dep in deps {
            let url = self
                .endpoint(dep)
                .with_context(|| format!("{service} needs {dep}, which is not running"))?
                .grpc_url();
            args.extend([format!("--{dep}-url").into(), url.into()]);
        }
        for extra in o.extra_args.get(service).into_iter().flatten() {
            args.push(extra.into());
        }
        Ok(args)
    }
}

impl Drop for LocalStack {
    /// Best effort: SIGKILL whatever still runs, with its process group (tokio reaps it in
    /// the background).
    fn drop(&mut self) {
        for child in self.members.iter_mut().filter_map(|m| m.child.as_mut()) {
            sigkill_now(child);
        }
    }
}

/// `admin` 0: any free port when `grpc` is 0 too, else the service's default (gRPC + 10).
fn with_listen(launch: &Launch, grpc: u16, http: u16, admin: u16) -> Launch {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        format!("127.0.0.1:{grpc}").into(),
        "--http-listen".into(),
        format!("127.0.0.1:{http}").into(),
    ];
    if admin != 0 {
        args.extend(["--admin-listen".into(), format!("127.0.0.1:{admin}").into()]);
    }
    args.extend(launch.args.iter().cloned());
    Launch {
        args,
        ..launch.clone()
    }
}

/// Waits for gRPC health to report SERVING, failing early if the process exits meanwhile.
async fn wait_serving(
    child: &mut Child,
    launch: &Launch,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<()> {
    tokio::select! {
        serving = health_serving(endpoint, timeout) => serving,
        status = child.wait() => Err(exited_early(
            launch,
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
        )),
    }
}

/// Polls grpc.health.v1 (overall status, service "") until SERVING. A server without the
/// health service (UNIMPLEMENTED, NOT_FOUND) counts as ready: its ready line has to do.
async fn health_serving(endpoint: &Endpoint, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.grpc_url())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    loop {
        let last = match client.check(HealthCheckRequest::default()).await {
            Ok(r) if r.get_ref().status() == ServingStatus::Serving => return Ok(()),
            Ok(r) => format!("status {:?}", r.get_ref().status()),
            Err(s) if matches!(s.code(), tonic::Code::Unimplemented | tonic::Code::NotFound) => {
                return Ok(());
            }
            Err(s) => s.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} announced {} but its gRPC health did not report SERVING within {timeout:?} \
                 (last answer: {last})",
                endpoint.service,
                endpoint.grpc
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_contract() {
        let opts = StackOptions::new("data");
        let ports: Vec<_> = SERVICES.iter().map(|s| opts.ports(s).unwrap()).collect();
        assert_eq!(
            ports,
            [
                (50053, 9103),
                (50054, 9104),
                (50055, 9105),
                (50052, 9102),
                (50051, 9101)
            ]
        );
        let eph = StackOptions {
            ephemeral_ports: true,
            ..opts
        };
        assert_eq!(eph.ports("orders").unwrap(), (0, 0));
    }

    #[test]
    fn args_carry_storage_profile_and_schema() {
        let mut opts = StackOptions::new("/d");
        opts.database_url = Some("postgres://x".into());
        opts.schema_prefix = Some("run1_".into());
        opts.profile = Some("p.yaml".into());
        opts.extra_args
            .insert("payments".into(), vec!["--slots".into(), "2".into()]);
        let stack = LocalStack {
            opts,
            endpoints: vec![],
            members: vec![],
        };
        let args = stack.args("payments").unwrap();
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--data-dir",
                "/d",
                "--insecure-admin",
                "--database-url",
                "postgres://x",
                "--database-schema",
                "run1_payments",
                "--profile",
                "p.yaml",
                "--slots",
                "2"
            ]
        );
        let err = stack.args("orders").unwrap_err().to_string();
        assert!(err.contains("orders needs inventory"), "{err}");
    }
}
