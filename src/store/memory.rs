//! The in-memory store: the default, for tests and for senders that can
//! afford to lose pending retries on restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::{DeliveryQuery, Inserted, Store, StoreError, StoredEvent};
use crate::delivery::{Attempt, Claim, Delivery, DeliveryId, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::MessageId;

/// Keeps everything in process memory behind one mutex; every method is one
/// atomic step. Nothing survives a restart.
///
/// A time-ordered index of claimable deliveries makes claiming and
/// [`next_due`](Store::next_due) cost O(log n) per delivery, however many
/// are stored.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<EndpointId, Arc<Endpoint>>,
    /// Held deliveries per endpoint, kept with every write.
    held: HashMap<EndpointId, usize>,
    events: HashMap<MessageId, (StoredEvent, Vec<DeliveryId>)>,
    /// Publication order, for replay.
    event_order: Vec<MessageId>,
    deliveries: HashMap<DeliveryId, Delivery>,
    attempts: HashMap<DeliveryId, Vec<Attempt>>,
    /// Claimable-from time and id of every pending or in-flight delivery.
    due: BTreeSet<(OffsetDateTime, DeliveryId)>,
    /// Creation order, for listing.
    order: Vec<DeliveryId>,
}

impl Inner {
    fn put(&mut self, delivery: Delivery) {
        let id = delivery.id().clone();
        if let Some(old) = self.deliveries.get(&id) {
            if let Some(at) = old.next_attempt_at() {
                self.due.remove(&(at, id.clone()));
            }
            if old.state().kind() == StateKind::Held {
                if let Some(n) = self.held.get_mut(old.endpoint_id()) {
                    *n = n.saturating_sub(1);
                }
            }
        } else {
            self.order.push(id.clone());
        }
        if delivery.state().kind() == StateKind::Held {
            *self.held.entry(delivery.endpoint_id().clone()).or_default() += 1;
        }
        if let Some(at) = delivery.next_attempt_at() {
            self.due.insert((at, id.clone()));
        }
        self.deliveries.insert(id, delivery);
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
        ready(Ok(self.lock().held.get(endpoint).copied().unwrap_or(0)))
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
        if let Some((_, ids)) = inner.events.get(&event.id) {
            return ready(Ok(Inserted::Duplicate(ids.clone())));
        }
        let ids: Vec<DeliveryId> = deliveries.iter().map(|d| d.id().clone()).collect();
        inner.event_order.push(event.id.clone());
        inner.events.insert(event.id.clone(), (event, ids.clone()));
        for delivery in deliveries {
            inner.put(delivery);
        }
        ready(Ok(Inserted::New(ids)))
    }

    fn event(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<StoredEvent>, StoreError>> + Send {
        ready(Ok(self.lock().events.get(id).map(|(e, _)| e.clone())))
    }

    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Delivery, Claim)>, StoreError>> + Send {
        let mut inner = self.lock();
        let due: Vec<DeliveryId> = inner
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        let Inner {
            deliveries,
            due: index,
            ..
        } = &mut *inner;
        for id in due {
            // Claimed in place: one copy, the one handed to the worker.
            let Some(stored) = deliveries.get_mut(&id) else {
                continue;
            };
            let before = stored.next_attempt_at();
            if let Ok(claim) = stored.claim(now, lease) {
                if let Some(at) = before {
                    index.remove(&(at, id.clone()));
                }
                if let Some(at) = stored.next_attempt_at() {
                    index.insert((at, id));
                }
                claimed.push((stored.clone(), claim));
            }
        }
        ready(Ok(claimed))
    }

    fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        let id = delivery.id().clone();
        let current = match inner.deliveries.get(&id) {
            None => return ready(Err(StoreError::NotFound(format!("delivery {id}")))),
            Some(stored) => stored,
        };
        if current.claims() != expected_claims || current.state().kind() != expected_state {
            return ready(Err(StoreError::Conflict(id)));
        }
        if let Some(attempt) = attempt {
            inner.attempts.entry(id).or_default().push(attempt);
        }
        inner.put(delivery);
        ready(Ok(()))
    }

    fn delivery(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send {
        ready(Ok(self.lock().deliveries.get(id).cloned()))
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
            .iter()
            .filter_map(|id| inner.deliveries.get(id))
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
            .attempts
            .get(id)
            .cloned()
            .unwrap_or_default()))
    }

    fn events_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send {
        let inner = self.lock();
        let found = inner
            .event_order
            .iter()
            .filter_map(|id| inner.events.get(id))
            .filter(|(e, _)| e.created_at >= since)
            .map(|(e, _)| e.clone())
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
            if let Some((_, ids)) = inner.events.get_mut(delivery.event_id()) {
                ids.push(delivery.id().clone());
            }
            inner.put(delivery);
        }
        ready(Ok(()))
    }

    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, StoreError>> + Send {
        ready(Ok(self.lock().due.first().map(|(at, _)| *at)))
    }
}
