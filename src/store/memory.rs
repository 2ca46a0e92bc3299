//! The in-memory store: the default, for tests and for senders that can
//! afford to lose pending retries on restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Claimed, DeliveryQuery, Inserted, Prune, Store, StoreError, StoredEvent};
use crate::delivery::{Attempt, Delivery, DeliveryId, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::MessageId;

/// Keeps everything in process memory behind one mutex; every method is one
/// atomic step. Nothing survives a restart.
///
/// Time-ordered indexes make claiming, [`next_due`](Store::next_due) and
/// [`queue_head`](Store::queue_head) cost O(log n), however many deliveries
/// are stored. Finished deliveries stay until [`prune`](Store::prune)d
/// (the `Outbox` prunes delivered ones after its
/// [`retention`](crate::outbox::OutboxConfig::retention)).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct EventEntry {
    event: StoredEvent,
    /// Its deliveries that have not been pruned.
    deliveries: Vec<DeliveryId>,
    /// Its key in `event_order`.
    seq: u64,
}

#[derive(Debug)]
struct DeliveryEntry {
    delivery: Delivery,
    attempts: Vec<Attempt>,
    /// Its key in `order`.
    seq: u64,
}

/// Indexes over the deliveries, kept with every write.
#[derive(Debug, Default)]
struct Indexes {
    /// Held deliveries per endpoint.
    held: HashMap<EndpointId, usize>,
    /// Claimable-from time and id of every pending or in-flight delivery.
    due: BTreeSet<(OffsetDateTime, DeliveryId)>,
    /// Every unfinished (pending, in-flight or held) delivery per endpoint,
    /// by creation sequence: the head of an ordered endpoint's queue is the
    /// first.
    unfinished: HashMap<EndpointId, BTreeMap<u64, DeliveryId>>,
}

