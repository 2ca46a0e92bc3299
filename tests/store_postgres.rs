//! `PostgresStore`: the conformance suite, and what only a shared store can
//! show (several stores on one database).
//!
//! Needs a server: set `HOOKWAY_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema
//! of its own. Without the variable the tests pass with a notice; with it,
//! an unreachable server fails them.
#![cfg(all(feature = "postgres", feature = "test-support"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookway::delivery::{Delivery, DeliveryId, EndpointId};
use hookway::store::{PostgresStore, Store, StoredEvent};
use hookway::{EventType, MessageId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection;
use time::macros::datetime;

const VAR: &str = "HOOKWAY_TEST_POSTGRES_URL";

fn url() -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Once, and past the test harness's capture, so it is seen.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "store_postgres: skipped, set {VAR} to run the Postgres tests"
                );
            });
            None
        }
    }
}

/// A store in a fresh schema of its own.
async fn fresh_in(url: &str) -> PostgresStore {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "hookway_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{VAR} is set but Postgres is unreachable: {e}"));
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::query(&drop).execute(&mut admin).await.unwrap();
    let create = format!("CREATE SCHEMA {schema}");
    sqlx::query(&create).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    PostgresStore::connect_with(
        PgPoolOptions::new().max_connections(4),
        options.options([("search_path", schema.as_str())]),
    )
    .await
    .unwrap()
}

async fn fresh() -> Option<PostgresStore> {
    Some(fresh_in(&url()?).await)
}

hookway::store_conformance!(optional: fresh());

/// Two stores (two processes' worth) on one database never claim the same
/// delivery at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_split_the_queue() {
    let Some(url) = url() else { return };
    let first = fresh_in(&url).await;
    let pool = first.pool().clone();
    let second = PostgresStore::from_pool(pool).await.unwrap();
    let t0 = datetime!(2026-01-01 12:00 UTC);
    let ep = EndpointId::from_static("ep_a");
    for n in 0..500 {
        let id = MessageId::new(format!("msg_{n}")).unwrap();
        let delivery = Delivery::new(
            DeliveryId::new(format!("dlv_{n}")).unwrap(),
            id.clone(),
            EventType::from_static("ticket.created"),
            ep.clone(),
            t0,
        );
        first
            .insert_event(
                StoredEvent {
                    id,
                    event_type: EventType::from_static("ticket.created"),
                    channels: Vec::new(),
                    payload: bytes::Bytes::from_static(b"{}"),
                    created_at: t0,
                },
                vec![delivery],
            )
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let claim = |store: PostgresStore| async move {
        let mut ids = Vec::new();
        loop {
            let batch = store.claim_due(t0, lease, 7).await.unwrap();
            if batch.is_empty() {
                return ids;
            }
            ids.extend(batch.into_iter().map(|c| c.delivery.id().clone()));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim(first.clone())),
        tokio::spawn(claim(second))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<_> = a.iter().chain(b.iter()).cloned().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 500, "every delivery claimed once");
}

fn endpoint(id: &'static str) -> hookway::endpoint::Endpoint {
    hookway::endpoint::Endpoint::builder(
        EndpointId::from_static(id),
        "https://example.com/hooks",
        hookway::Scheme::standard(),
        hookway::Secret::from_bytes(b"a-secret-of-some-thirty-two-byte").unwrap(),
    )
    .build()
    .unwrap()
}

fn event(n: usize) -> StoredEvent {
    StoredEvent {
        id: MessageId::new(format!("msg_{n}")).unwrap(),
        event_type: EventType::from_static("ticket.created"),
        channels: Vec::new(),
        payload: bytes::Bytes::from_static(b"{}"),
        created_at: datetime!(2026-01-01 12:00 UTC),
    }
}

fn delivery_of(n: usize, copy: usize, endpoint: &'static str) -> Delivery {
    Delivery::new(
        DeliveryId::new(format!("dlv_{n}_{copy}_{endpoint}")).unwrap(),
        MessageId::new(format!("msg_{n}")).unwrap(),
        EventType::from_static("ticket.created"),
        EndpointId::from_static(endpoint),
        datetime!(2026-01-01 12:00 UTC),
    )
}

/// Publishes as the Outbox does: reads the (possibly cached) endpoint list,
/// makes one delivery per endpoint, and starts again if the store says the
/// list changed meanwhile. Returns the endpoints the event went to.
async fn publish_to_all(store: &PostgresStore, n: usize) -> Vec<String> {
    for _ in 0..8 {
        let list = store.publish_endpoints().await.unwrap();
        let names: Vec<&'static str> = list
            .endpoints
            .iter()
            .map(|e| match e.id().as_str() {
                "ep_a" => "ep_a",
                "ep_b" => "ep_b",
                other => panic!("unexpected endpoint {other}"),
            })
            .collect();
        let deliveries = names.iter().map(|e| delivery_of(n, 0, e)).collect();
        match store
            .insert_event_at(event(n), deliveries, list.version)
            .await
        {
            Ok(_) => return names.iter().map(|s| (*s).to_owned()).collect(),
            Err(hookway::store::StoreError::EndpointsChanged) => continue,
            Err(e) => panic!("insert_event_at: {e}"),
        }
    }
    panic!("the endpoint list never settled")
}

