//! `frlab run-sample`: start the stack, place one sample order, print it and every
//! service's audit counters, stop (what `make run` calls).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};

use super::order::is_confirmed;
use super::{StackArgs, print_endpoints, print_stopped};
use crate::observe::grpc as client;
use crate::stack::LocalStack;

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Where the services keep their SQLite files and logs (kept afterwards)
    /// [default: a fresh temporary directory]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs `frlab run-sample`.
pub async fn run(args: SampleArgs) -> Result<ExitCode> {
    let temporary = args.data_dir.is_none();
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("frlab-sample-{}", uuid::Uuid::new_v4()))
    });
    let opts = args.stack.options(&data_dir, 0)?;
    println!(
        "starting the stack (data and logs in {})",
        data_dir.display()
    );
    let stack = LocalStack::start(opts).await?;
    print_endpoints(&stack);

    let confirmed = sample_order(&stack).await;
    print_audit(&stack).await;

    println!("\nstopping the stack, gateway first");
    let clean = print_stopped(&stack.stop_each().await);
    if confirmed && clean {
        if temporary {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        println!("\nsample run OK");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "\nsample run FAILED; data and logs kept in {}",
            data_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Places the sample order and prints it; true when it ended CONFIRMED.
async fn sample_order(stack: &LocalStack) -> bool {
    let request = PlaceOrderRequest {
        idempotency_key: format!("sample-{}", uuid::Uuid::new_v4()),
        customer_id: "sample-customer".into(),
        items: vec![
            LineItem {
                product_id: "sku-1".into(),
                quantity: 2,
            },
            LineItem {
                product_id: "sku-3".into(),
                quantity: 1,
            },
        ],
    };
    println!("\nplacing a sample order at {}", stack.gateway_url());
    let placed = match client::channel(&stack.gateway_url()) {
        Ok(channel) => {
            let mut gateway = GatewayClient::new(channel);
            client::place_order(&mut gateway, request, Duration::from_secs(5))
                .await
                .map_err(|s| client::describe_status(&s))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    match placed {
        Ok(placed) => {
            println!("{}", client::describe_order(&placed));
            let confirmed = is_confirmed(&placed);
            if confirmed {
                wait_for_delivery(stack).await;
            }
            confirmed
        }
        Err(e) => {
            eprintln!("error: PlaceOrder failed: {e}");
            false
        }
    }
}

/// The confirmation event is delivered in the background (outbox relay or best-effort
/// call): give it up to 3 s so the printed counters show it.
async fn wait_for_delivery(stack: &LocalStack) {
    let Some(notifications) = stack.endpoint("notifications") else {
        return;
    };
    let url = notifications.grpc_url();
    for _ in 0..30 {
        if let Ok(snapshot) = client::audit_snapshot(&url, Duration::from_secs(1), false).await
            && snapshot
                .counters
                .get("deliveries_total")
                .copied()
                .unwrap_or(0)
                > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print_audit(stack: &LocalStack) {
    println!("\naudit counters (lab.v1.Audit/Snapshot)");
    for ep in stack.endpoints() {
        match client::audit_snapshot(&ep.grpc_url(), Duration::from_secs(2), false).await {
            Ok(snapshot) => {
                let mut counters: Vec<_> = snapshot.counters.into_iter().collect();
                counters.sort();
                let counters: Vec<String> =
                    counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("  {:<14} {}", ep.service, counters.join(" "));
            }
            Err(e) => println!("  {:<14} (unavailable: {e:#})", ep.service),
        }
    }
}
