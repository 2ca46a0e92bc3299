//! The receiving side: a [`Receiver`] that takes a request from any HTTP
//! stack and does what providers' docs ask of a webhook consumer.
//!
//! Each request goes through, in order:
//!
//! 1. **size limit**: a body over [`Intake::max_body`] is answered 413;
//! 2. **IP allowlist** (optional): a client outside it is answered 403 (see
//!    [`IpAllowlist`] for `X-Forwarded-For` and trusted proxies);
//! 3. **verification** by a [`Verifier`](crate::Verifier): a bad or missing
//!    signature, or a timestamp outside the tolerance, is answered 401;
//! 4. **envelope**: the message id and event type are read as the
//!    [`Envelope`] says (Standard Webhooks' by default, GitHub's and
//!    Stripe's presets); a body without them is answered 400;
//! 5. **routing** by event type to the first matching route, in the order
//!    registered (put specific routes before broad ones such as
//!    `"ticket.*"` or `"*"`); a typed route parses the payload now, so a
//!    payload that does not fit is answered 400. An event type with no
//!    route is acknowledged and logged by default, since providers add
//!    types over time ([`Unrouted`]);
//! 6. **de-duplication** by message id through an [`IdempotencyStore`]: an
//!    id processed before is acknowledged (200) without running the handler
//!    again (with an inbox, the inbox itself: see below);
//! 7. **the handler**, inline, on a queue, or from a durable inbox
//!    ([`Processing`]).
//!
//! # Processing modes
//!
//! **Inline** (the default): the handler runs before the response. Success
//! answers 200 and marks the id processed; a handler error (or panic)
//! answers 500, so the sender retries, and the id is not marked processed,
//! so the retry runs the handler again. Nothing is acknowledged that was
//! not processed. Inside a tokio runtime a client that hangs up does not
//! cancel the handler halfway: the handler runs in place, and if the
//! request is dropped before it finishes, the rest moves to a task of its
//! own, where it finishes and settles its id.
//!
//! **Acknowledge-then-process** ([`Processing::queued`]): the request is
//! answered 202 once the event is on a bounded in-memory queue, and worker
//! tasks run the handlers. A full queue answers 503, so the sender retries
//! rather than the event being dropped. A handler error is logged and
//! reported to [observers](ReceiverBuilder::observe), and the id's claim is
//! given back, so a later redelivery (a replay by the sender) is processed.
//!
//! **In this mode a crash loses the events acknowledged but still in the
//! queue**: the sender was told 202 and will not send them again by itself.
//! Use it where that is acceptable, or where a sender can replay; inline
//! processing, or the durable inbox, loses nothing. [`Receiver::shutdown`]
//! drains the queue within a deadline and reports what it could not finish.
//!
//! **Durable inbox** ([`ReceiverBuilder::inbox`]): the verified request,
//! with its id, type, body and headers (less credentials), is stored in an
//! [`InboxStore`] in one insert that is also the de-duplication, and only
//! once that insert has committed is it answered 202. An id already in the
//! inbox is answered 200 without storing anything; a store that fails
//! answers 503 with `Retry-After`, so nothing is acknowledged that was not
//! stored. Worker tasks ([`InboxConfig::workers`]) claim due entries with a
//! lease, rebuild the event for the same routes (typed or raw) and run the
//! handler: success marks the entry processed; an error (or panic) is
//! retried per [`InboxConfig::retry`], and an entry that keeps failing goes
//! to a failed list ([`Receiver::inbox`], [`Inbox::failed`]), from which
//! [`Inbox::replay`] brings it back. An entry whose type no longer has a
//! route (the routes changed since it was stored) follows [`Unrouted`]:
//! processed, or moved to the failed list. With a database store
//! (`SqliteStore::inbox`, `PostgresStore::inbox`) **an acknowledged event
//! survives a crash of the receiver**: the next process on the same
//! database runs it, and a handler cut off mid-run runs again once its
//! lease ends (handlers run at least once; make them idempotent, or keep
//! the lease longer than they take). [`MemoryInbox`] keeps the same
//! contract in memory, for tests: it is not durable.
//!
//! | mode | answered | a crash loses | pick it when |
//! | --- | --- | --- | --- |
//! | inline | 200 after the handler | nothing (the sender retries) | handlers are quick and the sender's timeout is generous |
//! | queued | 202 once queued in memory | what was acknowledged and still queued | handlers are slow and a lost event is tolerable, or the sender can replay |
//! | durable inbox | 202 once stored | nothing acknowledged | handlers are slow or flaky and every event matters |
//!
//! # Concurrent duplicates
//!
//! While one delivery of an id is being processed, another delivery of the
//! same id is answered **503 with `Retry-After`**, not 409: most senders,
//! hookway's own [`Classifier`](crate::retry::Classifier) among them,
//! treat a 4xx other than 408 and 429 as permanent and stop retrying, which
//! would lose the event if the first delivery then failed. A 503 is retried
//! by every sender; by then the first delivery has either succeeded (the
//! retry is acknowledged as a duplicate) or failed (the retry is
//! processed).
//!
//! # Example
//!
//! ```
//! use hookway::clock::{Clock, SystemClock};
//! use hookway::receive::{Accepted, Receiver};
//! use hookway::{Event, EventType, Scheme, Secret, Signer, Verifier};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Ticket {
//!     id: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let receiver = Receiver::builder(Verifier::new(Scheme::standard(), secret.clone())?)
//!     .on("ticket.created", |event: Event<Ticket>| async move {
//!         println!("ticket {} created", event.data.id);
//!         Ok(())
//!     })
//!     .build()?;
//!
//! // What a sender would send.
//! let event = Event::new(EventType::new("ticket.created")?, serde_json::json!({"id": "tkt_1"}));
//! let (body, headers) =
//!     Signer::new(Scheme::standard(), secret)?.sign_event(&event, SystemClock.now())?;
//! let request = || {
//!     let mut request = http::Request::post("/webhooks").body(body.clone().into())?;
//!     *request.headers_mut() = headers.clone();
//!     Ok::<_, http::Error>(request)
//! };
//!
//! // Any HTTP stack: hand over the request and the peer's address.
//! let accepted = receiver.receive(request()?, None).await?;
//! assert_eq!(accepted, Accepted::Processed);
//! assert_eq!(accepted.status(), 200);
//!
//! // A redelivery is acknowledged, and the handler does not run again.
//! assert_eq!(receiver.receive(request()?, None).await?, Accepted::Duplicate);
//!
//! // A tampered body is refused.
//! let mut tampered = request()?;
//! *tampered.body_mut() = bytes::Bytes::from_static(b"{}");
//! let refused = receiver.receive(tampered, None).await.unwrap_err();
//! assert_eq!(refused.status(), 401);
//! assert_eq!(refused.body(), "invalid signature");
//! # Ok(())
//! # }
//! ```

