//! Routes: which handler an event type goes to, and the type-erased jobs
//! handlers become.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::JsonError;
use crate::event::{Event, EventFilter, EventType, InvalidPattern, MessageId};

use super::intake::Admitted;
use super::response::Malformed;

/// What a handler may fail with: any error (`?` converts), or a message
/// (`Err("no such ticket".into())`).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// A verified request as received, for handlers of bodies that are not an
/// envelope with a `data` field (GitHub's, say), or that want the bytes.
#[derive(Clone)]
#[non_exhaustive]
pub struct RawEvent {
    /// The message id.
    pub id: MessageId,
    /// The event type.
    pub event_type: EventType,
    /// The signed timestamp, if the scheme has one.
    pub signed_at: Option<OffsetDateTime>,
    /// When the request was received.
    pub received_at: OffsetDateTime,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The verified body, exactly as received.
    pub body: Bytes,
}

impl RawEvent {
    /// Parses the whole body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(&self.body).map_err(JsonError)
    }
}

impl fmt::Debug for RawEvent {
    // Header values (signatures among them) and the body stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEvent")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("signed_at", &self.signed_at)
            .field("received_at", &self.received_at)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for crate::event::EventFilter {}
    impl Sealed for crate::event::EventType {}
}

/// What a route can be registered for: an [`EventFilter`], an
/// [`EventType`], or pattern text (`"ticket.created"`, `"ticket.*"`, `"*"`,
/// or several separated by commas).
pub trait IntoFilter: sealed::Sealed {
    /// The filter.
    fn into_filter(self) -> Result<EventFilter, InvalidPattern>;
}

impl IntoFilter for &str {
    fn into_filter(self) -> Result<EventFilter, InvalidPattern> {
        self.parse()
    }
}

impl IntoFilter for String {
    fn into_filter(self) -> Result<EventFilter, InvalidPattern> {
        self.parse()
    }
}

impl IntoFilter for EventFilter {
    fn into_filter(self) -> Result<EventFilter, InvalidPattern> {
        Ok(self)
    }
}

impl IntoFilter for EventType {
    fn into_filter(self) -> Result<EventFilter, InvalidPattern> {
        EventFilter::new([self.as_str()])
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A handler's work for one event: the payload is parsed, the handler not
/// yet called. It is called only once the id is claimed, so nothing of it
/// runs for a duplicate.
pub(crate) struct Job(Box<dyn FnOnce() -> HandlerFuture + Send>);

impl Job {
    /// Calls the handler and runs its future, turning a panic in either
    /// into a [`HandlerError`] so the claim on the id is always settled.
    pub(crate) async fn run(self) -> HandlerResult {
        match std::panic::catch_unwind(AssertUnwindSafe(self.0)) {
            Ok(future) => CatchUnwind(future).await,
            Err(_) => Err(Box::new(Panicked)),
        }
    }
}

/// A route's handler with its payload type erased.
pub(crate) trait Route: Send + Sync + 'static {
    /// Checks that the payload fits, without building the handler's work:
    /// durable processing answers 400 for a payload that does not, before
    /// storing anything, and prepares the job when a worker runs it.
    fn check(&self, admitted: &Admitted, body: &[u8]) -> Result<(), Malformed>;

    /// Parses the payload (the request thread answers 400 if it does not
    /// fit) and returns the handler's work.
    fn prepare(
        &self,
        admitted: Admitted,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Job, Malformed>;
}

pub(crate) struct Typed<T, H> {
    handler: Arc<H>,
    payload: PhantomData<fn() -> T>,
}

impl<T, H> Typed<T, H> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            payload: PhantomData,
        }
    }
}

impl<T, H, Fut> Route for Typed<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Fn(Event<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn check(&self, admitted: &Admitted, body: &[u8]) -> Result<(), Malformed> {
        admitted.decode::<T>(body).map(drop)
    }

    fn prepare(
        &self,
        admitted: Admitted,
        _headers: HeaderMap,
        body: Bytes,
    ) -> Result<Job, Malformed> {
        let event = admitted.decode::<T>(&body)?;
        let handler = Arc::clone(&self.handler);
        Ok(Job(Box::new(move || Box::pin(handler(event)))))
    }
}

pub(crate) struct Raw<H>(Arc<H>);

impl<H> Raw<H> {
    pub(crate) fn new(handler: H) -> Self {
        Self(Arc::new(handler))
    }
}

impl<H, Fut> Route for Raw<H>
where
    H: Fn(RawEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn check(&self, _admitted: &Admitted, _body: &[u8]) -> Result<(), Malformed> {
        Ok(())
    }

    fn prepare(
        &self,
        admitted: Admitted,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Job, Malformed> {
        let handler = Arc::clone(&self.0);
        let raw = admitted.into_raw(headers, body);
        Ok(Job(Box::new(move || Box::pin(handler(raw)))))
    }
}

/// The error a panicking handler is reported with.
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked")]
pub(crate) struct Panicked;

/// A handler's future, with a panic turned into a [`HandlerError`].
struct CatchUnwind(HandlerFuture);

impl Future for CatchUnwind {
    type Output = HandlerResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HandlerResult> {
        let job = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| job.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(Box::new(Panicked))),
        }
    }
}
