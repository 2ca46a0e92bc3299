//! De-duplication by message id: the [`IdempotencyStore`] trait and
//! [`MemoryIdempotencyStore`].
//!
//! Senders deliver at least once: a response lost on the way back, a
//! timeout on a slow handler or a manual replay all bring the same message
//! again. A receiver keeps the ids it has processed and acknowledges a
//! repeat without running its handler again.
//!
//! An id moves through two states:
//!
//! 1. **claimed** by [`begin`](IdempotencyStore::begin) while its handler
//!    runs, so that a second delivery of the same id arriving meanwhile does
//!    not run the handler in parallel ([`Began::InProgress`]);
//! 2. **completed** by [`complete`](IdempotencyStore::complete) once the
//!    handler succeeded; every later delivery is a [`Began::Duplicate`] until
//!    the entry expires.
//!
//! A handler that fails gives its claim back with
//! [`abandon`](IdempotencyStore::abandon): the id is not remembered, so the
//! sender's retry is processed.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Future};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::event::MessageId;

/// What [`IdempotencyStore::begin`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Began {
    /// The id was not known (or its entry had expired, or its claim had
    /// timed out): it is now claimed by the caller, who must end the claim
    /// with [`complete`](IdempotencyStore::complete) or
    /// [`abandon`](IdempotencyStore::abandon).
    New,
    /// The id was processed before: acknowledge it, do not process it again.
    Duplicate,
    /// Another delivery of the id holds a live claim: its handler is running
    /// (or queued). Ask the sender to come back later.
    InProgress,
}

/// Why an [`IdempotencyStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The store holds as many claims in progress as it may; the id was not
    /// claimed.
    #[error("{0} messages are already in progress")]
    Full(usize),
    /// The backend failed.
    #[error("idempotency store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Remembers which message ids were processed, and which are being
/// processed.
///
/// Every method is one atomic step: two concurrent
/// [`begin`](Self::begin)s of the same id never both get [`Began::New`].
/// Stores keep completed ids for a time-to-live at least as long as the
/// senders' retry horizon, and let a claim lapse after a timeout, so that a
/// receiver that died mid-handler does not block the id for good.
///
/// A database store keeps one row per id (id, state, claimed or completed
/// at): `begin` inserts a claim, or takes over an expired entry or a lapsed
/// claim, in one statement or transaction, and reports what it found;
/// `complete` marks the row done; `abandon` deletes a claim.
///
/// Implementations: [`MemoryIdempotencyStore`] (the default; per process,
/// nothing survives a restart). `Arc<S>` is a store when `S` is, so one
/// store can be shared by several receivers (if their ids cannot collide)
/// and inspected by tests.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `id` at `now`, unless it was completed (and has not expired)
    /// or another claim on it is live.
    fn begin(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Began, IdempotencyError>> + Send;

    /// Marks `id` processed at `now`, ending its claim.
    fn complete(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), IdempotencyError>> + Send;

    /// Ends the claim on `id` without marking it processed, so the next
    /// delivery of it is [`Began::New`].
    fn abandon(&self, id: &MessageId) -> impl Future<Output = Result<(), IdempotencyError>> + Send;
}

impl<S: IdempotencyStore> IdempotencyStore for Arc<S> {
    fn begin(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Began, IdempotencyError>> + Send {
        (**self).begin(id, now)
    }

    fn complete(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), IdempotencyError>> + Send {
        (**self).complete(id, now)
    }

    fn abandon(&self, id: &MessageId) -> impl Future<Output = Result<(), IdempotencyError>> + Send {
        (**self).abandon(id)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`IdempotencyStore`] behind a pointer, so the receiver need not be
/// generic over its store.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn begin<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Began, IdempotencyError>>;
    fn complete<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>>;
    fn abandon<'a>(&'a self, id: &'a MessageId) -> BoxFuture<'a, Result<(), IdempotencyError>>;
}

impl<S: IdempotencyStore> DynStore for S {
    fn begin<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Began, IdempotencyError>> {
        Box::pin(IdempotencyStore::begin(self, id, now))
    }

