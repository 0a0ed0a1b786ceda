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
    /// How orders was started, and the `--profile` flags, for [`Stack::restart_orders`].
    orders_argv: Vec<String>,
    profile: Vec<String>,
    _dir: tempfile::TempDir,
}

/// What [`Stack::start_custom`] changes from the defaults.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// `--profile` of every service (default: f-full).
    pub profile: Option<&'a str>,
    /// Extra flags of payments (e.g. `--slots`, a slower service time).
    pub payments: &'a [&'a str],
    /// Extra flags of orders.
    pub orders: &'a [&'a str],
}

impl Stack {
    pub async fn start(backend: Backend) -> Stack {
        Self::start_with(backend, &[]).await
    }

    /// `payments_args` tune the payments capacity model (e.g. `--slots`).
    pub async fn start_with(backend: Backend, payments_args: &[&str]) -> Stack {
        Self::start_custom(
            backend,
            Options {
                payments: payments_args,
                ..Options::default()
            },
        )
        .await
    }

    pub async fn start_custom(backend: Backend, options: Options<'_>) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let mut schemas = Vec::new();
        let mut storage = Vec::new();
        let profile: Vec<String> = options
            .profile
            .map(|p| vec!["--profile".to_string(), p.to_string()])
            .unwrap_or_default();
        for service in ["inventory", "payments", "notifications", "orders"] {
            let mut args = vec!["--data-dir".to_string(), dir.path().display().to_string()];
            args.extend(profile.iter().cloned());
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
            .chain(options.payments)
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
            "--saga-recovery-poll-ms".into(),
            "50".into(),
        ];
        let orders_args: Vec<String> = downstreams
            .into_iter()
            .chain(options.orders.iter().map(|s| s.to_string()))
            .collect();
        let orders_argv = argv("orders", &storage[3], &orders_args);
        let orders =
            TestApp::spawn(orders::Config::parse_from(orders_argv.clone()), orders::run).await;
        let gateway_args: Vec<String> = ["--orders-url".to_string(), orders.url()]
            .into_iter()
            .chain(profile.iter().cloned())
            .collect();
        let gateway = TestApp::spawn(
            gateway::Config::parse_from(argv("gateway", &[], &gateway_args)),
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
            orders_argv,
            profile,
            _dir: dir,
        }
    }

    /// Stops orders (cleanly) and starts it again on the same database: a new process,
    /// whose in-memory idempotency store is empty. It comes back on another port, so the
    /// gateway is started again too.
    pub async fn restart_orders(&mut self) {
        self.orders.shutdown_handle().trigger();
        let fresh = TestApp::spawn(
            orders::Config::parse_from(self.orders_argv.clone()),
            orders::run,
        )
        .await;
        std::mem::replace(&mut self.orders, fresh)
            .stop()
            .await
            .expect("clean stop");
        let gateway_argv: Vec<String> = [
            "gateway".to_string(),
            "--orders-url".into(),
            self.orders.url(),
        ]
        .into_iter()
        .chain(self.profile.iter().cloned())
        .collect();
        let gateway = TestApp::spawn(gateway::Config::parse_from(gateway_argv), gateway::run).await;
        std::mem::replace(&mut self.gateway, gateway)
            .stop()
            .await
            .expect("clean stop");
    }

    /// A connection to a service's own database, to count rows directly (not through the
    /// service's audit).
    pub async fn db(&self, service: &str) -> lab_store::Db {
        let index = ["inventory", "payments", "notifications", "orders"]
            .iter()
            .position(|s| *s == service)
            .expect("a service with a database");
        let config = match self.schemas.get(index) {
            Some(cfg) => lab_store::DbConfig {
                max_connections: 2,
                ..cfg.clone()
            },
            None => lab_store::DbConfig {
                url: lab_store::sqlite_url_for(self._dir.path(), service),
                schema: None,
                max_connections: 2,
            },
        };
        lab_store::Db::connect(&config, &[])
            .await
            .expect("database")
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

/// The one number `sql` selects, with `$1` bound to `bind`.
pub async fn count(db: &lab_store::Db, sql: &'static str, bind: &str) -> i64 {
    lab_store::query(sql)
        .bind(bind.to_string())
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<i64, _>(0usize)
        .unwrap()
}
