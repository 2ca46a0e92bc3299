//! The durable inbox: the [`InboxStore`] trait, its entries and claims,
//! and [`MemoryInbox`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::{ready, Future};
use std::num::NonZeroUsize;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
#[cfg(any(feature = "sqlite", feature = "postgres", test))]
use http::header::HeaderValue;
use http::header::{self, HeaderName};
use http::HeaderMap;
use time::OffsetDateTime;

use crate::event::{EventType, MessageId};

use super::intake::Admitted;

/// Request headers never stored with an entry: credentials, and the
/// hop-by-hop headers that describe the connection rather than the
/// message.
const SKIPPED_HEADERS: [HeaderName; 9] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// The longest error text kept with an entry, in bytes; longer texts are
/// cut at a character boundary.
pub const MAX_ERROR_LEN: usize = 2048;

/// A verified request as the inbox keeps it until a worker has processed
/// it.
///
/// The headers are the request's, less credentials (`Authorization`,
/// `Proxy-Authorization`, `Cookie`) and hop-by-hop headers (`Connection`,
/// `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`). Every
/// other header is stored as received, signature headers included (they
/// are not secrets); a sender that authenticates with a header of its own
/// (an API key) would have it stored too.
///
/// `Debug` shows header names, not values, and the body's length only.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxEntry {
    /// The message id: the inbox's key.
    pub id: MessageId,
    /// The event type.
    pub event_type: EventType,
    /// The signed timestamp, if the scheme has one.
    pub signed_at: Option<OffsetDateTime>,
    /// When the request was received (the intake's clock); the entry is
    /// due then.
    pub received_at: OffsetDateTime,
    /// The request's headers, less those described above.
    pub headers: HeaderMap,
    /// The verified body, exactly as received.
    pub body: Bytes,
}

impl InboxEntry {
    /// An entry (for store implementations reading one back).
    pub fn new(
        id: MessageId,
        event_type: EventType,
        signed_at: Option<OffsetDateTime>,
        received_at: OffsetDateTime,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        Self {
            id,
            event_type,
            signed_at,
            received_at,
            headers,
            body,
        }
    }

    /// The entry of an admitted request: its headers less credentials and
    /// hop-by-hop ones.
    pub(crate) fn received(admitted: Admitted, headers: &HeaderMap, body: Bytes) -> Self {
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if !SKIPPED_HEADERS.contains(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Self {
            id: admitted.id,
            event_type: admitted.event_type,
            signed_at: admitted.signed_at,
            received_at: admitted.received_at,
            headers: kept,
            body,
        }
    }

    /// The entry as the routes take it.
    pub(crate) fn admitted(&self) -> Admitted {
        Admitted {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            signed_at: self.signed_at,
            received_at: self.received_at,
        }
    }
}

impl fmt::Debug for InboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxEntry")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("signed_at", &self.signed_at)
            .field("received_at", &self.received_at)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Headers as the SQL stores keep them: one `name: value` line each,
/// ended by CRLF. Names are lowercase tokens and values never hold CR or
/// LF, so the lines split back unambiguously; values need not be UTF-8.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads back what [`encode_headers`] wrote.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a header line is not ended")?;
        let line = &bytes[..end];
        bytes = &bytes[end + 2..];
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or("a header line has no name")?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|e| e.to_string())?;
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .ok_or("a header line has no value")?;
        let value = HeaderValue::from_bytes(value).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The longest prefix of `text` that fits in [`MAX_ERROR_LEN`] bytes and
/// ends on a character boundary.
pub(crate) fn clip(text: &str) -> &str {
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What [`InboxStore::accept`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    /// The entry was stored, due at once.
    New,
    /// An entry with this id is in the inbox (waiting, being processed,
    /// processed or failed); nothing was stored.
    Duplicate,
}

/// A worker's hold on an entry, made by [`InboxStore::claim_due`]: pass it
/// back to record the handler's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboxClaim {
    id: MessageId,
    token: u64,
    attempt: u32,
    lease_until: OffsetDateTime,
}

impl InboxClaim {
    /// A claim on entry `id` (for store implementations): `token` is the
    /// entry's claim count with this claim counted, `attempt` the number of
    /// the handler run it is for (its recorded runs plus one).
    pub fn new(id: MessageId, token: u64, attempt: u32, lease_until: OffsetDateTime) -> Self {
        Self {
            id,
            token,
            attempt,
            lease_until,
        }
    }