    fn complete<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        Box::pin(IdempotencyStore::complete(self, id, now))
    }

    fn abandon<'a>(&'a self, id: &'a MessageId) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        Box::pin(IdempotencyStore::abandon(self, id))
    }
}

/// How long [`MemoryIdempotencyStore`] remembers a processed id by default:
/// 8 days.
///
/// A duplicate arrives while the sender is still retrying a message whose
/// success it did not hear about, so the entry must outlive the sender's
/// retry horizon, counted from the first attempt. Stripe retries for up to
/// 3 days; the Standard Webhooks schedule
/// ([`RetryPolicy::standard_webhooks`](crate::retry::RetryPolicy::standard_webhooks))
/// makes its last attempt 3 days 3 h 35 min after the first; the longest of
/// hookway's presets, [`RetryPolicy::hook0`](crate::retry::RetryPolicy::hook0),
/// gives up after 8 days. A shorter time-to-live would let a late retry run
/// the handler twice.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 24 * 60 * 60);

/// How many processed ids [`MemoryIdempotencyStore`] keeps by default:
/// 100 000 (a few tens of bytes each, plus the id).
pub const DEFAULT_CAPACITY: NonZeroUsize = match NonZeroUsize::new(100_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// How long a claim lasts by default before another delivery may take it
/// over: 1 hour. Far longer than any handler should run, far shorter than
/// any sender's retry horizon.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The default [`IdempotencyStore`]: a bounded map in this process's
/// memory.
///
/// - A processed id is remembered for a time-to-live
///   ([`DEFAULT_TTL`], 8 days), counted from its last sighting: a duplicate
///   refreshes it.
/// - At most `capacity` processed ids are kept ([`DEFAULT_CAPACITY`]); past
///   that the least recently seen goes first. An id a sender keeps
///   retrying is seen often, so it stays.
/// - At most `capacity` claims are in progress at once; beyond that
///   [`begin`](IdempotencyStore::begin) fails with
///   [`IdempotencyError::Full`] and the request is answered 503.
/// - A claim older than the claim timeout ([`DEFAULT_CLAIM_TIMEOUT`]) is
///   taken over by the next delivery of its id.
///
/// Nothing survives a restart: after one, a duplicate of an id processed
/// before it runs the handler again. Handlers that must never repeat work
/// need a durable store, or their own check.
///
/// Clones share the same entries.
///
/// ```
/// use hookway::receive::{Began, IdempotencyStore, MemoryIdempotencyStore};
/// use time::macros::datetime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryIdempotencyStore::new();
/// let id = "msg_1".parse()?;
/// let now = datetime!(2026-03-15 10:30 UTC);
///
/// assert_eq!(store.begin(&id, now).await?, Began::New);
/// assert_eq!(store.begin(&id, now).await?, Began::InProgress);
/// store.complete(&id, now).await?;
/// assert_eq!(store.begin(&id, now).await?, Began::Duplicate);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryIdempotencyStore {
    inner: Arc<Mutex<Entries>>,
    ttl: Duration,
    capacity: NonZeroUsize,
    claim_timeout: Duration,
}

