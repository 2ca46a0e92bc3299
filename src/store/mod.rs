//! Persistence for the sending side: the [`Store`] trait and
//! [`MemoryStore`], the default.
//!
//! A store keeps endpoints, events (the payload once per event, however many
//! endpoints receive it), deliveries and their attempts. The delivery state
//! machine itself is pure ([`Delivery`]); a store only persists its results
//! atomically, with a compare-and-set on the delivery's claim count so that a
//! worker whose lease expired cannot overwrite a newer worker's result.

#[cfg(feature = "test-support")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-support")))]
pub mod conformance;
#[cfg(all(feature = "receive", any(feature = "sqlite", feature = "postgres")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "receive", any(feature = "sqlite", feature = "postgres"))))
)]
pub mod idempotency;
#[cfg(all(feature = "receive", any(feature = "sqlite", feature = "postgres")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "receive", any(feature = "sqlite", feature = "postgres"))))
)]
pub mod inbox;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::delivery::{Attempt, Claim, Delivery, DeliveryId, DeliveryState, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::{EventType, MessageId};

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// An event as published: its payload is stored once, whatever the number
/// of endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The message id; publishing the same id twice creates no second
    /// delivery.
    pub id: MessageId,
    /// The event type.
    pub event_type: EventType,
    /// The channels it was published on.
    pub channels: Vec<String>,
    /// The serialised body, exactly as sent.
    pub payload: Bytes,
    /// When it was published.
    pub created_at: OffsetDateTime,
}

/// What [`Store::insert_event`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The event and its deliveries were stored.
    New(Vec<DeliveryId>),
    /// An event with this id already existed; nothing was stored, and these
    /// are its deliveries now in the store (those made when it was first
    /// published, and any replays of it, less any pruned).
    Duplicate(Vec<DeliveryId>),
}

impl Inserted {
    /// The delivery ids, new or existing.
    pub fn ids(&self) -> &[DeliveryId] {
        match self {
            Self::New(ids) | Self::Duplicate(ids) => ids,
        }
    }
}

/// The endpoints a publish fans out to, as [`Store::publish_endpoints`]
/// read them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EndpointList {
    /// Every endpoint, ordered by id.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The store's version of the endpoint list this was read at, if it
    /// keeps one: [`Store::insert_event_at`] refuses an event whose
    /// deliveries were made from a list that is no longer current.
    pub version: Option<u64>,
}

impl EndpointList {
    /// A list read at `version` (for store implementations).
    pub fn new(endpoints: Vec<Arc<Endpoint>>, version: Option<u64>) -> Self {
        Self { endpoints, version }
    }
}

/// A delivery claimed by [`Store::claim_due`], with the payload its attempt
/// sends (so a worker needs no second read per delivery).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Claimed {
    /// The delivery, now in flight.
    pub delivery: Delivery,
    /// The claim: pass its token to [`Store::save`].
    pub claim: Claim,
    /// The event's serialised body, exactly as published.
    pub payload: Bytes,
    /// The delivery's endpoint as it was when the claim was made, if the
    /// store had it at hand; otherwise the engine reads it with
    /// [`Store::endpoint`]. `None` inside `Some` is an endpoint that no
    /// longer exists.
    pub endpoint: Option<Option<Arc<Endpoint>>>,
}

impl Claimed {
    /// Bundles a claimed delivery with its event's payload (for store
    /// implementations).
    pub fn new(delivery: Delivery, claim: Claim, payload: Bytes) -> Self {
        Self {
            delivery,
            claim,
            payload,
            endpoint: None,
        }
    }

    /// Adds the delivery's endpoint as of the claim (`None`: it no longer
    /// exists), so the engine need not read it.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Option<Arc<Endpoint>>) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// One write of [`Store::save_all`]: the arguments of [`Store::save`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Save {
    /// The delivery as it is to be stored.
    pub delivery: Delivery,
    /// The claim count the stored delivery must still have.
    pub expected_claims: u64,
    /// The state kind the stored delivery must still have.
    pub expected_state: StateKind,
    /// An attempt to append to its log.
    pub attempt: Option<Attempt>,
}

impl Save {
    /// A save of `delivery` if the stored one still has `expected_claims`
    /// claims and is `expected_state`, appending `attempt`.
    pub fn new(
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> Self {
        Self {
            delivery,
            expected_claims,
            expected_state,
            attempt,
        }
    }
}

/// What [`Store::prune`] removes.
///
/// Only finished deliveries are removed, with their attempt logs; an event
/// goes once it has no delivery left, and an event that never had one (no
/// endpoint matched it) goes once it is older than `delivered_before`.
/// Pending, in-flight and held deliveries are never pruned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Prune {
    /// Remove deliveries delivered before this time.
    pub delivered_before: Option<OffsetDateTime>,
    /// Remove deliveries that failed before this time. Failed deliveries
    /// are kept until asked for, since they may be retried by hand.
    pub failed_before: Option<OffsetDateTime>,
}

impl Prune {
    /// Removes deliveries delivered before `before`.
    pub fn delivered_before(before: OffsetDateTime) -> Self {
        Self {
            delivered_before: Some(before),
            failed_before: None,
        }
    }

    /// Also removes deliveries that failed before `before`.
    #[must_use]
    pub fn and_failed_before(mut self, before: OffsetDateTime) -> Self {
        self.failed_before = Some(before);
        self
    }

