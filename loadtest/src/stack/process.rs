//! One service process: spawn it so that it cannot outlive frlab, wait for its
//! `FRLAB_READY` line, signal it, and read the tail of its log.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

use super::Endpoint;

pub use lab_runtime::READY_PREFIX;

/// How many log lines an error message quotes.
const TAIL_LINES: usize = 20;

/// Parses one stdout line of a service: `None` when it is not a ready line, an error
/// when it is one but its JSON is not `{"service", "grpc", "http"}` with socket addresses.
pub fn parse_ready_line(line: &str) -> Option<Result<Endpoint>> {
    let json = line.trim_end().strip_prefix(READY_PREFIX)?;
    Some(serde_json::from_str(json).with_context(|| format!("malformed ready line `{line}`")))
}

/// The process exited (or closed its stdout) before printing its ready line: a bind
/// that failed with EADDRINUSE looks like this, so restarts retry on it.
#[derive(Debug)]
pub struct ExitedBeforeReady {
    pub service: String,
    pub status: String,
    pub tail: String,
}

impl std::fmt::Display for ExitedBeforeReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            service,
            status,
            tail,
        } = self;
        write!(f, "{service} exited before it was ready ({status})\n{tail}")
    }
}

impl std::error::Error for ExitedBeforeReady {}

/// What to run for one service, and where its stderr goes.
#[derive(Debug, Clone)]
pub struct Launch {
    pub service: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// stderr (and any stray stdout) goes here, else to frlab's own stderr.
    pub log: Option<PathBuf>,
    /// Variables not to pass on: the flags say it all, the environment must not add to it.
    pub env_remove: &'static [&'static str],
    /// Variables set for this child only (after `env_remove`).
    pub env: Vec<(String, String)>,
}

/// Spawns `launch` and waits up to `timeout` for its ready line. Fails early, quoting the
/// log tail, when the process exits first; kills it on timeout. `append_log` keeps an
/// earlier run's log (restarts) instead of truncating it.
pub async fn spawn_ready(
    launch: &Launch,
    timeout: Duration,
    append_log: bool,
) -> Result<(Child, Endpoint)> {
    let name = &launch.service;
    let mut cmd = Command::new(&launch.program);
    for var in launch.env_remove {
        cmd.env_remove(var);
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    cmd.args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Own process group: a terminal ctrl-c reaches frlab only, which then stops the
        // services in order instead of all of them dying at once.
        .process_group(0)
        // Every early return below drops the child: make that a SIGKILL.
        .kill_on_drop(true);
    match &launch.log {
        Some(path) => {
            let mut log = open_log(path, append_log)?;
            if append_log {
                writeln!(log, "--- frlab: restarting {name} ---")?;
            }
            cmd.stderr(log).env("NO_COLOR", "1");
        }
        None => {
            cmd.stderr(Stdio::inherit());
        }
    }
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {name} ({})", launch.program.display()))?;
    let stdout = child.stdout.take().context("child stdout was not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            biased;
            line = lines.next_line() => match line.with_context(|| format!("reading {name} stdout"))? {
                Some(line) => match parse_ready_line(&line) {
                    Some(endpoint) => {
                        let endpoint = endpoint.with_context(|| format!("{name} announced itself"))?;
                        if endpoint.service != *name {
                            let program = launch.program.display();
                            bail!("{program} announced itself as `{}`, expected `{name}`",
                                endpoint.service);
                        }
                        tokio::spawn(forward_stdout(lines, launch.log.clone(), name.clone()));
                        return Ok((child, endpoint));
                    }
                    None => forward_line(launch.log.as_deref(), name, &line),
                },
                // stdout closed: the process is exiting (or has closed it on purpose).
                None => {
                    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                        Ok(Ok(status)) => status.to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "closed its stdout and kept running; killed it".into(),
                    };
                    kill_quietly(&mut child).await;
                    return Err(exited_early(launch, status));
                }
            },
            status = child.wait() => {
                let status = status.with_context(|| format!("waiting for {name}"))?;
                return Err(exited_early(launch, status.to_string()));
            }
            () = tokio::time::sleep_until(deadline) => {
                kill_quietly(&mut child).await;
                bail!("{name} did not print its ready line within {timeout:?}; killed it\n{}",
                    tail_note(launch.log.as_deref()));
            }
        }
    }
}