    /// The entry's id.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The token: the entry's claim count when the claim was made. A result
    /// is recorded only while the stored count still equals it.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Which run of the handler this is, the first being 1. Runs cut off
    /// by a lost lease or a shutdown are not counted.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the lease ends and another worker may take the entry over.
    pub fn lease_until(&self) -> OffsetDateTime {
        self.lease_until
    }
}

/// An entry claimed by [`InboxStore::claim_due`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClaimedEntry {
    /// The entry, headers and body included.
    pub entry: InboxEntry,
    /// The claim.
    pub claim: InboxClaim,
}

impl ClaimedEntry {
    /// Bundles an entry with its claim (for store implementations).
    pub fn new(entry: InboxEntry, claim: InboxClaim) -> Self {
        Self { entry, claim }
    }
}

/// Where a listing of failed entries goes on from: the last entry of the
/// previous page ([`FailedEntry::cursor`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailedCursor {
    failed_at: OffsetDateTime,
    id: MessageId,
}

impl FailedCursor {
    /// A cursor after the entry `id` that failed at `failed_at`.
    pub fn new(failed_at: OffsetDateTime, id: MessageId) -> Self {
        Self { failed_at, id }
    }

    /// When the entry failed.
    pub fn failed_at(&self) -> OffsetDateTime {
        self.failed_at
    }

    /// The entry's id.
    pub fn id(&self) -> &MessageId {
        &self.id
    }
}

/// An entry on the failed list: its handler failed on every run its retry
/// policy allowed, or it could not be processed at all (a payload that no
/// longer fits its route, no route with unknown types rejected, an
/// unreadable row). [`InboxStore::replay`] makes it due again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedEntry {
    /// The message id.
    pub id: MessageId,
    /// The event type.
    pub event_type: EventType,
    /// When the request was received.
    pub received_at: OffsetDateTime,
    /// When it was moved to the failed list.
    pub failed_at: OffsetDateTime,
    /// The handler runs recorded.
    pub attempts: u32,
    /// What the last run failed with.
    pub last_error: String,
}

impl FailedEntry {
    /// A failed entry (for store implementations).
    pub fn new(
        id: MessageId,
        event_type: EventType,
        received_at: OffsetDateTime,
        failed_at: OffsetDateTime,
        attempts: u32,
        last_error: String,
    ) -> Self {
        Self {
            id,
            event_type,
            received_at,
            failed_at,
            attempts,
            last_error,
        }
    }

    /// The cursor that lists the failed entries after this one.
    pub fn cursor(&self) -> FailedCursor {
        FailedCursor::new(self.failed_at, self.id.clone())
    }
}

/// Where an entry is, as [`InboxStore::status`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryState {
    /// Waiting for a worker, due at `due_at`.
    Pending {
        /// When it may be claimed.
        due_at: OffsetDateTime,
    },
    /// Claimed by a worker; claimable again once the lease ends.
    Claimed {
        /// When the lease ends.
        lease_until: OffsetDateTime,
    },
    /// Its handler succeeded (or it had no route and unknown types are
    /// acknowledged).
    Processed {
        /// When.
        at: OffsetDateTime,
    },
    /// On the failed list.
    Failed {
        /// When it was moved there.
        at: OffsetDateTime,
    },
}

/// One entry's state and history, from [`InboxStore::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryStatus {
    /// Where it is.
    pub state: EntryState,
    /// The handler runs recorded (reset by a replay).
    pub attempts: u32,
    /// What the last failed run failed with; cleared once processed.
    pub last_error: Option<String>,
}

impl EntryStatus {
    /// A status (for store implementations).
    pub fn new(state: EntryState, attempts: u32, last_error: Option<String>) -> Self {
        Self {
            state,
            attempts,
            last_error,
        }
    }
}