mod allowlist;
mod durable;
mod idempotency;
pub(crate) mod inbox;
mod intake;
mod response;
mod route;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::event::{Event, EventFilter, EventType, InvalidPattern, MessageId};

pub use allowlist::{InvalidIpRange, IpAllowlist, IpRange, X_FORWARDED_FOR};
pub use durable::{Inbox, InboxConfig};
pub use idempotency::{
    Began, IdempotencyError, IdempotencyStore, MemoryIdempotencyStore, DEFAULT_CAPACITY,
    DEFAULT_CLAIM_TIMEOUT, DEFAULT_TTL,
};
pub use inbox::{
    ClaimedEntry, EntryState, EntryStatus, FailedCursor, FailedEntry, InboxClaim, InboxEntry,
    InboxError, InboxStore, MemoryInbox, Stored, MAX_ERROR_LEN,
};
pub use intake::{Admitted, Envelope, Intake, Source, DEFAULT_MAX_BODY};
pub use response::{Accepted, Malformed, Rejection};
pub use route::{HandlerError, HandlerResult, IntoFilter, RawEvent};

use durable::InboxShared;
use idempotency::DynStore;
use inbox::DynInbox;
use route::{Job, Raw, Route, Typed};

/// The default `Retry-After` of a 503: 5 seconds.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How handlers run: inline, on a queue after the request is
/// acknowledged, or from a durable inbox. See
/// [the module docs](self#processing-modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processing(Mode);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Inline,
    Queued {
        capacity: usize,
        workers: usize,
    },
    Durable,
}

impl Processing {
    /// The handler runs before the response (the default).
    pub const fn inline() -> Self {
        Self(Mode::Inline)
    }

    /// The request is acknowledged (202) once its event is on a queue of
    /// `capacity` events, and `workers` tasks run the handlers. A full
    /// queue answers 503. Acknowledged events still queued are lost if the
    /// process crashes.
    pub const fn queued(capacity: usize, workers: usize) -> Self {
        Self(Mode::Queued { capacity, workers })
    }

    /// The request is acknowledged (202) once its event is stored in an
    /// inbox, and workers run the handlers from there, with retries and a
    /// failed list. Set by [`ReceiverBuilder::inbox`], which gives the
    /// inbox store.
    pub const fn durable() -> Self {
        Self(Mode::Durable)
    }

    /// Whether handlers run inline.
    pub const fn is_inline(&self) -> bool {
        matches!(self.0, Mode::Inline)
    }

    /// Whether handlers run from a durable inbox.
    pub const fn is_durable(&self) -> bool {
        matches!(self.0, Mode::Durable)
    }
}

