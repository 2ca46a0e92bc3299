//! The delivery engine: publish once, deliver to every subscribed endpoint,
//! retry on schedule, log every attempt.
//!
//! [`Outbox::publish`] serialises the payload once, finds the endpoints
//! whose filter and channels match, and stores one [`Delivery`] per endpoint
//! in one atomic step. Workers ([`Outbox::start`]) claim due deliveries with
//! a lease, sign and send each attempt at its own time, classify the
//! outcome, log the [`Attempt`](crate::delivery::Attempt) and reschedule per
//! the endpoint's [`RetryPolicy`](crate::retry::RetryPolicy). The decisions
//! live in the pure [`Delivery`] state machine; this module is the loop
//! around it. [`Outbox::run_once`] runs one round by hand, for tests.
//!
//! Delivery is at-least-once: a worker that dies mid-attempt leaves its
//! claim to expire, and the delivery is attempted again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::clock::{Clock, SystemClock};
use crate::delivery::{
    AttemptReport, Claim, Delivery, DeliveryId, EndpointId, Next, StateKind, TransitionError,
};
use crate::dispatch::Dispatcher;
use crate::endpoint::Endpoint;
use crate::error::JsonError;
use crate::event::{Event, EventType, MessageId};
use crate::retry::SplitMix64;
use crate::store::{DeliveryQuery, Inserted, Store, StoreError, StoredEvent};

/// The default limit on a serialised payload: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Engine settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// How long a claim lasts before another worker may take the delivery
    /// over. Must exceed the longest endpoint timeout. Default: 2 minutes.
    pub lease: Duration,
    /// Deliveries claimed per round. Default: 64.
    pub claim_batch: usize,
    /// Requests in flight at once, across all endpoints. Default: 64.
    pub max_in_flight: usize,
    /// The largest serialised payload accepted by `publish`. Default:
    /// [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: usize,
    /// The longest an idle worker sleeps before looking again, even if no
    /// delivery is due (a safety net for deliveries added by other
    /// processes). Default: 1 second.
    pub idle_poll: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            claim_batch: 64,
            max_in_flight: 64,
            max_payload: DEFAULT_MAX_PAYLOAD,
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Why `publish` refused an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload could not be serialised.
    #[error("could not serialise the payload: {0}")]
    Serialize(#[source] JsonError),
    /// The serialised payload is larger than the configured limit; it was
    /// not stored, and not truncated.
    #[error("payload is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store failed; nothing was published.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The delivery is not in a state that allows the operation.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// No such delivery or endpoint.
    #[error("{0} not found")]
    NotFound(String),
}

/// The delivery engine over a [`Store`] and a [`Dispatcher`].
///
/// Cheap to clone: clones share the store, the dispatcher and the workers'
/// wake-up signal.
pub struct Outbox<S, D> {
    inner: Arc<Inner<S, D>>,
}

struct Inner<S, D> {
    store: S,
    dispatcher: D,
    clock: Box<dyn Clock + Send + Sync>,
    config: OutboxConfig,
    rng: Mutex<SplitMix64>,
    wake: Notify,
    in_flight: Arc<Semaphore>,
}

impl<S, D> Clone for Outbox<S, D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store, D: Dispatcher> Outbox<S, D> {
    /// An engine with the default settings and the system clock.
    pub fn new(store: S, dispatcher: D) -> Self {
        Self::with_config(store, dispatcher, OutboxConfig::default(), SystemClock)
    }

