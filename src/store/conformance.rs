//! The conformance suite every [`Store`] passes (feature `test-support`).
//!
//! hookway runs it against [`MemoryStore`](super::MemoryStore) and its
//! other stores; run it against yours (Redis, DynamoDB, …) to check that
//! the delivery engine can rely on it. Each check takes a fresh, empty
//! store and panics, with a message saying what the store got wrong, when
//! the store breaks the contract. The checks pass `now` explicitly and never
//! sleep.
//!
//! The simplest way is the [`store_conformance!`](crate::store_conformance)
//! macro, which writes one `#[tokio::test]` per check (your crate needs
//! `tokio` with the `macros` and `rt` features as a dev-dependency):
//!
//! ```ignore
//! hookway::store_conformance!(async { MyStore::connect("…").await.unwrap() });
//! ```
//!
//! Or call [`run_all`] (or single checks) from your own test:
//!
//! ```
//! use hookway::store::{conformance, MemoryStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! conformance::run_all(|| async { MemoryStore::new() }).await;
//! # });
//! ```
//!
//! Stores shared between tests (one database) must hand each check a store
//! that is empty, for example a fresh schema or a cleared table set.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use time::macros::datetime;
use time::OffsetDateTime;

use super::{DeliveryQuery, Inserted, Prune, Save, Store, StoreError, StoredEvent};
use crate::delivery::{AttemptReport, Delivery, DeliveryId, DeliveryState, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::{EventType, MessageId};
use crate::retry::{Classifier, RetryPolicy, SplitMix64};
use crate::scheme::Scheme;
use crate::secret::Secret;

const T0: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);
const LEASE: Duration = Duration::from_secs(60);
const TYPE: EventType = EventType::from_static("ticket.created");
const EP_A: EndpointId = EndpointId::from_static("ep_a");
const EP_B: EndpointId = EndpointId::from_static("ep_b");

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn endpoint(id: &EndpointId) -> Endpoint {
    Endpoint::builder(
        id.clone(),
        "https://receiver.example.com/hooks",
        Scheme::standard(),
        Secret::from_bytes(b"conformance-suite-secret-32bytes").expect("a valid secret"),
    )
    .build()
    .expect("a valid endpoint")
}

fn message(n: usize) -> MessageId {
    MessageId::new(format!("msg_conf_{n}")).expect("a valid message id")
}

fn event(n: usize, at: OffsetDateTime) -> StoredEvent {
    StoredEvent {
        id: message(n),
        event_type: TYPE,
        channels: vec![format!("tenant-{n}")],
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        created_at: at,
    }
}

fn delivery(n: usize, endpoint: &EndpointId, at: OffsetDateTime) -> Delivery {
    Delivery::new(
        DeliveryId::new(format!("dlv_conf_{n}_{endpoint}")).expect("a valid delivery id"),
        message(n),
        TYPE,
        endpoint.clone(),
        at,
    )
}

/// Publishes event `n` at `at` with one delivery per endpoint; returns the
/// delivery ids.
async fn publish<S: Store>(
    store: &S,
    n: usize,
    endpoints: &[&EndpointId],
    at: OffsetDateTime,
) -> Vec<DeliveryId> {
    let deliveries: Vec<Delivery> = endpoints.iter().map(|e| delivery(n, e, at)).collect();
    match store
        .insert_event(event(n, at), deliveries)
        .await
        .expect("insert_event failed")
    {
        Inserted::New(ids) => ids,
        Inserted::Duplicate(_) => panic!("insert_event: event {n} reported as a duplicate"),
    }
}

fn response(status: u16) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from_static(b"ok"));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response
}

/// Completes a claimed delivery with `status` under `policy` at `at` and
/// saves it with its attempt.
async fn complete<S: Store>(
    store: &S,
    mut delivery: Delivery,
    claim: &crate::delivery::Claim,
    status: u16,
    policy: &RetryPolicy,
    at: OffsetDateTime,
) -> Delivery {
    let response = response(status);
    let attempt = AttemptReport::from_response(
        &response,
        &Classifier::default(),
        at,
        Duration::from_millis(5),
    );
    let completed = delivery
        .complete(claim, attempt, policy, at, &mut SplitMix64::from_seed(7))
        .expect("complete a fresh claim");
    store
        .save(
            delivery.clone(),
            claim.token(),
            StateKind::InFlight,
            Some(completed.attempt),
        )
        .await
        .expect("save of a claimed delivery failed");
    delivery
}

