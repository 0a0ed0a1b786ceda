//! The crate's one error type, and URL redaction so errors never show a password.

/// Everything that can go wrong in this crate.
///
/// Every variant that concerns a server names its URL, with any password replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL's scheme is not one this crate can open.
    #[error(
        "unsupported database URL `{url}`: expected a `sqlite:`, `postgres:` or `postgresql:` URL"
    )]
    UnsupportedUrl {
        /// The URL as given, password redacted.
        url: String,
    },

    /// A Postgres schema name that is not `[a-z0-9_]{1,63}`.
    #[error("invalid Postgres schema name `{name}`: use 1 to 63 characters from [a-z0-9_]")]
    InvalidSchemaName {
        /// The rejected name.
        name: String,
    },

    /// A `sqlite:` URL with a parameter this crate does not know.
    #[error("invalid SQLite URL `{url}`: {reason}")]
    InvalidSqliteUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The database could not be opened or reached.
    #[error("cannot connect to database `{url}`: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What SQLite or sqlx reported.
        #[source]
        source: crate::query::DbError,
    },

    /// Applying the migrations failed.
    #[error("migrating database `{url}` failed: {source}")]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// What the migrator reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] crate::query::DbError),

    /// Redis could not be reached, or its URL could not be parsed.
    #[error("cannot connect to Redis at `{url}`: {source}")]
    RedisConnect {
        /// The URL, password redacted.
        url: String,
        /// What fred reported.
        #[source]
        source: fred::error::Error,
    },

    /// A Redis command failed.
    #[error("Redis error: {0}")]
    Redis(#[from] fred::error::Error),
}

/// `url` with the password of its userinfo (`scheme://user:password@host`) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    format!("{}***{}", &url[..password_start], &url[password_end..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("sqlite:///tmp/a.db?mode=rwc"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        // An `@` in the path is not userinfo.
        assert_eq!(redact_url("sqlite:///a:b/c@d.db"), "sqlite:///a:b/c@d.db");
    }
}