/// A process's cached endpoint list never makes it miss an endpoint that
/// another process added before the publish began.
#[tokio::test]
async fn a_publish_sees_an_endpoint_another_process_added() {
    let Some(url) = url() else { return };
    let first = fresh_in(&url).await;
    // Its own cache, as another process has.
    let second = PostgresStore::from_pool(first.pool().clone())
        .await
        .unwrap();
    first.put_endpoint(endpoint("ep_a")).await.unwrap();
    assert_eq!(publish_to_all(&first, 1).await, ["ep_a"]);
    second.put_endpoint(endpoint("ep_b")).await.unwrap();
    assert_eq!(
        publish_to_all(&first, 2).await,
        ["ep_a", "ep_b"],
        "a publish after another process added an endpoint left it out"
    );
    // And the event went in once, with both deliveries.
    let stored = first
        .deliveries(&hookway::store::DeliveryQuery::default())
        .await
        .unwrap();
    let of_2: Vec<_> = stored
        .iter()
        .filter(|d| d.event_id().as_str() == "msg_2")
        .collect();
    assert_eq!(of_2.len(), 2);
}

/// Publishes written together in one statement: concurrent publishes of one
/// id store it once, and every caller gets that publication's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_of_one_id_store_it_once() {
    let Some(url) = url() else { return };
    let store = fresh_in(&url).await;
    let mut tasks = Vec::new();
    for copy in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_event(event(7), vec![delivery_of(7, copy, "ep_a")])
                .await
                .unwrap()
        }));
    }
    // Other ids at the same time, so batches mix them.
    for n in 100..164 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_event(event(n), vec![delivery_of(n, 0, "ep_a")])
                .await
                .unwrap()
        }));
    }
    let mut new = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks.drain(..32) {
        match task.await.unwrap() {
            hookway::store::Inserted::New(ids) => new.push(ids),
            hookway::store::Inserted::Duplicate(ids) => duplicates.push(ids),
        }
    }
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            hookway::store::Inserted::New(_)
        ));
    }
    assert_eq!(new.len(), 1, "one publish of the id is new");
    assert_eq!(duplicates.len(), 31);
    for ids in &duplicates {
        assert_eq!(
            ids, &new[0],
            "a duplicate returns the first one's deliveries"
        );
    }
    let stored = store
        .deliveries(&hookway::store::DeliveryQuery::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1 + 64);
}