fn no_retries() -> RetryPolicy {
    RetryPolicy::fixed([]).build().expect("a valid policy")
}

fn one_retry_after(delay: Duration) -> RetryPolicy {
    RetryPolicy::fixed([delay]).build().expect("a valid policy")
}

/// Endpoints: put, read, list in id order, replace, enable and disable in
/// place.
pub async fn endpoints<S: Store>(store: S) {
    assert!(store.endpoint(&EP_A).await.expect("endpoint").is_none());
    store
        .put_endpoint(endpoint(&EP_B))
        .await
        .expect("put_endpoint");
    store
        .put_endpoint(endpoint(&EP_A))
        .await
        .expect("put_endpoint");
    let listed: Vec<EndpointId> = store
        .endpoints()
        .await
        .expect("endpoints")
        .iter()
        .map(|e| e.id().clone())
        .collect();
    assert_eq!(listed, [EP_A, EP_B], "endpoints must be listed by id");
    let stored = store
        .endpoint(&EP_A)
        .await
        .expect("endpoint")
        .expect("ep_a stored");
    assert_eq!(stored.url(), endpoint(&EP_A).url());
    assert!(stored.is_enabled());
    assert!(store
        .set_endpoint_enabled(&EP_A, false)
        .await
        .expect("set_endpoint_enabled"));
    let stored = store
        .endpoint(&EP_A)
        .await
        .expect("endpoint")
        .expect("ep_a stored");
    assert!(
        !stored.is_enabled(),
        "set_endpoint_enabled(false) did not stick"
    );
    assert!(
        !store
            .set_endpoint_enabled(&EndpointId::from_static("ep_missing"), true)
            .await
            .expect("set_endpoint_enabled"),
        "set_endpoint_enabled must say when the endpoint does not exist"
    );
    // Replacing keeps one endpoint under the id.
    store
        .put_endpoint(endpoint(&EP_A))
        .await
        .expect("put_endpoint");
    assert_eq!(store.endpoints().await.expect("endpoints").len(), 2);
}

/// Publishing: an event and all its deliveries in one step; the payload is
/// kept byte for byte; a second publish of the same id changes nothing and
/// returns the first publication's deliveries.
pub async fn publish_is_atomic_and_idempotent<S: Store>(store: S) {
    let ids = publish(&store, 1, &[&EP_A, &EP_B], T0).await;
    assert_eq!(ids.len(), 2);
    let stored = store
        .event(&message(1))
        .await
        .expect("event")
        .expect("event 1 stored");
    assert_eq!(
        stored,
        event(1, T0),
        "the stored event differs from the published one"
    );
    for id in &ids {
        let d = store
            .delivery(id)
            .await
            .expect("delivery")
            .expect("delivery stored");
        assert_eq!(d.state(), &DeliveryState::Pending { due_at: T0 });
    }
    let again = store
        .insert_event(
            event(1, T0 + secs(1)),
            vec![delivery(1, &EP_A, T0 + secs(1))],
        )
        .await
        .expect("insert_event");
    match again {
        Inserted::Duplicate(existing) => {
            let (mut a, mut b) = (existing, ids.clone());
            a.sort();
            b.sort();
            assert_eq!(
                a, b,
                "a duplicate must return the first publication's deliveries"
            );
        }
        Inserted::New(_) => panic!("publishing an event id twice created it again"),
    }
    let all = store
        .deliveries(&DeliveryQuery::default())
        .await
        .expect("deliveries");
    assert_eq!(all.len(), 2, "a duplicate publish must add no delivery");
    // An event with no deliveries (no endpoint matched) is still stored, so
    // a later publish of the id is a duplicate.
    assert!(publish(&store, 2, &[], T0).await.is_empty());
    assert!(matches!(
        store
            .insert_event(event(2, T0), vec![delivery(2, &EP_A, T0)])
            .await
            .expect("insert_event"),
        Inserted::Duplicate(ids) if ids.is_empty()
    ));
}