/// An [`ExitedBeforeReady`] for `launch`, quoting its log tail.
pub fn exited_early(launch: &Launch, status: String) -> anyhow::Error {
    ExitedBeforeReady {
        service: launch.service.clone(),
        status,
        tail: tail_note(launch.log.as_deref()),
    }
    .into()
}

/// Opens the log in append mode in every case: frlab's own lines (stray stdout, restart
/// markers) and the child's stderr then never overwrite each other.
fn open_log(path: &Path, append: bool) -> Result<File> {
    let context = || format!("opening log file {}", path.display());
    if !append {
        File::create(path).with_context(context)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(context)
}

/// Keeps draining a service's stdout after its ready line so it never blocks on a full pipe.
async fn forward_stdout(
    mut lines: Lines<BufReader<ChildStdout>>,
    log: Option<PathBuf>,
    name: String,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        forward_line(log.as_deref(), &name, &line);
    }
}

fn forward_line(log: Option<&Path>, name: &str, line: &str) {
    let written = log.map(|path| {
        OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
    });
    if !matches!(written, Some(Ok(()))) {
        eprintln!("[{name}] {line}");
    }
}

/// The last `n` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, n: usize) -> Result<Vec<String>> {
    const MAX: u64 = 64 * 1024;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..].iter().map(|l| l.to_string()).collect())
}

/// A paragraph for error messages: the tail of the log, or where the output went.
pub fn tail_note(log: Option<&Path>) -> String {
    let Some(path) = log else {
        return "(its stderr went to frlab's stderr, above)".into();
    };
    match log_tail(path, TAIL_LINES) {
        Ok(lines) if lines.is_empty() => format!("(log {} is empty)", path.display()),
        Ok(lines) => format!(
            "last lines of {}:\n    {}",
            path.display(),
            lines.join("\n    ")
        ),
        Err(e) => format!("(could not read log: {e:#})"),
    }
}

/// SIGTERM, then up to `grace` for the process to exit, then SIGKILL.
/// Returns the exit status and whether it had to be killed.
pub async fn terminate(child: &mut Child, grace: Duration) -> Result<(ExitStatus, bool)> {
    signal_group(child, libc::SIGTERM)?;
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return Ok((status?, false));
    }
    signal_group(child, libc::SIGKILL)?;
    Ok((child.wait().await?, true))
}

/// SIGKILL and reap, ignoring errors (the process may be gone already).
pub async fn kill_quietly(child: &mut Child) {
    sigkill_now(child);
    let _ = child.wait().await;
}

/// SIGKILL without waiting (for `Drop`; tokio reaps the process in the background).
pub fn sigkill_now(child: &mut Child) {
    if signal_group(child, libc::SIGKILL).is_err() {
        let _ = child.start_kill();
    }
}

/// Signals the child's process group (its own, see `process_group(0)`), so whatever it
/// started goes too. Only while the child is unreaped: then its pid, which is also the
/// group id, cannot have been recycled. Nothing to do for a child already reaped.
fn signal_group(child: &mut Child, signal: libc::c_int) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    match child.id() {
        Some(pid) => kill_group(pid, signal),
        None => Ok(()),
    }
}

#[allow(unsafe_code)]
fn kill_group(pgid: u32, signal: libc::c_int) -> Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| anyhow!("pid {pgid} out of range"))?;
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions. The
    // group is our unreaped child's own (checked by the caller), so it names no stranger.
    if unsafe { libc::kill(-pgid, signal) } == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).context(format!("sending signal {signal} to process group {pgid}"));
        }
    }
    Ok(())
}

