//! The five services in this process, wired together on 127.0.0.1:0, on either backend.

#![allow(dead_code)]

use clap::Parser;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse};
use lab_runtime::testing::TestApp;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// SQLite files in a temp dir, idempotency keys in memory (the default).
    Embedded,
    /// Postgres at 127.0.0.1:5432 (a fresh schema per service and test) and Redis at
    /// 127.0.0.1:6379. Fails loudly when either is unreachable.
    PostgresRedis,
}

pub struct Stack {
    pub inventory: TestApp,
    pub payments: TestApp,
    pub notifications: TestApp,
    pub orders: TestApp,
    pub gateway: TestApp,
    schemas: Vec<lab_store::DbConfig>,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(backend: Backend) -> Stack {
        Self::start_with(backend, &[]).await
    }

    /// `payments_args` tune the payments capacity model (e.g. `--slots`).
    pub async fn start_with(backend: Backend, payments_args: &[&str]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let mut schemas = Vec::new();
        let mut storage = Vec::new();
        for service in ["inventory", "payments", "notifications", "orders"] {
            let mut args = vec!["--data-dir".to_string(), dir.path().display().to_string()];
            if let Backend::PostgresRedis = backend {
                let cfg = lab_store::testing::postgres_test_config(service).await;
                args.extend([
                    "--database-url".into(),
                    cfg.url.clone(),
                    "--database-schema".into(),
                    cfg.schema.clone().unwrap(),
                    "--redis-url".into(),
                    lab_store::testing::redis_test_url(),
                ]);
                schemas.push(cfg);
            }
            storage.push(args);
        }
        let argv = |name: &str, storage: &[String], extra: &[String]| {
            std::iter::once(name.to_string())
                .chain(storage.iter().cloned())
                .chain(extra.iter().cloned())
                .collect::<Vec<_>>()
        };
        let inventory = TestApp::spawn(
            inventory::Config::parse_from(argv("inventory", &storage[0], &[])),
            inventory::run,
        )
        .await;
        let fast: Vec<String> = ["--service-time-p50-ms", "2", "--service-time-p95-ms", "5"]
            .iter()
            .chain(payments_args)
            .map(|s| s.to_string())
            .collect();
        let payments = TestApp::spawn(
            payments::Config::parse_from(argv("payments", &storage[1], &fast)),
            payments::run,
        )
        .await;
        let notifications = TestApp::spawn(
            notifications::Config::parse_from(argv("notifications", &storage[2], &[])),
            notifications::run,
        )
        .await;
        let downstreams = vec![
            "--inventory-url".to_string(),
            inventory.url(),
            "--payments-url".into(),
            payments.url(),
            "--notifications-url".into(),
            notifications.url(),
            "--outbox-poll-ms".into(),
            "20".into(),
        ];
        let orders = TestApp::spawn(
            orders::Config::parse_from(argv("orders", &storage[3], &downstreams)),
            orders::run,
        )
        .await;
        let gateway = TestApp::spawn(
            gateway::Config::parse_from([
                "gateway".to_string(),
                "--orders-url".into(),
                orders.url(),
            ]),
            gateway::run,
        )
        .await;
        Stack {
            inventory,
            payments,
            notifications,
            orders,
            gateway,
            schemas,
            _dir: dir,
        }
    }

    pub async fn audit(app: &TestApp) -> SnapshotResponse {
        AuditClient::new(app.channel())
            .snapshot(SnapshotRequest { include_ids: true })
            .await
            .expect("Audit/Snapshot")
            .into_inner()
    }

    pub async fn stop(self) {
        for app in [
            self.gateway,
            self.orders,
            self.notifications,
            self.payments,
            self.inventory,
        ] {
            app.stop().await.expect("clean stop");
        }
        for cfg in &self.schemas {
            lab_store::testing::drop_schema(cfg).await;
        }
    }
}

pub fn unique_key(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4())
}