/// Claiming: only due deliveries, earliest first, at most `limit`, each
/// once until its lease expires; the claim carries the payload.
pub async fn claim_due_respects_time_order_and_limit<S: Store>(store: S) {
    let first = publish(&store, 1, &[&EP_A], T0 + secs(2)).await;
    let second = publish(&store, 2, &[&EP_A], T0 + secs(1)).await;
    let later = publish(&store, 3, &[&EP_A], T0 + secs(100)).await;
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(T0 + secs(1)),
        "next_due must be the earliest due time"
    );
    assert!(store
        .claim_due(T0, LEASE, 10)
        .await
        .expect("claim_due")
        .is_empty());
    let claimed = store
        .claim_due(T0 + secs(10), LEASE, 1)
        .await
        .expect("claim_due");
    assert_eq!(claimed.len(), 1, "claim_due must honour its limit");
    assert_eq!(claimed[0].delivery.id(), &second[0], "earliest due first");
    assert_eq!(claimed[0].payload, event(2, T0).payload);
    assert_eq!(claimed[0].claim.attempt(), 1);
    assert!(matches!(
        claimed[0].delivery.state(),
        DeliveryState::InFlight { attempt: 1, .. }
    ));
    let rest = store
        .claim_due(T0 + secs(10), LEASE, 10)
        .await
        .expect("claim_due");
    let ids: Vec<_> = rest.iter().map(|c| c.delivery.id().clone()).collect();
    assert_eq!(
        ids, first,
        "a claimed delivery must not be claimed again, nor a future one"
    );
    let stored = store
        .delivery(&first[0])
        .await
        .expect("delivery")
        .expect("stored");
    assert_eq!(
        stored, rest[0].delivery,
        "the claim must be stored as returned"
    );
    assert!(store
        .claim_due(T0 + secs(10), LEASE, 10)
        .await
        .expect("claim_due")
        .iter()
        .all(|c| c.delivery.id() != &later[0]));
}

/// Completing: a success is stored as delivered with its attempt; a
/// retryable failure reschedules per the policy; an exhausted policy
/// fails the delivery; attempts are logged in order.
pub async fn complete_reschedule_and_fail<S: Store>(store: S) {
    let ok = publish(&store, 1, &[&EP_A], T0).await;
    let flaky = publish(&store, 2, &[&EP_A], T0).await;
    let doomed = publish(&store, 3, &[&EP_A], T0).await;
    let claimed = store.claim_due(T0, LEASE, 10).await.expect("claim_due");
    assert_eq!(claimed.len(), 3);
    let at = T0 + secs(1);
    for c in claimed {
        let (status, policy) = if c.delivery.id() == &ok[0] {
            (200, no_retries())
        } else if c.delivery.id() == &flaky[0] {
            (503, one_retry_after(Duration::from_secs(30)))
        } else {
            (503, no_retries())
        };
        complete(&store, c.delivery, &c.claim, status, &policy, at).await;
    }
    let d = store
        .delivery(&ok[0])
        .await
        .expect("delivery")
        .expect("stored");
    assert!(matches!(d.state(), DeliveryState::Delivered { .. }));
    let d = store
        .delivery(&flaky[0])
        .await
        .expect("delivery")
        .expect("stored");
    assert_eq!(
        d.next_attempt_at(),
        Some(at + secs(30)),
        "a retry must be due when the policy says"
    );
    let d = store
        .delivery(&doomed[0])
        .await
        .expect("delivery")
        .expect("stored");
    assert!(matches!(d.state(), DeliveryState::Failed { .. }));
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(at + secs(30))
    );

    // The retry: claimable only once due, and its attempt is logged second.
    assert!(store
        .claim_due(at + secs(29), LEASE, 10)
        .await
        .expect("claim")
        .is_empty());
    let retry = store
        .claim_due(at + secs(30), LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].claim.attempt(), 2);
    let c = retry.into_iter().next().expect("one claim");
    complete(
        &store,
        c.delivery,
        &c.claim,
        200,
        &no_retries(),
        at + secs(31),
    )
    .await;
    let attempts = store.attempts(&flaky[0]).await.expect("attempts");
    let numbers: Vec<(u32, Option<u16>)> =
        attempts.iter().map(|a| (a.number(), a.status())).collect();
    assert_eq!(
        numbers,
        [(1, Some(503)), (2, Some(200))],
        "attempts must be kept in order"
    );
    assert_eq!(store.next_due().await.expect("next_due"), None);
    assert_eq!(
        store.attempts(&ok[0]).await.expect("attempts").len(),
        1,
        "each attempt is logged once"
    );
}

