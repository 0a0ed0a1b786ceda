//! Inventory through a real server on 127.0.0.1:0: reserve, replay, release, stock, and the
//! errors a caller can act on.

use clap::Parser;
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::{GetStockRequest, LineItem, ReleaseRequest, ReserveRequest};
use lab_runtime::testing::TestApp;
use tonic::Code;
use tonic::transport::Channel;

async fn spawn(dir: &tempfile::TempDir) -> TestApp {
    let config =
        inventory::Config::parse_from(["inventory", "--data-dir", dir.path().to_str().unwrap()]);
    TestApp::spawn(config, inventory::run).await
}

fn items(list: &[(&str, i32)]) -> Vec<LineItem> {
    list.iter()
        .map(|(p, q)| LineItem {
            product_id: p.to_string(),
            quantity: *q,
        })
        .collect()
}

async fn available(client: &mut InventoryClient<Channel>, product: &str) -> i64 {
    client
        .get_stock(GetStockRequest {
            product_id: product.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .available
}

#[tokio::test]
async fn reserve_is_priced_idempotent_per_order_and_released_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir).await;
    let mut client = InventoryClient::new(app.channel());
    let before = available(&mut client, "sku-1").await;
    // sku-1 costs 199, sku-2 299; duplicates of one product are merged.
    let req = ReserveRequest {
        order_id: "o1".into(),
        items: items(&[("sku-2", 1), ("sku-1", 2), ("sku-1", 1)]),
    };
    let first = client.reserve(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.total.as_ref().unwrap().minor_units, 3 * 199 + 299);
    assert!(!first.replayed);
    assert_eq!(available(&mut client, "sku-1").await, before - 3);
    let again = client.reserve(req.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.reservation_id, first.reservation_id);
    assert_eq!(
        available(&mut client, "sku-1").await,
        before - 3,
        "a replay takes no stock"
    );

    let audit = AuditClient::new(app.channel());
    let snap = audit
        .clone()
        .snapshot(SnapshotRequest { include_ids: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.counters["open_reservations"], 1);
    assert_eq!(
        snap.ids["open_reservation_order_ids"].ids,
        vec!["o1".to_string()]
    );

    assert!(
        client
            .release(ReleaseRequest {
                order_id: "o1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .released
    );
    assert!(
        !client
            .release(ReleaseRequest {
                order_id: "o1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .released
    );
    assert_eq!(available(&mut client, "sku-1").await, before);
    let err = client.reserve(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let snap = audit
        .clone()
        .snapshot(SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.counters["open_reservations"], 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_products_and_short_stock_are_refused_without_taking_anything() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir).await;
    let mut client = InventoryClient::new(app.channel());
    let before = available(&mut client, "sku-1").await;
    let err = client
        .reserve(ReserveRequest {
            order_id: "o1".into(),
            items: items(&[("sku-1", 1), ("sku-404", 1)]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "items[1].product_id: unknown product \"sku-404\""
    );
    assert_eq!(
        available(&mut client, "sku-1").await,
        before,
        "the transaction rolled back"
    );
    // sku-10 has only 5 in stock.
    let err = client
        .reserve(ReserveRequest {
            order_id: "o2".into(),
            items: items(&[("sku-10", 6)]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().starts_with("items[0].quantity: only 5"),
        "{}",
        err.message()
    );
    let err = client
        .get_stock(GetStockRequest {
            product_id: "sku-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .reserve(ReserveRequest {
            order_id: "o3".into(),
            items: items(&[("sku-1", 0)]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("items[0].quantity"),
        "{}",
        err.message()
    );
    app.stop().await.unwrap();
}

/// Many concurrent reservations of the last units never oversell.
#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir).await;
    let client = InventoryClient::new(app.channel());
    let calls = (0..20).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .reserve(ReserveRequest {
                    order_id: format!("o{i}"),
                    items: items(&[("sku-10", 1)]),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 5,
        "exactly the 5 units in stock are reserved: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(Code::FailedPrecondition))),
        "{results:?}"
    );
    let mut client = client;
    assert_eq!(available(&mut client, "sku-10").await, 0);
    app.stop().await.unwrap();
}
