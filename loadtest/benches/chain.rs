//! PlaceOrder through the whole chain, against a bare tonic unary chain of the same depth
//! measured in the same run.
//!
//! `cargo bench -p frlab --bench chain` (or `make bench`). Each chain gets the same closed-loop
//! load (CONCURRENCY callers, unique idempotency keys) for MEASURE after WARMUP, in ROUNDS
//! rounds; printed are throughput, p50, p99 and this process's CPU time per order, each as a
//! ratio to the bare chain of the same round, the median throughput ratio per chain with its
//! goal, and the median CPU per order. The bench fails (exit 1) if any chain returned an
//! error, warm-up included. Every order is for one product unless
//! `FRLAB_BENCH_PRODUCTS` (up to 5) spreads the callers over more; `FRLAB_BENCH_ONLY=<text>`
//! runs only the other chains whose name contains it (the bare chain always runs), e.g. under
//! `perf record`. Payments' modelled service
//! time is set to zero so the ratio shows what our code (validation, storage, idempotency,
//! outbox, metrics) costs over the tonic plumbing alone.
//!
//! The bare chain: Gateway.PlaceOrder -> Orders.CreateOrder -> Inventory.Reserve then
//! Payments.Charge, each handler answering at once, on plain tonic servers.
//!
//! The floor chains (`floor SQLite`, `floor Postgres`): the same plain servers, each also
//! writing per order what the lab's service writes, with the services' own migrations and
//! statements (orders' three saga steps with the outbox row, inventory's and payments'
//! transactions, notifications' delivery: six commits), and orders delivering the event to
//! a plain Notifications server itself: five calls per order, as in the lab, and none of the
//! lab's layers (client stacks, server layers, idempotency keys, metrics, the saga's task,
//! the relay's outbox reads and marks). Their ratio bounds what the lab can reach on that
//! database without fewer calls or fewer commits per order. Three more SQLite floors price
//! two design changes: `1-commit` writes the order and its outbox row in one commit after
//! Charge instead of three (no saga durability points), `no-Deliver` makes no fifth call and
//! no delivery commit (as close as batched deliveries could come), and the last drops both.
//!
//! # Where the CPU of one order went with sqlx's SQLite driver (`bfb81e3`)
//!
//! (What changed since, and the profile after it, are in README.md, "What the lab's own
//! code costs": SQLite now runs on the caller's thread; with every server's sockets
//! TCP_NODELAY since 702f019 the bare chain is 2-3x faster and the lab at about 0.25x. The
//! current per-layer table, in microseconds per order for both chains, comes from a
//! `perf record` of this bench and `scripts/chain-profile.py`, whose docs say how.)
//!
//! Per service: each service as its own process (`frlab up`, release, SQLite, commit
//! `bfb81e3`), 1 500 orders at 100/s open loop, CPU time (user + system) read from
//! `/proc/<pid>/stat` before and after:
//!
//! | process | CPU per order |
//! |---|---|
//! | gateway | 0.72 ms |
//! | orders | 2.69 ms |
//! | inventory | 1.03 ms |
//! | payments | 1.01 ms |
//! | notifications | 0.45 ms |
//! | all five | 5.9 ms (bare chain: about 0.66 ms, 2 cores / 3 031 orders/s) |
//!
//! Per layer: `perf record -e cpu-clock -F 499` of this bench (same commit, all three
//! chains), samples grouped by the crate of the function they fell in:
//!
//! | where | share of samples |
//! |---|---|
//! | kernel: scheduler wake-ups, loopback TCP, file I/O | 38.0 % |
//! | h2 | 9.6 % |
//! | malloc / free | 8.7 % |
//! | tokio | 7.0 % |
//! | SQLite (C) | 4.6 % |
//! | core, alloc, std (copies, hashing, formatting) | 6.6 % |
//! | memcpy / memcmp | 3.4 % |
//! | tonic, http, hyper, bytes, prost, the generated messages | 8.8 % |
//! | sqlx (core, sqlite, postgres) | 2.3 % |
//! | tracing | 1.9 % |
//! | prometheus-client | 0.2 % |
//! | lab-resilience, lab-runtime, lab-store, lab-chaos, the five services | 2.0 % |
//! | fred (Redis) | 0.4 % |
//!
//! In the orders process alone (`perf record -p`, 100 orders/s) the kernel is 57 % and
//! most of it is switching threads: sqlx runs each SQLite connection on a thread of its
//! own, so every statement is two thread hand-offs, and orders runs about eight statements
//! per order. The layers of our own (resilience stack, metrics, validation) are a few
//! percent; the hops and hand-offs were the cost.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab_proto::shop::v1 as shop;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_store::Db;
use orders::saga::Saga;
use shop::gateway_server::{Gateway, GatewayServer};
use shop::inventory_client::InventoryClient;
use shop::inventory_server::{Inventory, InventoryServer};
use shop::notifications_client::NotificationsClient;
use shop::notifications_server::{Notifications, NotificationsServer};
use shop::orders_client::OrdersClient;
use shop::orders_server::{Orders, OrdersServer};
use shop::payments_client::PaymentsClient;
use shop::payments_server::{Payments, PaymentsServer};
use support::{Backend, Stack};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const CONCURRENCY: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
/// Each chain is measured this many times, every chain in turn, and ratios are taken within
/// a round: bare tonic's own throughput moved between 2 300 and 4 200 orders/s from one
/// run to the next here.
const ROUNDS: usize = 3;