/// A claim hands over each delivery's endpoint as stored when it claimed,
/// including a change another process made.
#[tokio::test]
async fn a_claim_hands_over_an_endpoint_another_process_changed() {
    let Some(url) = url() else { return };
    let first = fresh_in(&url).await;
    let second = PostgresStore::from_pool(first.pool().clone())
        .await
        .unwrap();
    first.put_endpoint(endpoint("ep_a")).await.unwrap();
    publish_to_all(&first, 1).await;
    let t0 = datetime!(2026-01-01 12:00 UTC);
    // The first store has the endpoint cached, enabled.
    let claimed = first
        .claim_due(t0, Duration::from_secs(1), 10)
        .await
        .unwrap();
    let handed = claimed[0].endpoint.clone().expect("handed over").unwrap();
    assert!(handed.is_enabled());
    second
        .set_endpoint_enabled(&EndpointId::from_static("ep_a"), false)
        .await
        .unwrap();
    // Once the lease is over the delivery is claimed again, and the
    // endpoint handed over is the disabled one.
    let later = t0 + time::Duration::seconds(2);
    let claimed = first
        .claim_due(later, Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let handed = claimed[0].endpoint.clone().expect("handed over").unwrap();
    assert!(
        !handed.is_enabled(),
        "the claim handed over the endpoint as cached before another process disabled it"
    );
}

/// Results are committed without waiting for the disk, but only they: the
/// setting does not outlive their statements, so the pool's connections
/// (and your own queries on them) stay synchronous.
#[tokio::test]
async fn asynchronous_results_leave_the_connections_synchronous() {
    let Some(url) = url() else { return };
    let made = fresh_in(&url).await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(made.pool())
        .await
        .unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    for synchronous in [false, true] {
        // One connection, so every statement below runs on it.
        let store = PostgresStore::connect_with(
            PgPoolOptions::new().max_connections(1),
            options.clone().options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap()
        .with_synchronous_results(synchronous);
        let before: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(store.pool())
            .await
            .unwrap();
        store.put_endpoint(endpoint("ep_a")).await.unwrap();
        let n = if synchronous { 2 } else { 1 };
        publish_to_all(&store, n).await;
        let t0 = datetime!(2026-01-01 12:00 UTC);
        let claimed = store
            .claim_due(t0, Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert!(!claimed.is_empty());
        for c in claimed {
            let mut delivery = c.delivery.clone();
            delivery.release(&c.claim, t0).unwrap();
            store
                .save(
                    delivery,
                    c.claim.token(),
                    hookway::delivery::StateKind::InFlight,
                    None,
                )
                .await
                .unwrap();
        }
        let after: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            before, after,
            "a claim or save changed the connection's setting"
        );
        store.pool().close().await;
    }
}

/// A publish writer that ends without finishing (its runtime shut down
/// mid-write) gives its place back: publishes on a new runtime are written,
/// not left waiting for writers that are gone.
#[test]
fn publishes_survive_their_writers_runtime_shutting_down() {
    let Some(url) = url() else { return };
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = first.block_on(fresh_in(&url));
    // Many publishes at once, and the runtime goes away once some are
    // written and more are being written.
    let written = std::sync::Arc::new(AtomicUsize::new(0));
    first.block_on(async {
        for n in 0..400 {
            let (store, written) = (store.clone(), std::sync::Arc::clone(&written));
            tokio::spawn(async move {
                let _ = store
                    .insert_event(event(n), vec![delivery_of(n, 0, "ep_a")])
                    .await;
                written.fetch_add(1, Ordering::SeqCst);
            });
        }
        while written.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    });
    assert!(
        written.load(Ordering::SeqCst) < 400,
        "every publish was written already"
    );
    first.shutdown_timeout(Duration::ZERO);
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A publish made while the old runtime's writers are still going away
    // may fail (its statement ran on a runtime being shut down), as a
    // caller would see any backend error, and is retried; none waits for
    // ever, and one soon succeeds.
    let inserted = second.block_on(async {
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            // A guard against waiting forever, not a measurement.
            let outcome = tokio::time::timeout(
                Duration::from_secs(30),
                store.insert_event(event(1000), vec![delivery_of(1000, 0, "ep_a")]),
            )
            .await
            .expect("a publish waited 30 s for a writer that is gone");
            match outcome {
                Ok(inserted) => return inserted,
                Err(error) => outcomes.push(error.to_string()),
            }
        }
        panic!("five publishes in a row failed: {outcomes:?}")
    });
    // New, or a duplicate of a try whose statement committed after all.
    assert_eq!(inserted.ids().len(), 1);
    let stored = second.block_on(store.event(&event(1000).id)).unwrap();
    assert!(stored.is_some(), "the event is stored");
}

/// A publish made again because another process changed the endpoints
/// reports only the deliveries it stored: a delivery that failed at once
/// (its endpoint disabled, its hold queue full) is notified once, and only
/// if it was stored.
#[cfg(feature = "outbox")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_made_again_notifies_only_what_it_stored() {
    use std::sync::{Arc, Mutex};

    use hookway::outbox::{Notification, Outbox, OutboxConfig};

    let Some(url) = url() else { return };
    let ours = fresh_in(&url).await;
    let theirs = PostgresStore::from_pool(ours.pool().clone()).await.unwrap();
    let mut config = OutboxConfig::default();
    config.max_held_per_endpoint = Some(0);
    let outbox = Outbox::with_config(
        ours.clone(),
        hookway::testing::ScriptedDispatcher::new(),
        config,
        hookway::clock::SystemClock,
    );
    let failed: Arc<Mutex<Vec<DeliveryId>>> = Arc::default();
    let seen = Arc::clone(&failed);
    outbox.subscribe(move |n: &Notification| {
        if let Notification::DeliveryFailed { delivery, .. } = n {
            seen.lock().unwrap().push(delivery.clone());
        }
    });
    // A disabled endpoint that holds nothing: each delivery made for it
    // fails unsent, with a notification.
    let mut off = endpoint("ep_a");
    off.set_enabled(false);
    outbox.add_endpoint(off).await.unwrap();
    let ty = EventType::from_static("ticket.created");
    outbox
        .publish(
            "msg_1".parse().unwrap(),
            ty.clone(),
            &serde_json::json!({}),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failed.lock().unwrap().len(), 1);
    // Another process adds an endpoint: this one's cached list is stale,
    // and the next publish is made twice.
    theirs.put_endpoint(endpoint("ep_b")).await.unwrap();
    let ids = outbox
        .publish("msg_2".parse().unwrap(), ty, &serde_json::json!({}), &[])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let notified = failed.lock().unwrap().clone();
    assert_eq!(notified.len(), 2, "one failure per publish: {notified:?}");
    for id in &notified {
        assert!(
            ours.delivery(id).await.unwrap().is_some(),
            "a failure was notified for {id}, which was never stored"
        );
    }
}
