//! Mapping of internal failures to deliberate gRPC codes, in one place.

use tonic::Status;

/// A database error as the caller sees it: pool exhaustion or a lost connection is
/// UNAVAILABLE (retryable), anything else INTERNAL. The detail goes to the log.
pub fn db(err: sqlx::Error) -> Status {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!("database unavailable: {err}");
            Status::unavailable(format!("database unavailable: {err}"))
        }
        other => {
            tracing::error!("database error: {other}");
            Status::internal(format!("database error: {other}"))
        }
    }
}

/// An idempotency-store error: the store being unreachable is UNAVAILABLE.
pub fn idempotency(err: lab_store::StoreError) -> Status {
    tracing::warn!("idempotency store: {err}");
    Status::unavailable(format!("idempotency store: {err}"))
}

/// A downstream's error as our caller sees it: the code is kept (so a retryable failure
/// stays retryable upstream) and the message says which hop failed.
pub fn downstream(hop: &str, status: &Status) -> Status {
    Status::new(status.code(), format!("{hop}: {}", status.message()))
}
