//! What a receiver answers: [`Accepted`] and [`Rejection`].

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{JsonError, VerifyError};
use crate::event::{EventType, InvalidEventType, InvalidMessageId, MessageId};

use super::idempotency::IdempotencyError;
use super::inbox::InboxError;

/// A request the receiver accepted; every variant answers 2xx, so the
/// sender stops retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Accepted {
    /// The handler ran and succeeded (inline processing): 200.
    Processed,
    /// The event is queued for a worker: on the in-memory queue
    /// ([`Processing::queued`](super::Processing::queued)), or stored in
    /// the inbox ([`Processing::durable`](super::Processing::durable)):
    /// 202.
    Queued,
    /// The id was processed before; the handler did not run again: 200.
    Duplicate,
    /// No route matched the event type and the receiver acknowledges
    /// unknown types (the default): 200.
    Ignored,
}

impl Accepted {
    /// The status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Queued => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        }
    }

    /// The short, fixed text of the response body.
    pub fn body(&self) -> &'static str {
        match self {
            Self::Processed => "ok",
            Self::Queued => "accepted",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }

    /// The response: [`status`](Self::status) and [`body`](Self::body) as
    /// `text/plain`.
    pub fn to_response(&self) -> Response<Bytes> {
        text_response(self.status(), self.body(), None)
    }
}

