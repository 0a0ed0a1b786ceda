//! Where the service binaries are: `--bin-dir`, `$FRLAB_BIN_DIR`, or next to frlab.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Finds a service binary. Looks in `bin_dir` if given, else in `$FRLAB_BIN_DIR` if set,
/// else next to the running executable and in its parent directory (so both
/// `target/debug/frlab` and test binaries in `target/debug/deps/` find `target/debug/orders`).
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf> {
    let env_dir = std::env::var_os("FRLAB_BIN_DIR").filter(|v| !v.is_empty());
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let dirs: Vec<PathBuf> = match (bin_dir, env_dir) {
        (Some(dir), _) => vec![dir.to_path_buf()],
        (None, Some(dir)) => vec![dir.into()],
        (None, None) => match exe_dir {
            Some(dir) => {
                let parent = dir.parent().map(Path::to_path_buf);
                std::iter::once(dir).chain(parent).collect()
            }
            None => Vec::new(),
        },
    };
    search(name, &dirs)
}

fn search(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs {
        let path = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(path);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "service binary `{name}` not found (looked in: {}). Build the services with \
         `cargo build --workspace`, or point --bin-dir / FRLAB_BIN_DIR at them",
        if looked.is_empty() {
            "nowhere".into()
        } else {
            looked.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_binary_error_names_dirs_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_binary("orders", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`orders` not found"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("cargo build --workspace"), "{err}");
    }
    #[test]
    fn find_binary_wants_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payments");
        std::fs::write(&path, "").unwrap();
        assert!(find_binary("payments", Some(dir.path())).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_binary("payments", Some(dir.path())).unwrap(), path);
    }
}
