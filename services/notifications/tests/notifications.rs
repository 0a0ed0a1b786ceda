//! Notifications through a real server on 127.0.0.1:0: the side effect happens once per
//! event; repeats are counted, not repeated.

use clap::Parser;
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::notifications_client::NotificationsClient;
use lab_proto::shop::v1::{DeliverRequest, ListDeliveriesRequest};
use lab_runtime::testing::TestApp;
use tonic::Code;

fn event(id: &str, order: &str) -> DeliverRequest {
    DeliverRequest {
        event_id: id.into(),
        order_id: order.into(),
        kind: "order.confirmed".into(),
        payload_json: "{\"order_id\":\"x\"}".into(),
    }
}

#[tokio::test]
async fn deliveries_are_deduplicated_by_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = notifications::Config::parse_from([
        "notifications",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let app = TestApp::spawn(config, notifications::run).await;
    let mut client = NotificationsClient::new(app.channel());
    assert!(
        !client
            .deliver(event("e1", "o1"))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    assert!(
        client
            .deliver(event("e1", "o1"))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    assert!(
        client
            .deliver(event("e1", "o1"))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    assert!(
        !client
            .deliver(event("e2", "o2"))
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );

    let listed = client
        .list_deliveries(ListDeliveriesRequest {
            order_id: "o1".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].receipts, 3);

    let snap = AuditClient::new(app.channel())
        .snapshot(SnapshotRequest { include_ids: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        snap.counters["deliveries_total"], 2,
        "one side effect per event"
    );
    assert_eq!(snap.counters["receipts_total"], 4);
    assert_eq!(snap.counters["events_received_more_than_once"], 1);
    let mut delivered = snap.ids["delivered_order_ids"].ids.clone();
    delivered.sort();
    assert_eq!(delivered, vec!["o1".to_string(), "o2".to_string()]);

    for (req, field) in [
        (event("", "o1"), "event_id"),
        (
            DeliverRequest {
                payload_json: "{".into(),
                ..event("e3", "o3")
            },
            "payload_json",
        ),
        (
            DeliverRequest {
                payload_json: "x".repeat(20_000),
                ..event("e3", "o3")
            },
            "payload_json",
        ),
    ] {
        let err = client.deliver(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{}",
            err.message()
        );
    }
    let err = client
        .list_deliveries(ListDeliveriesRequest {
            order_id: String::new(),
            limit: 5000,
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("limit: "), "{}", err.message());
    app.stop().await.unwrap();
}