struct BareGateway(OrdersClient<Channel>);
struct BareOrders {
    inventory: InventoryClient<Channel>,
    payments: PaymentsClient<Channel>,
    /// In a floor chain.
    writes: Option<Writes>,
}
/// What orders writes and calls in a floor chain.
struct Writes {
    db: Db,
    /// [`Design::saga_steps`].
    saga_steps: bool,
    /// None when the design delivers no events.
    notifications: Option<NotificationsClient<Channel>>,
}

/// What a floor chain writes and calls per order beyond the bare chain's four calls.
#[derive(Clone, Copy)]
struct Design {
    /// Orders commits PENDING before Reserve and RESERVED before Charge, as the lab's saga
    /// does; without, the order (with the same statements) and its outbox row are one
    /// commit after Charge.
    saga_steps: bool,
    /// Orders delivers each event with a call of its own and Notifications commits it, as
    /// the lab's relay does (DESIGN.md); without, neither.
    deliver: bool,
}

/// The lab's design.
const LAB_DESIGN: Design = Design {
    saga_steps: true,
    deliver: true,
};

/// Orders' first saga step.
fn insert_saga(saga: &Saga) -> lab_store::query::Query {
    lab_store::query(orders::sql::INSERT_SAGA)
        .bind(&saga.order_id)
        .bind(&saga.key)
        .bind(&saga.key)
        .bind(&saga.customer_id)
        .bind(saga.items_json())
        .bind(DRIVER)
        .bind(saga.created_at_ms)
}

/// Orders' second saga step.
fn mark_reserved(saga: &Saga) -> lab_store::query::Query {
    lab_store::query(orders::sql::MARK_RESERVED)
        .bind(&saga.order_id)
        .bind(DRIVER)
        .bind(saga.total.minor_units)
        .bind(&saga.total.currency)
        .bind(lab_store::now_ms())
}
/// With a database in the floor chain.
struct BareInventory(Option<Db>);
struct BarePayments(Option<Db>);
struct BareNotifications(Db);

/// The floor chain's value of `orders.driver`.
const DRIVER: &str = "bench";