/// What to do with an event whose type no route matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unrouted {
    /// Answer 200 and log it (the default): providers add event types, and a
    /// 4xx or 5xx would make them retry, or disable the endpoint, over an
    /// event nobody asked for.
    #[default]
    Acknowledge,
    /// Answer with this status (a 4xx or 5xx).
    Reject(StatusCode),
}

/// What a receiver tells its [observers](ReceiverBuilder::observe).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Notice {
    /// A handler failed or panicked. Its id was not marked processed.
    HandlerFailed {
        /// The message id.
        id: MessageId,
        /// The event type.
        event_type: EventType,
        /// What the handler returned.
        error: Arc<dyn std::error::Error + Send + Sync>,
        /// Whether the event had been acknowledged already: with queued
        /// processing only a redelivery brings it back; with an inbox it
        /// is retried per its schedule, then moved to the failed list.
        acknowledged: bool,
    },
    /// An acknowledged event was still queued, or its handler still
    /// running, when [`Receiver::shutdown`]'s deadline passed. Its id was
    /// given back.
    Unprocessed {
        /// The message id.
        id: MessageId,
        /// The event type.
        event_type: EventType,
    },
    /// The idempotency store failed to record the end of a claim.
    StoreFailed {
        /// The message id.
        id: MessageId,
        /// The store's error.
        error: Arc<IdempotencyError>,
    },
    /// An inbox entry was moved to the failed list: its handler failed on
    /// every run the retry policy allowed, or it could not be run at all.
    /// [`Inbox::replay`] makes it due again.
    GaveUp {
        /// The message id.
        id: MessageId,
        /// The event type.
        event_type: EventType,
        /// The handler runs recorded, this one included.
        attempts: u32,
        /// Why, as stored with the entry.
        error: Arc<str>,
    },
    /// The inbox store failed while a worker claimed entries or recorded a
    /// result, or a result was refused because its claim was lost
    /// ([`InboxError::Conflict`]). An unrecorded claim's entry is claimed
    /// again once its lease ends.
    InboxFailed {
        /// The entry concerned, if the failure was about one.
        id: Option<MessageId>,
        /// The store's error.
        error: Arc<InboxError>,
    },
}

/// Receives [`Notice`]s. Called inline by the task that caused them, so
/// keep it quick. Closures `Fn(&Notice)` are observers.
pub trait ReceiveObserver: Send + Sync + 'static {
    /// One notice.
    fn notice(&self, notice: &Notice);
}

impl<F: Fn(&Notice) + Send + Sync + 'static> ReceiveObserver for F {
    fn notice(&self, notice: &Notice) {
        self(notice)
    }
}

/// What [`Receiver::shutdown`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every worker finished within the deadline.
    pub drained: bool,
    /// Acknowledged events not processed: still queued, or cut off when the
    /// deadline passed. Each was reported as [`Notice::Unprocessed`]. With
    /// an inbox, these are the handlers cut off: their entries stay in the
    /// inbox, due again at once (entries no worker had claimed are not
    /// counted; they wait in the inbox too).
    pub unfinished: usize,
}