/// Asks the kernel to send SIGTERM to the child when frlab dies, however it dies, so a
/// killed frlab leaves no orphans. The kernel ties this to the *thread* that forked:
/// callers spawn from a thread that lives as long as the stack (never `spawn_blocking`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl, getppid and reading errno are; it
    // allocates nothing (from_raw_os_error and last_os_error do not allocate).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // frlab died between fork and prctl: the signal will never come, so give up.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let line =
            r#"FRLAB_READY {"service":"orders","grpc":"127.0.0.1:50052","http":"127.0.0.1:9102"}"#;
        let ep = parse_ready_line(line).unwrap().unwrap();
        assert_eq!(ep.service, "orders");
        assert_eq!(ep.grpc, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(ep.http, "127.0.0.1:9102".parse().unwrap());
    }

    #[test]
    fn other_lines_are_not_ready_lines() {
        assert!(parse_ready_line("listening on 127.0.0.1:1").is_none());
        assert!(parse_ready_line("FRLAB_READY").is_none());
    }

    #[test]
    fn malformed_ready_line_is_an_error_quoting_it() {
        let err =
            parse_ready_line(r#"FRLAB_READY {"service":"x","grpc":"nope","http":"1.2.3.4:5"}"#)
                .unwrap()
                .unwrap_err();
        assert!(
            format!("{err:#}").contains("malformed ready line"),
            "{err:#}"
        );
        assert!(parse_ready_line("FRLAB_READY {").unwrap().is_err());
    }

    #[test]
    fn log_tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2).unwrap(), ["c", "d"]);
        assert_eq!(log_tail(&path, 10).unwrap().len(), 4);
    }

    fn script(dir: &Path, name: &str, body: &str) -> Launch {
        // Run through sh rather than exec'ing a file just written: a fork on another
        // test thread could still hold it open for writing (ETXTBSY).
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, body).unwrap();
        Launch {
            service: name.into(),
            program: "/bin/sh".into(),
            args: vec![path.into()],
            env_remove: &[],
            env: Vec::new(),
            log: Some(dir.join(format!("{name}.log"))),
        }
    }

    #[tokio::test]
    async fn ready_then_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let launch = script(
            dir.path(),
            "inventory",
            r#"trap 'echo bye >&2; exit 0' TERM
echo starting >&2
echo 'FRLAB_READY {"service":"inventory","grpc":"127.0.0.1:1","http":"127.0.0.1:2"}'
while true; do sleep 0.05; done"#,
        );
        let (mut child, ep) = spawn_ready(&launch, Duration::from_secs(5), false)
            .await
            .unwrap();
        assert_eq!(ep.grpc.port(), 1);
        let (status, killed) = terminate(&mut child, Duration::from_secs(5)).await.unwrap();
        assert!(status.success() && !killed, "{status} killed={killed}");
        let log = std::fs::read_to_string(dir.path().join("inventory.log")).unwrap();
        assert!(log.contains("starting") && log.contains("bye"), "{log}");
    }

    #[tokio::test]
    async fn early_exit_reports_status_and_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let launch = script(
            dir.path(),
            "payments",
            "echo 'bind: address in use' >&2; exit 3",
        );
        let err = spawn_ready(&launch, Duration::from_secs(5), false)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(err.is::<ExitedBeforeReady>(), "{msg}");
        assert!(msg.contains("payments exited before it was ready"), "{msg}");
        assert!(
            msg.contains("exit status: 3") && msg.contains("address in use"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_and_names_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let launch = script(dir.path(), "orders", "echo 'migrating' >&2; exec sleep 30");
        let started = std::time::Instant::now();
        let err = spawn_ready(&launch, Duration::from_millis(300), false)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("orders did not print its ready line"), "{msg}");
        assert!(msg.contains("migrating"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn wrong_service_name_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let launch = script(
            dir.path(),
            "gateway",
            r#"echo 'FRLAB_READY {"service":"orders","grpc":"127.0.0.1:1","http":"127.0.0.1:2"}'; exec sleep 30"#,
        );
        let err = spawn_ready(&launch, Duration::from_secs(5), false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("expected `gateway`"), "{err:#}");
    }

    #[tokio::test]
    async fn sigterm_ignored_means_sigkill_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let launch = script(
            dir.path(),
            "notifications",
            r#"trap '' TERM
echo 'FRLAB_READY {"service":"notifications","grpc":"127.0.0.1:1","http":"127.0.0.1:2"}'
while true; do sleep 0.05; done"#,
        );
        let (mut child, _) = spawn_ready(&launch, Duration::from_secs(5), false)
            .await
            .unwrap();
        let (status, killed) = terminate(&mut child, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(killed && !status.success(), "{status}");
    }
}