fn db_error(e: lab_store::DbError) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Gateway for BareGateway {
    async fn place_order(
        &self,
        r: Request<shop::PlaceOrderRequest>,
    ) -> Result<Response<shop::PlaceOrderResponse>, Status> {
        let r = r.into_inner();
        let created = self
            .0
            .clone()
            .create_order(shop::CreateOrderRequest {
                idempotency_key: r.idempotency_key,
                customer_id: r.customer_id,
                items: r.items,
            })
            .await?
            .into_inner();
        Ok(Response::new(shop::PlaceOrderResponse {
            order: created.order,
        }))
    }
    async fn get_order(
        &self,
        _: Request<shop::GetOrderRequest>,
    ) -> Result<Response<shop::Order>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

#[tonic::async_trait]
impl Orders for BareOrders {
    async fn create_order(
        &self,
        r: Request<shop::CreateOrderRequest>,
    ) -> Result<Response<shop::CreateOrderResponse>, Status> {
        let r = r.into_inner();
        // With the lab's design the floor chain writes what the lab's saga writes, at the
        // same points: PENDING before Reserve, RESERVED before Charge, CONFIRMED with its
        // outbox row in one transaction, then delivers the event. The relay's work around the
        // delivery (the outbox read, the batched mark) is left out: the floor does a little
        // less.
        let mut saga = self
            .writes
            .as_ref()
            .map(|_| Saga::new(&r.idempotency_key, true, &r.customer_id, r.items.clone()));
        let order_id = saga
            .as_ref()
            .map_or_else(|| r.idempotency_key.clone(), |s| s.order_id.clone());
        let steps = self.writes.as_ref().filter(|w| w.saga_steps);
        if let (Some(w), Some(saga)) = (steps, &saga) {
            insert_saga(saga).execute(&w.db).await.map_err(db_error)?;
        }
        let reserved = self
            .inventory
            .clone()
            .reserve(shop::ReserveRequest {
                order_id: order_id.clone(),
                items: r.items.clone(),
            })
            .await?
            .into_inner();
        if let Some(saga) = &mut saga {
            saga.total = reserved.total.clone().unwrap_or_default();
        }
        if let (Some(w), Some(saga)) = (steps, &saga) {
            mark_reserved(saga).execute(&w.db).await.map_err(db_error)?;
        }
        let charged = self
            .payments
            .clone()
            .charge(shop::ChargeRequest {
                order_id: order_id.clone(),
                amount: reserved.total.clone(),
                idempotency_key: r.idempotency_key.clone(),
            })
            .await?
            .into_inner();
        if let (Some(w), Some(saga)) = (&self.writes, &saga) {
            let now = lab_store::now_ms();
            let event = orders::saga::confirmed_event(saga);
            let postgres = w.db.backend() == lab_store::Backend::Postgres;
            // On Postgres the lab confirms with one statement.
            let confirm_pg = || {
                lab_store::query(orders::sql::CONFIRM_WITH_EVENT_PG)
                    .bind(&order_id)
                    .bind(DRIVER)
                    .bind(&charged.charge_id)
                    .bind(now)
                    .bind(&event.event_id)
                    .bind(&event.kind)
                    .bind(&event.payload_json)
                    .bind(None::<String>)
            };
            if postgres && w.saga_steps {
                confirm_pg().execute(&w.db).await.map_err(db_error)?;
            } else {
                let mut tx = w.db.begin().await.map_err(db_error)?;
                if !w.saga_steps {
                    // The whole saga in the one commit.
                    insert_saga(saga).execute(&mut tx).await.map_err(db_error)?;
                    mark_reserved(saga)
                        .execute(&mut tx)
                        .await
                        .map_err(db_error)?;
                }
                if postgres {
                    confirm_pg().execute(&mut tx).await.map_err(db_error)?;
                } else {
                    lab_store::query(orders::sql::CONFIRM)
                        .bind(&order_id)
                        .bind(DRIVER)
                        .bind(&charged.charge_id)
                        .bind(now)
                        .execute(&mut tx)
                        .await
                        .map_err(db_error)?;
                    lab_store::query(orders::sql::INSERT_OUTBOX)
                        .bind(&event.event_id)
                        .bind(&order_id)
                        .bind(&event.kind)
                        .bind(&event.payload_json)
                        .bind(now)
                        .bind(None::<String>)
                        .execute(&mut tx)
                        .await
                        .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
            }
            if let Some(notifications) = &w.notifications {
                notifications.clone().deliver(event).await?;
            }
        }
        Ok(Response::new(shop::CreateOrderResponse {
            order: Some(shop::Order {
                order_id,
                idempotency_key: r.idempotency_key,
                customer_id: r.customer_id,
                items: r.items,
                total: reserved.total,
                status: shop::OrderStatus::Confirmed as i32,
                charge_id: charged.charge_id,
                ..Default::default()
            }),
        }))
    }
    async fn get_order(
        &self,
        _: Request<shop::GetOrderRequest>,
    ) -> Result<Response<shop::Order>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

#[tonic::async_trait]
impl Inventory for BareInventory {
    async fn reserve(
        &self,
        r: Request<shop::ReserveRequest>,
    ) -> Result<Response<shop::ReserveResponse>, Status> {
        let r = r.into_inner();
        let Some(db) = &self.0 else {
            return Ok(Response::new(shop::ReserveResponse {
                reservation_id: r.order_id,
                total: Some(shop::Money {
                    currency: "USD".into(),
                    minor_units: 199,
                }),
                replayed: false,
            }));
        };
        // Inventory's transaction, as the lab runs it for one line item.
        use inventory::sql;
        let item = r.items.first().cloned().unwrap_or_default();
        let quantity = i64::from(item.quantity);
        let mut tx = db.begin().await.map_err(db_error)?;
        let row = lab_store::query(sql::PRICE)
            .bind(&item.product_id)
            .fetch_one(&mut tx)
            .await
            .map_err(db_error)?;
        let price: i64 = row.try_get("price_minor").map_err(db_error)?;
        let currency: String = row.try_get("currency").map_err(db_error)?;
        let reservation_id = uuid::Uuid::now_v7().to_string();
        lab_store::query(sql::INSERT_RESERVATION)
            .bind(&r.order_id)
            .bind(&reservation_id)
            .bind(lab_store::now_ms())
            .bind(price * quantity)
            .execute(&mut tx)
            .await
            .map_err(db_error)?;
        lab_store::query(sql::INSERT_ITEM)
            .bind(&r.order_id)
            .bind(&item.product_id)
            .bind(quantity)
            .execute(&mut tx)
            .await
            .map_err(db_error)?;
        lab_store::query(sql::TAKE_STOCK)
            .bind(quantity)
            .bind(&item.product_id)
            .bind(price)
            .execute(&mut tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(shop::ReserveResponse {
            reservation_id,
            total: Some(shop::Money {
                currency,
                minor_units: price * quantity,
            }),
            replayed: false,
        }))
    }
    async fn release(
        &self,
        _: Request<shop::ReleaseRequest>,
    ) -> Result<Response<shop::ReleaseResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_stock(
        &self,
        _: Request<shop::GetStockRequest>,
    ) -> Result<Response<shop::GetStockResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

#[tonic::async_trait]
impl Payments for BarePayments {
    async fn charge(
        &self,
        r: Request<shop::ChargeRequest>,
    ) -> Result<Response<shop::ChargeResponse>, Status> {
        let r = r.into_inner();
        let Some(db) = &self.0 else {
            return Ok(Response::new(shop::ChargeResponse {
                charge_id: r.order_id,
                replayed: false,
            }));
        };
        // Payments' transaction, as the lab runs it: the order's row lock, then the charge.
        use payments::sql;
        let amount = r.amount.unwrap_or_default();
        let charge_id = uuid::Uuid::now_v7().to_string();
        let mut tx = db.begin().await.map_err(db_error)?;
        lab_store::query(sql::LOCK_ORDER)
            .bind(&r.order_id)
            .fetch_one(&mut tx)
            .await
            .map_err(db_error)?;
        lab_store::query(sql::INSERT_CHARGE)
            .bind(&charge_id)
            .bind(&r.order_id)
            .bind(&r.idempotency_key)
            .bind(&r.idempotency_key)
            .bind(amount.minor_units)
            .bind(&amount.currency)
            .bind(0_i64)
            .bind(lab_store::now_ms())
            .execute(&mut tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Response::new(shop::ChargeResponse {
            charge_id,
            replayed: false,
        }))
    }
    async fn refund(
        &self,
        _: Request<shop::RefundRequest>,
    ) -> Result<Response<shop::RefundResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_charge(
        &self,
        _: Request<shop::GetChargeRequest>,
    ) -> Result<Response<shop::ChargeRecord>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

#[tonic::async_trait]
impl Notifications for BareNotifications {
    async fn deliver(
        &self,
        r: Request<shop::DeliverRequest>,
    ) -> Result<Response<shop::DeliverResponse>, Status> {
        let r = r.into_inner();
        lab_store::query(notifications::sql::DELIVER)
            .bind(&r.event_id)
            .bind(&r.order_id)
            .bind(&r.kind)
            .bind(&r.payload_json)
            .bind(lab_store::now_ms())
            .fetch_one(&self.0)
            .await
            .map_err(db_error)?;
        Ok(Response::new(shop::DeliverResponse::default()))
    }
    async fn list_deliveries(
        &self,
        _: Request<shop::ListDeliveriesRequest>,
    ) -> Result<Response<shop::ListDeliveriesResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// Serves `router` on 127.0.0.1:0 for the rest of the process.
async fn serve(router: tonic::transport::server::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(lab_runtime::host::incoming(listener)));
    addr
}

fn channel(addr: SocketAddr) -> Channel {
    lab_runtime::client::lazy_channel("bench", &format!("http://{addr}")).unwrap()
}

/// The services with a database, in the order of [`bare_chain`]'s configs.
const FLOOR_SERVICES: [&str; 4] = ["orders", "inventory", "payments", "notifications"];

/// The bare chain; with `databases` (one per [`FLOOR_SERVICES`]), a floor chain of `design`:
/// the same servers, each writing what the lab's service writes per order (the services'
/// own migrations and statements), and orders delivering the event with a fifth call. Also
/// answers the databases, to close once measured (a Postgres pool holds 16 connections).
async fn bare_chain(
    databases: Option<&[lab_store::DbConfig]>,
    design: Design,
) -> (Channel, Vec<Db>) {
    let server = tonic::transport::Server::builder;
    // Notifications' database only when the design delivers events.
    let services = if design.deliver { 4 } else { 3 };
    let mut opened = Vec::new();
    for (cfg, migrations) in databases
        .unwrap_or_default()
        .iter()
        .zip([
            orders::sql::MIGRATIONS,
            inventory::sql::MIGRATIONS,
            payments::sql::MIGRATIONS,
            notifications::sql::MIGRATIONS,
        ])
        .take(services)
    {
        opened.push(Db::connect(cfg, migrations).await.unwrap());
    }
    let mut dbs = opened.iter().cloned();
    let (orders_db, inventory_db, payments_db) = (dbs.next(), dbs.next(), dbs.next());
    let mut notifications = None;
    if let Some(db) = dbs.next() {
        let addr =
            serve(server().add_service(NotificationsServer::new(BareNotifications(db)))).await;
        notifications = Some(NotificationsClient::new(channel(addr)));
    }
    let writes = orders_db.map(|db| Writes {
        db,
        saga_steps: design.saga_steps,
        notifications,
    });
    let inventory =
        serve(server().add_service(InventoryServer::new(BareInventory(inventory_db)))).await;
    let payments =
        serve(server().add_service(PaymentsServer::new(BarePayments(payments_db)))).await;
    let orders = serve(server().add_service(OrdersServer::new(BareOrders {
        inventory: InventoryClient::new(channel(inventory)),
        payments: PaymentsClient::new(channel(payments)),
        writes,
    })))
    .await;
    let gateway = serve(
        server().add_service(GatewayServer::new(BareGateway(OrdersClient::new(channel(
            orders,
        ))))),
    )
    .await;
    (channel(gateway), opened)
}

struct Measured {
    throughput: f64,
    /// This process's CPU time (all threads, user + system) per order placed while
    /// measuring: every chain's services and the callers run in it, the servers of the other
    /// chains idle. Where both chains keep the machine's cores busy, the throughput ratio is
    /// the inverse of this one's ratio, so it says what a goal asks of the code (0.5x: at
    /// most twice the bare chain's CPU per order). The Postgres and Redis servers' own CPU
    /// is not in it.
    cpu_per_order: Duration,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// The first error's status, to say what failed.
    first_error: Option<String>,
}

/// Closed loop: CONCURRENCY callers place orders back to back.
/// How many of inventory's products the orders spread over: `FRLAB_BENCH_PRODUCTS` (1 to
/// 5, default 1). With one, every reservation queues on one product's row lock, held until
/// its commit; more shows how much of a chain's throughput that one row costs.
fn products() -> usize {
    std::env::var("FRLAB_BENCH_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=5).contains(n))
        .unwrap_or(1)
}

async fn measure(gateway: Channel) -> Measured {
    let products = products();
    let run = |caller: usize, until: Instant, record: bool| {
        let gateway = gateway.clone();
        let product_id = format!("sku-{}", caller % products + 1);
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            let mut client = GatewayClient::new(gateway);
            while Instant::now() < until {
                let started = Instant::now();
                let req = shop::PlaceOrderRequest {
                    idempotency_key: uuid::Uuid::new_v4().to_string(),
                    customer_id: "bench".into(),
                    items: vec![shop::LineItem {
                        product_id: product_id.clone(),
                        quantity: 1,
                    }],
                };
                match client.place_order(req).await {
                    Ok(_) if record => latencies.push(started.elapsed()),
                    Ok(_) => {}
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
            (latencies, errors, first_error)
        }
    };
    let warm = Instant::now() + WARMUP;
    let warmed = futures::future::join_all((0..CONCURRENCY).map(|c| run(c, warm, false))).await;
    let started = Instant::now();
    let cpu_before = frlab::load::cpu_time();
    let results =
        futures::future::join_all((0..CONCURRENCY).map(|c| run(c, started + MEASURE, true))).await;
    let elapsed = started.elapsed();
    let cpu = frlab::load::cpu_time().saturating_sub(cpu_before);
    // Warm-up errors count too: a healthy chain returns none.
    let warm_errors: usize = warmed.iter().map(|(_, e, _)| e).sum();
    let errors = warm_errors + results.iter().map(|(_, e, _)| e).sum::<usize>();
    let first_error = warmed
        .iter()
        .chain(&results)
        .find_map(|(_, _, f)| f.clone());
    let mut all: Vec<Duration> = results.into_iter().flat_map(|(l, _, _)| l).collect();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let orders = u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
    Measured {
        cpu_per_order: cpu / orders,
        throughput: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
        first_error,
    }
}

/// Measures a floor chain of `design` on `databases`, then closes them.
async fn measure_floor(databases: &[lab_store::DbConfig], design: Design) -> Measured {
    let (gateway, dbs) = bare_chain(Some(databases), design).await;
    let measured = measure(gateway).await;
    for db in dbs {
        db.close().await;
    }
    measured
}

fn row(name: &str, round: usize, m: &Measured, bare: &Measured) {
    println!(
        "{name:<32} {round:>5} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>9.0}   {:>6.3} {:>6.2} {:>6.2} {:>6.2}",
        m.throughput,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
        m.errors,
        m.cpu_per_order.as_secs_f64() * 1e6,
        m.throughput / bare.throughput,
        m.p50.as_secs_f64() / bare.p50.as_secs_f64(),
        m.p99.as_secs_f64() / bare.p99.as_secs_f64(),
        m.cpu_per_order.as_secs_f64() / bare.cpu_per_order.as_secs_f64(),
    );
}

/// What a chain runs on.
#[derive(Clone, Copy)]
enum On {
    Bare,
    /// The bare chain writing what `Design` writes, to this backend's database.
    Floor(Backend, Design),
    /// The lab's five services on this backend.
    Lab(Backend),
}

/// One chain's measurement in every round.
struct Chain {
    name: &'static str,
    on: On,
    /// The throughput ratio to the bare chain the goal asks for, if any.
    goal: Option<f64>,
    rounds: Vec<Measured>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let zero_service_time = [
            "--service-time-p50-ms",
            "0",
            "--service-time-p95-ms",
            "0",
            "--slots",
            "10000",
        ];
        println!(
            "PlaceOrder, {CONCURRENCY} closed-loop callers over {} product(s), {}s after {}s \
             warm-up, {} cores, {ROUNDS} rounds (bare, then SQLite and Postgres, floor and lab, in turn; a fresh stack \
             each time)",
            products(),
            MEASURE.as_secs(),
            WARMUP.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        use Backend::{Embedded, PostgresRedis};
        // The lab's design without the saga's first two commits, without the delivery, and
        // without both: what each of those design changes could give at most.
        let one_commit = Design {
            saga_steps: false,
            ..LAB_DESIGN
        };
        let no_deliver = Design {
            deliver: false,
            ..LAB_DESIGN
        };
        let neither = Design {
            saga_steps: false,
            deliver: false,
        };
        let chain = |name, goal, on| Chain {
            name,
            goal,
            on,
            rounds: Vec::new(),
        };
        let mut chains = [
            chain("bare tonic", None, On::Bare),
            chain("floor SQLite", None, On::Floor(Embedded, LAB_DESIGN)),
            chain("floor SQLite 1-commit", None, On::Floor(Embedded, one_commit)),
            chain("floor SQLite no-Deliver", None, On::Floor(Embedded, no_deliver)),
            chain("floor SQLite 1-commit no-Deliver", None, On::Floor(Embedded, neither)),
            chain("lab, SQLite + memory", Some(0.5), On::Lab(Embedded)),
            chain("floor Postgres", None, On::Floor(PostgresRedis, LAB_DESIGN)),
            chain("lab, Postgres + Redis", Some(0.3), On::Lab(PostgresRedis)),
        ];
        let only = std::env::var("FRLAB_BENCH_ONLY").ok();
        let runs = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
        let (bare, _) = bare_chain(None, LAB_DESIGN).await;
        // The floor chains' SQLite files and Postgres schemas, kept to the end (their servers
        // run to the end too).
        let mut floor_files = Vec::new();
        let mut floor_schemas = Vec::new();
        for round in 1..=ROUNDS {
            eprintln!("round {round}/{ROUNDS}");
            chains[0].rounds.push(measure(bare.clone()).await);
            for chain in chains[1..].iter_mut().filter(|c| runs(c.name)) {
                let measured = match chain.on {
                    On::Bare => unreachable!("the bare chain is measured first"),
                    On::Floor(Backend::Embedded, design) => {
                        let dir = tempfile::tempdir().unwrap();
                        let configs = FLOOR_SERVICES.map(|service| lab_store::DbConfig {
                            url: lab_store::sqlite_url_for(dir.path(), service),
                            schema: None,
                            max_connections: 1,
                        });
                        floor_files.push(dir);
                        measure_floor(&configs, design).await
                    }
                    On::Floor(Backend::PostgresRedis, design) => {
                        let mut configs = Vec::new();
                        for service in FLOOR_SERVICES {
                            let mut cfg = lab_store::testing::postgres_test_config(service).await;
                            // As the services' pools (`ServiceConfig::database`).
                            cfg.max_connections = 16;
                            configs.push(cfg);
                        }
                        let measured = measure_floor(&configs, design).await;
                        floor_schemas.extend(configs);
                        measured
                    }
                    On::Lab(backend) => {
                        let stack = Stack::start_with(backend, &zero_service_time).await;
                        let measured = measure(stack.gateway.channel()).await;
                        stack.stop().await;
                        measured
                    }
                };
                chain.rounds.push(measured);
            }
        }
        for cfg in &floor_schemas {
            lab_store::testing::drop_schema(cfg).await;
        }
        // The chains that ran (bare always does, first).
        let measured: Vec<&Chain> = chains.iter().filter(|c| !c.rounds.is_empty()).collect();
        println!(
            "\n{:<32} {:>5} {:>9} {:>8} {:>8} {:>7} {:>9}   {:>6} {:>6} {:>6} {:>6}",
            "chain",
            "round",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU µs/o",
            "x tput",
            "x p50",
            "x p99",
            "x CPU"
        );
        for round in 0..ROUNDS {
            for chain in &measured {
                row(
                    chain.name,
                    round + 1,
                    &chain.rounds[round],
                    &chains[0].rounds[round],
                );
            }
        }
        // Each ratio against the bare chain of its own round (this machine's speed drifts
        // by tens of percent between minutes); the median of the rounds is the result.
        println!("\nmedian of the rounds' throughput ratios:");
        for chain in &measured[1..] {
            let ratio = median(
                chain
                    .rounds
                    .iter()
                    .zip(&chains[0].rounds)
                    .map(|(m, bare)| m.throughput / bare.throughput)
                    .collect(),
            );
            let verdict = chain.goal.map_or(String::new(), |goal| {
                format!(
                    " (goal >= {goal}x: {})",
                    if ratio >= goal { "met" } else { "not met" }
                )
            });
            println!("  {:<32} {ratio:.3}x{verdict}", chain.name);
        }
        println!("\nmedian of the rounds' CPU per order (this process, all threads):");
        for chain in &measured {
            let cpu = median(
                chain
                    .rounds
                    .iter()
                    .map(|m| m.cpu_per_order.as_secs_f64() * 1e6)
                    .collect(),
            );
            println!("  {:<32} {cpu:.0} µs", chain.name);
        }
        // Errors on a healthy chain are bugs, not noise.
        let failed: Vec<String> = chains
            .iter()
            .flat_map(|c| c.rounds.iter().map(move |m| (c.name, m)))
            .filter(|(_, m)| m.errors > 0)
            .map(|(name, m)| {
                format!(
                    "{name}: {} errors, first {}",
                    m.errors,
                    m.first_error.as_deref().unwrap_or("?")
                )
            })
            .collect();
        if !failed.is_empty() {
            eprintln!(
                "FAILED: a healthy chain returned errors ({})",
                failed.join("; ")
            );
            std::process::exit(1);
        }
    });
}
