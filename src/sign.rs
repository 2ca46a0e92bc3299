//! The sending side: [`Signer`].

use std::fmt;

use http::HeaderMap;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{JsonError, KeyError, SignError};
use crate::event::{Event, MessageId};
use crate::scheme::{KeySet, Scheme};
use crate::secret::Keyring;

/// Produces the headers that sign one message under a scheme.
///
/// Sign each delivery attempt afresh with that attempt's time: the message id
/// stays the same, the timestamp moves on, so a retry hours later still
/// passes the receiver's tolerance.
///
/// ```
/// use hookway::{Keyring, MessageId, Scheme, Secret, Signer};
/// use time::macros::datetime;
///
/// let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let signer = Signer::new(Scheme::standard(), Keyring::new(secret))?;
///
/// let id: MessageId = "msg_p5jXN8AQM9LWM0D4loKWxJek".parse()?;
/// let at = datetime!(2021-02-25 15:02:10 UTC); // 1614265330
/// let headers = signer.sign(&id, at, br#"{"test": 2432232314}"#)?;
///
/// assert_eq!(headers["webhook-id"], "msg_p5jXN8AQM9LWM0D4loKWxJek");
/// assert_eq!(headers["webhook-timestamp"], "1614265330");
/// assert_eq!(headers["webhook-signature"], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    keys: KeySet,
}

impl Signer {
    /// A signer for `scheme` with `keys`.
    ///
    /// Fails if the keyring is empty, holds no key that can sign, or holds a
    /// secret made for another provider's format.
    pub fn new(scheme: Scheme, keys: impl Into<Keyring>) -> Result<Self, KeyError> {
        let keys = keys.into();
        scheme.check_keys(&keys, true)?;
        Ok(Self {
            keys: KeySet::new(&scheme, keys),
            scheme,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The keys.
    pub fn keys(&self) -> &Keyring {
        self.keys.keyring()
    }

    /// The headers that sign `body` as message `id` at `timestamp`. Keys
    /// active at `timestamp` sign.
    pub fn sign(
        &self,
        id: &MessageId,
        timestamp: OffsetDateTime,
        body: &[u8],
    ) -> Result<HeaderMap, SignError> {
        let mut headers = HeaderMap::with_capacity(4);
        self.sign_into(&mut headers, id, timestamp, body)?;
        Ok(headers)
    }

    /// Adds the signing headers to `headers`, replacing any earlier values of
    /// the same names (so a request can be re-signed for a retry).
    pub fn sign_into(
        &self,
        headers: &mut HeaderMap,
        id: &MessageId,
        timestamp: OffsetDateTime,
        body: &[u8],
    ) -> Result<(), SignError> {
        self.scheme
            .sign(&self.keys, id.as_str(), timestamp, body, headers)
    }

    /// Serialises any payload to JSON and signs it as message `id`: for
    /// envelopes other than hookway's, such as `{event_id, event_ts,
    /// event_name, payload}`. Returns the body and the headers.
    pub fn sign_json<T: Serialize + ?Sized>(
        &self,
        id: &MessageId,
        timestamp: OffsetDateTime,
        payload: &T,
    ) -> Result<(Vec<u8>, HeaderMap), SignEventError> {
        let body =
            serde_json::to_vec(payload).map_err(|e| SignEventError::Serialize(JsonError(e)))?;
        let headers = self.sign(id, timestamp, &body)?;
        Ok((body, headers))
    }

    /// Serialises `event` (the body) and signs it with its own id, at
    /// `timestamp`. Returns the body and the headers.
    pub fn sign_event<T: Serialize>(
        &self,
        event: &Event<T>,
        timestamp: OffsetDateTime,
    ) -> Result<(Vec<u8>, HeaderMap), SignEventError> {
        self.sign_json(&event.id, timestamp, event)
    }
}

/// Why [`Signer::sign_event`] or [`Signer::sign_json`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignEventError {
    /// The payload could not be serialised to JSON.
    #[error("could not serialise the event: {0}")]
    Serialize(#[source] JsonError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme.name())
            .field("keys", self.keys.keyring())
            .finish()
    }
}