#[derive(Debug, Default)]
struct Entries {
    /// Processed ids: last sighting and place in `order`.
    done: HashMap<MessageId, (OffsetDateTime, u64)>,
    /// Processed ids, least recently seen first. A sighting moves an id to
    /// the end, so this is also the order in which entries expire.
    order: BTreeMap<u64, MessageId>,
    /// Ids in progress, with when they were claimed.
    claims: HashMap<MessageId, OffsetDateTime>,
    next_seq: u64,
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryIdempotencyStore {
    /// A store with [`DEFAULT_TTL`], [`DEFAULT_CAPACITY`] and
    /// [`DEFAULT_CLAIM_TIMEOUT`].
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
        }
    }

    /// Sets how long a processed id is remembered after it was last seen.
    /// Keep it at least as long as your senders' retry horizon.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how many processed ids are kept, and how many claims may be in
    /// progress at once.
    #[must_use]
    pub fn with_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets how long a claim lasts before another delivery of the id may
    /// take it over.
    #[must_use]
    pub fn with_claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout;
        self
    }

    /// The time-to-live of a processed id.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The capacity.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// The claim timeout.
    pub fn claim_timeout(&self) -> Duration {
        self.claim_timeout
    }

    /// How many processed ids are held (expired ones included until they
    /// are swept, which happens on every call that changes the store).
    pub fn len(&self) -> usize {
        self.lock().done.len()
    }

    /// Whether no processed id is held.
    pub fn is_empty(&self) -> bool {
        self.lock().done.is_empty()
    }

    /// How many ids are claimed, in progress.
    pub fn in_progress(&self) -> usize {
        self.lock().claims.len()
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, seen: OffsetDateTime, now: OffsetDateTime) -> bool {
        now - seen >= self.ttl
    }

    /// Drops expired entries from the front of the order.
    fn sweep(&self, entries: &mut Entries, now: OffsetDateTime) {
        while let Some((_, id)) = entries.order.first_key_value() {
            let seen = entries.done.get(id).map(|(seen, _)| *seen);
            if seen.is_some_and(|seen| !self.expired(seen, now)) {
                break;
            }
            if let Some((_, id)) = entries.order.pop_first() {
                entries.done.remove(&id);
            }
        }
    }

    fn begin_now(&self, id: &MessageId, now: OffsetDateTime) -> Result<Began, IdempotencyError> {
        let mut guard = self.lock();
        let entries = &mut *guard;
        self.sweep(entries, now);
        if let Some((seen, seq)) = entries.done.get_mut(id) {
            if !self.expired(*seen, now) {
                // Seen again: refresh its place and its time-to-live.
                entries.order.remove(seq);
                *seq = entries.next_seq;
                *seen = (*seen).max(now);
                entries.order.insert(entries.next_seq, id.clone());
                entries.next_seq += 1;
                return Ok(Began::Duplicate);
            }
            let seq = *seq;
            entries.order.remove(&seq);
            entries.done.remove(id);
        }
        if let Some(claimed_at) = entries.claims.get_mut(id) {
            if now - *claimed_at < self.claim_timeout {
                return Ok(Began::InProgress);
            }
            *claimed_at = now;
            return Ok(Began::New);
        }
        if entries.claims.len() >= self.capacity.get() {
            return Err(IdempotencyError::Full(entries.claims.len()));
        }
        entries.claims.insert(id.clone(), now);
        Ok(Began::New)
    }

    fn complete_now(&self, id: &MessageId, now: OffsetDateTime) {
        let mut guard = self.lock();
        let entries = &mut *guard;
        entries.claims.remove(id);
        let seq = entries.next_seq;
        entries.next_seq += 1;
        if let Some((_, old)) = entries.done.insert(id.clone(), (now, seq)) {
            entries.order.remove(&old);
        }
        entries.order.insert(seq, id.clone());
        self.sweep(entries, now);
        while entries.done.len() > self.capacity.get() {
            match entries.order.pop_first() {
                Some((_, evicted)) => {
                    entries.done.remove(&evicted);
                }
                None => break,
            }
        }
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    fn begin(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Began, IdempotencyError>> + Send {
        ready(self.begin_now(id, now))
    }

    fn complete(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), IdempotencyError>> + Send {
        self.complete_now(id, now);
        ready(Ok(()))
    }

    fn abandon(&self, id: &MessageId) -> impl Future<Output = Result<(), IdempotencyError>> + Send {
        self.lock().claims.remove(id);
        ready(Ok(()))
    }
}