/// Why a [`Receiver`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route's pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] InvalidPattern),
    /// A route's pattern matches nothing (an empty text or filter).
    #[error("a route's pattern matches no event type")]
    EmptyPattern,
    /// A queue needs a capacity and at least one worker.
    #[error("invalid queue: {0}")]
    Queue(&'static str),
    /// [`Unrouted::Reject`] needs a 4xx or 5xx status.
    #[error("status {0} cannot reject an event; use a 4xx or 5xx")]
    UnroutedStatus(StatusCode),
    /// Queued and durable processing start worker tasks, so the receiver
    /// must be built inside a tokio runtime.
    #[error("queued or durable processing must be set up inside a tokio runtime")]
    NoRuntime,
    /// The inbox settings do not fit: an invalid [`InboxConfig`], durable
    /// processing without an inbox store, an inbox with another processing
    /// mode, or an inbox with an idempotency store (the inbox
    /// de-duplicates by itself).
    #[error("invalid inbox setup: {0}")]
    Inbox(&'static str),
}

/// Sets up a [`Receiver`]: its routes, store, processing mode and
/// observers. Made by [`Receiver::builder`].
#[must_use]
pub struct ReceiverBuilder {
    intake: Intake,
    routes: Vec<(EventFilter, Box<dyn Route>)>,
    error: Option<BuildError>,
    unrouted: Unrouted,
    store: Option<Box<dyn DynStore>>,
    processing: Processing,
    inbox: Option<Box<dyn DynInbox>>,
    inbox_config: InboxConfig,
    observers: Vec<Arc<dyn ReceiveObserver>>,
    retry_after: Duration,
}

impl ReceiverBuilder {
    fn add(mut self, filter: Result<EventFilter, InvalidPattern>, route: Box<dyn Route>) -> Self {
        if self.error.is_some() {
            return self;
        }
        match filter {
            Ok(filter) if filter.is_empty() => self.error = Some(BuildError::EmptyPattern),
            Ok(filter) => self.routes.push((filter, route)),
            Err(e) => self.error = Some(BuildError::Pattern(e)),
        }
        self
    }

    /// Routes events matching `pattern` to `handler`, with the body's
    /// `data` parsed as `T` (see [`Admitted::decode`]). A payload that does
    /// not parse as `T` is answered 400.
    ///
    /// Routes are tried in the order registered; the first match wins.
    pub fn on<T, H, Fut>(self, pattern: impl IntoFilter, handler: H) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: Fn(Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add(pattern.into_filter(), Box::new(Typed::new(handler)))
    }

    /// Routes events matching `pattern` to `handler`, which gets the
    /// headers and the body as received ([`RawEvent`]): for bodies that are
    /// not an envelope with `data` (GitHub's), or handlers that want the
    /// bytes.
    pub fn on_raw<H, Fut>(self, pattern: impl IntoFilter, handler: H) -> Self
    where
        H: Fn(RawEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add(pattern.into_filter(), Box::new(Raw::new(handler)))
    }

    /// What to do with event types no route matches (default:
    /// [`Unrouted::Acknowledge`]). For a handler of its own, register a
    /// last route for `"*"`.
    pub fn unrouted(mut self, unrouted: Unrouted) -> Self {
        self.unrouted = unrouted;
        self
    }

    /// De-duplicates with `store` (default: a
    /// [`MemoryIdempotencyStore::new`]). Not with an [`inbox`](Self::inbox),
    /// which de-duplicates by itself.
    pub fn idempotency(mut self, store: impl IdempotencyStore) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Sets the processing mode (default: [`Processing::inline`]).
    pub fn processing(mut self, processing: Processing) -> Self {
        self.processing = processing;
        self
    }

    /// Processes from a durable inbox in `store`
    /// ([`Processing::durable`]; see
    /// [the module docs](self#processing-modes)): each verified request is
    /// stored, with its id, before it is answered 202, and
    /// [`InboxConfig::workers`] tasks run the handlers from the store,
    /// retrying failures and moving what keeps failing to a failed list
    /// ([`Receiver::inbox`]).
    ///
    /// The inbox is the de-duplication: an id already in it is answered 200
    /// and not stored again, so no [`idempotency`](Self::idempotency) store
    /// is used (setting one is an error).
    ///
    /// Use a database store (`SqliteStore::inbox`, `PostgresStore::inbox`)
    /// for events that must survive a crash; [`MemoryInbox`] is not
    /// durable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::clock::{Clock, SystemClock};
    /// use hookway::receive::{Accepted, MemoryInbox, Receiver};
    /// use hookway::{Event, EventType, Scheme, Secret, Signer, Verifier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let (done, mut handled) = tokio::sync::mpsc::unbounded_channel();
    /// let receiver = Receiver::builder(Verifier::new(Scheme::standard(), secret.clone())?)
    ///     .on("ticket.*", move |event: Event| {
    ///         let done = done.clone();
    ///         async move {
    ///             let _ = done.send(event.id);
    ///             Ok(())
    ///         }
    ///     })
    ///     .inbox(MemoryInbox::new())
    ///     .build()?;
    ///
    /// let event = Event::new(EventType::new("ticket.created")?, serde_json::json!({"id": "tkt_1"}));
    /// let (body, headers) =
    ///     Signer::new(Scheme::standard(), secret)?.sign_event(&event, SystemClock.now())?;
    /// let mut request = http::Request::post("/webhooks").body(bytes::Bytes::from(body))?;
    /// *request.headers_mut() = headers;
    ///
    /// // Stored, then acknowledged; a worker runs the handler.
    /// let accepted = receiver.receive(request, None).await?;
    /// assert_eq!(accepted, Accepted::Queued);
    /// assert_eq!(accepted.status(), 202);
    /// assert_eq!(handled.recv().await, Some(event.id));
    ///
    /// receiver.shutdown(Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn inbox(mut self, store: impl InboxStore) -> Self {
        self.inbox = Some(Box::new(store));
        self.processing = Processing::durable();
        self
    }

    /// Sets how the inbox workers run (default: [`InboxConfig::default`]).
    pub fn inbox_config(mut self, config: InboxConfig) -> Self {
        self.inbox_config = config;
        self
    }

    /// Adds an observer of handler failures and shutdown losses.
    pub fn observe(mut self, observer: impl ReceiveObserver) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Sets the `Retry-After` of 503 answers (default:
    /// [`DEFAULT_RETRY_AFTER`]).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The receiver, or the first invalid setting. With queued processing,
    /// starts the workers on the current tokio runtime.
    pub fn build(self) -> Result<Receiver, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if let Unrouted::Reject(status) = self.unrouted {
            if !(status.is_client_error() || status.is_server_error()) {
                return Err(BuildError::UnroutedStatus(status));
            }
        }
        match (&self.inbox, self.processing.is_durable()) {
            (Some(_), false) => {
                return Err(BuildError::Inbox(
                    "an inbox store is set but processing is not durable",
                ))
            }
            (None, true) => {
                return Err(BuildError::Inbox(
                    "durable processing needs an inbox store (ReceiverBuilder::inbox)",
                ))
            }
            (Some(_), true) if self.store.is_some() => {
                return Err(BuildError::Inbox(
                    "the inbox de-duplicates by itself; an idempotency store is not used with it",
                ))
            }
            (Some(_), true) => self.inbox_config.check().map_err(BuildError::Inbox)?,
            (None, false) => {}
        }
        let routing = Arc::new(Routing {
            routes: self.routes,
            unrouted: self.unrouted,
        });
        let shared = Arc::new(Shared {
            store: self
                .store
                .unwrap_or_else(|| Box::new(MemoryIdempotencyStore::new())),
            observers: self.observers,
            intake: self.intake.clone(),
            orphans: Mutex::new(Vec::new()),
        });
        let mut durable = None;
        let queue = match self.processing.0 {
            Mode::Inline => None,
            Mode::Durable => {
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                let Some(store) = self.inbox else {
                    return Err(BuildError::Inbox("durable processing needs an inbox store"));
                };
                let workers = self.inbox_config.workers;
                let inbox = Arc::new(InboxShared::new(
                    store,
                    self.inbox_config,
                    self.intake.clone(),
                ));
                let (stop, stopped) = watch::channel(false);
                let handles = (0..workers)
                    .map(|_| {
                        runtime.spawn(durable::work(
                            Arc::clone(&inbox),
                            Arc::clone(&routing),
                            Arc::clone(&shared),
                            stopped.clone(),
                        ))
                    })
                    .collect();
                durable = Some(Durable {
                    inbox,
                    stop,
                    workers: Mutex::new(handles),
                });
                None
            }
            Mode::Queued { capacity, workers } => {
                if capacity == 0 {
                    return Err(BuildError::Queue("the capacity must be at least 1"));
                }
                if capacity > tokio::sync::Semaphore::MAX_PERMITS {
                    return Err(BuildError::Queue("the capacity is too large"));
                }
                if workers == 0 {
                    return Err(BuildError::Queue("at least one worker is needed"));
                }
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                let (tx, rx) = mpsc::channel(capacity);
                let rx = Arc::new(tokio::sync::Mutex::new(rx));
                let handles = (0..workers)
                    .map(|_| runtime.spawn(work(Arc::clone(&shared), Arc::clone(&rx))))
                    .collect();
                Some(Queue {
                    tx: Mutex::new(Some(tx)),
                    rx,
                    workers: Mutex::new(handles),
                })
            }
        };
        Ok(Receiver {
            inner: Arc::new(Inner {
                intake: self.intake,
                routing,
                shared,
                queue,
                durable,
                processing: self.processing,
                closed: AtomicBool::new(false),
                retry_after: self.retry_after,
            }),
        })
    }
}

