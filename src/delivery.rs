//! The delivery state machine: one event to one endpoint ([`Delivery`]), and
//! each try of it ([`Attempt`]).
//!
//! This is the pure core the delivery engine is a thin loop around. Nothing
//! here does IO, awaits, or reads a clock: every transition takes `now`, and
//! jitter draws from an injected [`JitterRng`]. A store loads a
//! [`Delivery`], applies one transition, and writes it back in one atomic
//! step (a transaction, or a compare-and-swap); the rules live here, once, for
//! every store.
//!
//! # States
//!
//! | from | transition | to |
//! | --- | --- | --- |
//! | `Pending`, once due | [`claim`](Delivery::claim) | `InFlight` |
//! | `InFlight`, lease expired | [`claim`](Delivery::claim) (a takeover) | `InFlight` |
//! | `InFlight` | [`complete`](Delivery::complete): delivered | `Delivered` |
//! | `InFlight` | [`complete`](Delivery::complete): retryable, and the policy allows | `Pending`, due later |
//! | `InFlight` | [`complete`](Delivery::complete): permanent, or the policy is exhausted | `Failed` |
//! | `InFlight` | [`release`](Delivery::release) | `Pending`, due now |
//! | `Pending` | [`hold`](Delivery::hold) | `Held` |
//! | `Held` | [`unhold`](Delivery::unhold) | `Pending`, due now |
//! | `Failed` | [`retry_now`](Delivery::retry_now) | `Pending`, due now |
//!
//! - [`Pending`](DeliveryState::Pending): waiting until its due time.
//! - [`InFlight`](DeliveryState::InFlight): claimed by a worker under a lease.
//! - [`Delivered`](DeliveryState::Delivered) and
//!   [`Failed`](DeliveryState::Failed): terminal. Only a manual
//!   [`retry_now`](Delivery::retry_now) leaves `Failed`.
//! - [`Held`](DeliveryState::Held): the endpoint is disabled; kept, not
//!   attempted, until [`unhold`](Delivery::unhold).
//!
//! Every transition either applies completely or returns a
//! [`TransitionError`] and changes nothing; none panics.
//!
//! # Claims and leases
//!
//! [`Delivery::claim`] hands a worker a [`Claim`] carrying a token (the
//! delivery's claim count). Only the current claim can
//! [`complete`](Delivery::complete) or [`release`](Delivery::release) the
//! delivery. When a worker dies, its lease runs out and the next `claim`
//! takes the delivery over with a new token; should the old worker wake up
//! and report, it is refused with [`TransitionError::StaleClaim`], so a slow
//! worker can never overwrite a newer attempt's result. Until someone else
//! claims it, an expired claim is still current: a late result is better
//! than a duplicate request.
//!
//! The store must persist each `claim` atomically (compare-and-swap on the
//! record, or `SELECT … FOR UPDATE`), which is what makes tokens unique. The
//! lease should exceed the endpoint's request timeout with a margin.
//!
//! A claim that is released or lost to an expired lease does not count as an
//! attempt: no result was recorded, and the endpoint should not pay for a
//! worker's restart with its retry budget. The next claim reuses the attempt
//! number.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use hookway::delivery::{AttemptReport, Delivery, DeliveryId, EndpointId, Next};
//! use hookway::retry::{Classifier, RetryPolicy, SplitMix64};
//! use hookway::{EventType, MessageId};
//! use time::macros::datetime;
//!
//! let t0 = datetime!(2025-01-01 12:00 UTC);
//! let mut delivery = Delivery::new(
//!     DeliveryId::generate_at(t0),
//!     MessageId::new("msg_2aK9")?,
//!     EventType::from_static("ticket.created"),
//!     EndpointId::new("ep_support")?,
//!     t0,
//! );
//! let policy = RetryPolicy::relay_helpdesk(); // immediately, 1 min, 5 min, …
//! let classifier = Classifier::new();
//! let mut rng = SplitMix64::from_seed(7);
//! let lease = Duration::from_secs(60);
//!
//! // A worker claims it; the endpoint answers 503.
//! let claim = delivery.claim(t0, lease)?;
//! let response = http::Response::builder().status(503).body("maintenance")?;
//! let report = AttemptReport::from_response(&response, &classifier, t0, Duration::ZERO);
//! let done = delivery.complete(&claim, report, &policy, t0, &mut rng)?;
//! assert_eq!(done.attempt.status(), Some(503));
//! assert_eq!(done.attempt.response_excerpt(), Some("maintenance"));
//! assert_eq!(done.next, Next::RetryAt(datetime!(2025-01-01 12:01 UTC)));
//!
//! // Not due before then; at 12:01 the second attempt succeeds.
//! assert!(delivery.claim(datetime!(2025-01-01 12:00:30 UTC), lease).is_err());
//! let t1 = datetime!(2025-01-01 12:01 UTC);
//! let claim = delivery.claim(t1, lease)?;
//! let response = http::Response::builder().status(204).body("")?;
//! let report = AttemptReport::from_response(&response, &classifier, t1, Duration::ZERO);
//! let done = delivery.complete(&claim, report, &policy, t1, &mut rng)?;
//! assert_eq!(done.next, Next::Delivered);
//! assert_eq!(delivery.attempts(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::dispatch::TransportError;
use crate::event::{EventType, MessageId};
use crate::retry::{Classifier, FailureCause, JitterRng, Outcome, RetryPolicy, TransportErrorKind};

/// The longest response body excerpt kept in an [`Attempt`], in bytes.
pub const MAX_EXCERPT: usize = 1024;

/// The longest transport error message kept in an [`Attempt`], in bytes.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// The longest [`DeliveryId`] or [`EndpointId`] accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

/// Why a string is not a valid [`DeliveryId`] or [`EndpointId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("id is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ - . :`.
    #[error("id has {found:?} at byte {position}; only ASCII letters, digits, '_', '-', '.' and ':' are allowed")]
    InvalidChar {
        /// The offending character (U+FFFD for a non-ASCII byte).
        found: char,
        /// Its byte offset.
        position: usize,
    },
}

