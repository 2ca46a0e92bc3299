//! Error types of signing, verifying and configuring schemes.
//!
//! None of them carries an expected signature or key material: a failed
//! verification says what was wrong with the request, never what the right
//! answer would have been.

use std::fmt;

use http::HeaderName;

/// Why a request failed verification.
///
/// Every variant maps to a clear HTTP answer for a receiver:
/// [`status`](Self::status) gives 400 for a malformed body and 401 for the
/// rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(HeaderName),
    /// A header is present but cannot be parsed.
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        /// The header.
        header: HeaderName,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signed timestamp is older than the tolerance allows (a replay, or
    /// a badly delayed request).
    #[error("timestamp {timestamp} is {age_secs} s old; the tolerance is {tolerance_secs} s")]
    TimestampTooOld {
        /// The timestamp received, in Unix seconds.
        timestamp: i64,
        /// How far it lies in the past, in seconds.
        age_secs: u64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// The signed timestamp lies further in the future than the tolerance
    /// allows.
    #[error("timestamp {timestamp} is {ahead_secs} s in the future; the tolerance is {tolerance_secs} s")]
    TimestampTooNew {
        /// The timestamp received, in Unix seconds.
        timestamp: i64,
        /// How far it lies in the future, in seconds.
        ahead_secs: u64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// Signatures of a supported version were present, and none matched any
    /// active key.
    #[error("no signature matched")]
    NoMatchingSignature,
    /// No signature of a version this verifier can check (with the keys it
    /// holds) was present.
    #[error("no signature of a supported version")]
    UnsupportedVersion,
    /// Every key in the keyring has expired.
    #[error("no active key to verify with")]
    NoActiveKey,
    /// The signature is valid, but the envelope's `id` differs from the
    /// signed message id in the headers. De-duplication keys on one id, so
    /// the two must agree.
    #[error("the body's id differs from the signed message id")]
    IdMismatch,
    /// The signature is valid but the body is not the JSON expected.
    #[error("invalid body: {0}")]
    InvalidBody(#[source] JsonError),
}

impl VerifyError {
    /// The HTTP status a receiver should answer with: 400 for a body that is
    /// not the expected JSON (or whose id contradicts the headers), 500 for a keyring with no active key (a
    /// configuration problem on the receiving side, so the sender retries),
    /// 401 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::InvalidBody(_) | Self::IdMismatch => http::StatusCode::BAD_REQUEST,
            Self::NoActiveKey => http::StatusCode::INTERNAL_SERVER_ERROR,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// A JSON (de)serialisation failure: a body that is not the JSON the caller
/// asked for, or a payload that cannot be serialised.
///
/// Wraps the parser's error without exposing its type.
pub struct JsonError(pub(crate) serde_json::Error);

impl JsonError {
    /// Line of the first error, 1-based (0 when unknown).
    pub fn line(&self) -> usize {
        self.0.line()
    }

    /// Column of the first error, 1-based (0 when unknown).
    pub fn column(&self) -> usize {
        self.0.column()
    }
}

impl fmt::Debug for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Why a message could not be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Every key that can sign has expired.
    #[error("no active key to sign with")]
    NoActiveKey,
    /// The timestamp lies before 1970, which no scheme can carry.
    #[error("timestamp lies before the Unix epoch")]
    TimestampBeforeEpoch,
}

/// Why a keyring does not fit a scheme.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The keyring holds no key at all.
    #[error("the keyring is empty")]
    EmptyKeyring,
    /// A secret was made with the constructor for another provider's secrets.
    #[error("{scheme} expects {expected}; {found}")]
    WrongSecretKind {
        /// The scheme's name.
        scheme: &'static str,
        /// What the scheme expects.
        expected: &'static str,
        /// What was given, and the fix.
        found: &'static str,
    },
    /// A key type the scheme cannot use (an Ed25519 key outside Standard
    /// Webhooks).
    #[error("{scheme} cannot use {key} keys")]
    UnsupportedKey {
        /// The scheme's name.
        scheme: &'static str,
        /// The kind of key.
        key: &'static str,
    },
    /// A signer was given only keys that cannot sign (public keys).
    #[error("the keyring has no key that can sign")]
    NoSigningKey,
}

/// Why a custom scheme could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemeError {
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// Two roles (signature, timestamp, id) were given the same header, so
    /// one value would overwrite the other.
    #[error("header {0:?} is used for two purposes")]
    DuplicateHeader(String),
    /// A prefix, version or key text that cannot appear in a header value,
    /// or that would make the header ambiguous.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidText {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}
