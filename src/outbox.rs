//! The delivery engine: publish once, deliver to every subscribed endpoint,
//! retry on schedule, log every attempt.
//!
//! [`Outbox::publish`] serialises the payload once, finds the endpoints
//! whose filter and channels match, and stores one [`Delivery`] per endpoint
//! in one atomic step. Workers ([`Outbox::start`]) claim due deliveries with
//! a lease, sign and send each attempt at its own time, classify the
//! outcome, log the [`Attempt`] and reschedule per
//! the endpoint's [`RetryPolicy`](crate::retry::RetryPolicy). The decisions
//! live in the pure [`Delivery`] state machine; this module is the loop
//! around it. [`Outbox::run_once`] runs one round by hand, for tests.
//!
//! Delivery is at-least-once: a worker that dies mid-attempt leaves its
//! claim to expire, and the delivery is attempted again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::clock::{Clock, SystemClock};
use crate::delivery::{
    Attempt, AttemptReport, Claim, Completed, Delivery, DeliveryId, DeliveryState, EndpointId,
    FailureReason, Next, StateKind, TransitionError,
};
use crate::dispatch::Dispatcher;
use crate::dispatch::TransportError;
use crate::endpoint::{Auth, Batching, Endpoint};
use crate::error::JsonError;
use crate::error::SignError;
use crate::event::{Event, EventType, MessageId};
use crate::oauth::{ClientCredentials, TokenCache, TokenError};
use crate::retry::{FailureCause, Outcome, SplitMix64};
use crate::store::{Claimed, DeliveryQuery, Inserted, Prune, Save, Store, StoreError, StoredEvent};

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
    /// When a delivery fails for good, disable its endpoint if the endpoint
    /// has had no success for this long. Default: 5 days, as Svix does.
    pub disable_after_failing_for: Option<Duration>,
    /// Disable an endpoint after this many failed attempts in a row with no
    /// success between them. Default: none.
    pub disable_after_consecutive_failures: Option<u32>,
    /// After how many failed attempts of one delivery observers hear
    /// [`Notification::DeliveryFailing`]. Default: 3.
    pub failing_after_attempts: u32,
    /// At most this many deliveries held for one disabled endpoint; later
    /// events for it are recorded as failed
    /// ([`FailureReason::HoldLimit`]), not attempted, and can be retried by
    /// hand or replayed. Default: 10 000.
    pub max_held_per_endpoint: Option<u32>,
    /// How long delivered deliveries (with their attempt logs) are kept
    /// before the workers prune them; an event goes with its last delivery,
    /// so [`Outbox::replay`] and the de-duplication of publishes reach back
    /// this far. Failed deliveries are kept until pruned by hand
    /// ([`Outbox::prune`]). `None` keeps everything. Default: 24 hours.
    pub retention: Option<Duration>,
    /// How long a worker woken by a publish waits before it claims, so
    /// that the publishes of that moment go out in one claim rather than
    /// one claim each. `None` picks by store: [`DEFAULT_CLAIM_DELAY`] for a
    /// store whose writes cost a round trip (one that sets
    /// [`Store::GROUPS_SAVES`], as the SQL stores do), none for
    /// `MemoryStore`. Retries that fall due are claimed without it.
    pub claim_delay: Option<Duration>,
}

/// The default [`OutboxConfig::claim_delay`] for stores whose writes cost a
/// round trip: 2 ms.
pub const DEFAULT_CLAIM_DELAY: Duration = Duration::from_millis(2);

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            claim_batch: 64,
            max_in_flight: 64,
            max_payload: DEFAULT_MAX_PAYLOAD,
            idle_poll: Duration::from_secs(1),
            disable_after_failing_for: Some(Duration::from_secs(5 * 24 * 60 * 60)),
            disable_after_consecutive_failures: None,
            failing_after_attempts: 3,
            max_held_per_endpoint: Some(10_000),
            retention: Some(Duration::from_secs(24 * 60 * 60)),
            claim_delay: None,
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
    /// A request could not be signed (every signing key has expired).
    #[error(transparent)]
    Sign(#[from] crate::error::SignError),
    /// A payload could not be serialised.
    #[error("could not serialise the payload: {0}")]
    Serialize(#[source] JsonError),
    /// A retry policy was invalid.
    #[error(transparent)]
    Policy(#[from] crate::retry::RetryPolicyError),
}

/// What the engine tells [`Observer`]s: the operational events a sender
/// alerts on and emails its customers about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Notification {
    /// An attempt finished (any outcome).
    AttemptFinished {
        /// The delivery.
        delivery: DeliveryId,
        /// Its endpoint.
        endpoint: EndpointId,
        /// The attempt's record.
        attempt: Attempt,
    },
    /// A delivery has failed [`OutboxConfig::failing_after_attempts`]
    /// attempts and is still being retried.
    DeliveryFailing {
        /// The delivery.
        delivery: DeliveryId,
        /// Its endpoint.
        endpoint: EndpointId,
        /// Attempts made so far.
        attempts: u32,
    },
    /// A delivery succeeded after failed attempts.
    DeliveryRecovered {
        /// The delivery.
        delivery: DeliveryId,
        /// Its endpoint.
        endpoint: EndpointId,
        /// Attempts it took.
        attempts: u32,
    },
    /// A delivery failed for good (policy exhausted or a permanent error);
    /// it can be retried by hand.
    DeliveryFailed {
        /// The delivery.
        delivery: DeliveryId,
        /// Its endpoint.
        endpoint: EndpointId,
        /// Why.
        reason: FailureReason,
    },
    /// An endpoint was disabled; its new events are held.
    EndpointDisabled {
        /// The endpoint.
        endpoint: EndpointId,
        /// Why.
        reason: DisableReason,
    },
    /// An endpoint was enabled again and its held events released.
    EndpointEnabled {
        /// The endpoint.
        endpoint: EndpointId,
    },
}

/// Why the engine disabled an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisableReason {
    /// It answered with a status that means "gone" (410 by default).
    Gone,
    /// A delivery failed for good and the endpoint had no success for
    /// [`OutboxConfig::disable_after_failing_for`].
    FailingTooLong,
    /// [`OutboxConfig::disable_after_consecutive_failures`] attempts failed
    /// in a row.
    ConsecutiveFailures,
}

