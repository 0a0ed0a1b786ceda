//! `frlab order`: place one order through the gateway and print the outcome.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, OrderStatus, PlaceOrderRequest};

use crate::observe::grpc::{self as client, Placed};

/// Exit status of `frlab order` when the gateway answered but the order is not CONFIRMED.
const EXIT_NOT_CONFIRMED: u8 = 3;

#[derive(Debug, Args)]
pub struct OrderArgs {
    /// Gateway gRPC URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50051")]
    pub gateway: String,
    /// Idempotency key: reuse one to retry the same logical order [default: a random UUID]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Customer id
    #[arg(long, value_name = "ID", default_value = "customer-1")]
    pub customer: String,
    /// A line item as PRODUCT:QUANTITY (QUANTITY defaults to 1); repeat for more.
    /// Products are sku-1 .. sku-10 [default: sku-1:1]
    #[arg(long = "item", value_name = "PRODUCT:QTY", value_parser = parse_item)]
    pub items: Vec<LineItem>,
    /// Client deadline in milliseconds, also sent to the gateway as grpc-timeout
    #[arg(long, value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// Parses `--item sku-1:2` (or `sku-1`, meaning one unit).
pub fn parse_item(value: &str) -> Result<LineItem, String> {
    let (product, quantity) = match value.rsplit_once(':') {
        Some((product, quantity)) => (product, quantity),
        None => (value, "1"),
    };
    let product = product.trim();
    if product.is_empty() {
        return Err(format!(
            "`{value}` has no product; expected PRODUCT:QUANTITY, e.g. sku-1:2"
        ));
    }
    let quantity = quantity
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|q| *q > 0)
        .ok_or_else(|| {
            format!(
                "`{value}`: quantity `{quantity}` is not a positive whole number; \
                 expected PRODUCT:QUANTITY, e.g. sku-1:2"
            )
        })?;
    Ok(LineItem {
        product_id: product.to_string(),
        quantity,
    })
}

/// Runs `frlab order`.
pub async fn run(args: OrderArgs) -> Result<ExitCode> {
    let items = if args.items.is_empty() {
        vec![parse_item("sku-1:1").map_err(anyhow::Error::msg)?]
    } else {
        args.items
    };
    let request = PlaceOrderRequest {
        idempotency_key: args.key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        customer_id: args.customer,
        items,
    };
    let mut gateway = GatewayClient::new(client::channel(&args.gateway)?);
    let timeout = Duration::from_millis(args.timeout_ms);
    match client::place_order(&mut gateway, request, timeout).await {
        Ok(placed) => {
            println!("{}", client::describe_order(&placed));
            Ok(if is_confirmed(&placed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_CONFIRMED)
            })
        }
        Err(status) => {
            eprintln!(
                "error: PlaceOrder at {} failed: {}",
                args.gateway,
                client::describe_status(&status)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The order ended CONFIRMED.
pub(crate) fn is_confirmed(placed: &Placed) -> bool {
    placed.order.status == OrderStatus::Confirmed as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn items_parse() {
        let item = parse_item("sku-1:2").unwrap();
        assert_eq!((item.product_id.as_str(), item.quantity), ("sku-1", 2));
        assert_eq!(parse_item("sku-10").unwrap().quantity, 1);
        assert_eq!(parse_item(" sku-3 : 7 ").unwrap().quantity, 7);
    }

    #[test]
    fn bad_items_name_the_value() {
        for bad in [
            "sku-1:0",
            "sku-1:-2",
            "sku-1:two",
            "sku-1:",
            ":3",
            "sku-1:99999999999",
        ] {
            let err = parse_item(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
            assert!(err.contains("PRODUCT:QUANTITY"), "{bad}: {err}");
        }
    }

    #[test]
    fn order_flags_parse() {
        let cli = Cli::try_parse_from([
            "frlab",
            "order",
            "--item",
            "sku-2:3",
            "--item",
            "sku-4",
            "--key",
            "k1",
            "--timeout-ms",
            "500",
        ])
        .unwrap();
        let Command::Order(args) = cli.command else {
            panic!("not an order command");
        };
        assert_eq!(args.items.len(), 2);
        assert_eq!(args.key.as_deref(), Some("k1"));
        assert_eq!(args.gateway, "http://127.0.0.1:50051");
        assert_eq!(args.timeout_ms, 500);
    }

    #[test]
    fn bad_item_flag_is_a_usage_error_naming_it() {
        let err = Cli::try_parse_from(["frlab", "order", "--item", "sku-1:x"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sku-1:x") && msg.contains("--item"), "{msg}");
    }
}