/// Why an [`InboxStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The claim is no longer the entry's latest: its lease expired and
    /// another worker took the entry over (or it was released, or
    /// replayed). The result was not recorded.
    #[error("the claim on {0} is stale")]
    Conflict(MessageId),
    /// No entry has this id.
    #[error("no inbox entry {0}")]
    NotFound(MessageId),
    /// The inbox holds as many waiting and failed entries as it may; the
    /// entry was not stored.
    #[error("the inbox is full ({0} entries waiting or failed)")]
    Full(usize),
    /// The backend failed.
    #[error("inbox store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Keeps a receiver's entries from the moment a request is verified until
/// its handler has succeeded, or it is on the failed list.
///
/// With an inbox ([`ReceiverBuilder::inbox`](super::ReceiverBuilder::inbox)),
/// a verified request is stored before it is acknowledged, and workers run
/// the handlers from the store. An entry moves through these states:
///
/// ```text
///             accept            claim_due            complete
/// (request) ─────────▶ pending ───────────▶ claimed ──────────▶ processed
///                       ▲  ▲                 │   │
///                       │  └─ retry/release ─┘   │ fail
///                       │                        ▼
///                       └──────── replay ────── failed
/// ```
///
/// A claimed entry whose lease has ended is claimable again, as a pending
/// one is; processed and failed entries stay until pruned.
///
/// - [`accept`](InboxStore::accept) stores an entry in one step that is
///   also the de-duplication: an id already in the inbox, in any state, is
///   [`Stored::Duplicate`] and nothing is stored again.
/// - [`claim_due`](InboxStore::claim_due) hands due entries to a worker with
///   a lease. A worker that dies leaves its claims to expire; the entries
///   are then claimed again, so a handler may run more than once for one
///   entry (at-least-once, as every webhook is).
/// - Each claim carries a token (the entry's claim count when it was made).
///   Recording a result with a claim that is no longer the entry's latest
///   (its lease expired and another worker took the entry over) is refused
///   with [`InboxError::Conflict`], so a late worker cannot overwrite a
///   newer result.
/// - A processed entry keeps its id (for de-duplication), type and times,
///   not its headers or body, until [`prune`](InboxStore::prune) removes
///   it; from then on its id would be stored as new.
///
/// Every method is one atomic step: two concurrent accepts of one id never
/// both get [`Stored::New`], and two workers never hold live claims on one
/// entry.
///
/// Implementations: [`MemoryInbox`] (per process, **not durable**);
/// `SqliteStore::inbox` and `PostgresStore::inbox` (features `sqlite`,
/// `postgres`) keep entries in the sender side's database, so they survive
/// a crash and, with Postgres, are shared by several receiver processes.
/// `Arc<S>` is a store when `S` is.
pub trait InboxStore: Send + Sync + 'static {
    /// Stores `entry`, due at its `received_at`, unless an entry with its
    /// id is in the inbox. Returns once the entry is stored as durably as
    /// the store can (committed, for a database).
    fn accept(&self, entry: &InboxEntry)
        -> impl Future<Output = Result<Stored, InboxError>> + Send;

    /// Claims up to `limit` entries due at `now` (pending and due, or
    /// claimed with an expired lease), earliest first, each with a lease of
    /// `lease`.
    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedEntry>, InboxError>> + Send;

    /// Records that the handler succeeded: the entry is processed, and
    /// keeps only its id, type and times.
    fn complete(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send;

    /// Records a failed run and makes the entry due again at `next_at`.
    fn retry(
        &self,
        claim: &InboxClaim,
        next_at: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send;

    /// Records a failed run and moves the entry to the failed list.
    fn fail(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send;

    /// Gives a claim back without recording a run: the entry is due at
    /// `now` (a shutdown cut its handler off).
    fn release(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send;

    /// Up to `limit` entries of the failed list (0 = no limit), in the
    /// order they failed, after `after` if given.
    fn failed(
        &self,
        after: Option<&FailedCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FailedEntry>, InboxError>> + Send;

    /// Moves a failed entry back to pending, due at `now`, with its run
    /// count reset (its retry schedule starts over). Returns whether a
    /// failed entry `id` was found.
    fn replay(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, InboxError>> + Send;

    /// Removes the entries processed before `processed_before`, and those
    /// failed before `failed_before` if given; returns how many went.
    /// Waiting and claimed entries are never removed.
    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<usize, InboxError>> + Send;

    /// The earliest time an entry becomes claimable, so idle workers sleep
    /// until then.
    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, InboxError>> + Send;

    /// Where entry `id` is, if it is in the inbox.
    fn status(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<EntryStatus>, InboxError>> + Send;
}

impl<S: InboxStore> InboxStore for Arc<S> {
    fn accept(
        &self,
        entry: &InboxEntry,
    ) -> impl Future<Output = Result<Stored, InboxError>> + Send {
        (**self).accept(entry)
    }

    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedEntry>, InboxError>> + Send {
        (**self).claim_due(now, lease, limit)
    }

    fn complete(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        (**self).complete(claim, now)
    }

    fn retry(
        &self,
        claim: &InboxClaim,
        next_at: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        (**self).retry(claim, next_at, error)
    }

    fn fail(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        (**self).fail(claim, now, error)
    }

    fn release(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        (**self).release(claim, now)
    }

    fn failed(
        &self,
        after: Option<&FailedCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FailedEntry>, InboxError>> + Send {
        (**self).failed(after, limit)
    }

    fn replay(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, InboxError>> + Send {
        (**self).replay(id, now)
    }

    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<usize, InboxError>> + Send {
        (**self).prune(processed_before, failed_before)
    }

    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, InboxError>> + Send {
        (**self).next_due()
    }

    fn status(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<EntryStatus>, InboxError>> + Send {
        (**self).status(id)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`InboxStore`] behind a pointer, so the receiver need not be generic
/// over its inbox.
pub(crate) trait DynInbox: Send + Sync + 'static {
    fn accept<'a>(&'a self, entry: &'a InboxEntry) -> BoxFuture<'a, Result<Stored, InboxError>>;
    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClaimedEntry>, InboxError>>;
    fn complete<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), InboxError>>;
    fn retry<'a>(
        &'a self,
        claim: &'a InboxClaim,
        next_at: OffsetDateTime,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), InboxError>>;
    fn fail<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), InboxError>>;
    fn release<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), InboxError>>;
    fn failed<'a>(
        &'a self,
        after: Option<&'a FailedCursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FailedEntry>, InboxError>>;
    fn replay<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, InboxError>>;
    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> BoxFuture<'_, Result<usize, InboxError>>;
    fn next_due(&self) -> BoxFuture<'_, Result<Option<OffsetDateTime>, InboxError>>;
    fn status<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<EntryStatus>, InboxError>>;
}

impl<S: InboxStore> DynInbox for S {
    fn accept<'a>(&'a self, entry: &'a InboxEntry) -> BoxFuture<'a, Result<Stored, InboxError>> {
        Box::pin(InboxStore::accept(self, entry))
    }

    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClaimedEntry>, InboxError>> {
        Box::pin(InboxStore::claim_due(self, now, lease, limit))
    }

    fn complete<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(InboxStore::complete(self, claim, now))
    }

    fn retry<'a>(
        &'a self,
        claim: &'a InboxClaim,
        next_at: OffsetDateTime,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(InboxStore::retry(self, claim, next_at, error))
    }

    fn fail<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(InboxStore::fail(self, claim, now, error))
    }

    fn release<'a>(
        &'a self,
        claim: &'a InboxClaim,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(InboxStore::release(self, claim, now))
    }

    fn failed<'a>(
        &'a self,
        after: Option<&'a FailedCursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FailedEntry>, InboxError>> {
        Box::pin(InboxStore::failed(self, after, limit))
    }

    fn replay<'a>(
        &'a self,
        id: &'a MessageId,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        Box::pin(InboxStore::replay(self, id, now))
    }

    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(InboxStore::prune(self, processed_before, failed_before))
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<OffsetDateTime>, InboxError>> {
        Box::pin(InboxStore::next_due(self))
    }

    fn status<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<EntryStatus>, InboxError>> {
        Box::pin(InboxStore::status(self, id))
    }
}

