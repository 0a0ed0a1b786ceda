//! Where a run happened and on which code: the machine, the commit, the profile hashes,
//! and the UTC timestamps the record carries.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{Environment, Machine};

impl Environment {
    /// The machine, the commit of the repository at `repo_dir`, and the hash of each
    /// `(profile name, YAML text)`.
    pub fn collect<'a>(
        repo_dir: &Path,
        profiles: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Environment {
        let (commit, dirty) = git_commit(repo_dir);
        Environment {
            machine: Machine::detect(),
            commit,
            dirty,
            profile_hashes: profiles
                .into_iter()
                .map(|(name, yaml)| (name.to_string(), fnv1a64_hex(yaml)))
                .collect(),
        }
    }
}

impl Machine {
    /// Reads /proc/cpuinfo, /proc/meminfo, /etc/os-release and the kernel release; what
    /// cannot be read is `"unknown"` or 0.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or_else(|_| {
                cpuinfo
                    .lines()
                    .filter(|l| l.starts_with("processor"))
                    .count()
            });
        let distro = os_release_name(&read("/etc/os-release"))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let os = if kernel.is_empty() {
            format!("{distro}, {}", std::env::consts::ARCH)
        } else {
            format!("{distro}, kernel {kernel}, {}", std::env::consts::ARCH)
        };
        Machine {
            cores,
            memory_mib: mem_total_mib(&read("/proc/meminfo")).unwrap_or(0),
            os,
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
        }
    }
}

/// The first `model name` of /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// `MemTotal` of /proc/meminfo text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib / 1024)
    })
}

/// `PRETTY_NAME` of /etc/os-release text.
pub fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// `git rev-parse HEAD` in `dir` (or `"unknown"`), and whether tracked files differ from it.
pub fn git_commit(dir: &Path) -> (String, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            (commit, dirty)
        }
        _ => ("unknown".to_string(), None),
    }
}

/// FNV-1a 64-bit hash of `text`, 16 lower-case hex digits. Not cryptographic: it tells
/// whether two profile files were the same, nothing more.
pub fn fnv1a64_hex(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `time` as UTC RFC 3339 with whole seconds: `2026-11-27T18:05:00Z`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_helpers() {
        assert_eq!(fnv1a64_hex(""), "cbf29ce484222325");
        assert_eq!(fnv1a64_hex("a"), "af63dc4c8601ec8c");
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            Some("AMD EPYC 7B13".into())
        );
        assert_eq!(mem_total_mib("MemTotal:        8192000 kB\n"), Some(8000));
        assert_eq!(
            os_release_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        let m = Machine::detect();
        assert!(m.cores >= 1);
        let (commit, _) = git_commit(Path::new("/nonexistent-dir"));
        assert_eq!(commit, "unknown");
    }
}
