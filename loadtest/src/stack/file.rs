//! The stack file: where every service of a running stack listens. `frlab up` writes it
//! ([`write_stack`], `<data-dir>/stack.json`), the Helm chart mounts one for the console, and
//! `frlab chaos` and `frlab console` read it ([`read_stack`]). Addresses are `host:port`
//! strings so that both socket addresses (`127.0.0.1:50051`, local) and DNS names
//! (`gateway:50051`, in a cluster) are accepted.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::stack::Endpoint;

/// The file `frlab up` writes next to the services' data.
pub const STACK_FILE: &str = "stack.json";

/// One service's addresses, each `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAddrs {
    pub service: String,
    /// gRPC port (business API, health, audit).
    pub grpc: String,
    /// HTTP side port (`/metrics`, `/state`).
    pub http: String,
    /// Admin port (`lab.v1.Faults`); absent when the service has none.
    #[serde(default)]
    pub admin: Option<String>,
}

impl ServiceAddrs {
    /// `http://HOST:PORT` of the gRPC port.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

impl From<&Endpoint> for ServiceAddrs {
    fn from(e: &Endpoint) -> Self {
        Self {
            service: e.service.clone(),
            grpc: e.grpc.to_string(),
            http: e.http.to_string(),
            admin: e.admin.map(|a| a.to_string()),
        }
    }
}

/// Checks that `value` is `host:port` (a name, an IPv4 address or a bracketed IPv6
/// address, then a port 1..=65535); the error names `field` and the value.
pub fn check_host_port(field: &str, value: &str) -> Result<()> {
    let bad = |why: &str| {
        anyhow::anyhow!("{field}: {value:?} is not host:port ({why}), e.g. gateway:50051")
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    if host.contains(char::is_whitespace) || host.contains('/') {
        return Err(bad("the host has a space or a slash"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address must be in brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be 1..=65535")),
    }
}

/// Parses a stack file's text: a JSON array of `{service, grpc, http, admin?}`. Every
/// address is checked; the services must be known and listed once. (`frlab chaos` needs
/// only the services it targets; the console refuses a stack without a gateway itself.)
pub fn parse_stack(text: &str) -> Result<Vec<ServiceAddrs>> {
    let services: Vec<ServiceAddrs> = serde_json::from_str(text)?;
    for (i, s) in services.iter().enumerate() {
        if !lab_chaos::spec::SERVICES.contains(&s.service.as_str()) {
            bail!(
                "[{i}].service: unknown service {:?}; expected one of {}",
                s.service,
                lab_chaos::spec::SERVICES.join(", ")
            );
        }
        if services[..i].iter().any(|o| o.service == s.service) {
            bail!("[{i}].service: {:?} is listed twice", s.service);
        }
        check_host_port(&format!("[{i}].grpc"), &s.grpc)?;
        check_host_port(&format!("[{i}].http"), &s.http)?;
        if let Some(admin) = &s.admin {
            check_host_port(&format!("[{i}].admin"), admin)?;
        }
    }
    Ok(services)
}

/// Reads and checks the stack file a running `frlab up` wrote (see [`parse_stack`]); when
/// there is none, the error says how to get one.
pub fn read_stack(path: &Path) -> Result<Vec<ServiceAddrs>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} — is `frlab up` running? It writes this file on start (pass \
             --stack FILE if its --data-dir is not ./data)",
            path.display()
        )
    })?;
    parse_stack(&text).with_context(|| format!("{} is not a valid stack file", path.display()))
}

/// Writes the stack file of a running stack's endpoints (pretty JSON, what [`read_stack`]
/// reads).
pub fn write_stack(path: &Path, endpoints: &[Endpoint]) -> Result<()> {
    let services: Vec<ServiceAddrs> = endpoints.iter().map(ServiceAddrs::from).collect();
    std::fs::write(path, serde_json::to_string_pretty(&services)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_frlab_up_writes() {
        let endpoints = vec![Endpoint {
            service: "gateway".into(),
            grpc: "127.0.0.1:50051".parse().unwrap(),
            http: "127.0.0.1:9101".parse().unwrap(),
            admin: Some("127.0.0.1:50061".parse().unwrap()),
        }];
        let text = serde_json::to_string_pretty(&endpoints).unwrap();
        let parsed = parse_stack(&text).unwrap();
        assert_eq!(parsed, vec![ServiceAddrs::from(&endpoints[0])]);
        assert_eq!(parsed[0].grpc_url(), "http://127.0.0.1:50051");
    }

    #[test]
    fn write_stack_writes_what_read_stack_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STACK_FILE);
        let endpoints = vec![Endpoint {
            service: "gateway".into(),
            grpc: "127.0.0.1:50051".parse().unwrap(),
            http: "127.0.0.1:9101".parse().unwrap(),
            admin: None,
        }];
        write_stack(&path, &endpoints).unwrap();
        // The same text as the endpoints themselves serialize to: older readers still work.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, serde_json::to_string_pretty(&endpoints).unwrap());
        assert_eq!(
            read_stack(&path).unwrap(),
            vec![ServiceAddrs::from(&endpoints[0])]
        );
        let err = format!(
            "{:#}",
            read_stack(&dir.path().join("none.json")).unwrap_err()
        );
        assert!(err.contains("frlab up"), "{err}");
    }

    #[test]
    fn accepts_cluster_dns_names() {
        let text = r#"[
          {"service":"gateway","grpc":"gateway:50051","http":"gateway:8081","admin":"gateway:50061"},
          {"service":"payments","grpc":"payments.lab.svc.cluster.local:50051","http":"payments:8081"},
          {"service":"orders","grpc":"[::1]:50051","http":"[::1]:8081"}
        ]"#;
        let parsed = parse_stack(text).unwrap();
        assert_eq!(parsed[0].admin.as_deref(), Some("gateway:50061"));
        assert_eq!(parsed[1].admin, None);
    }

    #[test]
    fn bad_entries_name_the_field_and_value() {
        let cases = [
            (
                r#"[{"service":"gateway","grpc":"gateway","http":"g:1"}]"#,
                "[0].grpc",
                "\"gateway\"",
            ),
            (
                r#"[{"service":"gateway","grpc":"g:1","http":"g:99999"}]"#,
                "[0].http",
                "g:99999",
            ),
            (
                r#"[{"service":"gateway","grpc":"g:1","http":"g:2","admin":"::1:5"}]"#,
                "[0].admin",
                "::1:5",
            ),
            (
                r#"[{"service":"billing","grpc":"g:1","http":"g:2"}]"#,
                "[0].service",
                "billing",
            ),
        ];
        for (text, field, value) in cases {
            let err = format!("{:#}", parse_stack(text).unwrap_err());
            assert!(err.contains(field) && err.contains(value), "{text}: {err}");
        }
        let err = format!(
            "{:#}",
            parse_stack(r#"[{"service":"gateway"}]"#).unwrap_err()
        );
        assert!(err.contains("grpc"), "{err}");
        // `frlab chaos` needs only its targets: a stack without a gateway parses.
        assert!(parse_stack(r#"[{"service":"orders","grpc":"o:1","http":"o:2"}]"#).is_ok());
    }
}
