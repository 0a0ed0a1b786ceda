//! The invariants read from every service's `lab.v1.Audit` after the drain: duplicates,
//! lost events, orphaned reservations, unrefunded charges of orders that did not go
//! through, unfinished sagas, wasted charges — and which of them a profile promises
//! ([`Promises`]), so a trial that breaks a promise is flagged ([`Invariants::violations`]).

use std::collections::{BTreeMap, BTreeSet};

use lab_proto::lab::v1::SnapshotResponse;
use serde::{Deserialize, Serialize};

/// One service's `lab.v1.Audit/Snapshot` answer (taken with `include_ids`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub counters: BTreeMap<String, i64>,
    pub ids: BTreeMap<String, BTreeSet<String>>,
}

impl Audit {
    /// A counter, 0 when the service did not report it.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0).max(0) as u64
    }

    /// An id set, empty when the service did not report it.
    pub fn id_set(&self, name: &str) -> BTreeSet<String> {
        self.ids.get(name).cloned().unwrap_or_default()
    }
}

impl From<&SnapshotResponse> for Audit {
    fn from(resp: &SnapshotResponse) -> Audit {
        Audit {
            counters: resp.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ids: resp
                .ids
                .iter()
                .map(|(k, list)| (k.clone(), list.ids.iter().cloned().collect()))
                .collect(),
        }
    }
}

/// The audits of the four services that keep state, read after the drain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Audits {
    pub orders: Audit,
    pub payments: Audit,
    pub notifications: Audit,
    pub inventory: Audit,
}

/// Side effects that happened more than once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicates {
    /// Idempotency keys with more than one confirmed order (orders
    /// `keys_with_duplicate_orders`): "orders created more than once per key".
    pub orders: u64,
    /// Confirmed orders beyond the first per key (orders `duplicate_orders`).
    pub extra_orders: u64,
    /// Orders charged more than once (payments `orders_charged_more_than_once`).
    pub charges: u64,
    /// Charges beyond the first per order (payments `duplicate_charges`).
    pub extra_charges: u64,
    /// Events whose Deliver arrived more than once (notifications
    /// `events_received_more_than_once`; deduplicated by event id, so this counts the
    /// duplicate deliveries the dedup absorbed).
    pub deliveries: u64,
    /// Idempotency keys with more than one order (saga) of any status (orders
    /// `keys_with_multiple_orders`): "orders created more than once per key".
    #[serde(default)]
    pub keys_with_multiple_orders: u64,
    /// Idempotency keys charged more than once, refunded or not (payments
    /// `keys_charged_more_than_once`).
    #[serde(default)]
    pub keys_charged_more_than_once: u64,
    /// Idempotency keys with more than one charge never refunded (payments
    /// `keys_with_unrefunded_duplicates`): money taken twice for one request.
    #[serde(default)]
    pub keys_with_unrefunded_duplicates: u64,
}

impl Duplicates {
    pub fn from_audits(audits: &Audits) -> Duplicates {
        Duplicates {
            orders: audits.orders.counter("keys_with_duplicate_orders"),
            extra_orders: audits.orders.counter("duplicate_orders"),
            charges: audits.payments.counter("orders_charged_more_than_once"),
            extra_charges: audits.payments.counter("duplicate_charges"),
            deliveries: audits
                .notifications
                .counter("events_received_more_than_once"),
            keys_with_multiple_orders: audits.orders.counter("keys_with_multiple_orders"),
            keys_charged_more_than_once: audits.payments.counter("keys_charged_more_than_once"),
            keys_with_unrefunded_duplicates: audits
                .payments
                .counter("keys_with_unrefunded_duplicates"),
        }
    }
}

/// Lost events: confirmed orders with no delivery after the drain
/// (`confirmed_order_ids − delivered_order_ids`).
pub fn lost_events(confirmed: &BTreeSet<String>, delivered: &BTreeSet<String>) -> u64 {
    confirmed.difference(delivered).count() as u64
}

/// Orphaned reservations: open reservations whose order is not confirmed after the drain
/// (`open_reservation_order_ids − confirmed_order_ids`).
pub fn orphaned_reservations(open: &BTreeSet<String>, confirmed: &BTreeSet<String>) -> u64 {
    open.difference(confirmed).count() as u64
}

/// Wasted work: charges completed after the caller's deadline had passed (payments
/// `charges_after_deadline`).
pub fn wasted_charges(payments: &Audit) -> u64 {
    payments.counter("charges_after_deadline")
}

/// Charges never refunded whose order is not confirmed after the drain
/// (payments `charged_order_ids`, the orders with an unrefunded charge, − orders
/// `confirmed_order_ids`): money taken for an order that did not go through.
pub fn unrefunded_unconfirmed(charged: &BTreeSet<String>, confirmed: &BTreeSet<String>) -> u64 {
    charged.difference(confirmed).count() as u64
}

/// What a profile promises beyond what every profile promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Promises {
    /// Idempotency keys on: one order and at most one kept charge per key.
    pub idempotency: bool,
    /// The transactional outbox on: every confirmed order's event delivered.
    pub outbox: bool,
}

/// The invariants of one trial, from the four audits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariants {
    pub duplicates: Duplicates,
    pub lost_events: u64,
    pub orphaned_reservations: u64,
    pub wasted_charges: u64,
    pub unrefunded_unconfirmed: u64,
    /// Sagas neither confirmed nor failed after the drain (orders `sagas_unfinished`).
    pub sagas_unfinished: u64,
}