/// Receives [`Notification`]s. Called inline by the worker that caused
/// them, so keep it quick (hand slow work to a channel or a task).
pub trait Observer: Send + Sync + 'static {
    /// One notification.
    fn notify(&self, notification: &Notification);
}

impl<F: Fn(&Notification) + Send + Sync + 'static> Observer for F {
    fn notify(&self, notification: &Notification) {
        self(notification)
    }
}

/// Process-local per-endpoint state: limits, pauses and health.
#[derive(Debug, Default)]
struct Gate {
    in_flight: u32,
    /// Rate limiting (GCRA): the theoretical arrival time of the next
    /// request.
    tat: Option<OffsetDateTime>,
    /// After a 429: no request before this.
    paused_until: Option<OffsetDateTime>,
    last_success: Option<OffsetDateTime>,
    failing_since: Option<OffsetDateTime>,
    consecutive_failures: u32,
}

/// What one request carries: one delivery, or a batch of one endpoint's,
/// with the endpoint as it was when they were claimed (`None` if it is
/// gone).
struct Unit {
    endpoint: Option<Arc<Endpoint>>,
    items: Vec<Claimed>,
    batching: Option<Batching>,
}

/// The most attempt results written in one [`Store::save_all`].
const MAX_SAVE_BATCH: usize = 256;

/// How many times a publish makes its fan-out again when the store reports
/// that the endpoint list changed under it; the last try goes without a
/// version, so a store whose endpoints change without pause cannot starve
/// a publish.
const PUBLISH_TRIES: u32 = 8;

/// An attempt result on its way to the writer, and where its result goes.
type SaveRequest = (Save, oneshot::Sender<Result<(), StoreError>>);

/// Hands attempt results to the workers' writer task, which writes
/// whatever has queued up in one [`Store::save_all`] (group commit).
#[derive(Clone)]
struct Saver(mpsc::UnboundedSender<SaveRequest>);

impl Saver {
    async fn save(&self, save: Save) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        if self.0.send((save, reply)).is_err() {
            return Err(StoreError::Backend("the outbox writer has stopped".into()));
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the outbox writer has stopped".into())))
    }
}

/// How often the workers prune finished deliveries (at most).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The gate of `endpoint`, made on first use (ids are shared, so the key
/// costs no allocation).
fn gate_of<'a>(gates: &'a mut HashMap<EndpointId, Gate>, endpoint: &EndpointId) -> &'a mut Gate {
    gates.entry(endpoint.clone()).or_default()
}

