//! What every pattern's config struct shares, kept in a leaf module so that the patterns
//! import it without importing [`crate::config`] (which imports every pattern): the error
//! that names a bad key, and gRPC codes written by name.

use std::fmt;

use lab_proto::codes::{CODE_NAMES, code_by_name, code_name};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A bad value, named by its key path (`resilience.hops.payments.bulkhead.max_concurrent`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A gRPC status code by its canonical name (`UNAVAILABLE`), from [`lab_proto::codes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeName(pub tonic::Code);

impl CodeName {
    pub fn name(&self) -> &'static str {
        code_name(self.0)
    }
}

impl fmt::Display for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for CodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// In a schema: one of the canonical names, as [`CodeName`]'s `Deserialize` accepts them.
impl schemars::JsonSchema for CodeName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GrpcCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = CODE_NAMES.iter().map(|(n, _)| *n).collect();
        schemars::json_schema!({
            "description": "A gRPC status code by its canonical name",
            "type": "string",
            "enum": names,
        })
    }
}

impl<'de> Deserialize<'de> for CodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        code_by_name(&name).map(CodeName).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown gRPC code {name:?}; expected one of {}",
                CODE_NAMES.map(|(n, _)| n).join(", ")
            ))
        })
    }
}