impl Invariants {
    pub fn from_audits(audits: &Audits) -> Invariants {
        let confirmed = audits.orders.id_set("confirmed_order_ids");
        Invariants {
            duplicates: Duplicates::from_audits(audits),
            lost_events: lost_events(
                &confirmed,
                &audits.notifications.id_set("delivered_order_ids"),
            ),
            orphaned_reservations: orphaned_reservations(
                &audits.inventory.id_set("open_reservation_order_ids"),
                &confirmed,
            ),
            wasted_charges: wasted_charges(&audits.payments),
            unrefunded_unconfirmed: unrefunded_unconfirmed(
                &audits.payments.id_set("charged_order_ids"),
                &confirmed,
            ),
            sagas_unfinished: audits.orders.counter("sagas_unfinished"),
        }
    }

    /// The promises this trial broke, one line each; empty when it kept them all. Every
    /// profile runs the durable saga, so none may leave a charge of an unconfirmed order
    /// unrefunded, a reservation of an unconfirmed order open, or a saga unfinished after
    /// the drain. With idempotency no key may keep two charges or have two orders; with the
    /// outbox no confirmed order's event may be lost. (Without them duplicates and lost
    /// events are what the lab measures, not a broken promise.)
    pub fn violations(&self, promises: Promises) -> Vec<String> {
        let mut v = Vec::new();
        let mut check = |n: u64, what: &str| {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        };
        check(
            self.unrefunded_unconfirmed,
            "orders not confirmed kept an unrefunded charge",
        );
        check(
            self.orphaned_reservations,
            "reservations of unconfirmed orders stayed open",
        );
        check(
            self.sagas_unfinished,
            "sagas were unfinished after the drain",
        );
        if promises.idempotency {
            check(
                self.duplicates.keys_with_unrefunded_duplicates,
                "idempotency keys were charged more than once",
            );
            check(
                self.duplicates.keys_with_multiple_orders,
                "idempotency keys had more than one order",
            );
        }
        if promises.outbox {
            check(self.lost_events, "confirmed orders' events were lost");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn invariants_from_id_sets_and_counters() {
        let confirmed = set(&["o1", "o2", "o3", "o4"]);
        let delivered = set(&["o1", "o3", "o9"]);
        assert_eq!(lost_events(&confirmed, &delivered), 2);
        let open = set(&["o1", "o5", "o6"]);
        assert_eq!(orphaned_reservations(&open, &confirmed), 2);

        let mut audits = Audits::default();
        audits
            .orders
            .ids
            .insert("confirmed_order_ids".into(), confirmed);
        audits.orders.counters.extend([
            ("keys_with_duplicate_orders".into(), 3),
            ("duplicate_orders".into(), 4),
        ]);
        audits.payments.counters.extend([
            ("orders_charged_more_than_once".into(), 5),
            ("duplicate_charges".into(), 6),
            ("charges_after_deadline".into(), 9),
            ("keys_charged_more_than_once".into(), 2),
            ("keys_with_unrefunded_duplicates".into(), 1),
        ]);
        audits.orders.counters.extend([
            ("keys_with_multiple_orders".into(), 8),
            ("sagas_unfinished".into(), 0),
        ]);
        audits
            .payments
            .ids
            .insert("charged_order_ids".into(), set(&["o1", "o7", "o8"]));
        audits
            .notifications
            .counters
            .insert("events_received_more_than_once".into(), 7);
        audits
            .notifications
            .ids
            .insert("delivered_order_ids".into(), delivered);
        audits
            .inventory
            .ids
            .insert("open_reservation_order_ids".into(), open);
        let inv = Invariants::from_audits(&audits);
        assert_eq!(
            inv,
            Invariants {
                duplicates: Duplicates {
                    orders: 3,
                    extra_orders: 4,
                    charges: 5,
                    extra_charges: 6,
                    deliveries: 7,
                    keys_with_multiple_orders: 8,
                    keys_charged_more_than_once: 2,
                    keys_with_unrefunded_duplicates: 1,
                },
                lost_events: 2,
                orphaned_reservations: 2,
                wasted_charges: 9,
                unrefunded_unconfirmed: 2,
                sagas_unfinished: 0,
            }
        );
        // Without idempotency and outbox, duplicates and lost events are measured, not
        // promises broken; the saga's own promises hold for every profile.
        assert_eq!(
            inv.violations(Promises::default()),
            [
                "2 orders not confirmed kept an unrefunded charge",
                "2 reservations of unconfirmed orders stayed open"
            ]
        );
        let all = inv.violations(Promises {
            idempotency: true,
            outbox: true,
        });
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(all.contains(&"1 idempotency keys were charged more than once".to_string()));
        assert!(all.contains(&"2 confirmed orders' events were lost".to_string()));
        assert!(
            Invariants::default()
                .violations(Promises {
                    idempotency: true,
                    outbox: true
                })
                .is_empty()
        );
    }

    #[test]
    fn audit_from_snapshot_response() {
        let mut resp = SnapshotResponse {
            service: "orders".into(),
            ..Default::default()
        };
        resp.counters.insert("confirmed_orders".into(), 2);
        resp.ids.insert(
            "confirmed_order_ids".into(),
            lab_proto::lab::v1::IdList {
                ids: vec!["b".into(), "a".into(), "a".into()],
            },
        );
        let a = Audit::from(&resp);
        assert_eq!(a.counter("confirmed_orders"), 2);
        assert_eq!(a.counter("absent"), 0);
        assert_eq!(a.id_set("confirmed_order_ids"), set(&["a", "b"]));
    }
}
