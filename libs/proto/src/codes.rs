//! gRPC status codes by their canonical names (`UNAVAILABLE`), the one table every crate
//! reads: profiles and fault specs parse them, metrics label by them, frlab prints them.

use tonic::Code;

/// Every code with its canonical name, in numeric order (`OK` first).
pub const CODE_NAMES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

/// The canonical name of a code, as grpcurl, the specs and Prometheus labels write it.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or("UNKNOWN", |(n, _)| n)
}

/// The code of a canonical name; `None` for anything else (names are case-sensitive).
pub fn code_by_name(name: &str) -> Option<Code> {
    CODE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name_both_ways() {
        for (i, (name, code)) in CODE_NAMES.iter().enumerate() {
            assert_eq!(*code as usize, i, "{name} is in numeric order");
            assert_eq!(code_name(*code), *name);
            assert_eq!(code_by_name(name), Some(*code));
        }
        assert_eq!(code_by_name("unavailable"), None);
        assert_eq!(code_by_name("UNAVAIL"), None);
    }
}