    /// Whether `delivery` is one this prune removes.
    pub fn matches(&self, delivery: &Delivery) -> bool {
        match delivery.state() {
            DeliveryState::Delivered { at } => self.delivered_before.is_some_and(|t| *at < t),
            DeliveryState::Failed { at, .. } => self.failed_before.is_some_and(|t| *at < t),
            _ => false,
        }
    }
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Only this endpoint's.
    pub endpoint: Option<EndpointId>,
    /// Only deliveries in this state.
    pub state: Option<StateKind>,
    /// Only deliveries created at or after this time.
    pub since: Option<OffsetDateTime>,
    /// At most this many, oldest first (0 = no limit).
    pub limit: usize,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The delivery changed since it was read (another worker took it over,
    /// or an operator acted on it): the write was refused.
    #[error("delivery {0} changed since it was read")]
    Conflict(DeliveryId),
    /// No such delivery or endpoint.
    #[error("{0} not found")]
    NotFound(String),
    /// [`Store::insert_event_at`] refused an event whose deliveries were
    /// made from an endpoint list that changed since it was read; the
    /// engine reads the list again and retries.
    #[error("the endpoints changed since they were read")]
    EndpointsChanged,
    /// The backend failed.
    #[error("store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Persistence for the delivery engine (the `Outbox`, feature `outbox`).
///
/// Every method is one atomic step. Implementations: [`MemoryStore`]
/// (default; nothing survives a restart), `SqliteStore` (feature
/// `sqlite`) and `PostgresStore` (feature `postgres`); the
/// `store::conformance` suite (feature `test-support`) checks a store of
/// your own.
pub trait Store: Send + Sync + 'static {
    /// Whether the engine should group attempt results and write them
    /// through [`save_all`](Self::save_all) (one writer task collecting
    /// whatever has queued up), rather than save each as it comes. Worth it
    /// where a write costs a round trip or a commit; the default, `false`,
    /// suits a store in memory.
    const GROUPS_SAVES: bool = false;

    /// Adds or replaces an endpoint.
    fn put_endpoint(
        &self,
        endpoint: Endpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Enables or disables an endpoint in place, leaving its other settings
    /// as stored (so a concurrent update is not undone). Returns whether the
    /// endpoint exists.
    fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The number of deliveries held for an endpoint (disabled endpoints
    /// hold their new events, up to a limit).
    fn held_count(
        &self,
        endpoint: &EndpointId,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// One endpoint (shared: endpoints are read on every attempt).
    fn endpoint(
        &self,
        id: &EndpointId,
    ) -> impl Future<Output = Result<Option<Arc<Endpoint>>, StoreError>> + Send;

    /// Every endpoint, ordered by id.
    fn endpoints(&self) -> impl Future<Output = Result<Vec<Arc<Endpoint>>, StoreError>> + Send;

    /// Stores an event and its deliveries in one step, unless an event with
    /// the same id exists, in which case nothing changes.
    fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    /// The endpoints a publish fans out to, with the list's version if the
    /// store keeps one (a store shared by several processes can then serve
    /// the list from a cache and let [`insert_event_at`](Self::insert_event_at)
    /// catch a stale one). The default reads [`endpoints`](Self::endpoints),
    /// with no version.
    fn publish_endpoints(&self) -> impl Future<Output = Result<EndpointList, StoreError>> + Send {
        async move { Ok(EndpointList::new(self.endpoints().await?, None)) }
    }

    /// [`insert_event`](Self::insert_event), for deliveries made from the
    /// endpoint list at `version` (from [`publish_endpoints`](Self::publish_endpoints)):
    /// if the store's list has changed since, nothing is stored and the
    /// result is [`StoreError::EndpointsChanged`]. The default ignores the
    /// version.
    fn insert_event_at(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
        version: Option<u64>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send {
        let _ = version;
        self.insert_event(event, deliveries)
    }

    /// One event, payload included.
    fn event(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<StoredEvent>, StoreError>> + Send;

    /// Claims up to `limit` deliveries due at `now` (pending and due, or in
    /// flight with an expired lease), earliest first, each with a lease of
    /// `lease`, and returns them with their events' payloads.
    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// The endpoint's oldest unfinished delivery (pending, in flight or
    /// held), in the order deliveries were stored: the head of its queue
    /// when the endpoint is ordered. Must not cost more as finished
    /// deliveries pile up.
    fn queue_head(
        &self,
        endpoint: &EndpointId,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send;

    /// Removes the finished deliveries `prune` selects, their attempts, and
    /// events left with no delivery; returns how many deliveries went.
    ///
    /// A pruned event's id can be published again as a new event, so
    /// de-duplication of publishes reaches back as far as retention does.
    fn prune(&self, prune: Prune) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Writes `delivery` back, and appends `attempt` to its log, if the
    /// stored delivery still has `expected_claims` claims and the same state
    /// kind as `expected_state`; otherwise [`StoreError::Conflict`].
    fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Several [`save`](Self::save)s at once, each with the same check, and
    /// each with its own result (in order): a conflict on one does not stop
    /// the others. The engine saves attempt results through this, so a
    /// store that can write them in one transaction or statement should.
    /// The default saves one by one.
    fn save_all(
        &self,
        saves: Vec<Save>,
    ) -> impl Future<Output = Result<Vec<Result<(), StoreError>>, StoreError>> + Send {
        async move {
            let mut results = Vec::with_capacity(saves.len());
            for save in saves {
                results.push(
                    self.save(
                        save.delivery,
                        save.expected_claims,
                        save.expected_state,
                        save.attempt,
                    )
                    .await,
                );
            }
            Ok(results)
        }
    }

    /// One delivery.
    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send;

    /// Deliveries matching `query`, oldest first.
    fn deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// A delivery's attempts, in order.
    fn attempts(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Vec<Attempt>, StoreError>> + Send;

    /// Events published at or after `since`, oldest first (for replay).
    fn events_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Adds deliveries of events already stored (replay to an endpoint).
    fn insert_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The earliest time any delivery becomes claimable, so idle workers
    /// sleep until then instead of polling.
    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, StoreError>> + Send;
}