impl Indexes {
    /// Removes the entries of `old`, created `seq`th.
    fn remove(&mut self, old: &Delivery, seq: u64) {
        if let Some(at) = old.next_attempt_at() {
            self.due.remove(&(at, old.id().clone()));
        }
        if !old.state().is_terminal() {
            if let Some(queue) = self.unfinished.get_mut(old.endpoint_id()) {
                queue.remove(&seq);
                if queue.is_empty() {
                    self.unfinished.remove(old.endpoint_id());
                }
            }
        }
        if old.state().kind() == StateKind::Held {
            if let Some(n) = self.held.get_mut(old.endpoint_id()) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Adds the entries of `new`, created `seq`th.
    fn add(&mut self, new: &Delivery, seq: u64) {
        if let Some(at) = new.next_attempt_at() {
            self.due.insert((at, new.id().clone()));
        }
        if !new.state().is_terminal() {
            match self.unfinished.get_mut(new.endpoint_id()) {
                Some(queue) => {
                    queue.insert(seq, new.id().clone());
                }
                None => {
                    self.unfinished.insert(
                        new.endpoint_id().clone(),
                        BTreeMap::from([(seq, new.id().clone())]),
                    );
                }
            }
        }
        if new.state().kind() == StateKind::Held {
            *self.held.entry(new.endpoint_id().clone()).or_default() += 1;
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<EndpointId, Arc<Endpoint>>,
    events: HashMap<MessageId, EventEntry>,
    /// Publication order, for replay.
    event_order: BTreeMap<(OffsetDateTime, u64), MessageId>,
    deliveries: HashMap<DeliveryId, DeliveryEntry>,
    /// Creation order, for listing.
    order: BTreeMap<u64, DeliveryId>,
    next_seq: u64,
    idx: Indexes,
}

impl Inner {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Writes `delivery` (new or replacing), with `attempt` appended to its
    /// log.
    fn put(&mut self, delivery: Delivery, attempt: Option<Attempt>) {
        let Self {
            deliveries, idx, ..
        } = self;
        if let Some(entry) = deliveries.get_mut(delivery.id()) {
            idx.remove(&entry.delivery, entry.seq);
            idx.add(&delivery, entry.seq);
            entry.delivery = delivery;
            if let Some(attempt) = attempt {
                if entry.attempts.is_empty() {
                    // Most deliveries succeed first time: room for one.
                    entry.attempts.reserve_exact(1);
                }
                entry.attempts.push(attempt);
            }
            return;
        }
        let seq = self.seq();
        self.idx.add(&delivery, seq);
        let id = delivery.id().clone();
        self.order.insert(seq, id.clone());
        self.deliveries.insert(
            id,
            DeliveryEntry {
                delivery,
                attempts: attempt.into_iter().collect(),
                seq,
            },
        );
    }

    /// Removes a delivery, and its event if it was the last.
    fn remove(&mut self, id: &DeliveryId) {
        let Some(entry) = self.deliveries.remove(id) else {
            return;
        };
        self.idx.remove(&entry.delivery, entry.seq);
        self.order.remove(&entry.seq);
        let event_id = entry.delivery.event_id();
        let now_empty = match self.events.get_mut(event_id) {
            Some(event) => {
                event.deliveries.retain(|d| d != id);
                event.deliveries.is_empty()
            }
            None => false,
        };
        if now_empty {
            if let Some(event) = self.events.remove(event_id) {
                self.event_order
                    .remove(&(event.event.created_at, event.seq));
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many deliveries are stored, finished ones included (for tests and
    /// metrics).
    pub fn delivery_count(&self) -> usize {
        self.lock().deliveries.len()
    }

    /// How many events are stored (for tests and metrics).
    pub fn event_count(&self) -> usize {
        self.lock().events.len()
    }
}

impl Store for MemoryStore {
    fn put_endpoint(
        &self,
        endpoint: Endpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.lock()
            .endpoints
            .insert(endpoint.id().clone(), Arc::new(endpoint));
        ready(Ok(()))
    }

    fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let found = match self.lock().endpoints.get_mut(id) {
            Some(endpoint) => {
                Arc::make_mut(endpoint).set_enabled(enabled);
                true
            }
            None => false,
        };
        ready(Ok(found))
    }

    fn endpoint(
        &self,
        id: &EndpointId,
    ) -> impl Future<Output = Result<Option<Arc<Endpoint>>, StoreError>> + Send {
        ready(Ok(self.lock().endpoints.get(id).cloned()))
    }

    fn held_count(
        &self,
        endpoint: &EndpointId,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        ready(Ok(self.lock().idx.held.get(endpoint).copied().unwrap_or(0)))
    }

    fn endpoints(&self) -> impl Future<Output = Result<Vec<Arc<Endpoint>>, StoreError>> + Send {
        ready(Ok(self.lock().endpoints.values().cloned().collect()))
    }

    fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send {
        let mut inner = self.lock();
        if let Some(entry) = inner.events.get(&event.id) {
            return ready(Ok(Inserted::Duplicate(entry.deliveries.clone())));
        }
        let ids: Vec<DeliveryId> = deliveries.iter().map(|d| d.id().clone()).collect();
        let seq = inner.seq();
        inner
            .event_order
            .insert((event.created_at, seq), event.id.clone());
        inner.events.insert(
            event.id.clone(),
            EventEntry {
                event,
                deliveries: ids.clone(),
                seq,
            },
        );
        for delivery in deliveries {
            inner.put(delivery, None);
        }
        ready(Ok(Inserted::New(ids)))
    }

    fn event(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<StoredEvent>, StoreError>> + Send {
        ready(Ok(self.lock().events.get(id).map(|e| e.event.clone())))
    }

    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send {
        let mut inner = self.lock();
        let due: Vec<DeliveryId> = inner
            .idx
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        let Inner {
            deliveries,
            idx,
            events,
            ..
        } = &mut *inner;
        let index = &mut idx.due;
        for id in due {
            // Claimed in place: one copy, the one handed to the worker.
            let Some(entry) = deliveries.get_mut(&id) else {
                continue;
            };
            let stored = &mut entry.delivery;
            // Events outlive their deliveries (see `Inner::remove`).
            let Some(event) = events.get(stored.event_id()) else {
                return ready(Err(StoreError::NotFound(format!(
                    "event {} of delivery {id}",
                    stored.event_id()
                ))));
            };
            let before = stored.next_attempt_at();
            if let Ok(claim) = stored.claim(now, lease) {
                if let Some(at) = before {
                    index.remove(&(at, id.clone()));
                }
                if let Some(at) = stored.next_attempt_at() {
                    index.insert((at, id));
                }
                claimed.push(Claimed::new(
                    stored.clone(),
                    claim,
                    event.event.payload.clone(),
                ));
            }
        }
        ready(Ok(claimed))
    }

    fn queue_head(
        &self,
        endpoint: &EndpointId,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send {
        let inner = self.lock();
        let head = inner
            .idx
            .unfinished
            .get(endpoint)
            .and_then(|queue| queue.first_key_value())
            .and_then(|(_, id)| inner.deliveries.get(id))
            .map(|entry| entry.delivery.clone());
        ready(Ok(head))
    }

    fn prune(&self, prune: Prune) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let mut inner = self.lock();
        let doomed: Vec<DeliveryId> = inner
            .deliveries
            .values()
            .filter(|entry| prune.matches(&entry.delivery))
            .map(|entry| entry.delivery.id().clone())
            .collect();
        for id in &doomed {
            inner.remove(id);
        }
        // Events that never had a delivery (no endpoint matched them) go
        // once they are older than the cut too.
        if let Some(cut) = prune.delivered_before {
            let bare: Vec<MessageId> = inner
                .events
                .values()
                .filter(|e| e.deliveries.is_empty() && e.event.created_at < cut)
                .map(|e| e.event.id.clone())
                .collect();
            for id in bare {
                if let Some(event) = inner.events.remove(&id) {
                    inner
                        .event_order
                        .remove(&(event.event.created_at, event.seq));
                }
            }
        }
        ready(Ok(doomed.len()))
    }

    fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        let current = match inner.deliveries.get(delivery.id()) {
            None => {
                return ready(Err(StoreError::NotFound(format!(
                    "delivery {}",
                    delivery.id()
                ))))
            }
            Some(entry) => &entry.delivery,
        };
        if current.claims() != expected_claims || current.state().kind() != expected_state {
            return ready(Err(StoreError::Conflict(delivery.id().clone())));
        }
        inner.put(delivery, attempt);
        ready(Ok(()))
    }

    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .deliveries
            .get(id)
            .map(|entry| entry.delivery.clone())))
    }

    fn deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        let inner = self.lock();
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let found = inner
            .order
            .values()
            .filter_map(|id| inner.deliveries.get(id))
            .map(|entry| &entry.delivery)
            .filter(|d| query.endpoint.as_ref().is_none_or(|e| d.endpoint_id() == e))
            .filter(|d| query.state.is_none_or(|s| d.state().kind() == s))
            .filter(|d| query.since.is_none_or(|t| d.created_at() >= t))
            .take(limit)
            .cloned()
            .collect();
        ready(Ok(found))
    }

    fn attempts(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Vec<Attempt>, StoreError>> + Send {
        ready(Ok(self
            .lock()
            .deliveries
            .get(id)
            .map(|entry| entry.attempts.clone())
            .unwrap_or_default()))
    }

    fn events_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send {
        let inner = self.lock();
        let found = inner
            .event_order
            .range((since, 0)..)
            .filter_map(|(_, id)| inner.events.get(id))
            .map(|entry| entry.event.clone())
            .collect();
        ready(Ok(found))
    }

    fn insert_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        for delivery in &deliveries {
            if !inner.events.contains_key(delivery.event_id()) {
                return ready(Err(StoreError::NotFound(format!(
                    "event {}",
                    delivery.event_id()
                ))));
            }
        }
        for delivery in deliveries {
            if let Some(event) = inner.events.get_mut(delivery.event_id()) {
                event.deliveries.push(delivery.id().clone());
            }
            inner.put(delivery, None);
        }
        ready(Ok(()))
    }

    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, StoreError>> + Send {
        ready(Ok(self.lock().idx.due.first().map(|(at, _)| *at)))
    }
}
