//! `lab.v1.Faults` (Apply, Clear, List): how the CLI and the chaos-controller put faults
//! into a running service.
//!
//! Why a separate, token-protected port: whoever can call Apply can take the service down,
//! so the API is never on the business port a load balancer exposes, and it refuses every
//! call unless the operator chose how it is protected:
//! - [`AdminAuth::Token`]: callers send `authorization: Bearer <token>`; the token is
//!   compared in constant time (no early exit that would leak how much of it matched);
//! - [`AdminAuth::Insecure`]: anyone may call (`--insecure-admin`, for local runs only);
//! - [`AdminAuth::Refuse`]: no token configured and not insecure, the default; every call
//!   is UNAUTHENTICATED with a message saying how to configure one.
//!
//! Apply validates the whole fault before changing anything (INVALID_ARGUMENT naming the
//! field), so a bad fault is never half applied.

use lab_proto::lab::v1::faults_server::{Faults, FaultsServer};
use lab_proto::lab::v1::{
    ActiveFault, ApplyFaultRequest, ApplyFaultResponse, ClearFaultRequest, ClearFaultResponse,
    ListFaultsRequest, ListFaultsResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::faults::FaultSet;
use crate::spec::from_fault;

/// Who may call the admin API.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminAuth {
    /// Callers must send `authorization: Bearer <token>`.
    Token(String),
    /// Anyone may call (local use only).
    Insecure,
    /// Nobody may call: no token was configured.
    Refuse,
}

impl AdminAuth {
    /// From the service's flags: a non-empty token wins; else `insecure` allows all; else
    /// nobody.
    pub fn from_config(token: Option<&str>, insecure: bool) -> Self {
        match (token, insecure) {
            (Some(token), _) if !token.is_empty() => AdminAuth::Token(token.to_string()),
            (_, true) => AdminAuth::Insecure,
            _ => AdminAuth::Refuse,
        }
    }

    /// Ok if the call's metadata satisfies this policy, else UNAUTHENTICATED.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        match self {
            AdminAuth::Insecure => Ok(()),
            AdminAuth::Refuse => Err(Status::unauthenticated(
                "the admin API has no token configured: start the service with \
                 --admin-token-file FILE (or FRLAB_ADMIN_TOKEN), or with --insecure-admin for \
                 local use",
            )),
            AdminAuth::Token(expected) => {
                let Some(value) = metadata.get("authorization") else {
                    return Err(Status::unauthenticated(
                        "missing authorization metadata (authorization: Bearer <token>)",
                    ));
                };
                let given = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                    Ok(())
                } else {
                    Err(Status::unauthenticated("invalid admin token"))
                }
            }
        }
    }
}

impl std::fmt::Debug for AdminAuth {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAuth::Token(_) => f.write_str("Token(<redacted>)"),
            AdminAuth::Insecure => f.write_str("Insecure"),
            AdminAuth::Refuse => f.write_str("Refuse"),
        }
    }
}

/// Compares every byte whatever the differences, so the time taken does not say how many
/// leading bytes matched (only whether the lengths differ).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `lab.v1.Faults` service over one service's [`FaultSet`].
#[derive(Clone, Debug)]
pub struct FaultsAdmin {
    faults: FaultSet,
    auth: AdminAuth,
}

impl FaultsAdmin {
    pub fn new(faults: FaultSet, auth: AdminAuth) -> Self {
        Self { faults, auth }
    }
}

/// The tonic server for [`FaultsAdmin`], for the runtime to serve on the admin port.
pub fn admin_server(admin: FaultsAdmin) -> FaultsServer<FaultsAdmin> {
    FaultsServer::new(admin)
}

#[tonic::async_trait]
impl Faults for FaultsAdmin {
    async fn apply(
        &self,
        request: Request<ApplyFaultRequest>,
    ) -> Result<Response<ApplyFaultResponse>, Status> {
        self.auth.check(request.metadata())?;
        let fault = request
            .into_inner()
            .fault
            .ok_or_else(|| Status::invalid_argument("fault: required"))?;
        let wire = from_fault(&fault).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let start = match wire.start_at_ms {
            None => Instant::now(),
            Some(ms) => self.faults.instant_at(ms),
        };
        let expires = self
            .faults
            .apply(&wire.name, &wire.spec, start, wire.spec.seed)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ApplyFaultResponse {
            expires_at_ms: self.faults.epoch_ms(expires),
        }))
    }

    async fn clear(
        &self,
        request: Request<ClearFaultRequest>,
    ) -> Result<Response<ClearFaultResponse>, Status> {
        self.auth.check(request.metadata())?;
        let name = request.into_inner().name;
        let cleared = self
            .faults
            .clear((!name.is_empty()).then_some(name.as_str()));
        Ok(Response::new(ClearFaultResponse { cleared }))
    }

    async fn list(
        &self,
        request: Request<ListFaultsRequest>,
    ) -> Result<Response<ListFaultsResponse>, Status> {
        self.auth.check(request.metadata())?;
        let faults = self
            .faults
            .list()
            .into_iter()
            .map(|view| {
                let mut fault = view.spec.to_fault(&view.name, None);
                fault.start_at_ms = view.start_at_ms;
                ActiveFault {
                    fault: Some(fault),
                    expires_at_ms: view.expires_at_ms,
                    injected: view.injected,
                }
            })
            .collect();
        Ok(Response::new(ListFaultsResponse { faults }))
    }
}