    /// An engine with `config`, reading time from `clock`.
    pub fn with_config(
        store: S,
        dispatcher: D,
        config: OutboxConfig,
        clock: impl Clock + Send + Sync + 'static,
    ) -> Self {
        let permits = config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                store,
                dispatcher,
                clock: Box::new(clock),
                rng: Mutex::new(SplitMix64::from_entropy()),
                wake: Notify::new(),
                in_flight: Arc::new(Semaphore::new(permits)),
                config,
            }),
        }
    }

    /// The store, for listing deliveries and attempts.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &D {
        &self.inner.dispatcher
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// Adds or replaces an endpoint.
    pub async fn add_endpoint(&self, endpoint: Endpoint) -> Result<(), StoreError> {
        self.inner.store.put_endpoint(endpoint).await
    }

    /// Publishes hookway's [`Event`] envelope, with its own id and type.
    pub async fn publish_event<T: Serialize>(
        &self,
        event: &Event<T>,
        channels: &[&str],
    ) -> Result<Vec<DeliveryId>, PublishError> {
        self.publish(event.id.clone(), event.event_type.clone(), event, channels)
            .await
    }

    /// Publishes any payload (hookway's envelope or the shape your customers
    /// already expect, such as `{event_id, event_ts, event_name, payload}`)
    /// as message `id` of type `event_type` on `channels`.
    ///
    /// Serialises once, creates one delivery per matching endpoint (held if
    /// the endpoint is disabled) in one atomic store step, and returns their
    /// ids. Publishing an id again creates nothing and returns the first
    /// publication's delivery ids.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        id: MessageId,
        event_type: EventType,
        payload: &T,
        channels: &[&str],
    ) -> Result<Vec<DeliveryId>, PublishError> {
        let body =
            serde_json::to_vec(payload).map_err(|e| PublishError::Serialize(JsonError(e)))?;
        let limit = self.inner.config.max_payload;
        if body.len() > limit {
            return Err(PublishError::TooLarge {
                size: body.len(),
                limit,
            });
        }
        let now = self.now();
        let mut deliveries = Vec::new();
        for endpoint in self.inner.store.endpoints().await? {
            if !endpoint.wants(&event_type, channels) {
                continue;
            }
            let mut delivery = Delivery::new(
                DeliveryId::generate_at(now),
                id.clone(),
                event_type.clone(),
                endpoint.id().clone(),
                now,
            );
            if !endpoint.is_enabled() {
                // A fresh pending delivery can always be held.
                let _ = delivery.hold(now);
            }
            deliveries.push(delivery);
        }
        let event = StoredEvent {
            id,
            event_type,
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            payload: Bytes::from(body),
            created_at: now,
        };
        let inserted = self.inner.store.insert_event(event, deliveries).await?;
        if matches!(inserted, Inserted::New(ref ids) if !ids.is_empty()) {
            self.inner.wake.notify_waiters();
        }
        Ok(match inserted {
            Inserted::New(ids) | Inserted::Duplicate(ids) => ids,
        })
    }

    /// Claims the deliveries due now and attempts each (concurrently, within
    /// the in-flight cap); returns how many were attempted.
    pub async fn run_once(&self) -> Result<usize, OutboxError> {
        let config = &self.inner.config;
        let claimed = self
            .inner
            .store
            .claim_due(self.now(), config.lease, config.claim_batch)
            .await?;
        let count = claimed.len();
        let mut tasks = JoinSet::new();
        for (delivery, claim) in claimed {
            let permit = Arc::clone(&self.inner.in_flight).acquire_owned().await;
            let this = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                this.attempt(delivery, claim).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// One attempt of a claimed delivery, persisted.
    async fn attempt(&self, mut delivery: Delivery, claim: Claim) -> Result<(), OutboxError> {
        let store = &self.inner.store;
        let endpoint = store.endpoint(delivery.endpoint_id()).await?;
        let event = store.event(delivery.event_id()).await?;
        let (Some(endpoint), Some(event)) = (endpoint, event) else {
            return self.hold_claimed(delivery, &claim).await;
        };
        if !endpoint.is_enabled() {
            return self.hold_claimed(delivery, &claim).await;
        }
        let started_at = self.now();
        let request = match endpoint.request(
            event.payload.clone(),
            &event.id,
            &event.event_type,
            delivery.id(),
            started_at,
            None,
        ) {
            Ok(request) => request,
            // Every signing key has expired: keep the delivery until keys
            // are fixed rather than failing it.
            Err(_) => return self.hold_claimed(delivery, &claim).await,
        };
        let result = self
            .inner
            .dispatcher
            .send(request, endpoint.timeout())
            .await;
        let finished_at = self.now();
        let duration = (finished_at - started_at).try_into().unwrap_or_default();
        let report = match &result {
            Ok(response) => {
                AttemptReport::from_response(response, endpoint.classifier(), started_at, duration)
            }
            Err(error) => AttemptReport::from_transport_error(
                error,
                endpoint.classifier(),
                started_at,
                duration,
            ),
        };
        let completed = {
            let mut rng = self
                .inner
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            delivery.complete(
                &claim,
                report,
                endpoint.retry_policy(),
                finished_at,
                &mut *rng,
            )?
        };
        let disable = completed.disable_endpoint();
        let retry_at = match completed.next {
            Next::RetryAt(at) => Some(at),
            _ => None,
        };
        store
            .save(
                delivery,
                claim.token(),
                StateKind::InFlight,
                Some(completed.attempt),
            )
            .await?;
        if disable {
            let mut endpoint = endpoint;
            endpoint.set_enabled(false);
            store.put_endpoint(endpoint).await?;
        }
        if retry_at.is_some() {
            self.inner.wake.notify_waiters();
        }
        Ok(())
    }

    /// Gives a claimed delivery back and holds it (its endpoint is gone,
    /// disabled, or cannot sign).
    async fn hold_claimed(&self, mut delivery: Delivery, claim: &Claim) -> Result<(), OutboxError> {
        let now = self.now();
        delivery.release(claim, now)?;
        delivery.hold(now)?;
        self.inner
            .store
            .save(delivery, claim.token(), StateKind::InFlight, None)
            .await?;
        Ok(())
    }

    /// Retries a failed delivery now, with a fresh retry budget.
    pub async fn retry(&self, id: &DeliveryId) -> Result<(), OutboxError> {
        let mut delivery = self
            .inner
            .store
            .delivery(id)
            .await?
            .ok_or_else(|| OutboxError::NotFound(format!("delivery {id}")))?;
        let (claims, kind) = (delivery.claims(), delivery.state().kind());
        delivery.retry_now(self.now())?;
        self.inner.store.save(delivery, claims, kind, None).await?;
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// Re-enables an endpoint and releases its held deliveries, oldest
    /// first.
    pub async fn enable_endpoint(&self, id: &EndpointId) -> Result<(), OutboxError> {
        let store = &self.inner.store;
        let mut endpoint = store
            .endpoint(id)
            .await?
            .ok_or_else(|| OutboxError::NotFound(format!("endpoint {id}")))?;
        endpoint.set_enabled(true);
        store.put_endpoint(endpoint).await?;
        let held = store
            .deliveries(&DeliveryQuery {
                endpoint: Some(id.clone()),
                state: Some(StateKind::Held),
                ..DeliveryQuery::default()
            })
            .await?;
        let now = self.now();
        for mut delivery in held {
            let claims = delivery.claims();
            delivery.unhold(now)?;
            store.save(delivery, claims, StateKind::Held, None).await?;
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// Starts `workers` worker tasks on the current tokio runtime. They
    /// claim and attempt due deliveries, and sleep until the next one is
    /// due (or a publish wakes them) rather than polling.
    pub fn start(&self, workers: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for _ in 0..workers.max(1) {
            let this = self.clone();
            let stop = Arc::clone(&stop);
            tasks.spawn(async move { this.work(&stop).await });
        }
        Workers {
            stop,
            wake: Box::new({
                let this = self.clone();
                move || this.inner.wake.notify_waiters()
            }),
            tasks,
        }
    }

    async fn work(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.run_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(_) => {
                    // A store or transition error: back off briefly and try
                    // again; the claims expire if the problem persists.
                }
            }
            let wait = match self.inner.store.next_due().await {
                Ok(Some(at)) => (at - self.now())
                    .try_into()
                    .unwrap_or(Duration::ZERO)
                    .min(self.inner.config.idle_poll),
                _ => self.inner.config.idle_poll,
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut notified => {}
            }
        }
    }
}

/// Running worker tasks; see [`Outbox::start`].
pub struct Workers {
    stop: Arc<AtomicBool>,
    wake: Box<dyn Fn() + Send + Sync>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// Stops claiming new work, lets attempts in flight finish (their results
    /// are stored) for up to `deadline`, then aborts what is left. Aborted
    /// attempts lose nothing: their claims expire and the deliveries are
    /// attempted again.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.stop.store(true, Ordering::Release);
        (self.wake)();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("tasks", &self.tasks.len())
            .field("stopping", &self.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S, D> std::fmt::Debug for Outbox<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