impl fmt::Debug for ReceiverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverBuilder")
            .field("intake", &self.intake)
            .field(
                "routes",
                &self.routes.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            )
            .field("unrouted", &self.unrouted)
            .field("processing", &self.processing)
            .field("inbox_config", &self.inbox_config)
            .finish_non_exhaustive()
    }
}

/// Verifies, de-duplicates, routes and processes incoming webhooks. See
/// [the module docs](self).
///
/// Cheap to clone: clones share routes, store and workers. Works on `http`
/// types, so any server can call [`receive`](Self::receive); the axum
/// adapter (feature `axum`) mounts one at a path.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

struct Inner {
    intake: Intake,
    routing: Arc<Routing>,
    shared: Arc<Shared>,
    queue: Option<Queue>,
    durable: Option<Durable>,
    processing: Processing,
    closed: AtomicBool,
    retry_after: Duration,
}

/// The routes, which inbox workers use as well as the request path.
struct Routing {
    routes: Vec<(EventFilter, Box<dyn Route>)>,
    unrouted: Unrouted,
}

impl Routing {
    fn route(&self, event_type: &EventType) -> Option<&dyn Route> {
        self.routes
            .iter()
            .find(|(filter, _)| filter.matches(event_type))
            .map(|(_, route)| &**route)
    }
}

