//! The receiving side: [`Verifier`] and what it returns.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::{JsonError, KeyError, VerifyError};
use crate::event::Event;
use crate::scheme::{KeySet, Scheme};
use crate::secret::Keyring;

/// The default timestamp tolerance: five minutes either way, as Standard
/// Webhooks, Stripe and Slack recommend.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Checks that a request was signed by a holder of one of the keys.
///
/// Verification runs on the raw body bytes, before any JSON parsing, and
/// allocates nothing: the result borrows from the request.
///
/// ```
/// use hookway::{Keyring, MessageId, Scheme, Secret, Signer, Verifier};
/// use time::OffsetDateTime;
///
/// let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let signer = Signer::new(Scheme::standard(), secret.clone())?;
/// let verifier = Verifier::new(Scheme::standard(), secret)?;
///
/// let body = br#"{"id":"msg_1","type":"ticket.created","timestamp":"2026-03-15T10:30:00Z","data":{}}"#;
/// let now = OffsetDateTime::now_utc();
/// let headers = signer.sign(&"msg_1".parse()?, now, body)?;
///
/// let verified = verifier.verify_at(&headers, body, now)?;
/// assert_eq!(verified.id(), Some("msg_1"));
/// assert_eq!(verified.body(), body);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: KeySet,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier for `scheme` with `keys` and the
    /// [default tolerance](DEFAULT_TOLERANCE).
    ///
    /// Fails if the keyring is empty, or holds a secret made for another
    /// provider's format (see [`KeyError::WrongSecretKind`]).
    pub fn new(scheme: Scheme, keys: impl Into<Keyring>) -> Result<Self, KeyError> {
        let keys = keys.into();
        scheme.check_keys(&keys, false)?;
        Ok(Self {
            keys: KeySet::new(&scheme, keys),
            scheme,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Sets how far a signed timestamp may lie from `now`, in either
    /// direction. Schemes without a timestamp ignore it.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The tolerance in force.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// The scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The keys.
    pub fn keys(&self) -> &Keyring {
        self.keys.keyring()
    }

    /// Verifies against the system clock.
    pub fn verify<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Result<Verified<'a>, VerifyError> {
        self.verify_at(headers, body, SystemClock.now())
    }

    /// Verifies as of `now`.
    pub fn verify_at<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
        now: OffsetDateTime,
    ) -> Result<Verified<'a>, VerifyError> {
        self.scheme
            .verify(&self.keys, self.tolerance, now, headers, body)
    }

    /// Verifies against the system clock, then parses the body as hookway's
    /// [`Event`] envelope with payload `T`.
    pub fn verify_event<T: DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Event<T>, VerifyError> {
        self.verify_event_at(headers, body, SystemClock.now())
    }

    /// Verifies as of `now`, then parses the body as an [`Event<T>`].
    ///
    /// When the headers carry a signed message id (Standard Webhooks), the
    /// envelope's `id` must equal it, or the result is
    /// [`VerifyError::IdMismatch`].
    pub fn verify_event_at<T: DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Event<T>, VerifyError> {
        let verified = self.verify_at(headers, body, now)?;
        let event: Event<T> = verified.json()?;
        if verified
            .signed_id()
            .is_some_and(|id| id != event.id.as_str())
        {
            return Err(VerifyError::IdMismatch);
        }
        Ok(event)
    }

    /// Verifies against the system clock, then parses the body as any JSON
    /// type: for senders whose envelope is not hookway's, such as
    /// `{event_id, event_ts, event_name, payload}`.
    pub fn verify_json<T: DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<T, VerifyError> {
        self.verify_json_at(headers, body, SystemClock.now())
    }

    /// Verifies as of `now`, then parses the body as any JSON type.
    pub fn verify_json_at<T: DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<T, VerifyError> {
        self.verify_at(headers, body, now)?.json()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme.name())
            .field("keys", self.keys.keyring())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// A request that passed verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified<'a> {
    id: Option<&'a str>,
    id_signed: bool,
    timestamp: Option<i64>,
    body: &'a [u8],
}

impl<'a> Verified<'a> {
    pub(crate) fn new(
        id: Option<&'a str>,
        id_signed: bool,
        timestamp: Option<i64>,
        body: &'a [u8],
    ) -> Self {
        Self {
            id,
            id_signed,
            timestamp,
            body,
        }
    }

    /// The message id from the headers, if the scheme carries one. Under
    /// Standard Webhooks it is signed; other schemes' id headers (GitHub's
    /// `X-GitHub-Delivery`, …) are not.
    pub fn id(&self) -> Option<&'a str> {
        self.id
    }

    /// The message id if the signature covers it (Standard Webhooks).
    pub fn signed_id(&self) -> Option<&'a str> {
        self.id.filter(|_| self.id_signed)
    }

    /// The signed timestamp in Unix seconds, if the scheme has one.
    pub fn unix_timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The signed timestamp, if the scheme has one.
    pub fn timestamp(&self) -> Option<OffsetDateTime> {
        self.timestamp
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    }

    /// The verified raw body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Parses the verified body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, VerifyError> {
        serde_json::from_slice(self.body).map_err(|e| VerifyError::InvalidBody(JsonError(e)))
    }
}