/// How long a delivery waits when its endpoint is at its concurrency limit
/// or busy with an earlier delivery of an ordered endpoint, before it is
/// looked at again.
const BUSY_RETRY: Duration = Duration::from_millis(100);

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
    gates: Mutex<HashMap<EndpointId, Gate>>,
    /// Replaced, not edited, on `subscribe`: a notification clones one
    /// `Arc`, not the list.
    observers: Mutex<Arc<Vec<Arc<dyn Observer>>>>,
    tokens: TokenCache,
    /// Claims of attempts aborted by a shutdown, given back by it at once.
    abandoned: Mutex<Vec<(DeliveryId, Claim)>>,
    /// When the workers next prune (Unix seconds).
    next_prune: AtomicI64,
    /// The claim delay in effect (see [`OutboxConfig::claim_delay`]).
    claim_delay: Duration,
    /// A publish has woken a worker that has not claimed yet: later
    /// publishes need not wake another.
    claim_pending: AtomicBool,
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
        let claim_delay = config.claim_delay.unwrap_or(if S::GROUPS_SAVES {
            DEFAULT_CLAIM_DELAY
        } else {
            Duration::ZERO
        });
        Self {
            inner: Arc::new(Inner {
                store,
                dispatcher,
                clock: Box::new(clock),
                rng: Mutex::new(SplitMix64::from_entropy()),
                wake: Notify::new(),
                in_flight: Arc::new(Semaphore::new(permits)),
                gates: Mutex::new(HashMap::new()),
                observers: Mutex::new(Arc::new(Vec::new())),
                tokens: TokenCache::new(),
                abandoned: Mutex::new(Vec::new()),
                next_prune: AtomicI64::new(i64::MIN),
                claim_delay,
                claim_pending: AtomicBool::new(false),
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

    /// Adds an observer of attempts, failing and failed deliveries, and
    /// endpoints disabled or enabled.
    pub fn subscribe(&self, observer: impl Observer) {
        let mut observers = self
            .inner
            .observers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut list = Vec::clone(&observers);
        list.push(Arc::new(observer));
        *observers = Arc::new(list);
    }

    fn observers(&self) -> Arc<Vec<Arc<dyn Observer>>> {
        Arc::clone(
            &self
                .inner
                .observers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn emit(&self, notification: Notification) {
        for observer in self.observers().iter() {
            observer.notify(&notification);
        }
    }

    /// Gives back every delivery whose attempt was abandoned (shutdown),
    /// due now and not charged an attempt. A delivery whose result was
    /// stored meanwhile is left as it is (the store refuses the stale write).
    async fn release_abandoned(&self) {
        let abandoned = std::mem::take(
            &mut *self
                .inner
                .abandoned
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.release_claims(abandoned).await;
    }

    /// Gives claimed deliveries back, due now and not charged an attempt
    /// (best effort: a delivery that cannot be read or written keeps its
    /// claim until the lease expires).
    async fn release_claims(&self, claims: Vec<(DeliveryId, Claim)>) {
        if claims.is_empty() {
            return;
        }
        let now = self.now();
        for (id, claim) in claims {
            let Ok(Some(mut delivery)) = self.inner.store.delivery(&id).await else {
                continue;
            };
            if delivery.release(&claim, now).is_ok() {
                let _ = self
                    .inner
                    .store
                    .save(delivery, claim.token(), StateKind::InFlight, None)
                    .await;
            }
        }
        self.inner.wake.notify_waiters();
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Gate>> {
        self.inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for one request to `endpoint` at `now`, or says when to
    /// look again.
    fn admit(&self, endpoint: &Endpoint, now: OffsetDateTime) -> Result<(), OffsetDateTime> {
        let mut gates = self.gates();
        let gate = gate_of(&mut gates, endpoint.id());
        if let Some(until) = gate.paused_until {
            if now < until {
                return Err(until);
            }
            gate.paused_until = None;
        }
        let cap = if endpoint.is_ordered() {
            Some(1)
        } else {
            endpoint.max_in_flight()
        };
        if cap.is_some_and(|cap| gate.in_flight >= cap) {
            return Err(now + BUSY_RETRY);
        }
        if let Some(limit) = endpoint.rate_limit() {
            // GCRA: `requests` per `per`, bursts of up to `requests`.
            let interval = limit.per / limit.requests;
            let burst = limit.per.saturating_sub(interval);
            let tat = gate.tat.map_or(now, |t| t.max(now));
            if tat - now > burst {
                return Err(tat - burst);
            }
            gate.tat = Some(tat + interval);
        }
        gate.in_flight += 1;
        Ok(())
    }

    /// Records an attempt's result against its endpoint's gate; returns why
    /// to disable the endpoint, if it should be.
    fn settle(
        &self,
        endpoint: &EndpointId,
        outcome: &Outcome,
        next: &Next,
        retry_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<DisableReason> {
        let config = &self.inner.config;
        let mut gates = self.gates();
        let gate = gate_of(&mut gates, endpoint);
        if outcome.is_delivered() {
            gate.last_success = Some(now);
            gate.failing_since = None;
            gate.consecutive_failures = 0;
            return None;
        }
        gate.failing_since.get_or_insert(now);
        gate.consecutive_failures = gate.consecutive_failures.saturating_add(1);
        let throttled = matches!(
            outcome,
            Outcome::Retryable {
                cause: FailureCause::Status(s),
                ..
            } if *s == http::StatusCode::TOO_MANY_REQUESTS
        );
        if throttled {
            // Slow the whole endpoint down, not just this delivery.
            gate.paused_until = retry_at;
        }
        if let Next::Failed(reason) = next {
            if reason.disable_endpoint() {
                return Some(DisableReason::Gone);
            }
            let quiet_since = gate.last_success.max(gate.failing_since);
            let too_long = config.disable_after_failing_for.is_some_and(|limit| {
                gate.last_success.is_none_or(|t| now - t >= limit)
                    && quiet_since.is_some_and(|t| now - t >= limit)
            });
            if too_long {
                return Some(DisableReason::FailingTooLong);
            }
        }
        if config
            .disable_after_consecutive_failures
            .is_some_and(|n| gate.consecutive_failures >= n)
        {
            return Some(DisableReason::ConsecutiveFailures);
        }
        None
    }

    /// For an ordered endpoint: if an older unfinished delivery must go
    /// first, when to look again.
    async fn wait_for_head(
        &self,
        delivery: &Delivery,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let head = self.inner.store.queue_head(delivery.endpoint_id()).await?;
        let soon = now + BUSY_RETRY;
        Ok(match head {
            Some(head) if head.id() != delivery.id() => Some(match head.state() {
                // Waiting for a retry: look again when it is due.
                DeliveryState::Pending { due_at } => (*due_at).max(soon),
                // In flight, or held: look again shortly.
                _ => soon,
            }),
            _ => None,
        })
    }

    async fn defer_claimed(
        &self,
        mut delivery: Delivery,
        claim: &Claim,
        until: OffsetDateTime,
    ) -> Result<(), OutboxError> {
        delivery.defer(claim, until)?;
        self.inner
            .store
            .save(delivery, claim.token(), StateKind::InFlight, None)
            .await?;
        Ok(())
    }

    async fn disable(&self, endpoint: &Endpoint, reason: DisableReason) -> Result<(), OutboxError> {
        if !endpoint.is_enabled() {
            return Ok(());
        }
        let id = endpoint.id().clone();
        // In place: the engine's copy of the endpoint may be stale.
        self.inner.store.set_endpoint_enabled(&id, false).await?;
        tracing::warn!(endpoint = %id, ?reason, "endpoint disabled");
        self.emit(Notification::EndpointDisabled {
            endpoint: id,
            reason,
        });
        Ok(())
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
    /// ids. Publishing an id again creates nothing and returns the ids of
    /// the event's deliveries in the store (see [`Inserted::Duplicate`]);
    /// once retention has pruned the event, the id can be published anew.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        id: MessageId,
        event_type: EventType,
        payload: &T,
        channels: &[&str],
    ) -> Result<Vec<DeliveryId>, PublishError> {
        let mut body =
            serde_json::to_vec(payload).map_err(|e| PublishError::Serialize(JsonError(e)))?;
        // The payload is kept until delivered: drop serde_json's spare room.
        body.shrink_to_fit();
        let limit = self.inner.config.max_payload;
        if body.len() > limit {
            return Err(PublishError::TooLarge {
                size: body.len(),
                limit,
            });
        }
        let now = self.now();
        let event = StoredEvent {
            id,
            event_type,
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            payload: Bytes::from(body),
            created_at: now,
        };
        // A store shared by several processes may serve the endpoint list
        // from a cache and refuse the event if the list changed meanwhile:
        // then the fan-out is made again from a fresh list.
        let mut tries = 0;
        let (inserted, notes) = loop {
            let list = self.inner.store.publish_endpoints().await?;
            let (deliveries, notes) = self.fan_out(&event, channels, &list.endpoints, now).await?;
            tries += 1;
            // Without a version the store cannot refuse the event, so it is
            // handed over rather than copied; the last try goes without.
            let version = list.version.filter(|_| tries < PUBLISH_TRIES);
            let Some(version) = version else {
                let inserted = self
                    .inner
                    .store
                    .insert_event_at(event, deliveries, None)
                    .await?;
                break (inserted, notes);
            };
            match self
                .inner
                .store
                .insert_event_at(event.clone(), deliveries, Some(version))
                .await
            {
                Err(StoreError::EndpointsChanged) => {}
                result => break (result?, notes),
            }
        };
        // Failures of deliveries that were stored, not of earlier tries.
        if matches!(inserted, Inserted::New(_)) {
            for note in notes {
                self.emit(note);
            }
        }
        // With a claim delay, one wake-up serves every publish until the
        // woken worker claims (it clears the flag first, so a publish that
        // finds it set is stored before that claim reads).
        if matches!(inserted, Inserted::New(ref ids) if !ids.is_empty())
            && (self.inner.claim_delay.is_zero()
                || !self.inner.claim_pending.swap(true, Ordering::AcqRel))
        {
            self.inner.wake.notify_one();
        }
        Ok(match inserted {
            Inserted::New(ids) | Inserted::Duplicate(ids) => ids,
        })
    }

    /// One delivery for each endpoint in `endpoints` that wants `event`
    /// (held if the endpoint is disabled).
    async fn fan_out(
        &self,
        event: &StoredEvent,
        channels: &[&str],
        endpoints: &[Arc<Endpoint>],
        now: OffsetDateTime,
    ) -> Result<(Vec<Delivery>, Vec<Notification>), StoreError> {
        let mut deliveries = Vec::new();
        let mut notes = Vec::new();
        for endpoint in endpoints {
            if !endpoint.wants(&event.event_type, channels) {
                continue;
            }
            let mut delivery = Delivery::new(
                DeliveryId::generate_at(now),
                event.id.clone(),
                event.event_type.clone(),
                endpoint.id().clone(),
                now,
            );
            if !endpoint.is_enabled() {
                notes.extend(self.hold_or_fail(&mut delivery, endpoint.id(), now).await?);
            }
            deliveries.push(delivery);
        }
        Ok((deliveries, notes))
    }

    /// Holds a new delivery for a disabled endpoint, or fails it unsent if
    /// the endpoint's hold queue is full.
    async fn hold_or_fail(
        &self,
        delivery: &mut Delivery,
        endpoint: &EndpointId,
        now: OffsetDateTime,
    ) -> Result<Option<Notification>, StoreError> {
        if let Some(limit) = self.inner.config.max_held_per_endpoint {
            let held = self.inner.store.held_count(endpoint).await?;
            if held >= usize::try_from(limit).unwrap_or(usize::MAX) {
                // A fresh delivery is pending, so this cannot fail.
                let _ = delivery.fail_held(now, limit);
                return Ok(Some(Notification::DeliveryFailed {
                    delivery: delivery.id().clone(),
                    endpoint: endpoint.clone(),
                    reason: FailureReason::HoldLimit { limit },
                }));
            }
        }
        // A fresh pending delivery can always be held.
        let _ = delivery.hold(now);
        Ok(None)
    }

    /// With the first in-flight permit taken, takes what more are free and
    /// claims no more deliveries than it holds, so no claim's lease runs
    /// down while it waits for a permit (a lease that expires before the request is sent
    /// lets another worker send it too).
    ///
    /// Also says whether the claim took fewer deliveries than it could (so
    /// none is due now, and claiming again at once would find nothing).
    async fn claim(
        &self,
        mut permits: OwnedSemaphorePermit,
    ) -> Result<Option<(OwnedSemaphorePermit, Vec<Unit>, bool)>, OutboxError> {
        let config = &self.inner.config;
        let extra = self
            .inner
            .in_flight
            .available_permits()
            .min(config.claim_batch.saturating_sub(1));
        if extra > 0 {
            if let Ok(more) = Arc::clone(&self.inner.in_flight)
                .try_acquire_many_owned(u32::try_from(extra).unwrap_or(u32::MAX))
            {
                permits.merge(more);
            }
        }
        let claimed = self
            .inner
            .store
            .claim_due(self.now(), config.lease, permits.num_permits())
            .await?;
        if claimed.is_empty() {
            return Ok(None);
        }
        let drained = claimed.len() < permits.num_permits();
        let held: Vec<(DeliveryId, Claim)> = claimed
            .iter()
            .map(|c| (c.delivery.id().clone(), c.claim.clone()))
            .collect();
        match self.units(claimed).await {
            Ok(units) => Ok(Some((permits, units, drained))),
            Err(error) => {
                // Not left claimed until the lease runs out.
                self.release_claims(held).await;
                Err(error)
            }
        }
    }

    /// Starts one unit's attempt on `tasks`, holding one in-flight permit
    /// taken from `permits`. If the task is aborted (shutdown), its claims
    /// are recorded so the shutdown can give them back.
    fn spawn_unit(
        &self,
        tasks: &mut JoinSet<Result<(), OutboxError>>,
        permits: &mut OwnedSemaphorePermit,
        unit: Unit,
        saver: Option<&Saver>,
    ) {
        let permit = permits.split(1);
        let guard = AbandonGuard {
            outbox: self.clone(),
            claims: unit
                .items
                .iter()
                .map(|c| (c.delivery.id().clone(), c.claim.clone()))
                .collect(),
        };
        let this = self.clone();
        let saver = saver.cloned();
        tasks.spawn(async move {
            let _permit = permit;
            let result = this.attempt(unit, saver.as_ref()).await;
            guard.disarm();
            result
        });
    }

    /// Claims the deliveries due now and attempts each (concurrently, within
    /// the in-flight cap), and waits for them; returns how many were
    /// attempted.
    pub async fn run_once(&self) -> Result<usize, OutboxError> {
        let Ok(first) = Arc::clone(&self.inner.in_flight).acquire_owned().await else {
            return Ok(0);
        };
        let Some((mut permits, units, _)) = self.claim(first).await? else {
            return Ok(0);
        };
        let count = units.iter().map(|u| u.items.len()).sum();
        let mut tasks = JoinSet::new();
        for unit in units {
            self.spawn_unit(&mut tasks, &mut permits, unit, None);
        }
        drop(permits);
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

    /// Groups claimed deliveries into what one request carries: one
    /// delivery, or for an endpoint with batching up to `max_events` of its
    /// deliveries, oldest first. Each endpoint is read once per call.
    async fn units(&self, claimed: Vec<Claimed>) -> Result<Vec<Unit>, OutboxError> {
        let mut endpoints: Vec<(EndpointId, Option<Arc<Endpoint>>)> = Vec::new();
        let mut units = Vec::with_capacity(claimed.len());
        let mut batched: Vec<Unit> = Vec::new();
        for item in claimed {
            let id = item.delivery.endpoint_id();
            // As the claim handed it over, else read once per call.
            let endpoint = if let Some(endpoint) = &item.endpoint {
                endpoint.clone()
            } else if let Some((_, endpoint)) = endpoints.iter().find(|(e, _)| e == id) {
                endpoint.clone()
            } else {
                let endpoint = self.inner.store.endpoint(id).await?;
                endpoints.push((id.clone(), endpoint.clone()));
                endpoint
            };
            let batching = endpoint.as_ref().and_then(|e| e.batching());
            match batching {
                None => units.push(Unit {
                    endpoint,
                    items: vec![item],
                    batching: None,
                }),
                Some(batch) => match batched
                    .iter_mut()
                    .find(|u| u.items[0].delivery.endpoint_id() == id)
                {
                    Some(unit) => unit.items.push(item),
                    None => batched.push(Unit {
                        endpoint,
                        items: vec![item],
                        batching: Some(batch),
                    }),
                },
            }
        }
        for mut group in batched {
            let Some(batch) = group.batching else {
                continue;
            };
            // Ids are time-ordered and monotonic: creation order.
            group.items.sort_by(|a, b| {
                (a.delivery.created_at(), a.delivery.id())
                    .cmp(&(b.delivery.created_at(), b.delivery.id()))
            });
            let size = usize::try_from(batch.max_events)
                .unwrap_or(usize::MAX)
                .max(1);
            let mut items = group.items;
            while !items.is_empty() {
                let rest = items.split_off(size.min(items.len()));
                units.push(Unit {
                    endpoint: group.endpoint.clone(),
                    items: std::mem::replace(&mut items, rest),
                    batching: Some(batch),
                });
            }
        }
        Ok(units)
    }

    /// One attempt of a unit (a delivery, or a batch of one endpoint's
    /// deliveries), persisted.
    async fn attempt(&self, unit: Unit, saver: Option<&Saver>) -> Result<(), OutboxError> {
        let store = &self.inner.store;
        let endpoint = match unit.endpoint {
            Some(endpoint) if endpoint.is_enabled() => endpoint,
            _ => return self.hold_all(unit.items).await,
        };
        if unit.items.is_empty() {
            return Ok(());
        }
        let now = self.now();
        if let Some(batch) = unit.batching {
            // Wait for a fuller batch, unless it is full, a retry, or its
            // oldest event has waited long enough.
            let oldest = unit.items[0].delivery.created_at();
            let fresh = unit.items.iter().all(|c| c.delivery.attempts() == 0);
            let full = unit.items.len() >= usize::try_from(batch.max_events).unwrap_or(usize::MAX);
            let ready_at = oldest + batch.max_wait;
            if fresh && !full && now < ready_at {
                return self.defer_all(unit.items, ready_at).await;
            }
        }
        if endpoint.is_ordered() && unit.batching.is_none() {
            if let Some(until) = self.wait_for_head(&unit.items[0].delivery, now).await? {
                return self.defer_all(unit.items, until).await;
            }
        }
        if let Err(until) = self.admit(&endpoint, now) {
            return self.defer_all(unit.items, until).await;
        }
        // Given back however this attempt ends: finished, failed, or
        // aborted by a shutdown.
        let _slot = GateSlot {
            outbox: self,
            endpoint: endpoint.id().clone(),
        };
        let first = &unit.items[0];
        let (delivery_id, claim_attempt) = (first.delivery.id().clone(), first.claim.attempt());
        let event_type = first.delivery.event_type().clone();
        let span = tracing::info_span!(
            "hookway.attempt",
            delivery = %delivery_id,
            endpoint = %endpoint.id(),
            attempt = claim_attempt,
            batch = unit.items.len(),
        );
        // One event: its own body and id. A batch: a JSON array of the
        // stored bodies (not re-serialised), signed under the first
        // delivery's id.
        let (payload, message_id) = if unit.batching.is_none() {
            (first.payload.clone(), first.delivery.event_id().clone())
        } else {
            let items = &unit.items;
            let mut body =
                Vec::with_capacity(items.iter().map(|c| c.payload.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&item.payload);
            }
            body.push(b']');
            let id = MessageId::new(delivery_id.as_str())
                .unwrap_or_else(|_| MessageId::generate_at(now));
            (Bytes::from(body), id)
        };
        let started_at = self.now();
        let result = match self
            .send_signed(
                &endpoint,
                payload,
                &message_id,
                &event_type,
                &delivery_id,
                started_at,
            )
            .await
        {
            Ok(result) => result,
            // Every signing key has expired: keep the deliveries until keys
            // are fixed rather than failing them.
            Err(_) => return self.hold_all(unit.items).await,
        };
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
        let outcome = *report.outcome();
        let mut settled = None;
        let mut any_retry = false;
        let mut first_error = None;
        let observers = self.observers();
        for Claimed {
            mut delivery,
            claim,
            ..
        } in unit.items
        {
            let completed = {
                let mut rng = self
                    .inner
                    .rng
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                delivery.complete(
                    &claim,
                    report.clone(),
                    endpoint.retry_policy(),
                    finished_at,
                    &mut *rng,
                )
            };
            let completed = match completed {
                Ok(completed) => completed,
                Err(e) => {
                    first_error.get_or_insert(OutboxError::from(e));
                    continue;
                }
            };
            let retry_at = match completed.next {
                Next::RetryAt(at) => Some(at),
                _ => None,
            };
            any_retry |= retry_at.is_some();
            if settled.is_none() {
                settled = Some(self.settle(
                    endpoint.id(),
                    &outcome,
                    &completed.next,
                    retry_at,
                    finished_at,
                ));
            }
            tracing::info!(
                parent: &span,
                delivery = %delivery.id(),
                status = completed.attempt.status(),
                error = ?completed.attempt.error_kind(),
                next = ?completed.next,
                "attempt finished"
            );
            let delivery_id = delivery.id().clone();
            let attempts = delivery.attempts();
            // The attempt is copied only if someone is told of it.
            let (logged, told) = if observers.is_empty() {
                (completed.attempt, None)
            } else {
                (completed.attempt.clone(), Some(completed))
            };
            let save = Save::new(delivery, claim.token(), StateKind::InFlight, Some(logged));
            let saved = match saver {
                Some(saver) => saver.save(save).await,
                None => {
                    store
                        .save(
                            save.delivery,
                            save.expected_claims,
                            save.expected_state,
                            save.attempt,
                        )
                        .await
                }
            };
            if let Err(e) = saved {
                first_error.get_or_insert(e.into());
                continue;
            }
            if let Some(completed) = told {
                self.notify_completed(delivery_id, endpoint.id().clone(), attempts, completed);
            }
        }
        if let Some(Some(reason)) = settled {
            self.disable(&endpoint, reason).await?;
        }
        if any_retry {
            self.inner.wake.notify_one();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Signs and sends one request at `now`, with the endpoint's OAuth2
    /// token if it uses one: fetched and cached by the token cache, and on a
    /// 401 dropped, fetched again and the request sent once more. A token
    /// that cannot be fetched fails the attempt like a transport error (so
    /// it is logged and retried per the policy).
    async fn send_signed(
        &self,
        endpoint: &Endpoint,
        payload: Bytes,
        message_id: &MessageId,
        event_type: &EventType,
        delivery_id: &DeliveryId,
        now: OffsetDateTime,
    ) -> Result<Result<http::Response<Bytes>, TransportError>, SignError> {
        let dispatcher = &self.inner.dispatcher;
        let client = match endpoint.auth() {
            Some(auth @ Auth::OAuth2ClientCredentials { .. }) => {
                ClientCredentials::try_from(auth).ok()
            }
            _ => None,
        };
        let Some(client) = client else {
            let request =
                endpoint.request(payload, message_id, event_type, delivery_id, now, None)?;
            return Ok(dispatcher.send(request, endpoint.timeout()).await);
        };
        let tokens = &self.inner.tokens;
        let mut refreshed = false;
        loop {
            let token = match tokens
                .token(dispatcher, &client, self.now(), endpoint.timeout())
                .await
            {
                Ok(token) => token,
                Err(error) => {
                    let kind = match &error {
                        TokenError::Transport(t) => t.kind(),
                        _ => crate::dispatch::TransportErrorKind::Other,
                    };
                    return Ok(Err(TransportError::new(
                        kind,
                        format!("OAuth2 token request failed: {error}"),
                    )));
                }
            };
            let request = endpoint.request(
                payload.clone(),
                message_id,
                event_type,
                delivery_id,
                now,
                Some(&token),
            )?;
            let result = dispatcher.send(request, endpoint.timeout()).await;
            let unauthorized =
                matches!(&result, Ok(r) if r.status() == http::StatusCode::UNAUTHORIZED);
            if unauthorized && !refreshed {
                refreshed = true;
                tokens.invalidate(&client, &token);
                continue;
            }
            return Ok(result);
        }
    }

    fn notify_completed(
        &self,
        delivery: DeliveryId,
        endpoint: EndpointId,
        attempts: u32,
        completed: Completed,
    ) {
        self.emit(Notification::AttemptFinished {
            delivery: delivery.clone(),
            endpoint: endpoint.clone(),
            attempt: completed.attempt,
        });
        match completed.next {
            Next::Delivered if attempts > 1 => self.emit(Notification::DeliveryRecovered {
                delivery,
                endpoint,
                attempts,
            }),
            Next::RetryAt(_) if attempts == self.inner.config.failing_after_attempts => {
                self.emit(Notification::DeliveryFailing {
                    delivery,
                    endpoint,
                    attempts,
                });
            }
            Next::Failed(reason) => self.emit(Notification::DeliveryFailed {
                delivery,
                endpoint,
                reason,
            }),
            _ => {}
        }
    }

    async fn hold_all(&self, items: Vec<Claimed>) -> Result<(), OutboxError> {
        for item in items {
            self.hold_claimed(item.delivery, &item.claim).await?;
        }
        Ok(())
    }

    async fn defer_all(
        &self,
        items: Vec<Claimed>,
        until: OffsetDateTime,
    ) -> Result<(), OutboxError> {
        for item in items {
            self.defer_claimed(item.delivery, &item.claim, until)
                .await?;
        }
        // A worker may be asleep until a later due time (or `idle_poll`):
        // have one look at the new one.
        self.inner.wake.notify_one();
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

    /// Sends every event published since `since` that the endpoint
    /// subscribes to once more, as new deliveries (the originals and their
    /// logs stay as they are). Returns the new delivery ids, oldest event
    /// first.
    pub async fn replay(
        &self,
        endpoint: &EndpointId,
        since: OffsetDateTime,
    ) -> Result<Vec<DeliveryId>, OutboxError> {
        let store = &self.inner.store;
        let target = store
            .endpoint(endpoint)
            .await?
            .ok_or_else(|| OutboxError::NotFound(format!("endpoint {endpoint}")))?;
        let now = self.now();
        let mut deliveries = Vec::new();
        let mut notes = Vec::new();
        for event in store.events_since(since).await? {
            let channels: Vec<&str> = event.channels.iter().map(String::as_str).collect();
            if !target.wants(&event.event_type, &channels) {
                continue;
            }
            let mut delivery = Delivery::new(
                DeliveryId::generate_at(now),
                event.id,
                event.event_type,
                endpoint.clone(),
                now,
            );
            if !target.is_enabled() {
                notes.extend(self.hold_or_fail(&mut delivery, endpoint, now).await?);
            }
            deliveries.push(delivery);
        }
        let ids = deliveries.iter().map(|d| d.id().clone()).collect();
        store.insert_deliveries(deliveries).await?;
        for note in notes {
            self.emit(note);
        }
        self.inner.wake.notify_waiters();
        Ok(ids)
    }

    /// Sends a `test.webhook` event to one endpoint now, bypassing the
    /// queue and its limits, and returns the attempt as it would be logged
    /// (status, duration, error, response excerpt, outcome). Nothing is
    /// stored and nothing is retried; disabled endpoints are tried too, so a
    /// customer can check a fix before re-enabling.
    pub async fn send_test(
        &self,
        endpoint: &EndpointId,
    ) -> Result<crate::delivery::Attempt, OutboxError> {
        const TEST: EventType = EventType::from_static("test.webhook");
        let target = self
            .inner
            .store
            .endpoint(endpoint)
            .await?
            .ok_or_else(|| OutboxError::NotFound(format!("endpoint {endpoint}")))?;
        let now = self.now();
        let event = Event::new_at(
            TEST,
            serde_json::json!({ "endpoint": endpoint.as_str() }),
            now,
        );
        let payload = Bytes::from(
            serde_json::to_vec(&event).map_err(|e| OutboxError::Serialize(JsonError(e)))?,
        );
        let mut delivery = Delivery::new(
            DeliveryId::generate_at(now),
            event.id.clone(),
            TEST,
            endpoint.clone(),
            now,
        );
        let claim = delivery.claim(now, self.inner.config.lease)?;
        let started_at = self.now();
        let result = self
            .send_signed(
                &target,
                payload,
                &event.id,
                &TEST,
                delivery.id(),
                started_at,
            )
            .await?;
        let finished_at = self.now();
        let duration = (finished_at - started_at).try_into().unwrap_or_default();
        let report = match &result {
            Ok(response) => {
                AttemptReport::from_response(response, target.classifier(), started_at, duration)
            }
            Err(error) => AttemptReport::from_transport_error(
                error,
                target.classifier(),
                started_at,
                duration,
            ),
        };
        let no_retry = crate::retry::RetryPolicy::fixed([]).build()?;
        let mut rng = SplitMix64::from_seed(0);
        let completed = delivery.complete(&claim, report, &no_retry, finished_at, &mut rng)?;
        Ok(completed.attempt)
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
        if !store.set_endpoint_enabled(id, true).await? {
            return Err(OutboxError::NotFound(format!("endpoint {id}")));
        }
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
        if let Some(gate) = self.gates().get_mut(id) {
            gate.failing_since = None;
            gate.consecutive_failures = 0;
            gate.paused_until = None;
        }
        self.emit(Notification::EndpointEnabled {
            endpoint: id.clone(),
        });
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// Removes finished deliveries as `prune` says, with their attempt logs
    /// and events left with no delivery; returns how many deliveries went.
    /// The workers do this for delivered ones on their own (see
    /// [`OutboxConfig::retention`]); failed ones go only when asked.
    pub async fn prune(&self, prune: Prune) -> Result<usize, OutboxError> {
        Ok(self.inner.store.prune(prune).await?)
    }

    /// Prunes delivered deliveries older than the retention, at most once
    /// per [`PRUNE_EVERY`] across all workers.
    async fn prune_if_due(&self) {
        let Some(retention) = self.inner.config.retention else {
            return;
        };
        let now = self.now();
        let at = now.unix_timestamp();
        let next = self.inner.next_prune.load(Ordering::Relaxed);
        if at < next {
            return;
        }
        let every = i64::try_from(PRUNE_EVERY.min(retention).as_secs().max(1)).unwrap_or(60);
        if self
            .inner
            .next_prune
            .compare_exchange(next, at + every, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another worker is on it
        }
        let Some(before) =
            now.checked_sub(time::Duration::try_from(retention).unwrap_or(time::Duration::MAX))
        else {
            return;
        };
        match self
            .inner
            .store
            .prune(Prune::delivered_before(before))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned delivered deliveries"),
            Err(error) => tracing::warn!(%error, "pruning delivered deliveries failed"),
        }
    }

    /// Starts `workers` worker tasks on the current tokio runtime. Each
    /// claims due deliveries whenever an in-flight slot is free and starts
    /// their attempts without waiting for earlier ones to finish; idle, it
    /// sleeps until the next delivery is due or a publish wakes it, rather
    /// than polling.
    pub fn start(&self, workers: usize) -> Workers<S, D> {
        let (control, state) = watch::channel(Phase::Running);
        let (saver, writer) = if S::GROUPS_SAVES {
            let (sender, receiver) = mpsc::unbounded_channel();
            let this = self.clone();
            let writer = tokio::spawn(async move { this.write_saves(receiver).await });
            (Some(Saver(sender)), Some(writer))
        } else {
            (None, None)
        };
        let mut tasks = JoinSet::new();
        for _ in 0..workers.max(1) {
            let this = self.clone();
            let state = state.clone();
            let saver = saver.clone();
            tasks.spawn(async move { this.work(state, saver).await });
        }
        Workers {
            outbox: self.clone(),
            control,
            tasks,
            writer,
        }
    }

    /// The writer task: writes the attempt results that have queued up
    /// since its last write in one [`Store::save_all`], until every
    /// [`Saver`] is gone.
    async fn write_saves(&self, mut queue: mpsc::UnboundedReceiver<SaveRequest>) {
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, MAX_SAVE_BATCH).await > 0 {
            let (saves, replies): (Vec<Save>, Vec<_>) = batch.drain(..).unzip();
            match self.inner.store.save_all(saves).await {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend(message.clone().into())));
                    }
                }
            }
        }
    }

    async fn work(&self, mut phase: watch::Receiver<Phase>, saver: Option<Saver>) {
        let mut tasks = JoinSet::new();
        while *phase.borrow() == Phase::Running {
            while let Some(joined) = tasks.try_join_next() {
                log_attempt_end(joined);
            }
            self.prune_if_due().await;
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Only the wait for an in-flight slot gives way to a shutdown: a
            // claim, once made, is always started (or given back), never
            // dropped halfway.
            let slot = tokio::select! {
                slot = Arc::clone(&self.inner.in_flight).acquire_owned() => slot,
                _ = phase.changed() => continue,
            };
            let Ok(slot) = slot else { break };
            // Where a claim costs a round trip, a claim for the one slot an
            // attempt just gave back is mostly overhead: give the others in
            // flight a moment to finish, and claim for them together.
            let delay = self.inner.claim_delay;
            let batch = self
                .inner
                .config
                .claim_batch
                .min(self.inner.config.max_in_flight);
            if !delay.is_zero() && (self.inner.in_flight.available_permits() + 1) * 4 < batch {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = phase.changed() => {}
                }
                // Told to stop meanwhile: claim nothing more.
                if *phase.borrow() != Phase::Running {
                    continue;
                }
            }
            self.inner.claim_pending.store(false, Ordering::Release);
            let claimed = self.claim(slot).await;
            let mut claim_failed = false;
            match claimed {
                Ok(Some((mut permits, units, drained))) => {
                    for unit in units {
                        self.spawn_unit(&mut tasks, &mut permits, unit, saver.as_ref());
                    }
                    if !drained {
                        continue;
                    }
                    // Nothing more is due: wait below rather than claim
                    // again at once (a publish meanwhile wakes this worker).
                }
                Ok(None) => {}
                Err(error) => {
                    // A store error: wait as if idle and try again; claims
                    // made meanwhile expire if the problem persists.
                    tracing::warn!(%error, "claiming deliveries failed");
                    claim_failed = true;
                }
            }
            let wait = match self.inner.store.next_due().await {
                _ if claim_failed => self.inner.config.idle_poll,
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
                () = &mut notified => {
                    // Let the publishes of this moment gather.
                    let delay = self.inner.claim_delay;
                    if !delay.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = phase.changed() => {}
                        }
                    }
                }
                _ = phase.changed() => {}
            }
        }
        // Stopping: let attempts in flight finish, unless told to abort.
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(joined) => log_attempt_end(joined),
                    None => return,
                },
                _ = phase.wait_for(|p| *p == Phase::Aborting) => break,
            }
        }
        tasks.abort_all();
        // Wait until each aborted attempt is dropped, so its guard has
        // recorded its claims before the shutdown gives them back.
        while tasks.join_next().await.is_some() {}
    }
}

/// An endpoint's concurrency slot, taken by [`Outbox::admit`] and given
/// back when dropped.
struct GateSlot<'a, S, D> {
    outbox: &'a Outbox<S, D>,
    endpoint: EndpointId,
}