/// Durable processing: the inbox and its workers.
struct Durable {
    inbox: Arc<InboxShared>,
    /// Tells the workers to stop; dropped with the receiver, which stops
    /// them too.
    stop: watch::Sender<bool>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// What the request path and the workers both use.
struct Shared {
    store: Box<dyn DynStore>,
    observers: Vec<Arc<dyn ReceiveObserver>>,
    intake: Intake,
    /// Jobs whose worker was aborted at shutdown.
    orphans: Mutex<Vec<(MessageId, EventType)>>,
}

struct Queue {
    tx: Mutex<Option<mpsc::Sender<Queued>>>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Queued {
    id: MessageId,
    event_type: EventType,
    job: Job,
}

/// Logs a refused request: 5xx as warnings (the receiver's side), the rest
/// as information (the request's side, attackers' noise included).
pub(crate) fn log_rejection(rejection: &Rejection, peer: Option<SocketAddr>) {
    let status = rejection.status().as_u16();
    if rejection.status().is_server_error() {
        tracing::warn!(status, ?peer, reason = %rejection, "webhook refused");
    } else {
        tracing::info!(status, ?peer, reason = %rejection, "webhook refused");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn notify(&self, notice: Notice) {
        for observer in &self.observers {
            observer.notice(&notice);
        }
    }

    /// Ends the claim on `id` after its handler ran: processed on success,
    /// given back on failure. Returns whether the handler succeeded.
    async fn settle(
        &self,
        id: &MessageId,
        event_type: &EventType,
        result: HandlerResult,
        acknowledged: bool,
    ) -> bool {
        match result {
            Ok(()) => {
                if let Err(error) = self.store.complete(id, self.intake.now()).await {
                    self.store_failed(id, error);
                }
                true
            }
            Err(error) => {
                tracing::warn!(
                    id = %id,
                    event_type = %event_type,
                    acknowledged,
                    error = %error,
                    "webhook handler failed"
                );
                self.notify(Notice::HandlerFailed {
                    id: id.clone(),
                    event_type: event_type.clone(),
                    error: Arc::from(error),
                    acknowledged,
                });
                self.abandon(id).await;
                false
            }
        }
    }

    async fn abandon(&self, id: &MessageId) {
        if let Err(error) = self.store.abandon(id).await {
            self.store_failed(id, error);
        }
    }

    fn store_failed(&self, id: &MessageId, error: IdempotencyError) {
        tracing::warn!(id = %id, error = %error, "idempotency store failed");
        self.notify(Notice::StoreFailed {
            id: id.clone(),
            error: Arc::new(error),
        });
    }
}

/// Puts the job of an aborted worker on the orphan list, so shutdown gives
/// its id back.
struct Running<'a> {
    shared: &'a Shared,
    job: Option<(MessageId, EventType)>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            lock(&self.shared.orphans).push(job);
        }
    }
}

async fn work(shared: Arc<Shared>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            rx.recv().await
        };
        let Some(Queued {
            id,
            event_type,
            job,
        }) = next
        else {
            return;
        };
        let mut running = Running {
            shared: &shared,
            job: Some((id.clone(), event_type.clone())),
        };
        let result = job.run().await;
        shared.settle(&id, &event_type, result, true).await;
        running.job = None;
    }
}

