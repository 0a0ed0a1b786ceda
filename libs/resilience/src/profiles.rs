//! The seven profiles of `helm/profiles/`, embedded so that every binary knows them by name
//! and runs without the repository beside it. A name that is a file on disk wins, so a user's
//! edited copy is used as is.

use std::path::Path;

use crate::config::{Profile, ProfileError};

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../helm/profiles/", $name, ".yaml")))),*]
    };
}

/// (name, YAML text) of every built-in profile, in order a to g.
pub const BUILTIN: [(&str, &str); 7] = builtin!(
    "a-baseline",
    "b-naive-retries",
    "c-backoff-timeouts",
    "d-breakers",
    "e-bulkheads",
    "f-full",
    "g-adaptive",
);

/// The profile a service runs when none is given.
pub const DEFAULT: &str = "f-full";

/// A loaded profile and the name it goes by (the built-in name or the file's stem).
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub profile: Profile,
}

/// `spec` is a file path, or the name of a built-in profile (`d-breakers`; the `.yaml`
/// suffix and a `helm/profiles/` prefix are accepted too).
pub fn resolve(spec: &str) -> Result<Named, ProfileError> {
    let path = Path::new(spec);
    if path.is_file() {
        let profile = Profile::load(path)?;
        let name = path
            .file_stem()
            .map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned());
        return Ok(Named { name, profile });
    }
    let bare = spec
        .trim_start_matches("helm/profiles/")
        .trim_end_matches(".yaml");
    match BUILTIN.iter().find(|(name, _)| *name == bare) {
        Some((name, text)) => Ok(Named {
            name: name.to_string(),
            profile: Profile::parse(text).map_err(|e| relabel(e, name))?,
        }),
        None => Err(ProfileError::Read {
            path: spec.to_string(),
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file, and not a built-in profile (built-in: {})",
                    BUILTIN.map(|(n, _)| n).join(", ")
                ),
            ),
        }),
    }
}

fn relabel(e: ProfileError, name: &str) -> ProfileError {
    match e {
        ProfileError::Parse { message, .. } => ProfileError::Parse {
            path: format!("(built-in) {name}"),
            message,
        },
        ProfileError::Invalid { error, .. } => ProfileError::Invalid {
            path: format!("(built-in) {name}"),
            error,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_validates() {
        for (name, _) in BUILTIN {
            let named = resolve(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(named.name, name);
            assert!(
                !named.profile.description.is_empty(),
                "{name} has a description"
            );
        }
        assert_eq!(
            resolve("helm/profiles/d-breakers.yaml").unwrap().name,
            "d-breakers"
        );
    }

    #[test]
    fn the_profiles_differ_as_the_design_says() {
        let p = |n: &str| resolve(n).unwrap().profile;
        assert_eq!(p("a-baseline").client.retry.max_attempts, 1);
        assert!(!p("a-baseline").outbox && !p("a-baseline").idempotency.enabled);
        assert_eq!(p("b-naive-retries").client.retry.max_attempts, 3);
        // b times attempts out like c, but neither backs off nor propagates the deadline.
        assert_eq!(
            p("b-naive-retries").client_for("payments").timeout,
            p("c-backoff-timeouts").client_for("payments").timeout
        );
        assert!(!p("b-naive-retries").client.deadline.propagate);
        assert!(p("c-backoff-timeouts").client.deadline.propagate);
        assert!(p("c-backoff-timeouts").client.breaker.is_none());
        assert!(p("d-breakers").client_for("payments").breaker.is_some());
        assert_eq!(
            p("e-bulkheads")
                .client_for("payments")
                .bulkhead
                .unwrap()
                .max_concurrent,
            20
        );
        assert_eq!(
            p("e-bulkheads")
                .server_for("gateway")
                .shed
                .unwrap()
                .max_in_flight,
            200
        );
        assert!(p("f-full").outbox && p("f-full").idempotency.enabled);
        assert!(!p("e-bulkheads").outbox);
        let g = p("g-adaptive");
        assert!(g.client.retry.budget.is_some());
        assert!(g.server_for("payments").adaptive.is_some());
        assert!(g.client_for("inventory").hedge.is_some());
    }

    #[test]
    fn unknown_names_list_the_builtins() {
        let err = resolve("z-magic").unwrap_err().to_string();
        assert!(
            err.contains("z-magic") && err.contains("a-baseline"),
            "{err}"
        );
    }
}