impl<S, D> Drop for GateSlot<'_, S, D> {
    fn drop(&mut self) {
        let mut gates = self
            .outbox
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates.get_mut(&self.endpoint) {
            gate.in_flight = gate.in_flight.saturating_sub(1);
        }
    }
}

/// Logs an attempt task that failed (its delivery keeps its claim until the
/// lease expires, and is then attempted again) or panicked.
fn log_attempt_end(joined: Result<Result<(), OutboxError>, tokio::task::JoinError>) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "recording an attempt failed"),
        Err(error) if error.is_panic() => tracing::error!("an attempt panicked"),
        Err(_) => {}
    }
}

/// Records an aborted attempt's claims, so that a shutdown gives the
/// deliveries back at once instead of leaving them to their leases.
struct AbandonGuard<S, D> {
    outbox: Outbox<S, D>,
    claims: Vec<(DeliveryId, Claim)>,
}

impl<S, D> AbandonGuard<S, D> {
    /// The attempt finished and its results are stored.
    fn disarm(mut self) {
        self.claims.clear();
    }
}

impl<S, D> Drop for AbandonGuard<S, D> {
    fn drop(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        self.outbox
            .inner
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut self.claims);
    }
}

/// What the workers are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Claim nothing more; let attempts in flight finish.
    Stopping,
    /// Abort attempts still in flight.
    Aborting,
}