impl Receiver {
    /// Starts setting up a receiver that verifies with `intake` (a
    /// [`Verifier`](crate::Verifier), or an [`Intake`] with a body limit,
    /// allowlist, envelope or clock).
    pub fn builder(intake: impl Into<Intake>) -> ReceiverBuilder {
        ReceiverBuilder {
            intake: intake.into(),
            routes: Vec::new(),
            error: None,
            unrouted: Unrouted::default(),
            store: None,
            processing: Processing::default(),
            inbox: None,
            inbox_config: InboxConfig::default(),
            observers: Vec::new(),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// The checks in front of the routes.
    pub fn intake(&self) -> &Intake {
        &self.inner.intake
    }

    /// The processing mode.
    pub fn processing(&self) -> Processing {
        self.inner.processing
    }

    /// The durable inbox (failed list, replay, pruning), if the receiver
    /// processes from one.
    pub fn inbox(&self) -> Option<Inbox> {
        self.inner.durable.as_ref().map(|d| d.inbox.handle())
    }

    /// Handles one request from `peer` (needed only with an allowlist).
    ///
    /// Call it inside a tokio runtime so that a dropped request does not
    /// cancel its handler (see [the module docs](self#processing-modes)):
    /// the rest then finishes on a task of its own. Elsewhere a dropped
    /// request cancels it.
    pub async fn receive(
        &self,
        request: http::Request<Bytes>,
        peer: Option<SocketAddr>,
    ) -> Result<Accepted, Rejection> {
        let (parts, body) = request.into_parts();
        self.receive_parts(parts.headers, body, peer).await
    }

    /// Handles one request given as its headers and body.
    pub async fn receive_parts(
        &self,
        headers: HeaderMap,
        body: Bytes,
        peer: Option<SocketAddr>,
    ) -> Result<Accepted, Rejection> {
        let result = self.run(headers, body, peer).await;
        match &result {
            Ok(accepted) => tracing::debug!(?accepted, "webhook accepted"),
            Err(rejection) => log_rejection(rejection, peer),
        }
        result
    }

    /// Handles one request and turns the outcome into a response.
    pub async fn respond(
        &self,
        request: http::Request<Bytes>,
        peer: Option<SocketAddr>,
    ) -> http::Response<Bytes> {
        match self.receive(request, peer).await {
            Ok(accepted) => accepted.to_response(),
            Err(rejection) => rejection.to_response(),
        }
    }

    async fn run(
        &self,
        headers: HeaderMap,
        body: Bytes,
        peer: Option<SocketAddr>,
    ) -> Result<Accepted, Rejection> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Rejection::ShuttingDown {
                retry_after: inner.retry_after,
            });
        }
        let admitted = inner.intake.admit(&headers, &body, peer)?;
        let Some(route) = inner.routing.route(&admitted.event_type) else {
            return inner.unrouted(admitted);
        };
        if let Some(durable) = &inner.durable {
            // The payload must fit its route before it is stored: a 400 now
            // tells the sender, a failure in a worker would not.
            route.check(&admitted, &body)?;
            let entry = InboxEntry::received(admitted, &headers, body);
            let task = Arc::clone(&durable.inbox).accept(entry, inner.retry_after);
            return match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Finish::new(task, runtime).await,
                Err(_) => task.await,
            };
        }
        let (id, event_type, now) = (
            admitted.id.clone(),
            admitted.event_type.clone(),
            admitted.received_at,
        );
        let job = route.prepare(admitted, headers, body)?;
        let task = Arc::clone(inner).process(id, event_type, job, now);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Finish::new(task, runtime).await,
            Err(_) => task.await,
        }
    }

    /// Stops taking requests (they are answered 503) and, with queued
    /// processing, lets the workers finish the queue for up to `deadline`.
    /// Workers still busy then are stopped; every acknowledged event left
    /// unprocessed is reported as [`Notice::Unprocessed`] and its id given
    /// back.
    ///
    /// With an inbox, the workers finish the handlers they are running for
    /// up to `deadline` and claim nothing more; handlers still running then
    /// are stopped, reported as [`Notice::Unprocessed`], and their entries
    /// made due again at once (no run is counted). Nothing leaves the
    /// inbox: the next receiver on the same store processes what is left.
    ///
    /// With inline processing, requests in flight finish with the server
    /// that runs them.
    ///
    /// The deadline is kept by tokio's timer, which the runtime must have
    /// enabled (`#[tokio::main]` does).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        if let Some(durable) = &inner.durable {
            return self.shutdown_durable(durable, deadline).await;
        }
        let Some(queue) = &inner.queue else {
            return ShutdownReport {
                drained: true,
                unfinished: 0,
            };
        };
        // Workers end once the queue is empty and no sender is left.
        drop(lock(&queue.tx).take());
        let mut handles = std::mem::take(&mut *lock(&queue.workers));
        let drained = tokio::time::timeout(deadline, async {
            for handle in handles.iter_mut() {
                let _ = handle.await;
            }
        })
        .await
        .is_ok();
        if !drained {
            for handle in &handles {
                handle.abort();
            }
            for handle in handles {
                let _ = handle.await;
            }
        }
        let mut left = Vec::new();
        {
            let mut rx = queue.rx.lock().await;
            while let Ok(queued) = rx.try_recv() {
                left.push((queued.id, queued.event_type));
            }
        }
        left.append(&mut lock(&inner.shared.orphans));
        for (id, event_type) in &left {
            tracing::warn!(id = %id, event_type = %event_type, "acknowledged webhook not processed before shutdown");
            inner.shared.notify(Notice::Unprocessed {
                id: id.clone(),
                event_type: event_type.clone(),
            });
            inner.shared.abandon(id).await;
        }
        ShutdownReport {
            drained,
            unfinished: left.len(),
        }
    }

    /// [`shutdown`](Self::shutdown) of durable processing: the workers
    /// finish the handlers they are running, claim nothing more, and those
    /// still running at the deadline are stopped and their claims given
    /// back. Whatever is in the inbox stays there.
    async fn shutdown_durable(&self, durable: &Durable, deadline: Duration) -> ShutdownReport {
        durable.stop.send_replace(true);
        let mut handles = std::mem::take(&mut *lock(&durable.workers));
        let drained = tokio::time::timeout(deadline, async {
            for handle in handles.iter_mut() {
                let _ = handle.await;
            }
        })
        .await
        .is_ok();
        if !drained {
            for handle in &handles {
                handle.abort();
            }
            for handle in handles {
                let _ = handle.await;
            }
        }
        let unfinished = durable.inbox.release_running(&self.inner.shared).await;
        ShutdownReport {
            drained,
            unfinished,
        }
    }
}