/// `t + d`, saturating.
pub(crate) fn later(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// An [`InboxStore`] in this process's memory, for tests and for
/// receivers that accept losing what is waiting when the process ends.
///
/// **Not durable**: a crash or restart loses every entry, waiting ones
/// included, although their senders were told 202. For that guarantee use
/// a database store (`SqliteStore::inbox`, `PostgresStore::inbox`).
///
/// At most [`capacity`](Self::with_capacity) entries that hold a body
/// (waiting, claimed or failed) are kept; past that, requests are answered
/// 503 ([`InboxError::Full`]) until workers catch up. Processed entries
/// keep only their id and times, and go when pruned (the receiver's
/// workers prune them after [`InboxConfig::retention`](super::InboxConfig::retention)).
///
/// Clones share the same entries.
///
/// ```
/// use std::time::Duration;
/// use hookway::receive::{EntryState, InboxEntry, InboxStore, MemoryInbox, Stored};
/// use hookway::EventType;
/// use time::macros::datetime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = MemoryInbox::new();
/// let now = datetime!(2026-03-15 10:30 UTC);
/// let entry = InboxEntry::new(
///     "msg_1".parse()?,
///     EventType::new("ticket.created")?,
///     None,
///     now,
///     http::HeaderMap::new(),
///     bytes::Bytes::from_static(b"{}"),
/// );
/// assert_eq!(inbox.accept(&entry).await?, Stored::New);
/// assert_eq!(inbox.accept(&entry).await?, Stored::Duplicate);
///
/// let claimed = inbox.claim_due(now, Duration::from_secs(60), 10).await?;
/// assert_eq!(claimed.len(), 1);
/// inbox.complete(&claimed[0].claim, now).await?;
/// let status = inbox.status(&entry.id).await?.unwrap();
/// assert_eq!(status.state, EntryState::Processed { at: now });
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryInbox {
    inner: Arc<Mutex<Rows>>,
    capacity: NonZeroUsize,
}

#[derive(Debug, Default)]
struct Rows {
    rows: HashMap<MessageId, Row>,
    /// Claimable entries by due time (pending: due; claimed: lease end).
    due: BTreeSet<(OffsetDateTime, MessageId)>,
    /// Processed entries by when.
    done: BTreeSet<(OffsetDateTime, MessageId)>,
    /// Failed entries by when.
    failed: BTreeSet<(OffsetDateTime, MessageId)>,
    /// Entries holding a body: waiting, claimed or failed.
    holding: usize,
}

#[derive(Debug)]
struct Row {
    entry: InboxEntry,
    state: EntryState,
    claims: u64,
    attempts: u32,
    last_error: Option<String>,
}

impl Rows {
    /// Moves entry `id` to `state`, keeping the indexes in step.
    fn set_state(&mut self, id: &MessageId, state: EntryState) {
        let Some(row) = self.rows.get_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut row.state, state);
        let holds = |s: &EntryState| !matches!(s, EntryState::Processed { .. });
        match (holds(&old), holds(&state)) {
            (true, false) => {
                self.holding -= 1;
                row.entry.headers = HeaderMap::new();
                row.entry.body = Bytes::new();
            }
            (false, true) => self.holding += 1,
            _ => {}
        }
        let key = id.clone();
        match old {
            EntryState::Pending { due_at: at } | EntryState::Claimed { lease_until: at } => {
                self.due.remove(&(at, key.clone()));
            }
            EntryState::Processed { at } => {
                self.done.remove(&(at, key.clone()));
            }
            EntryState::Failed { at } => {
                self.failed.remove(&(at, key.clone()));
            }
        }
        match state {
            EntryState::Pending { due_at: at } | EntryState::Claimed { lease_until: at } => {
                self.due.insert((at, key));
            }
            EntryState::Processed { at } => {
                self.done.insert((at, key));
            }
            EntryState::Failed { at } => {
                self.failed.insert((at, key));
            }
        }
    }

    /// The row `claim` is on, if the claim is still its latest.
    fn claimed(&mut self, claim: &InboxClaim) -> Result<&mut Row, InboxError> {
        let row = self
            .rows
            .get_mut(claim.id())
            .ok_or_else(|| InboxError::NotFound(claim.id().clone()))?;
        if row.claims != claim.token() || !matches!(row.state, EntryState::Claimed { .. }) {
            return Err(InboxError::Conflict(claim.id().clone()));
        }
        Ok(row)
    }

    /// Records a run on a claimed entry and moves it to `state`.
    fn settle(
        &mut self,
        claim: &InboxClaim,
        state: EntryState,
        counted: bool,
        error: Option<&str>,
    ) -> Result<(), InboxError> {
        let row = self.claimed(claim)?;
        if counted {
            row.attempts = row.attempts.saturating_add(1);
            row.last_error = error.map(str::to_owned);
        }
        self.set_state(claim.id(), state);
        Ok(())
    }

    /// Removes the entries of `index` before `before`; returns how many.
    fn remove_before(&mut self, failed: bool, before: OffsetDateTime) -> usize {
        let index = if failed {
            &mut self.failed
        } else {
            &mut self.done
        };
        let mut gone = Vec::new();
        while let Some((at, _)) = index.first() {
            if *at >= before {
                break;
            }
            if let Some((_, id)) = index.pop_first() {
                gone.push(id);
            }
        }
        for id in &gone {
            self.rows.remove(id);
        }
        if failed {
            self.holding -= gone.len();
        }
        gone.len()
    }
}