const fn validate_id(id: &[u8]) -> Result<(), InvalidId> {
    if id.is_empty() {
        return Err(InvalidId::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong {
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    let mut i = 0;
    while i < id.len() {
        let b = id[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
            return Err(InvalidId::InvalidChar {
                found: if b.is_ascii() {
                    b as char
                } else {
                    char::REPLACEMENT_CHARACTER
                },
                position: i,
            });
        }
        i += 1;
    }
    Ok(())
}

/// The text of an id: a `'static` literal, or shared, so that cloning an id
/// (into an index, a log line, a notification) never allocates.
#[derive(Clone)]
enum IdText {
    Static(&'static str),
    Shared(Arc<str>),
}

impl IdText {
    fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
        }
    }
}

/// Defines a validated id newtype over [`IdText`] with the usual
/// conversions, comparisons by text, and a validating `Deserialize`.
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(IdText);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl std::hash::Hash for $name {
            // As `str` hashes, so that `Borrow<str>` lookups work.
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl $name {
            /// Validates `id`.
            ///
            /// # Errors
            ///
            /// [`InvalidId`] if `id` is empty, longer than [`MAX_ID_LEN`]
            /// bytes, or holds a character outside `A-Z a-z 0-9 _ - . :`.
            pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
                let id = id.into();
                validate_id(id.as_bytes())?;
                Ok(Self(IdText::Shared(Arc::from(id))))
            }

            /// An id from a string literal, checked at compile time when used
            /// in a `const`.
            ///
            /// # Panics
            ///
            /// Panics if `id` is not valid (see [`new`](Self::new)).
            pub const fn from_static(id: &'static str) -> Self {
                if validate_id(id.as_bytes()).is_err() {
                    panic!("invalid id");
                }
                Self(IdText::Static(id))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.0.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = Cow::<'de, str>::deserialize(deserializer)?;
                Self::new(s.into_owned()).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type! {
    /// A validated delivery id: 1 to 128 characters of `A-Z a-z 0-9 _ - . :`.
    ///
    /// Generated ids look like `dlv_01JGK6Q4Z8…`: the same time-ordered scheme
    /// as [`MessageId::generate_at`] (a millisecond timestamp, a process-wide
    /// sequence number and random bits, Crockford base32), so they sort by
    /// creation time. The
    /// character set is narrow on purpose: the id travels in a request header
    /// (`X-Relay-Delivery`), in operations URLs and in log lines, and must
    /// need no escaping in any of them.
    ///
    /// ```
    /// use hookway::delivery::DeliveryId;
    /// use time::macros::datetime;
    ///
    /// let a = DeliveryId::generate_at(datetime!(2025-01-01 0:00 UTC));
    /// let b = DeliveryId::generate_at(datetime!(2025-01-01 0:00:01 UTC));
    /// assert!(a.as_str().starts_with("dlv_"));
    /// assert!(a < b);
    ///
    /// let parsed: DeliveryId = "dlv_42".parse()?;
    /// assert_eq!(parsed.as_str(), "dlv_42");
    /// assert!("dlv 42".parse::<DeliveryId>().is_err());
    /// # Ok::<(), hookway::delivery::InvalidId>(())
    /// ```
    DeliveryId
}

impl DeliveryId {
    /// A fresh, unique id, `dlv_` and 26 characters, with its time part
    /// taken from `now`.
    pub fn generate_at(now: OffsetDateTime) -> Self {
        let id = MessageId::generate_at(now);
        let tail = id.as_str().strip_prefix("msg_").unwrap_or(id.as_str());
        Self(IdText::Shared(Arc::from(format!("dlv_{tail}"))))
    }
}

id_type! {
    /// A validated endpoint id: 1 to 128 characters of
    /// `A-Z a-z 0-9 _ - . :`.
    ///
    /// The sender chooses endpoint ids (often its own database key, or a
    /// `tenant:name` pair), so `.` and `:` are allowed; spaces, slashes and
    /// anything that would need escaping in a URL or a log line are not.
    ///
    /// ```
    /// use hookway::delivery::EndpointId;
    ///
    /// const SUPPORT: EndpointId = EndpointId::from_static("acme:support-desk");
    /// assert_eq!(SUPPORT.as_str(), "acme:support-desk");
    /// assert!(EndpointId::new("a/b").is_err());
    /// assert!(EndpointId::new("").is_err());
    /// ```
    EndpointId
}

// ---------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------

/// The kind of a [`DeliveryState`], without its data: for listing deliveries
/// by state, for a store's `state` column, and for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateKind {
    /// See [`DeliveryState::Pending`].
    Pending,
    /// See [`DeliveryState::InFlight`].
    InFlight,
    /// See [`DeliveryState::Delivered`].
    Delivered,
    /// See [`DeliveryState::Failed`].
    Failed,
    /// See [`DeliveryState::Held`].
    Held,
}

impl StateKind {
    /// The snake-case name, as serialised: `"pending"`, `"in_flight"`, ….
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Held => "held",
        }
    }

    /// Whether the delivery is over: delivered, or failed.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed)
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a delivery stands.
///
/// Serialised internally tagged, with RFC 3339 UTC timestamps:
/// `{"state": "pending", "due_at": "2025-01-01T12:01:00Z"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting to be attempted at or after `due_at`.
    Pending {
        /// When the next attempt may go.
        #[serde(with = "crate::serde_util::rfc3339")]
        due_at: OffsetDateTime,
    },
    /// Claimed by a worker, who is making attempt number `attempt`.
    InFlight {
        /// The attempt being made (1-based).
        attempt: u32,
        /// When the worker claimed it.
        #[serde(with = "crate::serde_util::rfc3339")]
        claimed_at: OffsetDateTime,
        /// When the claim may be taken over by another worker.
        #[serde(with = "crate::serde_util::rfc3339")]
        lease_until: OffsetDateTime,
    },
    /// The endpoint accepted it. Terminal.
    Delivered {
        /// When the successful attempt was completed.
        #[serde(with = "crate::serde_util::rfc3339")]
        at: OffsetDateTime,
    },
    /// Given up on; terminal until [retried by hand](Delivery::retry_now).
    Failed {
        /// When it failed.
        #[serde(with = "crate::serde_util::rfc3339")]
        at: OffsetDateTime,
        /// Why.
        reason: FailureReason,
    },
    /// The endpoint is disabled: kept, not attempted, and released (oldest
    /// first) when it is re-enabled.
    Held {
        /// When it was held.
        #[serde(with = "crate::serde_util::rfc3339")]
        since: OffsetDateTime,
    },
}

impl DeliveryState {
    /// The state's kind.
    pub const fn kind(&self) -> StateKind {
        match self {
            Self::Pending { .. } => StateKind::Pending,
            Self::InFlight { .. } => StateKind::InFlight,
            Self::Delivered { .. } => StateKind::Delivered,
            Self::Failed { .. } => StateKind::Failed,
            Self::Held { .. } => StateKind::Held,
        }
    }

    /// Whether the delivery is over: delivered, or failed.
    pub const fn is_terminal(&self) -> bool {
        self.kind().is_terminal()
    }
}

/// What an attempt failed on: the response status, or a transport error.
///
/// The storable twin of [`FailureCause`]; serialises as `{"status": 503}` or
/// `{"transport": "timeout"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The endpoint answered with this non-2xx status code.
    Status(u16),
    /// No response was received.
    Transport(TransportErrorKind),
}

