//! The name of every metric family the patterns register, in one place for the code that
//! registers them and for the code that reads a scrape (frlab's measurements and console).
//!
//! prometheus-client writes a counter family `x` as the series `x_total`; [`counter!`]
//! defines both names from one literal, so the registered name and the name a reader looks
//! for cannot differ (each pattern's own tests check its rendered series). Client-side
//! families are labelled `hop`; all carry the service's `service` label.

/// Defines a counter family's name and the name of its series in a scrape.
macro_rules! counter {
    ($(#[$doc:meta])* $family:ident, $series:ident = $name:literal) => {
        $(#[$doc])*
        pub const $family: &str = $name;
        #[doc = concat!("`", $name, "_total`: the series of [`", stringify!($family), "`].")]
        pub const $series: &str = concat!($name, "_total");
    };
}

counter!(
    /// Logical client calls per hop (first attempts): the denominator of retry amplification.
    CLIENT_REQUESTS, CLIENT_REQUESTS_TOTAL = "resilience_client_requests"
);
counter!(
    /// Client attempts sent per hop, retries and hedges included.
    CLIENT_ATTEMPTS, CLIENT_ATTEMPTS_TOTAL = "resilience_client_attempts"
);
counter!(
    /// Retries decided per hop.
    RETRIES, RETRIES_TOTAL = "resilience_retries"
);
counter!(
    /// Retries or hedges not made because the hop's retry budget was empty.
    RETRY_BUDGET_EXHAUSTED, RETRY_BUDGET_EXHAUSTED_TOTAL = "resilience_retry_budget_exhausted"
);
counter!(
    /// Hedged attempts sent per hop.
    HEDGES, HEDGES_TOTAL = "resilience_hedges"
);
counter!(
    /// Circuit breaker state changes per hop, labelled `from` and `to`.
    BREAKER_TRANSITIONS, BREAKER_TRANSITIONS_TOTAL = "resilience_breaker_transitions"
);
/// Gauge: circuit breaker state per hop, 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "resilience_breaker_state";
counter!(
    /// Calls an open breaker refused without sending them.
    BREAKER_REJECTIONS, BREAKER_REJECTIONS_TOTAL = "resilience_breaker_rejections"
);
/// Gauge: calls holding a bulkhead place.
pub const BULKHEAD_IN_USE: &str = "resilience_bulkhead_in_use";
counter!(
    /// Calls refused because the bulkhead stayed full for the whole bounded wait.
    BULKHEAD_REJECTIONS, BULKHEAD_REJECTIONS_TOTAL = "resilience_bulkhead_rejections"
);
counter!(
    /// Calls refused or ended because their deadline passed.
    DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_TOTAL = "resilience_deadline_exceeded"
);
counter!(
    /// Requests the load shedder refused at once.
    SHED, SHED_TOTAL = "resilience_shed"
);
/// Gauge: requests admitted by the load shedder and not finished yet.
pub const IN_FLIGHT: &str = "resilience_in_flight";
/// Gauge: the adaptive concurrency limit now.
pub const ADAPTIVE_LIMIT: &str = "resilience_adaptive_limit";
counter!(
    /// Requests refused because the adaptive concurrency limit was reached.
    ADAPTIVE_REJECTIONS, ADAPTIVE_REJECTIONS_TOTAL = "resilience_adaptive_rejections"
);