impl fmt::Debug for MemoryInbox {
    // Counts only: the entries are the senders' data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.lock();
        f.debug_struct("MemoryInbox")
            .field("entries", &rows.rows.len())
            .field("waiting_or_failed", &rows.holding)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for MemoryInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryInbox {
    /// How many entries holding a body (waiting, claimed or failed) are kept
    /// by default: 10 000.
    pub const DEFAULT_CAPACITY: NonZeroUsize = match NonZeroUsize::new(10_000) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    };

    /// An empty inbox of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY).
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            capacity: Self::DEFAULT_CAPACITY,
        }
    }

    /// Sets how many entries holding a body are kept.
    #[must_use]
    pub fn with_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The capacity.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// How many entries are held, processed ones included.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// The entry `id` as stored, if it is held. A processed entry has
    /// neither headers nor body.
    pub fn entry(&self, id: &MessageId) -> Option<InboxEntry> {
        self.lock().rows.get(id).map(|row| row.entry.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Rows> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept_now(&self, entry: &InboxEntry) -> Result<Stored, InboxError> {
        let mut rows = self.lock();
        if rows.rows.contains_key(&entry.id) {
            return Ok(Stored::Duplicate);
        }
        if rows.holding >= self.capacity.get() {
            return Err(InboxError::Full(rows.holding));
        }
        let due_at = entry.received_at;
        rows.rows.insert(
            entry.id.clone(),
            Row {
                entry: entry.clone(),
                state: EntryState::Pending { due_at },
                claims: 0,
                attempts: 0,
                last_error: None,
            },
        );
        rows.due.insert((due_at, entry.id.clone()));
        rows.holding += 1;
        Ok(Stored::New)
    }

    fn claim_now(&self, now: OffsetDateTime, lease: Duration, limit: usize) -> Vec<ClaimedEntry> {
        let mut rows = self.lock();
        let due: Vec<MessageId> = rows
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let lease_until = later(now, lease);
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            let Some(row) = rows.rows.get_mut(&id) else {
                continue;
            };
            row.claims = row.claims.saturating_add(1);
            let claim = InboxClaim::new(
                id.clone(),
                row.claims,
                row.attempts.saturating_add(1),
                lease_until,
            );
            claimed.push(ClaimedEntry::new(row.entry.clone(), claim));
            rows.set_state(&id, EntryState::Claimed { lease_until });
        }
        claimed
    }

    fn failed_now(&self, after: Option<&FailedCursor>, limit: usize) -> Vec<FailedEntry> {
        let rows = self.lock();
        let limit = if limit == 0 { usize::MAX } else { limit };
        let from = match after {
            Some(c) => Bound::Excluded((c.failed_at, c.id.clone())),
            None => Bound::Unbounded,
        };
        rows.failed
            .range((from, Bound::Unbounded))
            .take(limit)
            .filter_map(|(at, id)| {
                let row = rows.rows.get(id)?;
                Some(FailedEntry::new(
                    id.clone(),
                    row.entry.event_type.clone(),
                    row.entry.received_at,
                    *at,
                    row.attempts,
                    row.last_error.clone().unwrap_or_default(),
                ))
            })
            .collect()
    }

    fn replay_now(&self, id: &MessageId, now: OffsetDateTime) -> bool {
        let mut rows = self.lock();
        match rows.rows.get_mut(id) {
            Some(row) if matches!(row.state, EntryState::Failed { .. }) => {
                row.attempts = 0;
                rows.set_state(id, EntryState::Pending { due_at: now });
                true
            }
            _ => false,
        }
    }
}

