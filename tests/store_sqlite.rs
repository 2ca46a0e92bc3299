//! `SqliteStore`: the conformance suite, and what only a durable store can
//! show (reopening, migrations).
#![cfg(all(feature = "sqlite", feature = "test-support"))]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use hookway::delivery::{Delivery, DeliveryId, EndpointId, StateKind};
use hookway::endpoint::Endpoint;
use hookway::store::{DeliveryQuery, SqliteStore, Store, StoredEvent};
use hookway::{EventType, MessageId, Scheme, Secret};
use time::macros::datetime;

/// A fresh database file under the target directory's temp space, removed
/// with its WAL files when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join("hookway-sqlite-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let name = format!(
            "{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        Self(path)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn fresh() -> SqliteStore {
    // The file stays until the process ends; the suite's stores are small.
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.expect("open");
    std::mem::forget(db);
    store
}

hookway::store_conformance!(fresh());

#[tokio::test]
async fn everything_survives_reopening_the_file() {
    let db = TempDb::new();
    let t0 = datetime!(2026-01-01 12:00 UTC);
    let secret = Secret::from_bytes(b"a-secret-of-at-least-16-bytes").unwrap();
    let endpoint = Endpoint::builder(
        EndpointId::from_static("ep_a"),
        "https://receiver.example.com/hooks",
        Scheme::github(),
        secret,
    )
    .ordered(true)
    .build()
    .unwrap();
    let delivery = Delivery::new(
        DeliveryId::from_static("dlv_1"),
        MessageId::new("msg_1").unwrap(),
        EventType::from_static("ticket.created"),
        EndpointId::from_static("ep_a"),
        t0,
    );
    {
        let store = SqliteStore::open(&db.0).await.unwrap();
        store.put_endpoint(endpoint.clone()).await.unwrap();
        store
            .insert_event(
                StoredEvent {
                    id: MessageId::new("msg_1").unwrap(),
                    event_type: EventType::from_static("ticket.created"),
                    channels: vec!["acme".into()],
                    payload: bytes::Bytes::from_static(b"{\"n\":1}"),
                    created_at: t0,
                },
                vec![delivery.clone()],
            )
            .await
            .unwrap();
        let claimed = store
            .claim_due(t0, std::time::Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        store.close().await;
    }
    let store = SqliteStore::open(&db.0).await.unwrap();
    let back = store
        .endpoint(&EndpointId::from_static("ep_a"))
        .await
        .unwrap()
        .expect("endpoint kept");
    assert!(back.is_ordered());
    assert_eq!(back.url(), endpoint.url());
    let now = datetime!(2026-01-01 12:30 UTC);
    // Same signature headers from the reopened endpoint.
    let id = MessageId::new("msg_1").unwrap();
    let ty = EventType::from_static("ticket.created");
    let dlv = DeliveryId::from_static("dlv_1");
    let body = bytes::Bytes::from_static(b"{}");
    let a = endpoint
        .request(body.clone(), &id, &ty, &dlv, now, None)
        .unwrap();
    let b = back.request(body, &id, &ty, &dlv, now, None).unwrap();
    assert_eq!(a.headers(), b.headers());
    // The claim is still there, and comes back when its lease runs out.
    let in_flight = store
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::InFlight),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(in_flight.len(), 1);
    let again = store
        .claim_due(
            t0 + time::Duration::seconds(61),
            std::time::Duration::from_secs(60),
            10,
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].claim.is_takeover());
    assert_eq!(&again[0].payload[..], b"{\"n\":1}");
    store.close().await;
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused() {
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.unwrap();
    store.close().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.0.display()))
            .await
            .unwrap();
        sqlx::query("INSERT INTO hookway_migrations (version, applied_at) VALUES (999, 0)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let error = SqliteStore::open(&db.0).await.unwrap_err();
    assert!(error.to_string().contains("newer"), "{error}");
}

/// The engine's workers over SQLite: attempt results go through the grouped
/// writer (`Store::save_all`), retries included, and every attempt is
/// logged.
#[cfg(feature = "outbox")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_deliver_through_grouped_saves() {
    use hookway::delivery::DeliveryState;
    use hookway::outbox::{Outbox, OutboxConfig};
    use hookway::retry::RetryPolicy;
    use hookway::testing::{Reply, ScriptedDispatcher};
    use std::time::Duration;

    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.unwrap();
    // The first ten requests fail with 503; everything after succeeds.
    let mut dispatcher = ScriptedDispatcher::new();
    for _ in 0..10 {
        dispatcher = dispatcher.reply(Reply::status(503));
    }
    let outbox = Outbox::with_config(
        store.clone(),
        dispatcher,
        OutboxConfig::default(),
        hookway::clock::SystemClock,
    );
    outbox
        .add_endpoint(
            Endpoint::builder(
                EndpointId::from_static("ep_a"),
                "https://receiver.example.com/hooks",
                Scheme::standard(),
                Secret::generate(),
            )
            .retry_policy(
                RetryPolicy::fixed([Duration::from_millis(10); 3])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let workers = outbox.start(3);
    let mut ids = Vec::new();
    for n in 0..60 {
        let id = MessageId::new(format!("msg_{n}")).unwrap();
        ids.extend(
            outbox
                .publish(id, EventType::from_static("ticket.created"), &n, &[])
                .await
                .unwrap(),
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = store
            .deliveries(&DeliveryQuery {
                state: Some(StateKind::Delivered),
                ..DeliveryQuery::default()
            })
            .await
            .unwrap()
            .len();
        if delivered == ids.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {delivered} of {} delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.shutdown(Duration::from_secs(5)).await;
    let mut attempts = 0;
    for id in &ids {
        let delivery = store.delivery(id).await.unwrap().unwrap();
        assert!(matches!(delivery.state(), DeliveryState::Delivered { .. }));
        let log = store.attempts(id).await.unwrap();
        assert_eq!(
            log.len() as u32,
            delivery.attempts(),
            "{id}: log and count differ"
        );
        assert_eq!(log.last().and_then(|a| a.status()), Some(200));
        attempts += log.len();
    }
    assert_eq!(attempts, ids.len() + 10, "one extra attempt per 503");
    assert_eq!(outbox.dispatcher().requests().len(), attempts);
}
