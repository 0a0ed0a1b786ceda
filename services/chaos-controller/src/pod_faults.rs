//! Calls to one pod's `lab.v1.Faults` admin API, behind a trait so that tests fake them.

use std::time::Duration;

use futures::future::BoxFuture;
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::lab::v1::{ApplyFaultRequest, ClearFaultRequest, Fault};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::pods::PodTarget;

/// A call to a pod's admin API failed (unreachable, refused, or answered an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PodCallError {
    pub message: String,
}

impl PodCallError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for PodCallError {
    fn from(status: tonic::Status) -> Self {
        Self::new(format!("{:?}: {}", status.code(), status.message()))
    }
}

impl From<tonic::transport::Error> for PodCallError {
    fn from(err: tonic::transport::Error) -> Self {
        // The transport error's own text is just "transport error": the chain of sources
        // says why ("tcp connect error: Connection refused (os error 111)").
        let mut parts = vec![err.to_string()];
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some layers repeat their inner error's text.
            if parts.last() != Some(&text) {
                parts.push(text);
            }
            source = cause.source();
        }
        Self::new(parts.join(": "))
    }
}

/// Applies and clears faults on one pod. `token` goes out as `authorization: Bearer <token>`.
pub trait PodFaults: Send + Sync {
    fn apply<'a>(
        &'a self,
        pod: &'a PodTarget,
        token: Option<&'a str>,
        fault: Fault,
    ) -> BoxFuture<'a, Result<(), PodCallError>>;

    /// Clears the fault named `name` (only that one: other faults on the pod stay).
    fn clear<'a>(
        &'a self,
        pod: &'a PodTarget,
        token: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), PodCallError>>;
}

/// [`PodFaults`] over gRPC: one short-lived connection per call (pods come and go; a
/// reconcile makes a handful of calls).
#[derive(Clone, Debug)]
pub struct GrpcPodFaults {
    /// Bounds the connect: an unreachable pod must not stall the reconcile.
    pub connect_timeout: Duration,
    /// Bounds each call.
    pub call_timeout: Duration,
}

impl Default for GrpcPodFaults {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        }
    }
}

impl GrpcPodFaults {
    async fn client(&self, pod: &PodTarget) -> Result<FaultsClient<Channel>, PodCallError> {
        let channel = Endpoint::from_shared(format!("http://{}", pod.address))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.call_timeout)
            .connect()
            .await?;
        Ok(FaultsClient::new(channel))
    }
}

fn request<T>(message: T, token: Option<&str>) -> Result<tonic::Request<T>, PodCallError> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| PodCallError::new("the admin token is not valid header text"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

impl PodFaults for GrpcPodFaults {
    fn apply<'a>(
        &'a self,
        pod: &'a PodTarget,
        token: Option<&'a str>,
        fault: Fault,
    ) -> BoxFuture<'a, Result<(), PodCallError>> {
        Box::pin(async move {
            let request = request(ApplyFaultRequest { fault: Some(fault) }, token)?;
            self.client(pod).await?.apply(request).await?;
            Ok(())
        })
    }

    fn clear<'a>(
        &'a self,
        pod: &'a PodTarget,
        token: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), PodCallError>> {
        Box::pin(async move {
            let request = request(
                ClearFaultRequest {
                    name: name.to_string(),
                },
                token,
            )?;
            self.client(pod).await?.clear(request).await?;
            Ok(())
        })
    }
}