/// Saving is a compare-and-set: a worker whose lease expired and was taken
/// over cannot overwrite the newer claim's result.
pub async fn save_refuses_stale_claims<S: Store>(store: S) {
    let ids = publish(&store, 1, &[&EP_A], T0).await;
    let old = store.claim_due(T0, LEASE, 1).await.expect("claim_due");
    assert_eq!(old.len(), 1);
    // The lease expires; another worker takes the delivery over.
    let late = T0 + secs(61);
    assert_eq!(
        store.next_due().await.expect("next_due"),
        Some(T0 + secs(60))
    );
    let taken = store.claim_due(late, LEASE, 1).await.expect("claim_due");
    assert_eq!(
        taken.len(),
        1,
        "an expired lease must make the delivery claimable"
    );
    assert!(taken[0].claim.is_takeover());
    assert_eq!(
        taken[0].claim.attempt(),
        1,
        "a takeover makes the unfinished attempt again"
    );
    // The first worker finishes late: refused.
    let stale = old.into_iter().next().expect("one claim");
    let mut d = stale.delivery;
    let response = response(200);
    let attempt =
        AttemptReport::from_response(&response, &Classifier::default(), late, Duration::ZERO);
    let completed = d
        .complete(
            &stale.claim,
            attempt,
            &no_retries(),
            late,
            &mut SplitMix64::from_seed(1),
        )
        .expect("complete");
    let result = store
        .save(
            d,
            stale.claim.token(),
            StateKind::InFlight,
            Some(completed.attempt),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict(ref id)) if id == &ids[0]),
        "a stale save must fail with Conflict, got {result:?}"
    );
    assert!(store.attempts(&ids[0]).await.expect("attempts").is_empty());
    // The new worker's result is stored.
    let fresh = taken.into_iter().next().expect("one claim");
    complete(
        &store,
        fresh.delivery,
        &fresh.claim,
        200,
        &no_retries(),
        late,
    )
    .await;
    let d = store
        .delivery(&ids[0])
        .await
        .expect("delivery")
        .expect("stored");
    assert!(matches!(d.state(), DeliveryState::Delivered { .. }));
    // Saving an unknown delivery is NotFound, not a silent insert.
    let unknown = delivery(9, &EP_A, T0);
    assert!(matches!(
        store.save(unknown, 0, StateKind::Pending, None).await,
        Err(StoreError::NotFound(_))
    ));
}

/// `save_all`: each save checked and reported on its own, in order, even
/// when one delivery comes twice (a stale result beside the result of the
/// claim that took it over).
pub async fn save_all_reports_each_result<S: Store>(store: S) {
    let first = publish(&store, 1, &[&EP_A], T0).await;
    let second = publish(&store, 2, &[&EP_A], T0).await;
    let claimed = store.claim_due(T0, LEASE, 10).await.expect("claim_due");
    assert_eq!(claimed.len(), 2);
    let (mut stale, mut other) = (None, None);
    for c in claimed {
        if c.delivery.id() == &first[0] {
            stale = Some(c);
        } else {
            other = Some(c);
        }
    }
    let (stale, other) = (
        stale.expect("first claimed"),
        other.expect("second claimed"),
    );
    let late = T0 + secs(61);
    // Both leases have run out; the first delivery (earliest due, then by
    // id) is taken over, the second stays with its original claim.
    let taken = store.claim_due(late, LEASE, 1).await.expect("claim_due");
    let fresh = taken
        .into_iter()
        .find(|c| c.delivery.id() == &first[0])
        .expect("the expired claim is taken over");
    let finish = |c: crate::store::Claimed| {
        let mut delivery = c.delivery;
        let response = response(200);
        let attempt =
            AttemptReport::from_response(&response, &Classifier::default(), late, Duration::ZERO);
        let completed = delivery
            .complete(
                &c.claim,
                attempt,
                &no_retries(),
                late,
                &mut SplitMix64::from_seed(3),
            )
            .expect("complete");
        crate::store::Save::new(
            delivery,
            c.claim.token(),
            StateKind::InFlight,
            Some(completed.attempt),
        )
    };
    let results = store
        .save_all(vec![finish(stale), finish(fresh), finish(other)])
        .await
        .expect("save_all");
    assert_eq!(results.len(), 3);
    assert!(
        matches!(results[0], Err(StoreError::Conflict(ref id)) if id == &first[0]),
        "the stale save must be refused, got {:?}",
        results[0]
    );
    assert!(results[1].is_ok(), "the fresh save: {:?}", results[1]);
    assert!(results[2].is_ok(), "the other save: {:?}", results[2]);
    for id in [&first[0], &second[0]] {
        let d = store.delivery(id).await.expect("delivery").expect("stored");
        assert!(matches!(d.state(), DeliveryState::Delivered { .. }));
        assert_eq!(store.attempts(id).await.expect("attempts").len(), 1);
    }
}

