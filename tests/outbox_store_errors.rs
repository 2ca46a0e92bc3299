//! The Outbox's workers when the store fails: they wait and try again,
//! rather than retrying a failing claim at once.
#![cfg(feature = "outbox")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookway::delivery::{Attempt, Delivery, DeliveryId, EndpointId, StateKind};
use hookway::endpoint::Endpoint;
use hookway::event::MessageId;
use hookway::outbox::{Outbox, OutboxConfig};
use hookway::store::{
    Claimed, DeliveryQuery, Inserted, MemoryStore, Prune, Store, StoreError, StoredEvent,
};
use hookway::testing::ScriptedDispatcher;
use hookway::{clock::ManualClock, EventType, Scheme, Secret};
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// A `MemoryStore` whose claims fail while `claims_down` is set (a
/// read-only or full database), counting them and signalling `spinning` at
/// the 50th.
#[derive(Clone, Default)]
struct FailingClaims {
    inner: Arc<MemoryStore>,
    claims_down: Arc<AtomicBool>,
    failed_claims: Arc<AtomicUsize>,
    spinning: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("the database is read-only")]
struct ReadOnly;

impl Store for FailingClaims {
    async fn put_endpoint(&self, endpoint: Endpoint) -> Result<(), StoreError> {
        self.inner.put_endpoint(endpoint).await
    }
    async fn set_endpoint_enabled(&self, id: &EndpointId, on: bool) -> Result<bool, StoreError> {
        self.inner.set_endpoint_enabled(id, on).await
    }
    async fn held_count(&self, endpoint: &EndpointId) -> Result<usize, StoreError> {
        self.inner.held_count(endpoint).await
    }
    async fn endpoint(&self, id: &EndpointId) -> Result<Option<Arc<Endpoint>>, StoreError> {
        self.inner.endpoint(id).await
    }
    async fn endpoints(&self) -> Result<Vec<Arc<Endpoint>>, StoreError> {
        self.inner.endpoints().await
    }
    async fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> Result<Inserted, StoreError> {
        self.inner.insert_event(event, deliveries).await
    }
    async fn event(&self, id: &MessageId) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.event(id).await
    }
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        if self.claims_down.load(Ordering::SeqCst) {
            // Give the runtime a turn, as a real store's I/O would.
            tokio::task::yield_now().await;
            if self.failed_claims.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                self.spinning.notify_one();
            }
            return Err(StoreError::Backend(Box::new(ReadOnly)));
        }
        self.inner.claim_due(now, lease, limit).await
    }
    async fn queue_head(&self, endpoint: &EndpointId) -> Result<Option<Delivery>, StoreError> {
        self.inner.queue_head(endpoint).await
    }
    async fn prune(&self, prune: Prune) -> Result<usize, StoreError> {
        self.inner.prune(prune).await
    }
    async fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        self.inner
            .save(delivery, expected_claims, expected_state, attempt)
            .await
    }
    async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        self.inner.delivery(id).await
    }
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries(query).await
    }
    async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, StoreError> {
        self.inner.attempts(id).await
    }
    async fn events_since(&self, since: OffsetDateTime) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events_since(since).await
    }
    async fn insert_deliveries(&self, deliveries: Vec<Delivery>) -> Result<(), StoreError> {
        self.inner.insert_deliveries(deliveries).await
    }
    async fn next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.inner.next_due().await
    }
}

/// Workers whose claims fail while a delivery is due wait `idle_poll`
/// between tries, for as long as the store keeps failing.
#[tokio::test(start_paused = true)]
async fn a_worker_waits_after_a_failed_claim() {
    let t0 = datetime!(2026-01-01 12:00 UTC);
    let store = FailingClaims::default();
    let mut config = OutboxConfig::default();
    config.idle_poll = Duration::from_secs(1);
    let outbox = Outbox::with_config(
        store.clone(),
        ScriptedDispatcher::new(),
        config,
        ManualClock::new(t0),
    );
    outbox
        .add_endpoint(
            Endpoint::builder(
                EndpointId::from_static("ep_a"),
                "https://receiver.example.com/hooks",
                Scheme::standard(),
                Secret::from_bytes(b"a-secret-of-some-thirty-two-byte").unwrap(),
            )
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    outbox
        .publish(
            "msg_1".parse().unwrap(),
            EventType::from_static("ticket.created"),
            &json!({}),
            &[],
        )
        .await
        .unwrap();
    store.claims_down.store(true, Ordering::SeqCst);
    let workers = outbox.start(1);
    tokio::select! {
        () = store.spinning.notified() => panic!(
            "the worker retried a failing claim 50 times without waiting"
        ),
        () = tokio::time::sleep(Duration::from_millis(3500)) => {}
    }
    let failed = store.failed_claims.load(Ordering::SeqCst);
    assert!((3..=5).contains(&failed), "{failed} claims in 3.5 s");
    // Once the store is back, the delivery goes out.
    store.claims_down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    workers.shutdown(Duration::from_secs(1)).await;
    let sent = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state().kind(), StateKind::Delivered);
}
