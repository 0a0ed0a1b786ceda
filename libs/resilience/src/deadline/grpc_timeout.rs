//! The `grpc-timeout` header: `TimeoutValue TimeoutUnit`, at most 8 ASCII digits and one of
//! `H` `M` `S` `m` `u` `n` (gRPC over HTTP/2, "Requests").

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

/// The header's name.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value; `None` for anything the spec does not allow (no digits,
/// more than 8, a sign, an unknown unit).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 8 digits at most: no overflow below, even in hours.
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The timeout in `headers`, if there is a valid one.
pub fn header_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Formats a timeout in milliseconds, rounded up and at least `1m` (a callee must never see
/// less time than it has, nor zero for a deadline that has not passed); whole seconds,
/// minutes or hours (rounded up) past the 8 digits `m` allows.
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let ms = timeout.as_nanos().div_ceil(1_000_000).max(1);
    let text = if ms <= MAX {
        format!("{ms}m")
    } else {
        let s = ms.div_ceil(1000);
        if s <= MAX {
            format!("{s}S")
        } else if s.div_ceil(60) <= MAX {
            format!("{}M", s.div_ceil(60))
        } else {
            format!("{}H", s.div_ceil(3600).min(MAX))
        }
    };
    HeaderValue::try_from(text).expect("digits and a unit letter are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_milliseconds() {
        assert_eq!(format_grpc_timeout(Duration::from_millis(200)), "200m");
        assert_eq!(format_grpc_timeout(Duration::from_micros(199_001)), "200m");
        assert_eq!(format_grpc_timeout(Duration::from_nanos(1)), "1m");
        assert_eq!(format_grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(
            format_grpc_timeout(Duration::from_millis(99_999_999)),
            "99999999m"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_millis(100_000_000)),
            "100000S"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(u64::MAX)),
            "99999999H"
        );
    }
}