/// Held deliveries: counted per endpoint, listed by state, not claimable,
/// and claimable again once released.
pub async fn held_deliveries<S: Store>(store: S) {
    let mut held = delivery(1, &EP_A, T0);
    held.hold(T0).expect("hold a pending delivery");
    let pending = delivery(1, &EP_B, T0);
    store
        .insert_event(event(1, T0), vec![held.clone(), pending])
        .await
        .expect("insert_event");
    assert_eq!(store.held_count(&EP_A).await.expect("held_count"), 1);
    assert_eq!(store.held_count(&EP_B).await.expect("held_count"), 0);
    let listed = store
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::Held),
            ..DeliveryQuery::default()
        })
        .await
        .expect("deliveries");
    assert_eq!(listed, [held.clone()]);
    let claimed = store
        .claim_due(T0 + secs(10), LEASE, 10)
        .await
        .expect("claim_due");
    assert!(
        claimed.iter().all(|c| c.delivery.endpoint_id() != &EP_A),
        "a held delivery must not be claimed"
    );
    let mut released = held;
    let claims = released.claims();
    released.unhold(T0 + secs(20)).expect("unhold");
    store
        .save(released, claims, StateKind::Held, None)
        .await
        .expect("save");
    assert_eq!(store.held_count(&EP_A).await.expect("held_count"), 0);
    let claimed = store
        .claim_due(T0 + secs(20), LEASE, 10)
        .await
        .expect("claim_due");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.endpoint_id(), &EP_A);
}

/// Listing: oldest first, filtered by endpoint, state and time, limited.
pub async fn listing<S: Store>(store: S) {
    for n in 0..5 {
        publish(
            &store,
            n,
            &[&EP_A, &EP_B],
            T0 + secs(i64::try_from(n).unwrap_or(0)),
        )
        .await;
    }
    let a = store
        .deliveries(&DeliveryQuery {
            endpoint: Some(EP_A),
            ..DeliveryQuery::default()
        })
        .await
        .expect("deliveries");
    let events: Vec<MessageId> = a.iter().map(|d| d.event_id().clone()).collect();
    assert_eq!(
        events,
        (0..5).map(message).collect::<Vec<_>>(),
        "oldest first"
    );
    let recent = store
        .deliveries(&DeliveryQuery {
            endpoint: Some(EP_B),
            since: Some(T0 + secs(3)),
            limit: 1,
            ..DeliveryQuery::default()
        })
        .await
        .expect("deliveries");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].event_id(), &message(3));
    let since = store
        .events_since(T0 + secs(2))
        .await
        .expect("events_since");
    let ids: Vec<MessageId> = since.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        [message(2), message(3), message(4)],
        "events_since, oldest first"
    );
}

/// Replay: deliveries added to stored events; refused for an unknown event.
pub async fn replay_adds_deliveries<S: Store>(store: S) {
    publish(&store, 1, &[&EP_A], T0).await;
    let replayed = Delivery::new(
        DeliveryId::from_static("dlv_conf_replay"),
        message(1),
        TYPE,
        EP_B,
        T0 + secs(5),
    );
    store
        .insert_deliveries(vec![replayed.clone()])
        .await
        .expect("insert_deliveries");
    assert_eq!(
        store.delivery(replayed.id()).await.expect("delivery"),
        Some(replayed)
    );
    let orphan = delivery(42, &EP_B, T0);
    assert!(
        store.insert_deliveries(vec![orphan.clone()]).await.is_err(),
        "a delivery of an unknown event must be refused"
    );
    assert!(store
        .delivery(orphan.id())
        .await
        .expect("delivery")
        .is_none());
    // A duplicate publish now reports both deliveries.
    match store
        .insert_event(event(1, T0), Vec::new())
        .await
        .expect("insert_event")
    {
        Inserted::Duplicate(ids) => assert_eq!(ids.len(), 2),
        Inserted::New(_) => panic!("publishing an event id twice created it again"),
    }
}

