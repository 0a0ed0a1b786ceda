//! The gRPC outcome of a call as layers see it: a response whose headers carry
//! `grpc-status` (a trailers-only error), a response without it (OK: the status follows in
//! the trailers), or an error (transport failure or one of our layers' typed errors).

use tonic::Code;

use crate::BoxError;

/// The gRPC code of a unary response or error.
pub fn code_of<B>(result: &Result<http::Response<B>, BoxError>) -> Code {
    match result {
        Ok(response) => response_code(response),
        Err(err) => crate::status::to_status(err.as_ref()).code(),
    }
}

/// The code in a response's headers; OK when there is none.
pub fn response_code<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Ok)
}

/// Whether a code says the *callee* is in trouble (counts against a circuit breaker), as
/// opposed to the caller's own mistake (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION…),
/// which a healthy server answers too.
pub fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
            | Code::Aborted
    )
}

/// The server's retry pushback (`grpc-retry-pushback-ms`), if it sent one.
/// `Some(None)`: the server said not to retry (a negative or malformed value, per gRFC A6).
pub fn pushback<B>(response: &http::Response<B>) -> Option<Option<std::time::Duration>> {
    let value = response.headers().get("grpc-retry-pushback-ms")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|ms| *ms >= 0)
            .map(|ms| std::time::Duration::from_millis(ms as u64)),
    )
}

/// A trailers-only gRPC error response carrying `status`, as a layer answers without
/// calling further (used by tests and by server-side layers that refuse work).
pub fn error_response(status: &tonic::Status) -> crate::GrpcResponse {
    status.clone().into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(name: &'static str, value: &str) -> http::Response<()> {
        http::Response::builder()
            .header(name, value)
            .body(())
            .unwrap()
    }

    #[test]
    fn reads_codes_and_pushback() {
        assert_eq!(
            response_code(&with_header("grpc-status", "14")),
            Code::Unavailable
        );
        assert_eq!(response_code(&http::Response::new(())), Code::Ok);
        assert_eq!(
            pushback(&with_header("grpc-retry-pushback-ms", "250")),
            Some(Some(std::time::Duration::from_millis(250)))
        );
        assert_eq!(
            pushback(&with_header("grpc-retry-pushback-ms", "-1")),
            Some(None)
        );
        assert_eq!(
            pushback(&with_header("grpc-retry-pushback-ms", "soon")),
            Some(None)
        );
        assert_eq!(pushback(&http::Response::new(())), None);
        assert!(is_server_failure(Code::Unavailable));
        assert!(!is_server_failure(Code::InvalidArgument));
        assert!(!is_server_failure(Code::NotFound));
    }
}
