//! The client of a service's admin port (`lab.v1.Faults`), with the bearer token when one
//! is given: `frlab chaos`, the console's fault controls and the experiment apply faults
//! through it.

use anyhow::{Context, Result};
use lab_proto::lab::v1::faults_client::FaultsClient;
use tonic::transport::Channel;

/// A `lab.v1.Faults` client of an admin port.
pub type AdminClient = FaultsClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// A `lab.v1.Faults` client of the admin port at `admin` (`host:port`), sending `token` as
/// a bearer token when given. Connects lazily.
pub fn faults_client(admin: &str, token: Option<&str>) -> Result<AdminClient> {
    let channel = lab_runtime::client::lazy_channel("--stack", &format!("http://{admin}"))?;
    let header = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the admin token is not a valid header value")?;
    Ok(FaultsClient::with_interceptor(channel, Auth(header)))
}

/// Adds `authorization: Bearer TOKEN` when a token is given.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}