/// Ordering: the queue head is the endpoint's oldest unfinished delivery,
/// whatever its due time, and moves on only when it finishes.
pub async fn queue_head_is_the_oldest_unfinished<S: Store>(store: S) {
    assert!(store.queue_head(&EP_A).await.expect("queue_head").is_none());
    let first = publish(&store, 1, &[&EP_A], T0).await;
    let second = publish(&store, 2, &[&EP_A, &EP_B], T0).await;
    publish(&store, 3, &[&EP_A], T0).await;
    let head = |ep: EndpointId| {
        let store = &store;
        async move {
            store
                .queue_head(&ep)
                .await
                .expect("queue_head")
                .map(|d| d.id().clone())
        }
    };
    assert_eq!(head(EP_A).await.as_ref(), Some(&first[0]));
    assert_eq!(head(EP_B).await.as_ref(), Some(&second[1]));
    // The head fails once and waits for a retry: still the head.
    let claimed = store.claim_due(T0, LEASE, 1).await.expect("claim_due");
    assert_eq!(claimed[0].delivery.id(), &first[0]);
    let c = claimed.into_iter().next().expect("one claim");
    let d = complete(
        &store,
        c.delivery,
        &c.claim,
        503,
        &one_retry_after(Duration::from_secs(60)),
        T0,
    )
    .await;
    assert!(matches!(d.state(), DeliveryState::Pending { .. }));
    assert_eq!(head(EP_A).await.as_ref(), Some(&first[0]));
    // Delivered: the next one is the head.
    let c = store
        .claim_due(T0 + secs(60), LEASE, 10)
        .await
        .expect("claim_due")
        .into_iter()
        .find(|c| c.delivery.id() == &first[0])
        .expect("the retry is due");
    complete(
        &store,
        c.delivery,
        &c.claim,
        200,
        &no_retries(),
        T0 + secs(60),
    )
    .await;
    assert_eq!(head(EP_A).await.as_ref(), Some(&second[0]));
}

/// Pruning: delivered deliveries older than the cut go with their attempts
/// and their event once it has none left; failed ones only when asked;
/// unfinished ones never. A pruned event's id can be published again.
pub async fn prune_removes_finished_deliveries<S: Store>(store: S) {
    let delivered = publish(&store, 1, &[&EP_A], T0).await;
    let failed = publish(&store, 2, &[&EP_A], T0).await;
    let shared = publish(&store, 3, &[&EP_A, &EP_B], T0).await;
    // No endpoint wanted this one.
    assert!(publish(&store, 4, &[], T0).await.is_empty());
    let claimed = store.claim_due(T0, LEASE, 10).await.expect("claim_due");
    for c in claimed {
        let id = c.delivery.id().clone();
        if id == delivered[0] || id == shared[0] {
            complete(&store, c.delivery, &c.claim, 200, &no_retries(), T0).await;
        } else if id == failed[0] {
            complete(&store, c.delivery, &c.claim, 400, &no_retries(), T0).await;
        } else {
            // shared[1] stays in flight.
        }
    }
    assert_eq!(
        store
            .prune(Prune::delivered_before(T0))
            .await
            .expect("prune"),
        0,
        "the cut is exclusive"
    );
    let pruned = store
        .prune(Prune::delivered_before(T0 + secs(1)))
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    assert!(store
        .delivery(&delivered[0])
        .await
        .expect("delivery")
        .is_none());
    assert!(store
        .attempts(&delivered[0])
        .await
        .expect("attempts")
        .is_empty());
    assert!(
        store.event(&message(1)).await.expect("event").is_none(),
        "an event with no delivery left must go"
    );
    assert!(
        store.event(&message(3)).await.expect("event").is_some(),
        "an event with a delivery left must stay"
    );
    assert!(
        store.event(&message(4)).await.expect("event").is_none(),
        "an event that never had a delivery must go once older than the cut"
    );
    assert!(store
        .delivery(&shared[1])
        .await
        .expect("delivery")
        .is_some());
    assert!(store
        .delivery(&failed[0])
        .await
        .expect("delivery")
        .is_some());
    let pruned = store
        .prune(Prune::delivered_before(T0 + secs(1)).and_failed_before(T0 + secs(1)))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert!(store
        .delivery(&failed[0])
        .await
        .expect("delivery")
        .is_none());
    assert!(matches!(
        store
            .insert_event(
                event(1, T0 + secs(2)),
                vec![delivery(1, &EP_B, T0 + secs(2))]
            )
            .await
            .expect("insert_event"),
        Inserted::New(_)
    ));
}