impl From<FailureCause> for AttemptFailure {
    fn from(cause: FailureCause) -> Self {
        match cause {
            FailureCause::Status(status) => Self::Status(status.as_u16()),
            FailureCause::Transport(kind) => Self::Transport(kind),
        }
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => match StatusCode::from_u16(*code) {
                Ok(status) => write!(f, "HTTP {status}"),
                Err(_) => write!(f, "HTTP {code}"),
            },
            Self::Transport(kind) => kind.fmt(f),
        }
    }
}

/// Why a delivery failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// The attempt's outcome was [permanent](Outcome::Permanent): a 4xx
    /// other than 408 and 429 by default, or a request the SSRF guard refused.
    Permanent {
        /// What the attempt failed on.
        cause: AttemptFailure,
        /// The endpoint asked not to be called again (410 Gone by default):
        /// the engine should disable it.
        disable_endpoint: bool,
    },
    /// The retry policy gave up: its attempt cap, schedule or age cap ran out.
    Exhausted {
        /// What the last attempt failed on.
        cause: AttemptFailure,
    },
    /// Never attempted: the endpoint was disabled and already held as many
    /// deliveries as allowed. The event stays stored; retry the delivery by
    /// hand, or replay, once the endpoint is back.
    HoldLimit {
        /// The limit that was reached.
        limit: u32,
    },
}

impl FailureReason {
    /// What the last attempt failed on (`None` if it was never attempted).
    pub const fn cause(&self) -> Option<AttemptFailure> {
        match self {
            Self::Permanent { cause, .. } | Self::Exhausted { cause } => Some(*cause),
            Self::HoldLimit { .. } => None,
        }
    }

    /// Whether the endpoint should be disabled (410 Gone, by default).
    pub const fn disable_endpoint(&self) -> bool {
        matches!(
            self,
            Self::Permanent {
                disable_endpoint: true,
                ..
            }
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Permanent { cause, .. } => write!(f, "permanent failure: {cause}"),
            Self::Exhausted { cause } => write!(f, "retries exhausted; last attempt: {cause}"),
            Self::HoldLimit { limit } => write!(
                f,
                "not attempted: the endpoint was disabled and already held {limit} deliveries"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Attempts
// ---------------------------------------------------------------------------

/// The classification of a logged attempt: the storable twin of [`Outcome`].
///
/// Serialised internally tagged: `{"result": "retryable", "cause":
/// {"status": 503}, "not_before_ms": 120000}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The endpoint accepted the message.
    Delivered,
    /// Failed; a later attempt may succeed.
    Retryable {
        /// What the attempt failed on.
        cause: AttemptFailure,
        /// The least wait the response asked for (`Retry-After`, or the
        /// throttle floor), in whole milliseconds when stored.
        #[serde(
            rename = "not_before_ms",
            with = "crate::serde_util::millis::option",
            default
        )]
        not_before: Option<Duration>,
    },
    /// Failed for good.
    Permanent {
        /// What the attempt failed on.
        cause: AttemptFailure,
        /// The endpoint asked to be disabled.
        disable_endpoint: bool,
    },
}

impl AttemptOutcome {
    /// Whether the attempt succeeded.
    pub const fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered)
    }

    /// What the attempt failed on, or `None` if it was delivered.
    pub const fn failure(&self) -> Option<AttemptFailure> {
        match self {
            Self::Delivered => None,
            Self::Retryable { cause, .. } | Self::Permanent { cause, .. } => Some(*cause),
        }
    }
}

impl From<Outcome> for AttemptOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Delivered => Self::Delivered,
            Outcome::Retryable { cause, not_before } => Self::Retryable {
                cause: cause.into(),
                not_before,
            },
            Outcome::Permanent {
                cause,
                disable_endpoint,
            } => Self::Permanent {
                cause: cause.into(),
                disable_endpoint,
            },
        }
    }
}

/// What a worker saw when it made an attempt: the input to
/// [`Delivery::complete`].
///
/// Made from the dispatcher's result with
/// [`from_response`](Self::from_response) or
/// [`from_transport_error`](Self::from_transport_error), which classify it
/// with the endpoint's [`Classifier`]; or from an [`Outcome`] directly with
/// [`new`](Self::new) and the `with_*` setters. It borrows the response body
/// and error; the [`Attempt`] record keeps only bounded copies.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookway::delivery::AttemptReport;
/// use hookway::dispatch::{TransportError, TransportErrorKind};
/// use hookway::retry::{Classifier, Outcome};
/// use time::macros::datetime;
///
/// let error = TransportError::new(TransportErrorKind::Connect, "connection refused");
/// let report = AttemptReport::from_transport_error(
///     &error,
///     &Classifier::new(),
///     datetime!(2025-01-01 12:00 UTC),
///     Duration::from_millis(3),
/// );
/// assert!(matches!(report.outcome(), Outcome::Retryable { .. }));
/// ```
#[derive(Clone, Debug)]
pub struct AttemptReport<'a> {
    started_at: OffsetDateTime,
    duration: Duration,
    outcome: Outcome,
    status: Option<StatusCode>,
    error: Option<&'a TransportError>,
    body: &'a [u8],
}

impl<'a> AttemptReport<'a> {
    /// A report of `outcome` for an attempt that started at `started_at`
    /// and took `duration`, with no status, error or body yet.
    pub const fn new(outcome: Outcome, started_at: OffsetDateTime, duration: Duration) -> Self {
        Self {
            started_at,
            duration,
            outcome,
            status: None,
            error: None,
            body: &[],
        }
    }

    /// Classifies `response` with `classifier` and reports it.
    ///
    /// An HTTP-date `Retry-After` is resolved against the time the response
    /// arrived, `started_at + duration`.
    pub fn from_response<B: AsRef<[u8]>>(
        response: &'a http::Response<B>,
        classifier: &Classifier,
        started_at: OffsetDateTime,
        duration: Duration,
    ) -> Self {
        let received_at = later(started_at, duration);
        let outcome =
            classifier.classify_response(response.status(), response.headers(), received_at);
        Self::new(outcome, started_at, duration)
            .with_status(response.status())
            .with_body(response.body().as_ref())
    }

    /// Classifies a request that got no response and reports it.
    pub fn from_transport_error(
        error: &'a TransportError,
        classifier: &Classifier,
        started_at: OffsetDateTime,
        duration: Duration,
    ) -> Self {
        let outcome = classifier.classify_transport_error(error.kind());
        Self::new(outcome, started_at, duration).with_error(error)
    }