/// Running worker tasks; see [`Outbox::start`].
pub struct Workers<S, D> {
    outbox: Outbox<S, D>,
    control: watch::Sender<Phase>,
    tasks: JoinSet<()>,
    /// The writer of grouped saves (for stores that group them); it ends
    /// once the workers and their attempts have.
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl<S: Store, D: Dispatcher> Workers<S, D> {
    /// Stops claiming new work and lets attempts in flight finish (their
    /// results are stored) for up to `deadline`; then aborts what is left
    /// and gives those deliveries back, due now and not charged an attempt.
    /// Nothing is lost: an attempt aborted after its request was sent may
    /// reach the receiver twice (delivery is at-least-once), never zero
    /// times.
    pub async fn shutdown(mut self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        self.control.send_replace(Phase::Stopping);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            self.control.send_replace(Phase::Aborting);
            while self.tasks.join_next().await.is_some() {}
        }
        if let Some(mut writer) = self.writer.take() {
            // Every sender is gone with the workers and their attempts, so
            // it writes what is queued and ends; a store that hangs is not
            // waited for past the deadline (those deliveries keep their
            // claims until the leases expire).
            if tokio::time::timeout_at(end, &mut writer).await.is_err() {
                writer.abort();
                tracing::warn!("the outbox writer did not finish by the shutdown deadline");
            }
        }
        let release = self.outbox.release_abandoned();
        if tokio::time::timeout_at(
            end.max(tokio::time::Instant::now() + Duration::from_secs(1)),
            release,
        )
        .await
        .is_err()
        {
            tracing::warn!("giving back abandoned deliveries did not finish in time");
        }
    }
}

impl<S, D> std::fmt::Debug for Workers<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("tasks", &self.tasks.len())
            .field("phase", &*self.control.borrow())
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