/// Pruning a backlog larger than a store's unit of work (the SQL stores
/// prune 1 000 deliveries per transaction) removes all of it, with the
/// attempts and the events.
pub async fn prune_removes_a_large_backlog<S: Store>(store: S) {
    const N: usize = 2_500;
    let deliveries: Vec<Delivery> = (0..N)
        .map(|i| {
            Delivery::new(
                DeliveryId::new(format!("dlv_conf_bulk_{i}")).expect("a valid delivery id"),
                message(1),
                TYPE,
                EP_A.clone(),
                T0,
            )
        })
        .collect();
    let ids: Vec<DeliveryId> = deliveries.iter().map(|d| d.id().clone()).collect();
    store
        .insert_event(event(1, T0), deliveries)
        .await
        .expect("insert_event");
    // Another event, kept: one of its deliveries is still pending.
    publish(&store, 2, &[&EP_A, &EP_B], T0 + secs(1)).await;
    let claimed = store.claim_due(T0, LEASE, N).await.expect("claim_due");
    assert_eq!(
        claimed.len(),
        N,
        "the first event's deliveries are due first"
    );
    let policy = no_retries();
    let ok = response(200);
    let saves = claimed
        .into_iter()
        .map(|c| {
            let mut delivery = c.delivery;
            let attempt = AttemptReport::from_response(
                &ok,
                &Classifier::default(),
                T0,
                Duration::from_millis(5),
            );
            let completed = delivery
                .complete(
                    &c.claim,
                    attempt,
                    &policy,
                    T0,
                    &mut SplitMix64::from_seed(7),
                )
                .expect("complete a fresh claim");
            Save::new(
                delivery,
                c.claim.token(),
                StateKind::InFlight,
                Some(completed.attempt),
            )
        })
        .collect();
    for result in store.save_all(saves).await.expect("save_all") {
        result.expect("a save of a fresh claim");
    }
    let pruned = store
        .prune(Prune::delivered_before(T0 + secs(10)))
        .await
        .expect("prune");
    assert_eq!(pruned, N, "every delivered delivery is pruned");
    for id in [&ids[0], &ids[N / 2], &ids[N - 1]] {
        assert!(store.delivery(id).await.expect("delivery").is_none());
        assert!(store.attempts(id).await.expect("attempts").is_empty());
    }
    assert!(
        store.event(&message(1)).await.expect("event").is_none(),
        "an event goes with its last delivery"
    );
    assert!(store.event(&message(2)).await.expect("event").is_some());
    let left = store
        .deliveries(&DeliveryQuery::default())
        .await
        .expect("deliveries");
    assert_eq!(left.len(), 2, "only the second event's deliveries are left");
}

