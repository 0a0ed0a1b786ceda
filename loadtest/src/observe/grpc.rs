//! The gRPC calls frlab makes of the services (one PlaceOrder, Audit snapshots) and how
//! their answers are printed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lab_proto::codes::code_name;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse};
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{Money, Order, OrderStatus, PlaceOrderRequest};
use tonic::Status;
use tonic::transport::Channel;

/// A lazily connecting channel: connection failures surface as UNAVAILABLE on the call.
pub fn channel(url: &str) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| {
            format!("invalid gRPC URL `{url}` (expected e.g. http://127.0.0.1:50051)")
        })?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// A PlaceOrder answer and how long it took.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    pub latency: Duration,
}

/// One PlaceOrder with a deadline: sent as `grpc-timeout` so the gateway can propagate it,
/// and enforced here too (DEADLINE_EXCEEDED when the answer does not come in time).
pub async fn place_order(
    client: &mut GatewayClient<Channel>,
    request: PlaceOrderRequest,
    timeout: Duration,
) -> Result<Placed, Status> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    let started = Instant::now();
    let answer = tokio::time::timeout(timeout, client.place_order(request))
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()))
        })??;
    let order = answer
        .into_inner()
        .order
        .ok_or_else(|| Status::internal("PlaceOrderResponse without an order"))?;
    Ok(Placed {
        order,
        latency: started.elapsed(),
    })
}

/// lab.v1.Audit/Snapshot of the service at `url`: its counters, and with `include_ids` the
/// id sets the invariants are computed from.
pub async fn audit_snapshot(
    url: &str,
    timeout: Duration,
    include_ids: bool,
) -> Result<SnapshotResponse> {
    let mut client = AuditClient::new(channel(url)?);
    let mut request = tonic::Request::new(SnapshotRequest { include_ids });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, client.snapshot(request))
        .await
        .with_context(|| format!("Audit/Snapshot at {url}: no answer within {timeout:?}"))?
        .map_err(|s| anyhow::anyhow!("{}", describe_status(&s)))
        .with_context(|| format!("Audit/Snapshot at {url}"))?;
    Ok(answer.into_inner())
}

/// "USD 12.34" from minor units (two decimals, as every lab currency has).
pub fn format_money(money: Option<&Money>) -> String {
    let Some(m) = money else {
        return "-".into();
    };
    let sign = if m.minor_units < 0 { "-" } else { "" };
    let units = m.minor_units.unsigned_abs();
    format!("{} {sign}{}.{:02}", m.currency, units / 100, units % 100)
}

/// "CONFIRMED" for ORDER_STATUS_CONFIRMED; unknown numbers stay visible.
pub fn status_name(status: i32) -> String {
    match OrderStatus::try_from(status) {
        Ok(s) => s.as_str_name().trim_start_matches("ORDER_STATUS_").into(),
        Err(_) => format!("UNKNOWN({status})"),
    }
}

/// "UNAVAILABLE: message", plus the underlying causes of a client-side failure
/// (e.g. "tcp connect error: Connection refused").
pub fn describe_status(status: &Status) -> String {
    let mut text = format!("{}: {}", code_name(status.code()), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A few aligned lines describing a placed order.
pub fn describe_order(placed: &Placed) -> String {
    let o = &placed.order;
    let mut lines = vec![
        format!("order     {}", o.order_id),
        format!("status    {}", status_name(o.status)),
        format!("total     {}", format_money(o.total.as_ref())),
        format!("key       {}", o.idempotency_key),
        format!("customer  {}", o.customer_id),
        format!(
            "items     {}",
            o.items
                .iter()
                .map(|i| format!("{}:{}", i.product_id, i.quantity))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ];
    if !o.charge_id.is_empty() {
        lines.push(format!("charge    {}", o.charge_id));
    }
    if !o.failure_reason.is_empty() {
        lines.push(format!("reason    {}", o.failure_reason));
    }
    lines.push(format!(
        "latency   {:.1} ms",
        placed.latency.as_secs_f64() * 1000.0
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor_units: i64) -> Option<Money> {
        Some(Money {
            currency: "USD".into(),
            minor_units,
        })
    }

    #[test]
    fn money_is_printed_from_minor_units() {
        assert_eq!(format_money(usd(1234).as_ref()), "USD 12.34");
        assert_eq!(format_money(usd(5).as_ref()), "USD 0.05");
        assert_eq!(format_money(usd(0).as_ref()), "USD 0.00");
        assert_eq!(format_money(usd(-250).as_ref()), "USD -2.50");
        assert_eq!(format_money(None), "-");
    }

    #[test]
    fn statuses_and_codes_have_their_short_names() {
        assert_eq!(status_name(OrderStatus::Confirmed as i32), "CONFIRMED");
        assert_eq!(status_name(99), "UNKNOWN(99)");
        assert_eq!(
            describe_status(&Status::unavailable("payments down")),
            "UNAVAILABLE: payments down"
        );
    }

    #[test]
    fn bad_url_is_a_clear_error() {
        let err = channel("not a url").unwrap_err().to_string();
        assert!(err.contains("invalid gRPC URL `not a url`"), "{err}");
    }
}