impl Inner {
    fn unrouted(&self, admitted: Admitted) -> Result<Accepted, Rejection> {
        match self.routing.unrouted {
            Unrouted::Acknowledge => {
                tracing::info!(
                    id = %admitted.id,
                    event_type = %admitted.event_type,
                    "no route for the event type; acknowledged"
                );
                Ok(Accepted::Ignored)
            }
            Unrouted::Reject(status) => Err(Rejection::Unrouted {
                event_type: admitted.event_type,
                status,
            }),
        }
    }

    /// Claims the id, then runs the job (inline) or queues it.
    async fn process(
        self: Arc<Self>,
        id: MessageId,
        event_type: EventType,
        job: Job,
        now: OffsetDateTime,
    ) -> Result<Accepted, Rejection> {
        let shared = &self.shared;
        match shared.store.begin(&id, now).await {
            Err(error) => return Err(Rejection::Store(error)),
            Ok(Began::Duplicate) => return Ok(Accepted::Duplicate),
            Ok(Began::InProgress) => {
                return Err(Rejection::InProgress {
                    id,
                    retry_after: self.retry_after,
                })
            }
            Ok(Began::New) => {}
        }
        let Some(queue) = &self.queue else {
            let result = job.run().await;
            return if shared.settle(&id, &event_type, result, false).await {
                Ok(Accepted::Processed)
            } else {
                Err(Rejection::HandlerFailed)
            };
        };
        let queued = Queued {
            id: id.clone(),
            event_type,
            job,
        };
        let sent = match lock(&queue.tx).as_ref() {
            Some(tx) => tx.try_send(queued).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Rejection::QueueFull {
                    retry_after: self.retry_after,
                },
                mpsc::error::TrySendError::Closed(_) => Rejection::ShuttingDown {
                    retry_after: self.retry_after,
                },
            }),
            None => Err(Rejection::ShuttingDown {
                retry_after: self.retry_after,
            }),
        };
        match sent {
            Ok(()) => Ok(Accepted::Queued),
            Err(rejection) => {
                shared.abandon(&id).await;
                Err(rejection)
            }
        }
    }
}

/// Runs a request's processing in place, and makes sure it finishes: if
/// the request's future is dropped first (the client hung up and the server
/// dropped the request), the rest moves to a task of its own, so the handler
/// is not cancelled halfway and its id is settled.
///
/// Cheaper than spawning every request's processing and awaiting it: no
/// task to schedule and wake, unless the request is dropped. A panic
/// outside the handler (in the idempotency store, say) is caught and
/// answered 500; the handler's own panics are caught by [`Job::run`].
struct Finish<F: Future<Output = Result<Accepted, Rejection>> + Send + 'static> {
    /// Boxed, so that it can move to a task without being moved in memory.
    task: Option<Pin<Box<F>>>,
    runtime: tokio::runtime::Handle,
}

impl<F: Future<Output = Result<Accepted, Rejection>> + Send + 'static> Finish<F> {
    fn new(task: F, runtime: tokio::runtime::Handle) -> Self {
        Self {
            task: Some(Box::pin(task)),
            runtime,
        }
    }
}

impl<F: Future<Output = Result<Accepted, Rejection>> + Send + 'static> Future for Finish<F> {
    type Output = Result<Accepted, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Err(Rejection::Internal(
                "the processing task was polled after it finished",
            )));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => {
                self.task = None;
                Poll::Ready(result)
            }
            Err(_) => {
                // Dropping a future that panicked may panic again.
                let task = self.task.take();
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
                Poll::Ready(Err(Rejection::Internal("the processing task panicked")))
            }
        }
    }
}

impl<F: Future<Output = Result<Accepted, Rejection>> + Send + 'static> Drop for Finish<F> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Dropped before it finished: let it finish on its own. (If the
            // runtime is shutting down, the task is dropped with it, as any
            // task is.)
            self.runtime.spawn(async move {
                let _ = task.await;
            });
        }
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Receiver")
            .field("intake", &inner.intake)
            .field(
                "routes",
                &inner
                    .routing
                    .routes
                    .iter()
                    .map(|(f, _)| f)
                    .collect::<Vec<_>>(),
            )
            .field("unrouted", &inner.routing.unrouted)
            .field("processing", &inner.processing)
            .field("closed", &inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