/// What is wrong with a verified body (answered 400).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The id or type is read from the body's fields, and the body is not
    /// a JSON object, or the field holds neither a string nor an integer.
    #[error("the body's JSON does not fit: {0}")]
    Json(#[source] JsonError),
    /// No source of the message id had one.
    #[error("the message id is missing")]
    MissingId,
    /// The message id is not a valid [`MessageId`].
    #[error("invalid message id: {0}")]
    InvalidId(#[source] InvalidMessageId),
    /// No source of the event type had one.
    #[error("the event type is missing")]
    MissingType,
    /// The event type is not a valid [`EventType`].
    #[error("invalid event type: {0}")]
    InvalidType(#[source] InvalidEventType),
    /// The header that should hold the id or type is not visible ASCII.
    #[error("header {0} does not hold text")]
    NotText(Box<str>),
    /// The message id found differs from the message id the signature
    /// covers (Standard Webhooks signs `webhook-id`).
    #[error("the body's id differs from the signed message id")]
    IdMismatch,
    /// The payload does not fit the route's type.
    #[error("the payload does not fit the route's type: {0}")]
    Payload(#[source] JsonError),
}

/// Why a request was refused. Each variant knows its status
/// ([`status`](Self::status)) and a short, fixed body text
/// ([`body`](Self::body)) that never echoes the request, a secret or an
/// expected signature; the `Display` text, for logs, says more.
///
/// | status | variants |
/// | --- | --- |
/// | 400 | [`Malformed`](Self::Malformed), [`BodyUnreadable`](Self::BodyUnreadable); [`Unverified`](Self::Unverified) for a body error |
/// | 401 | [`Unverified`](Self::Unverified): signature or timestamp failure, missing or malformed signature headers |
/// | 403 | [`Forbidden`](Self::Forbidden): outside the allowlist |
/// | 413 | [`PayloadTooLarge`](Self::PayloadTooLarge) |
/// | 500 | [`HandlerFailed`](Self::HandlerFailed), [`Internal`](Self::Internal); [`Unverified`](Self::Unverified) with no active key |
/// | 503 + `Retry-After` | [`InProgress`](Self::InProgress), [`QueueFull`](Self::QueueFull), [`ShuttingDown`](Self::ShuttingDown), [`Inbox`](Self::Inbox) |
/// | 503 | [`Store`](Self::Store): the idempotency store failed or is full |
/// | chosen | [`Unrouted`](Self::Unrouted), when the receiver rejects unknown types |
///
/// Every 5xx asks the sender to retry; a 4xx tells it the request itself is
/// wrong (and many senders then stop).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The body is larger than the receiver's limit.
    #[error("the body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The client is not on the allowlist (or could not be determined).
    #[error("client {} is not on the allowlist", match .client { Some(ip) => ip.to_string(), None => "(unknown)".to_owned() })]
    Forbidden {
        /// The client's address, if known.
        client: Option<IpAddr>,
    },
    /// Verification failed.
    #[error("verification failed: {0}")]
    Unverified(#[source] VerifyError),
    /// The body passed verification but is not what the receiver expects.
    #[error("malformed body: {0}")]
    Malformed(#[source] Malformed),
    /// The body could not be read from the connection.
    #[error("the body could not be read")]
    BodyUnreadable,
    /// Another delivery of the same id is being processed.
    #[error("message {id} is being processed")]
    InProgress {
        /// The id.
        id: MessageId,
        /// The delay suggested to the sender.
        retry_after: Duration,
    },
    /// The processing queue is full.
    #[error("the processing queue is full")]
    QueueFull {
        /// The delay suggested to the sender.
        retry_after: Duration,
    },
    /// The receiver is shutting down.
    #[error("the receiver is shutting down")]
    ShuttingDown {
        /// The delay suggested to the sender.
        retry_after: Duration,
    },
    /// The handler failed (inline processing); the id was not marked
    /// processed, so a retry runs it again.
    #[error("the handler failed")]
    HandlerFailed,
    /// No route matched the event type and the receiver rejects unknown
    /// types.
    #[error("no route for event type {event_type}")]
    Unrouted {
        /// The event type.
        event_type: EventType,
        /// The status chosen for unknown types.
        status: StatusCode,
    },
    /// The idempotency store failed, or holds as many claims as it may.
    /// Processing without it could run a handler twice, so the sender is
    /// asked to retry.
    #[error(transparent)]
    Store(IdempotencyError),
    /// The inbox could not store the event (a backend failure, or a full
    /// [`MemoryInbox`](super::MemoryInbox)). Nothing was stored and the
    /// handler will not run, so the sender is asked to retry.
    #[error("the event could not be stored in the inbox: {error}")]
    Inbox {
        /// The inbox's error.
        #[source]
        error: InboxError,
        /// The delay suggested to the sender.
        retry_after: Duration,
    },
    /// The receiver failed in a way that is not the request's fault.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Rejection {
    /// The status to answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unverified(e) => e.status(),
            Self::Malformed(_) | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::InProgress { .. }
            | Self::QueueFull { .. }
            | Self::ShuttingDown { .. }
            | Self::Inbox { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::HandlerFailed | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unrouted { status, .. } => *status,
        }
    }

    /// The short, fixed text of the response body.
    pub fn body(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "payload too large",
            Self::Forbidden { .. } => "forbidden",
            Self::Unverified(e) => match e.status() {
                StatusCode::UNAUTHORIZED => "invalid signature",
                StatusCode::BAD_REQUEST => "malformed body",
                _ => "internal error",
            },
            Self::Malformed(_) => "malformed body",
            Self::BodyUnreadable => "unreadable body",
            Self::InProgress { .. } => "in progress, retry later",
            Self::QueueFull { .. } => "busy, retry later",
            Self::ShuttingDown { .. } => "shutting down, retry later",
            Self::HandlerFailed => "handler failed",
            Self::Unrouted { .. } => "unknown event type",
            Self::Store(_) | Self::Inbox { .. } => "unavailable, retry later",
            Self::Internal(_) => "internal error",
        }
    }

    /// The delay suggested to the sender in `Retry-After`, for the 503s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::InProgress { retry_after, .. }
            | Self::QueueFull { retry_after }
            | Self::ShuttingDown { retry_after }
            | Self::Inbox { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The response: [`status`](Self::status), [`body`](Self::body) as
    /// `text/plain`, and `Retry-After` (whole seconds, rounded up, at least 1) where
    /// [`retry_after`](Self::retry_after) says.
    pub fn to_response(&self) -> Response<Bytes> {
        text_response(self.status(), self.body(), self.retry_after())
    }
}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        Self::Unverified(e)
    }
}

impl From<Malformed> for Rejection {
    fn from(e: Malformed) -> Self {
        Self::Malformed(e)
    }
}

fn text_response(
    status: StatusCode,
    body: &'static str,
    retry_after: Option<Duration>,
) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = retry_after {
        let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