impl InboxStore for MemoryInbox {
    fn accept(
        &self,
        entry: &InboxEntry,
    ) -> impl Future<Output = Result<Stored, InboxError>> + Send {
        ready(self.accept_now(entry))
    }

    fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedEntry>, InboxError>> + Send {
        ready(Ok(self.claim_now(now, lease, limit)))
    }

    fn complete(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        ready(
            self.lock()
                .settle(claim, EntryState::Processed { at: now }, true, None),
        )
    }

    fn retry(
        &self,
        claim: &InboxClaim,
        next_at: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        ready(self.lock().settle(
            claim,
            EntryState::Pending { due_at: next_at },
            true,
            Some(error),
        ))
    }

    fn fail(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        ready(
            self.lock()
                .settle(claim, EntryState::Failed { at: now }, true, Some(error)),
        )
    }

    fn release(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        ready(
            self.lock()
                .settle(claim, EntryState::Pending { due_at: now }, false, None),
        )
    }

    fn failed(
        &self,
        after: Option<&FailedCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FailedEntry>, InboxError>> + Send {
        ready(Ok(self.failed_now(after, limit)))
    }

    fn replay(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, InboxError>> + Send {
        ready(Ok(self.replay_now(id, now)))
    }

    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<usize, InboxError>> + Send {
        let mut rows = self.lock();
        let mut removed = rows.remove_before(false, processed_before);
        if let Some(before) = failed_before {
            removed += rows.remove_before(true, before);
        }
        ready(Ok(removed))
    }

    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, InboxError>> + Send {
        ready(Ok(self.lock().due.first().map(|(at, _)| *at)))
    }

    fn status(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<EntryStatus>, InboxError>> + Send {
        let rows = self.lock();
        ready(Ok(rows.rows.get(id).map(|row| {
            EntryStatus::new(row.state, row.attempts, row.last_error.clone())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn headers_survive_their_encoding() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("one"));
        headers.append("x-many", HeaderValue::from_static("two: with a colon"));
        headers.append("x-raw", HeaderValue::from_bytes(b"caf\xe9 \t ok").unwrap());
        headers.append("x-empty", HeaderValue::from_static(""));
        let bytes = encode_headers(&headers);
        assert_eq!(decode_headers(&bytes).unwrap(), headers);
        assert_eq!(decode_headers(b"").unwrap(), HeaderMap::new());
        for bad in [
            &b"x-a: 1"[..],
            b"no colon\r\n",
            b"x-a:1\r\n",
            b"bad name: 1\r\n",
            b"x-a: \x01\r\n",
        ] {
            assert!(decode_headers(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_kept() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("webhook-id", "msg_1"),
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let admitted = Admitted {
            id: "msg_1".parse().unwrap(),
            event_type: EventType::from_static("ticket.created"),
            signed_at: None,
            received_at: OffsetDateTime::UNIX_EPOCH,
        };
        let entry = InboxEntry::received(admitted, &headers, Bytes::from_static(b"{}"));
        let kept: Vec<&str> = entry.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["content-type", "webhook-id"]);
        assert!(!format!("{entry:?}").contains("application/json"));
    }

    #[test]
    fn debug_shows_no_header_value_or_body() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("key-value-1234"));
        let entry = InboxEntry::new(
            "msg_1".parse().unwrap(),
            EventType::from_static("ticket.created"),
            None,
            OffsetDateTime::UNIX_EPOCH,
            headers,
            Bytes::from_static(b"body-text-5678"),
        );
        let inbox = MemoryInbox::new();
        assert_eq!(inbox.accept_now(&entry).unwrap(), Stored::New);
        for shown in [format!("{entry:?}"), format!("{inbox:?}")] {
            assert!(!shown.contains("key-value-1234"), "{shown}");
            assert!(!shown.contains("body-text-5678"), "{shown}");
        }
        assert!(format!("{entry:?}").contains("x-api-key"));
    }

    #[test]
    fn error_texts_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_ERROR_LEN);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_ERROR_LEN && clipped.len() >= MAX_ERROR_LEN - 1);
        assert!(clipped.chars().all(|c| c == 'é'));
    }
}