    /// Sets the response status.
    #[must_use]
    pub const fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the transport error.
    #[must_use]
    pub const fn with_error(mut self, error: &'a TransportError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets the response body; at most [`MAX_EXCERPT`] bytes of it are kept.
    #[must_use]
    pub const fn with_body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// The attempt's classification.
    pub const fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    fn into_attempt(self, number: u32) -> Attempt {
        let cause = self.outcome.cause();
        let status = self.status.map(|s| s.as_u16()).or(match cause {
            Some(FailureCause::Status(status)) => Some(status.as_u16()),
            _ => None,
        });
        let error_kind = self.error.map(TransportError::kind).or(match cause {
            Some(FailureCause::Transport(kind)) => Some(kind),
            _ => None,
        });
        let error_message = self
            .error
            .map(|e| truncate(e.message(), MAX_ERROR_MESSAGE).to_owned())
            .filter(|m| !m.is_empty());
        Attempt {
            number,
            started_at: self.started_at,
            duration: self.duration,
            status,
            error_kind,
            error_message,
            response_excerpt: excerpt(self.body, MAX_EXCERPT),
            outcome: self.outcome.into(),
        }
    }
}

/// The record of one attempt, for the delivery log.
///
/// Bounded whatever the endpoint sent: the error message is cut to
/// [`MAX_ERROR_MESSAGE`] bytes and the response body to a [`MAX_EXCERPT`]
/// byte excerpt (invalid UTF-8 replaced by U+FFFD, cut on a character
/// boundary). Durations are stored in whole microseconds (`duration_us`),
/// timestamps as RFC 3339 UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    number: u32,
    #[serde(with = "crate::serde_util::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(rename = "duration_us", with = "crate::serde_util::micros")]
    duration: Duration,
    status: Option<u16>,
    error_kind: Option<TransportErrorKind>,
    error_message: Option<String>,
    response_excerpt: Option<String>,
    outcome: AttemptOutcome,
}

impl Attempt {
    /// The attempt's number, the first being 1. Numbers keep counting across
    /// [manual retries](Delivery::retry_now), so each is unique per delivery.
    pub const fn number(&self) -> u32 {
        self.number
    }

    /// When the request started.
    pub const fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    /// How long it took, until the response or the error.
    pub const fn duration(&self) -> Duration {
        self.duration
    }

    /// The response status code, if a response arrived.
    pub const fn status(&self) -> Option<u16> {
        self.status
    }

    /// The transport error's kind, if there was no response.
    pub const fn error_kind(&self) -> Option<TransportErrorKind> {
        self.error_kind
    }

    /// The transport error's message, at most [`MAX_ERROR_MESSAGE`] bytes.
    pub fn error_message(&self) -> Option<&str> {
        self.error_message.as_deref()
    }

    /// The start of the response body, at most [`MAX_EXCERPT`] bytes; `None`
    /// when there was no body.
    pub fn response_excerpt(&self) -> Option<&str> {
        self.response_excerpt.as_deref()
    }

    /// How the attempt was classified.
    pub const fn outcome(&self) -> AttemptOutcome {
        self.outcome
    }

    /// The short form kept on the [`Delivery`].
    pub const fn summary(&self) -> AttemptSummary {
        AttemptSummary {
            number: self.number,
            started_at: self.started_at,
            status: self.status,
            outcome: self.outcome,
        }
    }
}

/// The last attempt at a glance, kept on the [`Delivery`] so a listing needs
/// no join with the attempt log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// The attempt's number.
    pub number: u32,
    /// When it started.
    #[serde(with = "crate::serde_util::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The response status, if any.
    pub status: Option<u16>,
    /// How it was classified.
    pub outcome: AttemptOutcome,
}

// ---------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------

/// A transition of the delivery state machine, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// [`Delivery::claim`].
    Claim,
    /// [`Delivery::complete`].
    Complete,
    /// [`Delivery::release`] or [`Delivery::defer`].
    Release,
    /// [`Delivery::hold`].
    Hold,
    /// [`Delivery::unhold`].
    Unhold,
    /// [`Delivery::retry_now`].
    RetryNow,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Claim => "claim",
            Self::Complete => "complete",
            Self::Release => "release",
            Self::Hold => "hold",
            Self::Unhold => "unhold",
            Self::RetryNow => "retry",
        })
    }
}

/// Why a transition was refused. The delivery is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The delivery is pending but not due yet.
    #[error("the delivery is not due until {due_at}")]
    NotDue {
        /// When it is due.
        due_at: OffsetDateTime,
    },
    /// Another worker holds a lease that has not expired.
    #[error("the delivery is leased to another worker until {lease_until}")]
    Leased {
        /// When the lease expires.
        lease_until: OffsetDateTime,
    },
    /// The claim is no longer the delivery's current one: its lease expired
    /// and another worker took over, or it was already completed or
    /// released. Its result must be dropped.
    #[error("the claim is stale; the delivery is now {state}")]
    StaleClaim {
        /// The delivery's state now.
        state: StateKind,
    },
    /// The claim was made on another delivery.
    #[error("the claim belongs to delivery {claim}, not {delivery}")]
    WrongDelivery {
        /// The claim's delivery.
        claim: DeliveryId,
        /// The delivery it was used on.
        delivery: DeliveryId,
    },
    /// The transition does not apply in the delivery's state, e.g. claiming
    /// a delivered one or retrying a pending one.
    #[error("cannot {action} a delivery that is {state}")]
    InvalidState {
        /// What was attempted.
        action: Action,
        /// The delivery's state.
        state: StateKind,
    },
    /// The attempt or claim counter would overflow (after about four billion
    /// attempts).
    #[error("the delivery's attempt counter is exhausted")]
    CounterOverflow,
}

/// A worker's claim on a delivery, from [`Delivery::claim`].
///
/// Pass it back to [`complete`](Delivery::complete) or
/// [`release`](Delivery::release); it is refused once stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    delivery_id: DeliveryId,
    token: u64,
    attempt: u32,
    due_at: OffsetDateTime,
    claimed_at: OffsetDateTime,
    lease_until: OffsetDateTime,
    takeover: bool,
}

impl Claim {
    /// The claimed delivery.
    pub const fn delivery_id(&self) -> &DeliveryId {
        &self.delivery_id
    }

    /// The claim's token: the delivery's claim count when it was made.
    pub const fn token(&self) -> u64 {
        self.token
    }

    /// The number of the attempt to make (1-based).
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the delivery was due (for a takeover, when the previous lease
    /// expired). `claimed_at - due_at` is how late the attempt starts.
    pub const fn due_at(&self) -> OffsetDateTime {
        self.due_at
    }

    /// When the claim was made.
    pub const fn claimed_at(&self) -> OffsetDateTime {
        self.claimed_at
    }

    /// When another worker may take the delivery over.
    pub const fn lease_until(&self) -> OffsetDateTime {
        self.lease_until
    }

    /// Whether this claim took the delivery over from a worker whose lease
    /// expired (it probably crashed; its attempt may or may not have reached
    /// the endpoint).
    pub const fn is_takeover(&self) -> bool {
        self.takeover
    }
}

/// What happens after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// The delivery is done.
    Delivered,
    /// The delivery is pending again, due at this time.
    RetryAt(OffsetDateTime),
    /// The delivery failed; if the reason says so, disable the endpoint.
    Failed(FailureReason),
}

