//! `lab.v1.Faults` through a real tonic server on 127.0.0.1:0: the token policy, Apply /
//! List / Clear, and refusal of bad faults with nothing applied.

use std::net::SocketAddr;

use lab_chaos::spec::{FaultInjectionSpec, parse_documents};
use lab_chaos::{AdminAuth, FaultLayer, FaultSet, FaultsAdmin, admin_server};
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::lab::v1::{ApplyFaultRequest, ClearFaultRequest, Fault, ListFaultsRequest};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request};

const TOKEN: &str = "s3cret-token";

struct TestAdmin {
    faults: FaultSet,
    client: FaultsClient<Channel>,
    _stop: oneshot::Sender<()>,
}

/// Serves the admin API for a payments fault set on 127.0.0.1:0, behind a fault layer (as
/// the admin port never is, so that a test can show the layer acting on a real server).
async fn spawn_admin(auth: AdminAuth) -> TestAdmin {
    let faults = FaultSet::new("payments", &mut Registry::default());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .layer(FaultLayer::new(faults.clone(), false))
        .add_service(admin_server(FaultsAdmin::new(faults.clone(), auth)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    let client = FaultsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    TestAdmin {
        faults,
        client,
        _stop: stop,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(token) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    req
}

fn spec(service: &str, rest: &str) -> FaultInjectionSpec {
    let yaml = format!(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata:\n  name: t\nspec:\n  selector: {{ service: {service} }}\n{rest}"
    );
    parse_documents(&yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
        .spec
}

fn payment_errors() -> Fault {
    spec(
        "payments",
        "  action: error\n  error: { code: UNAVAILABLE, probability: 0.2 }\n  duration: 60s\n  seed: 42\n",
    )
    .to_fault("payment-errors", None)
}

/// Each RPC, with `token`, answers `code`.
async fn assert_every_rpc(admin: &mut TestAdmin, token: Option<&str>, code: Code) {
    let apply = admin
        .client
        .apply(with_token(
            ApplyFaultRequest {
                fault: Some(payment_errors()),
            },
            token,
        ))
        .await;
    let clear = admin
        .client
        .clear(with_token(ClearFaultRequest::default(), token))
        .await;
    let list = admin
        .client
        .list(with_token(ListFaultsRequest {}, token))
        .await;
    for (rpc, result) in [
        ("Apply", apply.err()),
        ("Clear", clear.err()),
        ("List", list.err()),
    ] {
        assert_eq!(
            result.as_ref().map(|s| s.code()),
            Some(code),
            "{rpc}: {result:?}"
        );
    }
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let mut admin = spawn_admin(AdminAuth::Token(TOKEN.into())).await;
    assert_every_rpc(&mut admin, None, Code::Unauthenticated).await;
    assert_every_rpc(&mut admin, Some("wrong"), Code::Unauthenticated).await;
    assert_every_rpc(&mut admin, Some("s3cret-tokeN"), Code::Unauthenticated).await;
    assert_every_rpc(&mut admin, Some(""), Code::Unauthenticated).await;
    // Not a bearer token.
    let mut req = Request::new(ListFaultsRequest {});
    req.metadata_mut()
        .insert("authorization", TOKEN.parse().unwrap());
    assert_eq!(
        admin.client.list(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(admin.faults.is_empty(), "an unauthenticated Apply applied");
}

#[tokio::test]
async fn no_token_configured_refuses_every_call_saying_how_to_configure_one() {
    let mut admin = spawn_admin(AdminAuth::Refuse).await;
    assert_every_rpc(&mut admin, None, Code::Unauthenticated).await;
    assert_every_rpc(&mut admin, Some(TOKEN), Code::Unauthenticated).await;
    let status = admin
        .client
        .list(Request::new(ListFaultsRequest {}))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("--admin-token-file"),
        "{status:?}"
    );
    assert!(status.message().contains("--insecure-admin"), "{status:?}");
    assert!(admin.faults.is_empty());
}

#[test]
fn auth_from_config() {
    assert_eq!(
        AdminAuth::from_config(Some("t"), true),
        AdminAuth::Token("t".into())
    );
    assert_eq!(AdminAuth::from_config(Some(""), false), AdminAuth::Refuse);
    assert_eq!(AdminAuth::from_config(None, false), AdminAuth::Refuse);
    assert_eq!(AdminAuth::from_config(None, true), AdminAuth::Insecure);
    assert!(!format!("{:?}", AdminAuth::Token("t0ken".into())).contains("t0ken"));
}

#[tokio::test]
async fn with_the_right_token_apply_list_and_clear_work() {
    let mut admin = spawn_admin(AdminAuth::Token(TOKEN.into())).await;
    let now_ms = admin.faults.epoch_ms(tokio::time::Instant::now());
    let applied = admin
        .client
        .apply(with_token(
            ApplyFaultRequest {
                fault: Some(payment_errors()),
            },
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    let in_ms = applied.expires_at_ms - now_ms;
    assert!((59_000..=61_000).contains(&in_ms), "expires in {in_ms} ms");

    let listed = admin
        .client
        .list(with_token(ListFaultsRequest {}, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .faults;
    assert_eq!(listed.len(), 1);
    let active = &listed[0];
    let fault = active.fault.as_ref().unwrap();
    assert_eq!(fault.name, "payment-errors");
    assert_eq!(fault.kind, "error");
    assert_eq!(fault.seed, 42);
    assert_eq!(fault.duration_ms, 60_000);
    assert_eq!(fault.params_json, payment_errors().params_json);
    assert_eq!(active.expires_at_ms, applied.expires_at_ms);
    assert_eq!(active.expires_at_ms - fault.start_at_ms, 60_000);

    // The fault is in force in the service's set.
    let views = admin.faults.list();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].spec.error.as_ref().unwrap().probability, 0.2);

    let cleared = admin
        .client
        .clear(with_token(
            ClearFaultRequest {
                name: "payment-errors".into(),
            },
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner()
        .cleared;
    assert_eq!(cleared, 1);
    assert!(admin.faults.is_empty());

    // Empty name clears all.
    for name in ["a", "b"] {
        admin
            .client
            .apply(with_token(
                ApplyFaultRequest {
                    fault: Some(payment_errors().tap_name(name)),
                },
                Some(TOKEN),
            ))
            .await
            .unwrap();
    }
    let cleared = admin
        .client
        .clear(with_token(ClearFaultRequest::default(), Some(TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .cleared;
    assert_eq!(cleared, 2);
}

trait TapName {
    fn tap_name(self, name: &str) -> Self;
}

impl TapName for Fault {
    fn tap_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

#[tokio::test]
async fn a_scheduled_fault_waits_for_its_start() {
    let mut admin = spawn_admin(AdminAuth::Insecure).await;
    let mut fault = payment_errors();
    fault.start_at_ms = admin.faults.epoch_ms(tokio::time::Instant::now()) + 60_000;
    let applied = admin
        .client
        .apply(Request::new(ApplyFaultRequest {
            fault: Some(fault.clone()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.expires_at_ms, fault.start_at_ms + 60_000);
    let views = admin.faults.list();
    assert!(!views[0].started);
    assert_eq!(views[0].start_at_ms, fault.start_at_ms);
}

#[tokio::test]
async fn bad_faults_are_invalid_argument_naming_the_field_and_nothing_is_applied() {
    let mut admin = spawn_admin(AdminAuth::Token(TOKEN.into())).await;
    let mut cases: Vec<(Option<Fault>, &str)> = Vec::new();
    cases.push((None, "fault: required"));
    let mut f = payment_errors();
    f.params_json = f.params_json.replace("0.2", "1.5");
    cases.push((
        Some(f),
        "spec.error.probability: must be between 0 and 1, got 1.5",
    ));
    let mut f = payment_errors();
    f.kind = "explode".into();
    cases.push((Some(f), "kind: unknown action \"explode\""));
    let mut f = payment_errors();
    f.params_json = f
        .params_json
        .replace("\"mode\":\"all\"", "\"mode\":\"all\",\"colour\":1");
    cases.push((Some(f), "unknown field `colour`"));
    let mut f = payment_errors();
    f.duration_ms = -5;
    cases.push((Some(f), "duration_ms: must be greater than 0, got -5"));
    let mut f = payment_errors();
    f.params_json = f.params_json.replace("UNAVAILABLE", "NOPE");
    cases.push((Some(f), "spec.error.code: unknown gRPC code \"NOPE\""));
    cases.push((
        Some(spec("inventory", "  action: outage\n  duration: 10s\n").to_fault("other", None)),
        "spec.selector.service: this is payments",
    ));
    cases.push((
        Some(
            spec(
                "inventory",
                "  action: lock-hold\n  lockHold: { holdMs: 100 }\n  duration: 10s\n",
            )
            .to_fault("hold", None)
            .tap_params(|p| p.replace("inventory", "payments")),
        ),
        "spec.selector.service: action lock-hold applies only to inventory",
    ));
    for (fault, text) in cases {
        let status = admin
            .client
            .apply(with_token(ApplyFaultRequest { fault }, Some(TOKEN)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(text),
            "{text:?} not in {status:?}"
        );
    }
    assert!(admin.faults.is_empty(), "a refused fault was applied");
    let listed = admin
        .client
        .list(with_token(ListFaultsRequest {}, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .faults;
    assert!(listed.is_empty());
}

trait TapParams {
    fn tap_params(self, f: impl FnOnce(&str) -> String) -> Self;
}

impl TapParams for Fault {
    fn tap_params(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.params_json = f(&self.params_json);
        self
    }
}

#[tokio::test]
async fn the_fault_layer_acts_on_a_real_server_and_spares_the_admin_api() {
    let mut admin = spawn_admin(AdminAuth::Insecure).await;
    // The admin API is exempt from a default outage...
    let outage = spec("payments", "  action: outage\n  duration: 60s\n").to_fault("down", None);
    admin
        .client
        .apply(Request::new(ApplyFaultRequest {
            fault: Some(outage),
        }))
        .await
        .unwrap();
    admin
        .client
        .list(Request::new(ListFaultsRequest {}))
        .await
        .expect("the admin API must answer during an outage");
    // ... but not from one that names it; the client sees the injected status.
    let named = spec(
        "payments",
        "  action: error\n  error: { code: DATA_LOSS, probability: 1 }\n  methods: [/lab.v1.Faults/List]\n  duration: 60s\n",
    )
    .to_fault("list-fails", None);
    admin
        .client
        .apply(Request::new(ApplyFaultRequest { fault: Some(named) }))
        .await
        .unwrap();
    let status = admin
        .client
        .list(Request::new(ListFaultsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("injected error"), "{status:?}");
    assert_eq!(status.metadata().get("x-lab-fault").unwrap(), "list-fails");
    assert_eq!(admin.faults.injected(lab_chaos::spec::Action::Error), 1);
}
