//! A lock-hold fault on inventory, seen from clients: while it is in force, a reservation
//! keeps the stock row locked, so a concurrent reservation of the same product waits.

use std::time::{Duration, Instant};

use clap::Parser;
use lab_proto::lab::v1::ApplyFaultRequest;
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::{LineItem, ReserveRequest};
use lab_runtime::testing::TestApp;

fn reserve(order: &str) -> ReserveRequest {
    ReserveRequest {
        order_id: order.into(),
        items: vec![LineItem {
            product_id: "sku-1".into(),
            quantity: 1,
        }],
    }
}

/// Two concurrent reservations of sku-1; returns the slower one's latency.
async fn two_at_once(client: &InventoryClient<tonic::transport::Channel>, tag: &str) -> Duration {
    let started = Instant::now();
    let (mut a, mut b) = (client.clone(), client.clone());
    let (ra, rb) = tokio::join!(
        a.reserve(reserve(&format!("{tag}-a"))),
        b.reserve(reserve(&format!("{tag}-b")))
    );
    ra.unwrap();
    rb.unwrap();
    started.elapsed()
}

#[tokio::test]
async fn lock_hold_delays_concurrent_reservations_of_the_same_product() {
    let dir = tempfile::tempdir().unwrap();
    let config = inventory::Config::parse_from([
        "inventory",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--insecure-admin",
    ]);
    let app = TestApp::spawn(config, inventory::run).await;
    let client = InventoryClient::new(app.channel());
    let normal = two_at_once(&client, "before").await;
    assert!(normal < Duration::from_millis(300), "{normal:?}");

    let docs = lab_chaos::spec::parse_documents(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: lock}\nspec:\n  selector: {service: inventory}\n  action: lock-hold\n  lockHold: {holdMs: 400}\n  duration: 10s\n",
    )
    .unwrap();
    FaultsClient::new(app.admin_channel())
        .apply(ApplyFaultRequest {
            fault: Some(docs[0].spec.to_fault("lock", None)),
        })
        .await
        .unwrap();
    // Each holds the lock 400 ms; the second waits for the first: at least ~800 ms.
    let held = two_at_once(&client, "during").await;
    assert!(
        held >= Duration::from_millis(780),
        "the second reservation waited: {held:?}"
    );
    app.stop().await.unwrap();
}