/// The result of [`Delivery::complete`]: the attempt to log, and what comes
/// next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The attempt record, for the delivery log.
    pub attempt: Attempt,
    /// What happens next; the delivery's state already says the same.
    pub next: Next,
}

impl Completed {
    /// Whether the endpoint should be disabled (410 Gone, by default).
    pub const fn disable_endpoint(&self) -> bool {
        match &self.next {
            Next::Failed(reason) => reason.disable_endpoint(),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// One event to one endpoint: its state and attempt counters.
///
/// The payload is not here: it is stored once per event, however many
/// endpoints receive it. Neither are the attempts: [`complete`](Self::complete)
/// returns each [`Attempt`] for the store to append to the delivery's log;
/// the delivery keeps a [summary](Self::last_attempt) of the last one.
///
/// # Serialisation
///
/// A flat JSON object, ready for a document store or a row with a JSON
/// column; the state's fields sit beside the others:
///
/// ```json
/// {"id": "dlv_…", "event_id": "msg_…", "event_type": "ticket.created",
///  "endpoint_id": "ep_support", "created_at": "2025-01-01T12:00:00Z",
///  "state": "pending", "due_at": "2025-01-01T12:01:00Z",
///  "attempts": 1, "budget_start": 0, "claims": 1,
///  "first_attempt_at": "2025-01-01T12:00:00Z", "last_attempt": {…}}
/// ```
///
/// Deserialising checks that the counters agree with the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeliveryRepr")]
pub struct Delivery {
    id: DeliveryId,
    event_id: MessageId,
    event_type: EventType,
    endpoint_id: EndpointId,
    #[serde(with = "crate::serde_util::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(flatten)]
    state: DeliveryState,
    attempts: u32,
    budget_start: u32,
    claims: u64,
    #[serde(with = "crate::serde_util::rfc3339::option")]
    first_attempt_at: Option<OffsetDateTime>,
    last_attempt: Option<AttemptSummary>,
}

#[derive(Deserialize)]
struct DeliveryRepr {
    id: DeliveryId,
    event_id: MessageId,
    event_type: EventType,
    endpoint_id: EndpointId,
    #[serde(with = "crate::serde_util::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(flatten)]
    state: DeliveryState,
    attempts: u32,
    #[serde(default)]
    budget_start: u32,
    #[serde(default)]
    claims: u64,
    #[serde(with = "crate::serde_util::rfc3339::option", default)]
    first_attempt_at: Option<OffsetDateTime>,
    #[serde(default)]
    last_attempt: Option<AttemptSummary>,
}

impl TryFrom<DeliveryRepr> for Delivery {
    type Error = &'static str;

    fn try_from(r: DeliveryRepr) -> Result<Self, Self::Error> {
        if r.budget_start > r.attempts {
            return Err("budget_start exceeds attempts");
        }
        if let DeliveryState::InFlight { attempt, .. } = r.state {
            if Some(attempt) != r.attempts.checked_add(1) {
                return Err("an in-flight attempt must be numbered attempts + 1");
            }
            if r.claims == 0 {
                return Err("an in-flight delivery must have been claimed");
            }
        }
        Ok(Self {
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            endpoint_id: r.endpoint_id,
            created_at: r.created_at,
            state: r.state,
            attempts: r.attempts,
            budget_start: r.budget_start,
            claims: r.claims,
            first_attempt_at: r.first_attempt_at,
            last_attempt: r.last_attempt,
        })
    }
}

impl Delivery {
    /// A new delivery of event `event_id` to `endpoint_id`, pending and due
    /// at `now`.
    ///
    /// For an endpoint that is disabled, follow with [`hold`](Self::hold).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookway::delivery::{Delivery, DeliveryId, DeliveryState, EndpointId};
    /// use hookway::{EventType, MessageId};
    /// use time::macros::datetime;
    ///
    /// let now = datetime!(2025-01-01 12:00 UTC);
    /// let delivery = Delivery::new(
    ///     DeliveryId::generate_at(now),
    ///     MessageId::new("msg_1")?,
    ///     EventType::from_static("ticket.created"),
    ///     EndpointId::from_static("ep_1"),
    ///     now,
    /// );
    /// assert_eq!(delivery.state(), &DeliveryState::Pending { due_at: now });
    /// assert!(delivery.is_claimable(now));
    /// # Ok::<(), hookway::event::InvalidMessageId>(())
    /// ```
    pub const fn new(
        id: DeliveryId,
        event_id: MessageId,
        event_type: EventType,
        endpoint_id: EndpointId,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            event_id,
            event_type,
            endpoint_id,
            created_at: now,
            state: DeliveryState::Pending { due_at: now },
            attempts: 0,
            budget_start: 0,
            claims: 0,
            first_attempt_at: None,
            last_attempt: None,
        }
    }

    /// The delivery's id.
    pub const fn id(&self) -> &DeliveryId {
        &self.id
    }

    /// The event delivered (its message id, which receivers de-duplicate on).
    pub const fn event_id(&self) -> &MessageId {
        &self.event_id
    }

    /// The event's type.
    pub const fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The destination.
    pub const fn endpoint_id(&self) -> &EndpointId {
        &self.endpoint_id
    }

    /// When the delivery was created.
    pub const fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// The current state.
    pub const fn state(&self) -> &DeliveryState {
        &self.state
    }

    /// Attempts completed over the delivery's life, manual retries included.
    /// Released claims and claims lost to an expired lease are not counted.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts counted against the retry policy: those since creation, or
    /// since the last [manual retry](Self::retry_now).
    pub const fn budget_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.budget_start)
    }

    /// How many times the delivery has been claimed. More claims than
    /// attempts means some were released or lost to expired leases; a
    /// growing gap marks a message that keeps losing its worker (a poison
    /// message), which an engine may choose to fail.
    pub const fn claims(&self) -> u64 {
        self.claims
    }

    /// When the first attempt counted against the retry policy started: the
    /// origin of the policy's age cap. `None` before it, and again after a
    /// manual retry.
    pub const fn first_attempt_at(&self) -> Option<OffsetDateTime> {
        self.first_attempt_at
    }

    /// A summary of the last completed attempt.
    pub const fn last_attempt(&self) -> Option<&AttemptSummary> {
        self.last_attempt.as_ref()
    }