/// The publish path's endpoint list: an event made from the list
/// [`Store::publish_endpoints`] returned is stored; once an endpoint has
/// changed, an event made from the old list is either refused with
/// [`StoreError::EndpointsChanged`] (a store that versions its list) or
/// stored (one that does not, `version: None`), and never half-stored; and
/// an endpoint a claim hands over is the endpoint as stored at the claim.
pub async fn publish_endpoints_and_claimed_endpoints<S: Store>(store: S) {
    store
        .put_endpoint(endpoint(&EP_A))
        .await
        .expect("put_endpoint");
    let first = store.publish_endpoints().await.expect("publish_endpoints");
    let listed: Vec<&EndpointId> = first.endpoints.iter().map(|e| e.id()).collect();
    assert_eq!(
        listed,
        [&EP_A],
        "publish_endpoints must list every endpoint"
    );
    assert!(matches!(
        store
            .insert_event_at(event(1, T0), vec![delivery(1, &EP_A, T0)], first.version)
            .await
            .expect("insert_event_at with a current list"),
        Inserted::New(_)
    ));
    store
        .put_endpoint(endpoint(&EP_B))
        .await
        .expect("put_endpoint");
    let stale = store
        .insert_event_at(event(2, T0), vec![delivery(2, &EP_A, T0)], first.version)
        .await;
    match (first.version, stale) {
        (Some(_), Err(StoreError::EndpointsChanged)) => {
            assert!(
                store.event(&message(2)).await.expect("event").is_none(),
                "a refused event must not be stored"
            );
            assert!(
                store
                    .delivery(&delivery(2, &EP_A, T0).id().clone())
                    .await
                    .expect("delivery")
                    .is_none(),
                "a refused event's deliveries must not be stored"
            );
        }
        (Some(version), other) => panic!(
            "an event made from endpoint list version {version} was not refused after an \
             endpoint changed: {other:?}"
        ),
        (None, result) => assert!(matches!(
            result.expect("insert_event_at without a version"),
            Inserted::New(_)
        )),
    }
    let second = store.publish_endpoints().await.expect("publish_endpoints");
    let listed: Vec<&EndpointId> = second.endpoints.iter().map(|e| e.id()).collect();
    assert_eq!(
        listed,
        [&EP_A, &EP_B],
        "publish_endpoints must show a new endpoint"
    );
    store
        .insert_event_at(event(3, T0), vec![delivery(3, &EP_B, T0)], second.version)
        .await
        .expect("insert_event_at with the new list");
    // A claim after a change hands over the endpoint as changed, or none.
    assert!(store
        .set_endpoint_enabled(&EP_B, false)
        .await
        .expect("set_endpoint_enabled"));
    let claimed = store.claim_due(T0, LEASE, 10).await.expect("claim_due");
    assert!(!claimed.is_empty(), "the published deliveries are due");
    for c in &claimed {
        if let Some(endpoint) = &c.endpoint {
            let endpoint = endpoint
                .as_ref()
                .expect("the claimed delivery's endpoint exists");
            assert_eq!(endpoint.id(), c.delivery.endpoint_id());
            assert_eq!(
                endpoint.is_enabled(),
                endpoint.id() != &EP_B,
                "a claim handed over an endpoint as it was before it changed"
            );
        }
    }
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    endpoints(make().await).await;
    publish_is_atomic_and_idempotent(make().await).await;
    claim_due_respects_time_order_and_limit(make().await).await;
    complete_reschedule_and_fail(make().await).await;
    save_refuses_stale_claims(make().await).await;
    save_all_reports_each_result(make().await).await;
    held_deliveries(make().await).await;
    listing(make().await).await;
    replay_adds_deliveries(make().await).await;
    queue_head_is_the_oldest_unfinished(make().await).await;
    prune_removes_finished_deliveries(make().await).await;
    publish_endpoints_and_claimed_endpoints(make().await).await;
    prune_removes_a_large_backlog(make().await).await;
}

/// Writes one `#[tokio::test]` per conformance check, each on a fresh store
/// from the given expression (an `async` block or any future of a
/// [`Store`](crate::store::Store)). Needs feature `test-support`, and
/// `tokio` (features `macros`, `rt`) in the calling crate.
///
/// `store_conformance!(optional: expr)` takes a future of an
/// `Option<Store>` instead, and a check whose store is `None` passes
/// without running: for stores that need a server the machine may not
/// have (print why, once, where you return `None`).
#[macro_export]
macro_rules! store_conformance {
    (optional: $make:expr) => {
        $crate::store_conformance!(@all (
            match $make.await {
                Some(store) => store,
                None => return,
            }
        ));
    };
    ($make:expr) => {
        $crate::store_conformance!(@all ($make.await));
    };
    (@all $store:expr) => {
        $crate::store_conformance!(@tests $store;
            endpoints,
            publish_is_atomic_and_idempotent,
            claim_due_respects_time_order_and_limit,
            complete_reschedule_and_fail,
            save_refuses_stale_claims,
            save_all_reports_each_result,
            held_deliveries,
            listing,
            replay_adds_deliveries,
            queue_head_is_the_oldest_unfinished,
            prune_removes_finished_deliveries,
            publish_endpoints_and_claimed_endpoints,
            prune_removes_a_large_backlog
        );
    };
    (@tests $store:expr; $($check:ident),+) => {
        $(
            #[::tokio::test]
            async fn $check() {
                let store = $store;
                $crate::store::conformance::$check(store).await;
            }
        )+
    };
}
