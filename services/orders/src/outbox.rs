//! The outbox relay: delivers committed events to Notifications at least once.
//!
//! An event is written in the same transaction that confirms its order, so it exists if and
//! only if the order is confirmed. The relay polls for undelivered rows, delivers them in
//! creation order and marks them delivered after Notifications answered OK. A crash between
//! the two means a second delivery, which Notifications deduplicates by event id: the side
//! effect still happens once.
//!
//! With traces on, each row carries the `traceparent` of the order request that wrote it,
//! and each delivery attempt is an `outbox deliver` span under that request's span.

use std::time::Duration;

use lab_proto::shop::v1::DeliverRequest;
use lab_proto::shop::v1::notifications_client::NotificationsClient;
use lab_runtime::Shutdown;
use lab_runtime::client::HopService;
use lab_store::{Backend, Db};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing::Instrument;

use crate::sql;

/// Rows delivered per poll at most.
const BATCH: i64 = 100;
/// Time allowed for one Deliver call.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Relay {
    db: Db,
    notifications: NotificationsClient<HopService>,
    poll: Duration,
    delivered: Counter,
    failures: Counter,
}

impl Relay {
    pub fn new(
        db: Db,
        notifications: NotificationsClient<HopService>,
        poll: Duration,
        registry: &mut Registry,
    ) -> Self {
        let relay = Self {
            db,
            notifications,
            poll,
            delivered: Counter::default(),
            failures: Counter::default(),
        };
        registry.register(
            "outbox_delivered",
            "Outbox events delivered to notifications",
            relay.delivered.clone(),
        );
        registry.register(
            "outbox_delivery_failures",
            "Outbox deliveries that failed and will be retried",
            relay.failures.clone(),
        );
        relay
    }

    /// Polls until `shutdown`, then returns (undelivered rows wait for the next start).
    pub async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
            if let Err(e) = self.relay_once().await {
                tracing::warn!("outbox relay: {e}");
            }
        }
    }

    /// Delivers one batch. Stops at the first failure: the next poll retries from there.
    pub async fn relay_once(&mut self) -> Result<u64, lab_store::DbError> {
        let rows = lab_store::query(sql::PENDING_EVENTS)
            .bind(BATCH)
            .fetch_all(&self.db)
            .await?;
        let mut delivered = Vec::new();
        let mut failed = None;
        for row in rows {
            let event_id: String = row.try_get("event_id")?;
            let traceparent: Option<String> = row.try_get("traceparent")?;
            let span = delivery_span(&event_id, traceparent.as_deref());
            let mut request = tonic::Request::new(DeliverRequest {
                event_id: event_id.clone(),
                order_id: row.try_get("order_id")?,
                kind: row.try_get("kind")?,
                payload_json: row.try_get("payload_json")?,
            });
            request.set_timeout(DELIVER_TIMEOUT);
            let outcome =
                tokio::time::timeout(DELIVER_TIMEOUT, self.notifications.deliver(request))
                    .instrument(span.clone())
                    .await;
            match outcome {
                Ok(Ok(_)) => delivered.push(event_id),
                Ok(Err(status)) => {
                    span.record("otel.status_code", "error");
                    span.record("error.message", status.message());
                    failed = Some((
                        event_id,
                        format!("{:?}: {}", status.code(), status.message()),
                    ));
                    break;
                }
                Err(_) => {
                    failed = Some((event_id, "timed out".to_string()));
                    break;
                }
            }
        }
        // The batch's deliveries are marked in one statement (one commit, not one per
        // event); a crash before it means those events are delivered again, which the
        // at-least-once contract above already allows.
        let count = delivered.len() as u64;
        if !delivered.is_empty() {
            let mark = match self.db.backend() {
                Backend::Sqlite => sql::MARK_DELIVERED_SQLITE,
                Backend::Postgres => sql::MARK_DELIVERED_PG,
            };
            lab_store::query(mark)
                .bind(serde_json::to_string(&delivered).unwrap_or_default())
                .bind(lab_runtime::now_ms())
                .execute(&self.db)
                .await?;
            self.delivered.inc_by(count);
        }
        if let Some((event_id, error)) = failed {
            self.failures.inc();
            lab_store::query(sql::MARK_FAILED_ATTEMPT)
                .bind(&event_id)
                .bind(&error)
                .execute(&self.db)
                .await?;
            tracing::debug!(event_id, "outbox delivery failed: {error}");
        }
        Ok(count)
    }
}

/// The span of one delivery attempt, a child of the order request that wrote the event
/// (its stored `traceparent`), so the order's trace reaches Notifications. No span when
/// traces are off.
fn delivery_span(event_id: &str, traceparent: Option<&str>) -> tracing::Span {
    if !lab_runtime::telemetry::active() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "outbox.deliver",
        otel.name = "outbox deliver",
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.message = tracing::field::Empty,
        lab.service = "orders",
        lab.event_id = event_id,
    );
    lab_runtime::telemetry::set_parent_from_traceparent(&span, traceparent);
    span
}