    /// When the delivery can next be claimed: its due time if pending, its
    /// lease expiry if in flight, `None` otherwise. A store indexes this to
    /// find due work and to sleep until the earliest.
    pub const fn next_attempt_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            DeliveryState::Pending { due_at } => Some(due_at),
            DeliveryState::InFlight { lease_until, .. } => Some(lease_until),
            _ => None,
        }
    }

    /// Whether [`claim`](Self::claim) would succeed at `now`.
    pub fn is_claimable(&self, now: OffsetDateTime) -> bool {
        self.next_attempt_at().is_some_and(|at| at <= now)
    }

    /// Claims the delivery for one attempt, leased for `lease` from `now`.
    ///
    /// Succeeds on a pending delivery that is due, and on an in-flight one
    /// whose lease has expired (its worker is presumed dead; the returned
    /// claim [is a takeover](Claim::is_takeover) and the old claim goes
    /// stale). The attempt number is one more than the attempts completed.
    ///
    /// # Errors
    ///
    /// [`NotDue`](TransitionError::NotDue),
    /// [`Leased`](TransitionError::Leased),
    /// [`InvalidState`](TransitionError::InvalidState) when delivered,
    /// failed or held, [`CounterOverflow`](TransitionError::CounterOverflow).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::delivery::{Delivery, DeliveryId, EndpointId, TransitionError};
    /// use hookway::{EventType, MessageId};
    /// use time::macros::datetime;
    ///
    /// let t0 = datetime!(2025-01-01 12:00 UTC);
    /// let mut delivery = Delivery::new(
    ///     DeliveryId::from_static("dlv_1"),
    ///     MessageId::new("msg_1")?,
    ///     EventType::from_static("ticket.created"),
    ///     EndpointId::from_static("ep_1"),
    ///     t0,
    /// );
    /// let first = delivery.claim(t0, Duration::from_secs(60))?;
    /// assert_eq!(first.attempt(), 1);
    ///
    /// // Leased: nobody else can claim it for a minute...
    /// let err = delivery.claim(datetime!(2025-01-01 12:00:30 UTC), Duration::from_secs(60));
    /// assert!(matches!(err, Err(TransitionError::Leased { .. })));
    ///
    /// // ...after which a crashed worker's delivery comes back.
    /// let second = delivery.claim(datetime!(2025-01-01 12:01 UTC), Duration::from_secs(60))?;
    /// assert!(second.is_takeover());
    /// assert_eq!(second.attempt(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(
        &mut self,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Claim, TransitionError> {
        let (due_at, takeover) = match self.state {
            DeliveryState::Pending { due_at } if due_at <= now => (due_at, false),
            DeliveryState::Pending { due_at } => return Err(TransitionError::NotDue { due_at }),
            DeliveryState::InFlight { lease_until, .. } if lease_until <= now => {
                (lease_until, true)
            }
            DeliveryState::InFlight { lease_until, .. } => {
                return Err(TransitionError::Leased { lease_until })
            }
            _ => return Err(self.invalid(Action::Claim)),
        };
        let attempt = self
            .attempts
            .checked_add(1)
            .ok_or(TransitionError::CounterOverflow)?;
        let token = self
            .claims
            .checked_add(1)
            .ok_or(TransitionError::CounterOverflow)?;
        let lease_until = later(now, lease);
        self.claims = token;
        self.state = DeliveryState::InFlight {
            attempt,
            claimed_at: now,
            lease_until,
        };
        Ok(Claim {
            delivery_id: self.id.clone(),
            token,
            attempt,
            due_at,
            claimed_at: now,
            lease_until,
            takeover,
        })
    }

    /// Records the attempt made under `claim` and decides what comes next.
    ///
    /// - [`Delivered`](Outcome::Delivered): the delivery is delivered.
    /// - [`Permanent`](Outcome::Permanent): it fails at once; the reason
    ///   carries `disable_endpoint` (410 Gone, by default).
    /// - [`Retryable`](Outcome::Retryable): [`RetryPolicy::next_delay`] is
    ///   asked with the attempt's number within the current budget and the
    ///   time since the budget's first attempt; the delivery is pending again
    ///   at `now + delay` (which already honours `Retry-After` and the
    ///   throttle floor), or fails as exhausted.
    ///
    /// `now` is when the result is processed, the origin of the retry delay.
    /// An expired claim is still accepted if nobody has taken over.
    ///
    /// # Errors
    ///
    /// [`StaleClaim`](TransitionError::StaleClaim) when another claim has
    /// superseded this one or it was already completed or released;
    /// [`WrongDelivery`](TransitionError::WrongDelivery). The delivery is
    /// unchanged and the result should be dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::delivery::{
    ///     AttemptFailure, AttemptReport, Delivery, DeliveryId, EndpointId, FailureReason, Next,
    /// };
    /// use hookway::retry::{Classifier, RetryPolicy, SplitMix64};
    /// use hookway::{EventType, MessageId};
    /// use time::macros::datetime;
    ///
    /// let now = datetime!(2025-01-01 12:00 UTC);
    /// let mut delivery = Delivery::new(
    ///     DeliveryId::from_static("dlv_1"),
    ///     MessageId::new("msg_1")?,
    ///     EventType::from_static("ticket.created"),
    ///     EndpointId::from_static("ep_1"),
    ///     now,
    /// );
    /// let claim = delivery.claim(now, Duration::from_secs(60))?;
    /// let gone = http::Response::builder().status(410).body(Vec::new())?;
    /// let report = AttemptReport::from_response(&gone, &Classifier::new(), now, Duration::ZERO);
    /// let done = delivery.complete(
    ///     &claim,
    ///     report,
    ///     &RetryPolicy::default(),
    ///     now,
    ///     &mut SplitMix64::from_seed(0),
    /// )?;
    /// assert_eq!(
    ///     done.next,
    ///     Next::Failed(FailureReason::Permanent {
    ///         cause: AttemptFailure::Status(410),
    ///         disable_endpoint: true,
    ///     })
    /// );
    /// assert!(done.disable_endpoint());
    /// assert!(delivery.state().is_terminal());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn complete<R: JitterRng + ?Sized>(
        &mut self,
        claim: &Claim,
        report: AttemptReport<'_>,
        policy: &RetryPolicy,
        now: OffsetDateTime,
        rng: &mut R,
    ) -> Result<Completed, TransitionError> {
        let number = self.current(claim)?;
        let outcome = report.outcome;
        let first = self.first_attempt_at.unwrap_or(report.started_at);
        let attempt = report.into_attempt(number);
        let budget_attempt = number.saturating_sub(self.budget_start);
        let next = match outcome {
            Outcome::Delivered => Next::Delivered,
            Outcome::Permanent {
                cause,
                disable_endpoint,
            } => Next::Failed(FailureReason::Permanent {
                cause: cause.into(),
                disable_endpoint,
            }),
            Outcome::Retryable { cause, .. } => {
                let age = elapsed(first, now);
                match policy.next_delay(budget_attempt, age, &outcome, rng) {
                    Some(delay) => Next::RetryAt(later(now, delay)),
                    None => Next::Failed(FailureReason::Exhausted {
                        cause: cause.into(),
                    }),
                }
            }
        };
        self.state = match next {
            Next::Delivered => DeliveryState::Delivered { at: now },
            Next::RetryAt(due_at) => DeliveryState::Pending { due_at },
            Next::Failed(reason) => DeliveryState::Failed { at: now, reason },
        };
        self.attempts = number;
        self.first_attempt_at = Some(first);
        self.last_attempt = Some(attempt.summary());
        Ok(Completed { attempt, next })
    }

    /// Gives the delivery back without an attempt (graceful shutdown): it is
    /// pending again, due at `now`, and the attempt is not counted.
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::delivery::{Delivery, DeliveryId, EndpointId};
    /// use hookway::{EventType, MessageId};
    /// use time::macros::datetime;
    ///
    /// let now = datetime!(2025-01-01 12:00 UTC);
    /// let mut delivery = Delivery::new(
    ///     DeliveryId::from_static("dlv_1"),
    ///     MessageId::new("msg_1")?,
    ///     EventType::from_static("ticket.created"),
    ///     EndpointId::from_static("ep_1"),
    ///     now,
    /// );
    /// let claim = delivery.claim(now, Duration::from_secs(60))?;
    /// delivery.release(&claim, now)?;
    /// assert_eq!(delivery.attempts(), 0);
    /// assert_eq!(delivery.claim(now, Duration::from_secs(60))?.attempt(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&mut self, claim: &Claim, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.defer(claim, now)
    }

    /// Gives the delivery back without an attempt, due again at `until`:
    /// for an engine that claimed it but may not send yet (the endpoint's
    /// concurrency or rate limit, an earlier delivery of an ordered endpoint,
    /// a `Retry-After` pause). The attempt is not counted.
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    pub fn defer(&mut self, claim: &Claim, until: OffsetDateTime) -> Result<(), TransitionError> {
        self.current(claim)?;
        self.state = DeliveryState::Pending { due_at: until };
        Ok(())
    }

    /// Holds a pending delivery because its endpoint is disabled. Holding a
    /// held delivery changes nothing, so an engine can sweep all of an
    /// endpoint's deliveries without filtering first.
    ///
    /// A delivery in flight cannot be held: let its worker finish, then hold
    /// it if it is pending again.
    ///
    /// # Errors
    ///
    /// [`InvalidState`](TransitionError::InvalidState) unless pending or held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::delivery::{Delivery, DeliveryId, DeliveryState, EndpointId};
    /// use hookway::{EventType, MessageId};
    /// use time::macros::datetime;
    ///
    /// let t0 = datetime!(2025-01-01 12:00 UTC);
    /// let mut delivery = Delivery::new(
    ///     DeliveryId::from_static("dlv_1"),
    ///     MessageId::new("msg_1")?,
    ///     EventType::from_static("ticket.created"),
    ///     EndpointId::from_static("ep_1"),
    ///     t0,
    /// );
    /// delivery.hold(t0)?;
    /// assert!(!delivery.is_claimable(t0));
    ///
    /// let t1 = datetime!(2025-01-02 9:00 UTC);
    /// delivery.unhold(t1)?;
    /// assert_eq!(delivery.state(), &DeliveryState::Pending { due_at: t1 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hold(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        match self.state {
            DeliveryState::Pending { .. } => {
                self.state = DeliveryState::Held { since: now };
                Ok(())
            }
            DeliveryState::Held { .. } => Ok(()),
            _ => Err(self.invalid(Action::Hold)),
        }
    }

    /// Releases a held delivery: pending, due at `now`. Unholding a pending
    /// delivery changes nothing.
    ///
    /// The time spent held does not count toward the policy's age cap: the
    /// budget's start moves forward by that much, so a delivery held for a
    /// week is not failed on its first error after release. A store should
    /// hand released deliveries out oldest first (by due time, then creation
    /// time and id), which keeps them in order.
    ///
    /// # Errors
    ///
    /// [`InvalidState`](TransitionError::InvalidState) unless held or pending.
    pub fn unhold(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        match self.state {
            DeliveryState::Held { since } => {
                let held_for = elapsed(since, now);
                self.first_attempt_at = self.first_attempt_at.map(|t| later(t, held_for));
                self.state = DeliveryState::Pending { due_at: now };
                Ok(())
            }
            DeliveryState::Pending { .. } => Ok(()),
            _ => Err(self.invalid(Action::Unhold)),
        }
    }

    /// Retries a failed delivery by hand: pending, due at `now`.
    ///
    /// The attempt count is kept, so attempt numbers in the log stay unique
    /// (the next is one more than the last), but the retry policy starts
    /// afresh: [`budget_attempts`](Self::budget_attempts) is back to 0 and the
    /// age cap counts from the next attempt. An operator who retries by hand
    /// has usually fixed something, and deserves the whole schedule, not a
    /// single try against an exhausted budget.
    ///
    /// # Errors
    ///
    /// [`InvalidState`](TransitionError::InvalidState) unless failed.
    pub fn retry_now(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        match self.state {
            DeliveryState::Failed { .. } => {
                self.state = DeliveryState::Pending { due_at: now };
                self.budget_start = self.attempts;
                self.first_attempt_at = None;
                Ok(())
            }
            _ => Err(self.invalid(Action::RetryNow)),
        }
    }

    /// Fails a pending or held delivery that was never sent because its
    /// disabled endpoint's hold queue is full
    /// ([`FailureReason::HoldLimit`]). It can be retried by hand later.
    ///
    /// # Errors
    ///
    /// [`InvalidState`](TransitionError::InvalidState) unless pending or held.
    pub fn fail_held(&mut self, now: OffsetDateTime, limit: u32) -> Result<(), TransitionError> {
        match self.state {
            DeliveryState::Pending { .. } | DeliveryState::Held { .. } => {
                self.state = DeliveryState::Failed {
                    at: now,
                    reason: FailureReason::HoldLimit { limit },
                };
                Ok(())
            }
            _ => Err(self.invalid(Action::Hold)),
        }
    }

    /// The attempt number of `claim` if it is the current claim.
    fn current(&self, claim: &Claim) -> Result<u32, TransitionError> {
        if claim.delivery_id != self.id {
            return Err(TransitionError::WrongDelivery {
                claim: claim.delivery_id.clone(),
                delivery: self.id.clone(),
            });
        }
        match self.state {
            DeliveryState::InFlight { attempt, .. }
                if claim.token == self.claims && claim.attempt == attempt =>
            {
                Ok(attempt)
            }
            _ => Err(TransitionError::StaleClaim {
                state: self.state.kind(),
            }),
        }
    }

    fn invalid(&self, action: Action) -> TransitionError {
        TransitionError::InvalidState {
            action,
            state: self.state.kind(),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `t + d`, saturating at the end of time rather than panicking.
fn later(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// The time from `from` to `to`; zero if `to` is earlier.
fn elapsed(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The start of `body` as text of at most `max` bytes: invalid UTF-8 becomes
/// U+FFFD, and a character that does not fit whole (or that the cut splits)
/// is left out. Reads at most `max` bytes of `body`. `None` for an empty body.
fn excerpt(body: &[u8], max: usize) -> Option<String> {
    const REPLACEMENT: &str = "\u{FFFD}";
    if body.is_empty() {
        return None;
    }
    // Each output character takes at least as many bytes as the input it
    // came from, so the first `max` input bytes are all that can fit.
    let cut = body.len() > max;
    let mut rest = &body[..body.len().min(max)];
    let mut out = String::with_capacity(rest.len());
    loop {
        let (valid, error) = match std::str::from_utf8(rest) {
            Ok(text) => (text, None),
            Err(error) => {
                let valid = rest.get(..error.valid_up_to()).unwrap_or_default();
                // UTF-8 by the error's own account.
                (std::str::from_utf8(valid).unwrap_or_default(), Some(error))
            }
        };
        let fits = truncate(valid, max - out.len());
        out.push_str(fits);
        let Some(error) = error else { break };
        if fits.len() < valid.len() || out.len() + REPLACEMENT.len() > max {
            break;
        }
        match error.error_len() {
            Some(len) => {
                out.push_str(REPLACEMENT);
                rest = rest.get(valid.len() + len..).unwrap_or_default();
            }
            // An incomplete character at the end: split by our cut (drop
            // it), or the body itself ends mid-character (mark it).
            None => {
                if !cut {
                    out.push_str(REPLACEMENT);
                }
                break;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        assert_eq!(EndpointId::new(""), Err(InvalidId::Empty));
        assert_eq!(
            EndpointId::new("a b"),
            Err(InvalidId::InvalidChar {
                found: ' ',
                position: 1
            })
        );
        assert_eq!(
            EndpointId::new("é"),
            Err(InvalidId::InvalidChar {
                found: '\u{FFFD}',
                position: 0
            })
        );
        assert!(EndpointId::new("x".repeat(128)).is_ok());
        assert_eq!(
            EndpointId::new("x".repeat(129)),
            Err(InvalidId::TooLong { len: 129, max: 128 })
        );
        for ok in ["ep_1", "acme:support-desk", "a.b.c", "Z9"] {
            assert!(EndpointId::new(ok).is_ok(), "{ok}");
            assert!(DeliveryId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["a/b", "a?b", "a%20", "a\nb", "*"] {
            assert!(EndpointId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            EndpointId::from_static("ep"),
            EndpointId::new("ep").unwrap()
        );
    }

    #[test]
    fn generated_delivery_ids() {
        let t = time::macros::datetime!(2026-01-01 0:00 UTC);
        let a = DeliveryId::generate_at(t);
        let b = DeliveryId::generate_at(t + time::Duration::milliseconds(1));
        assert_eq!(a.as_str().len(), 30);
        assert!(a.as_str().starts_with("dlv_"));
        assert!(validate_id(a.as_str().as_bytes()).is_ok());
        assert!(a < b);
        assert_ne!(a, DeliveryId::generate_at(t));
    }

    #[test]
    fn excerpt_bounds() {
        assert_eq!(excerpt(b"", 8), None);
        assert_eq!(excerpt(b"hello", 8).as_deref(), Some("hello"));
        assert_eq!(excerpt(b"hello world", 8).as_deref(), Some("hello wo"));
        // 'é' is two bytes: a cut through it drops it.
        assert_eq!(
            excerpt("abcdefgé".as_bytes(), 8).as_deref(),
            Some("abcdefg")
        );
        assert_eq!(excerpt("abcdefé".as_bytes(), 8).as_deref(), Some("abcdefé"));
        // Invalid bytes become U+FFFD (3 bytes) when they fit.
        assert_eq!(excerpt(b"ab\xffcd", 8).as_deref(), Some("ab\u{FFFD}cd"));
        assert_eq!(excerpt(b"abcdef\xffg", 8).as_deref(), Some("abcdef"));
        assert_eq!(excerpt(b"\xff\xfe", 8).as_deref(), Some("\u{FFFD}\u{FFFD}"));
        assert_eq!(
            excerpt(b"\xff\xfe\xfd", 8).as_deref(),
            Some("\u{FFFD}\u{FFFD}")
        );
        // A truncated sequence in the middle is invalid, not "cut".
        assert_eq!(excerpt(b"a\xe2\x82b", 8).as_deref(), Some("a\u{FFFD}b"));
        // A body that itself ends mid-character is marked, not silently cut.
        assert_eq!(excerpt(b"ab\xe2\x82", 8).as_deref(), Some("ab\u{FFFD}"));
        // No U+FFFD after a character that did not fit.
        assert_eq!(
            excerpt(b"\xff\xff\xf0\x9f\x98\x80\xff", 8).as_deref(),
            Some("\u{FFFD}\u{FFFD}")
        );
        assert_eq!(
            excerpt(b"\xffab\xf0\x9f\x98\x80\xff", 8).as_deref(),
            Some("\u{FFFD}ab")
        );
        // Always within the bound, and a prefix of the lossy conversion of
        // the whole body (equal to it when the body fits).
        let mut pattern = "é€😀\u{7f}".as_bytes().to_vec();
        pattern.extend_from_slice(b"\xff\xe2\x82z\xf0\x9f");
        for skip in 0..pattern.len() {
            for len in 0..40 {
                let body: Vec<u8> = pattern
                    .iter()
                    .copied()
                    .cycle()
                    .skip(skip)
                    .take(len)
                    .collect();
                let lossy = String::from_utf8_lossy(&body);
                for max in 0..48 {
                    let text = excerpt(&body, max).unwrap_or_default();
                    assert!(text.len() <= max, "{body:?} {max}");
                    assert!(lossy.starts_with(&text), "{body:?} {max}: {text:?}");
                    if lossy.len() <= max {
                        assert_eq!(text, lossy, "{body:?} {max}");
                    }
                }
            }
        }
    }

    #[test]
    fn truncate_on_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("héllo", 100), "héllo");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = time::macros::datetime!(2025-01-01 0:00 UTC);
        assert!(later(t, Duration::MAX) > t);
        assert_eq!(elapsed(t, t - time::Duration::SECOND), Duration::ZERO);
        assert_eq!(
            elapsed(t, t + time::Duration::SECOND),
            Duration::from_secs(1)
        );
    }
}
