//! [`EndpointRecord`]: an [`Endpoint`] as versioned, serialisable data, for
//! stores that keep endpoints in a database.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, Uri};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{Auth, ClientIdentity, Credential, Endpoint, EndpointError};
use crate::delivery::EndpointId;
use crate::error::JsonError;
use crate::event::EventFilter;
use crate::retry::{Classifier, RetryPolicy};
use crate::scheme::Scheme;
use crate::secret::{Key, Keyring, Secret, SecretError, SecretKind, BASE64_LENIENT_PADDING};

/// An [`Endpoint`] as data: everything needed to rebuild it, keys and
/// credentials included, in a versioned format that a store can keep in a
/// database row.
///
/// [`Endpoint::to_record`] makes one; [`Endpoint::from_record`] rebuilds the
/// endpoint, which then behaves exactly as the original: the same
/// signatures for the same message at the same time, the same filter,
/// channels, headers, authentication, limits and policies. The record
/// (de)serialises with serde; [`from_json`](Self::from_json) reads JSON
/// with a typed error for a record of a version this release cannot read.
///
/// # The record holds secrets
///
/// **A serialised record contains the endpoint's signing keys and its
/// authentication credentials (passwords, tokens, client secrets, the mTLS
/// private key) in plain text.** Store it as you would store a password:
/// access-controlled, never logged, never sent to a client. A store may
/// encrypt the serialised record at rest (with a key kept outside the
/// database); hookway neither requires nor does this. Only the record
/// serialises key material: [`Secret`], [`Keyring`], [`Credential`] and
/// [`ClientIdentity`] have no `Serialize` of their own, so a secret cannot
/// end up in some other struct's JSON by accident.
///
/// In memory, the record's key material and credentials are wiped on drop,
/// and `Debug` leaves them out: it shows key types and expiries, header
/// names without values, usernames and client ids without passwords or
/// secrets, and of URLs only the origin (scheme, host and port), since
/// paths, queries and userinfo sometimes carry tokens. (A JSON parser's own
/// buffers, and the JSON text itself, are the caller's to handle.)
///
/// # Format
///
/// A JSON object (any self-describing serde format works alike), here
/// loaded and checked to be exactly what [`Endpoint::to_record`] writes
/// back:
///
/// ```
/// use hookway::endpoint::{Endpoint, EndpointRecord};
///
/// let json = r#"{
///   "v": 1,
///   "id": "ep_1",
///   "url": "https://example.com/webhooks",
///   "enabled": true,
///   "scheme": {"kind": "standard"},
///   "keys": [
///     {"type": "hmac", "kind": "base64", "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expires_at": null},
///     {"type": "hmac", "kind": "base64", "secret": "c2VjcmV0LWtleS1ieXRlcy0wMQ==", "expires_at": "2026-12-01T00:00:00Z"}
///   ],
///   "filter": ["ticket.*"],
///   "channels": ["tenant_42"],
///   "headers": [{"name": "x-tenant", "value": "42"}],
///   "event_header": "x-relay-event",
///   "delivery_header": null,
///   "timeout": 30000,
///   "retry": {"strategy": {"fixed": {"delays": [5000, 300000], "repeat_last": false}}, "max_attempts": null, "max_age": null},
///   "classifier": {"status_rules": {}, "max_retry_after": 3600000, "throttle_floor": 5000},
///   "max_in_flight": 4,
///   "rate_limit": {"requests": 10, "per": 1000},
///   "ordered": false,
///   "batching": null,
///   "auth": {"type": "bearer", "token": "t0ken"},
///   "client_identity": null
/// }"#;
/// let endpoint = Endpoint::from_record(EndpointRecord::from_json(json)?)?;
/// assert_eq!(endpoint.signer().keys().len(), 2);
///
/// let written = serde_json::to_value(endpoint.to_record())?;
/// assert_eq!(written, serde_json::from_str::<serde_json::Value>(json)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// | field | content |
/// | --- | --- |
/// | `v` | the format version, [`EndpointRecord::VERSION`] |
/// | `id`, `url` | the endpoint's id and URL |
/// | `scheme` | the [`Scheme`], in its own serialised form |
/// | `keys` | the keyring, in order, each key with its `expires_at` (RFC 3339, UTC, or `null`) |
/// | `filter`, `channels` | the [`EventFilter`]'s patterns; the channels |
/// | `headers` | the extra headers, names lowercased |
/// | `event_header`, `delivery_header` | those header names, or `null` |
/// | `timeout`, `rate_limit.per`, `batching.max_wait` | durations (below) |
/// | `retry`, `classifier` | the [`RetryPolicy`] and [`Classifier`], in their own serialised forms |
/// | `auth` | `null`, or tagged by `type`: `basic` (`username`, `password`), `api_key` (`header`, `key`), `bearer` (`token`), `oauth2_client_credentials` (`token_url`, `client_id`, `client_secret`, `scope`) |
/// | `client_identity` | the mTLS PEM bundle's bytes in base64, or `null` |
///
/// Keys, tagged by `type`; every byte string is standard base64 with
/// padding:
///
/// | `type` | fields |
/// | --- | --- |
/// | `hmac` | `kind`: how the [`Secret`] was made (`base64`, `literal` or `bytes`, as [`SecretKind`], which decides the schemes it fits); `secret`: the key bytes |
/// | `ed25519_secret` | `key`: 64 bytes, the seed then the public key (the `whsk_` form without its prefix); needs the `ed25519` feature |
/// | `ed25519_public` | `key`: the 32-byte public key; needs the `ed25519` feature |
///
/// Credentials are plain strings. Durations are whole milliseconds
/// (`30000`), or `{"secs": …, "nanos": …}` for a duration with a
/// sub-millisecond part, so every duration comes back exactly. (The retry
/// policy and classifier keep their own format, in whole milliseconds.)
///
/// # Versions
///
/// Every change to the format gives it a new `v`, and later releases keep
/// reading the versions before it. A record of a version this release does
/// not know is refused ([`EndpointRecordError::UnsupportedVersion`] from
/// [`from_json`](Self::from_json), a serde error from `Deserialize`), as is
/// a field it does not know: an older release never loads a newer
/// endpoint with some of its settings silently dropped.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use hookway::endpoint::{Auth, Credential, Endpoint, EndpointRecord};
/// use hookway::{Scheme, Secret};
/// use time::macros::datetime;
///
/// let endpoint = Endpoint::builder(
///     "ep_1".parse()?,
///     "https://example.com/webhooks",
///     Scheme::standard(),
///     Secret::generate(),
/// )
/// .auth(Auth::Bearer(Credential::new("t0ken")))
/// .build()?;
///
/// // Into a database row (which now holds the key and the token)...
/// let row: String = serde_json::to_string(&endpoint.to_record())?;
/// // ...and back.
/// let record = EndpointRecord::from_json(&row)?;
/// assert_eq!(record.id().as_str(), "ep_1");
/// assert!(!format!("{record:?}").contains("t0ken"));
/// let restored = Endpoint::from_record(record)?;
///
/// // Same request, same signature.
/// let at = datetime!(2026-03-15 10:30 UTC);
/// let (msg, ty, dlv) = ("msg_1".parse()?, "ticket.created".parse()?, "dlv_1".parse()?);
/// let body = Bytes::from_static(b"{}");
/// let a = endpoint.request(body.clone(), &msg, &ty, &dlv, at, None)?;
/// let b = restored.request(body, &msg, &ty, &dlv, at, None)?;
/// assert_eq!(a.headers(), b.headers());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct EndpointRecord(RecordV1);

/// Why [`EndpointRecord::from_json`] refused its input.
///
/// None of the messages quote key material: a record's secrets are read as
/// opaque strings, so they are never the value a parse error shows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointRecordError {
    /// The input is a JSON object without a format version: no `v`, or a
    /// `v` that is not a non-negative integer.
    #[error("not an endpoint record: no format version `v`")]
    MissingVersion,
    /// The record is of a format version this release cannot read, most
    /// likely written by a later release.
    #[error(
        "endpoint record format version {found} is not supported; this release reads version {}",
        EndpointRecord::VERSION
    )]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// Not JSON, or not the shape of a record of its version: a field
    /// missing, unknown or of the wrong type, an invalid id, filter,
    /// scheme or policy.
    #[error("malformed endpoint record: {0}")]
    Malformed(#[source] JsonError),
}

impl EndpointRecord {
    /// The format version this release writes (the `v` field), and the
    /// newest it reads.
    pub const VERSION: u32 = 1;

    /// The endpoint's id, for a store's key column.
    pub fn id(&self) -> &EndpointId {
        &self.0.id
    }

    /// Reads a record from JSON.
    ///
    /// Unlike plain `serde_json::from_slice`, this tells a record of an
    /// unknown version ([`UnsupportedVersion`](EndpointRecordError::UnsupportedVersion))
    /// apart from a malformed one. Key material is checked later, by
    /// [`Endpoint::from_record`].
    ///
    /// ```
    /// use hookway::endpoint::{EndpointRecord, EndpointRecordError};
    ///
    /// let err = EndpointRecord::from_json(r#"{"v": 2, "id": "ep_1"}"#).unwrap_err();
    /// assert!(matches!(err, EndpointRecordError::UnsupportedVersion { found: 2 }));
    /// ```
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self, EndpointRecordError> {
        let value: serde_json::Value = serde_json::from_slice(json.as_ref())
            .map_err(|e| EndpointRecordError::Malformed(JsonError(e)))?;
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, EndpointRecordError> {
        // A non-object falls through to the shape error below.
        if let serde_json::Value::Object(fields) = &value {
            let version = fields
                .get("v")
                .and_then(serde_json::Value::as_u64)
                .ok_or(EndpointRecordError::MissingVersion)?;
            if version != u64::from(Self::VERSION) {
                return Err(EndpointRecordError::UnsupportedVersion { found: version });
            }
        }
        RecordV1::deserialize(value)
            .map(Self)
            .map_err(|e| EndpointRecordError::Malformed(JsonError(e)))
    }
}

impl Serialize for EndpointRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EndpointRecord {
    /// Reads the version first, then the fields of that version; see the
    /// [type documentation](EndpointRecord#versions).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        f.debug_struct("EndpointRecord")
            .field("v", &r.v)
            .field("id", &r.id)
            .field("url", &r.url)
            .field("enabled", &r.enabled)
            .field("scheme", &r.scheme)
            .field("keys", &r.keys)
            .field("filter", &r.filter)
            .field("channels", &r.channels)
            .field("headers", &r.headers)
            .field("event_header", &r.event_header)
            .field("delivery_header", &r.delivery_header)
            .field("timeout", &r.timeout)
            .field("retry", &r.retry)
            .field("classifier", &r.classifier)
            .field("max_in_flight", &r.max_in_flight)
            .field(
                "rate_limit",
                &r.rate_limit.map(|l| super::RateLimit {
                    requests: l.requests,
                    per: l.per,
                }),
            )
            .field("ordered", &r.ordered)
            .field(
                "batching",
                &r.batching.map(|b| super::Batching {
                    max_events: b.max_events,
                    max_wait: b.max_wait,
                }),
            )
            .field("auth", &r.auth)
            .field("client_identity", &r.client_identity)
            .finish()
    }
}

/// Format version 1. Fields are serialised in this order; every field is
/// required except those of `Option` type, which may be absent for `null`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "EndpointRecord", deny_unknown_fields)]
struct RecordV1 {
    v: u32,
    id: EndpointId,
    url: Url,
    enabled: bool,
    scheme: Scheme,
    keys: Vec<KeyV1>,
    filter: EventFilter,
    channels: BTreeSet<String>,
    headers: Vec<HeaderV1>,
    event_header: Option<String>,
    delivery_header: Option<String>,
    #[serde(with = "duration")]
    timeout: Duration,
    retry: RetryPolicy,
    classifier: Classifier,
    max_in_flight: Option<u32>,
    rate_limit: Option<RateLimitV1>,
    ordered: bool,
    batching: Option<BatchingV1>,
    auth: Option<AuthV1>,
    client_identity: Option<Material>,
}

/// A URL, shown by `Debug` as its origin only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct Url(String);

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(uri) = self.0.parse::<Uri>() else {
            return f.write_str("\"[unparsable URL]\"");
        };
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return f.write_str("\"[unparsable URL]\"");
        };
        write!(f, "\"{scheme}://{host}")?;
        if let Some(port) = uri.port_u16() {
            write!(f, ":{port}")?;
        }
        let more = uri.path_and_query().is_some_and(|pq| pq.as_str() != "/");
        f.write_str(if more { "/…\"" } else { "/\"" })
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    name: String,
    value: String,
}

impl fmt::Debug for HeaderV1 {
    /// The name only: extra headers often carry tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitV1 {
    requests: u32,
    #[serde(with = "duration")]
    per: Duration,
}

#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchingV1 {
    max_events: u32,
    #[serde(with = "duration")]
    max_wait: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SecretKindV1 {
    Base64,
    Literal,
    Bytes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum KeyV1 {
    Hmac {
        kind: SecretKindV1,
        secret: Material,
        #[serde(with = "crate::serde_util::rfc3339::option", default)]
        expires_at: Option<OffsetDateTime>,
    },
    Ed25519Secret {
        key: Material,
        #[serde(with = "crate::serde_util::rfc3339::option", default)]
        expires_at: Option<OffsetDateTime>,
    },
    Ed25519Public {
        key: Material,
        #[serde(with = "crate::serde_util::rfc3339::option", default)]
        expires_at: Option<OffsetDateTime>,
    },
}

impl KeyV1 {
    fn of(key: &Key, expires_at: Option<OffsetDateTime>) -> Self {
        match key {
            Key::Hmac(secret) => Self::Hmac {
                kind: match secret.kind() {
                    SecretKind::Base64 => SecretKindV1::Base64,
                    SecretKind::Literal => SecretKindV1::Literal,
                    SecretKind::Bytes => SecretKindV1::Bytes,
                },
                secret: Material::encode(secret.expose_bytes()),
                expires_at,
            },
            #[cfg(feature = "ed25519")]
            Key::Ed25519Secret(key) => Self::Ed25519Secret {
                key: Material::encode(&Zeroizing::new(key.0.to_keypair_bytes())[..]),
                expires_at,
            },
            #[cfg(feature = "ed25519")]
            Key::Ed25519Public(key) => Self::Ed25519Public {
                key: Material::encode(key.0.as_bytes()),
                expires_at,
            },
        }
    }

    fn into_key(self) -> Result<(Key, Option<OffsetDateTime>), SecretError> {
        let invalid = |_| SecretError::InvalidBase64 { prefix: "" };
        match self {
            Self::Hmac {
                kind,
                secret,
                expires_at,
            } => {
                let bytes = secret.decode().map_err(invalid)?;
                let kind = match kind {
                    SecretKindV1::Base64 => SecretKind::Base64,
                    SecretKindV1::Literal => SecretKind::Literal,
                    SecretKindV1::Bytes => SecretKind::Bytes,
                };
                Ok((Key::Hmac(Secret::restore(&bytes, kind)?), expires_at))
            }
            Self::Ed25519Secret { key, expires_at } => {
                let bytes = key.decode().map_err(invalid)?;
                Ok((ed25519_secret(&bytes)?, expires_at))
            }
            Self::Ed25519Public { key, expires_at } => {
                let bytes = key.decode().map_err(invalid)?;
                Ok((ed25519_public(&bytes)?, expires_at))
            }
        }
    }
}

#[cfg(feature = "ed25519")]
fn ed25519_secret(bytes: &[u8]) -> Result<Key, SecretError> {
    crate::secret::Ed25519SecretKey::from_keypair(bytes).map(Key::from)
}

#[cfg(feature = "ed25519")]
fn ed25519_public(bytes: &[u8]) -> Result<Key, SecretError> {
    crate::secret::Ed25519PublicKey::from_slice(bytes).map(Key::from)
}

#[cfg(not(feature = "ed25519"))]
const NO_ED25519: &str = "Ed25519 keys need hookway's `ed25519` feature";

#[cfg(not(feature = "ed25519"))]
fn ed25519_secret(_: &[u8]) -> Result<Key, SecretError> {
    Err(SecretError::InvalidEd25519(NO_ED25519))
}

#[cfg(not(feature = "ed25519"))]
fn ed25519_public(_: &[u8]) -> Result<Key, SecretError> {
    Err(SecretError::InvalidEd25519(NO_ED25519))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum AuthV1 {
    Basic {
        username: String,
        #[serde(with = "credential")]
        password: Credential,
    },
    ApiKey {
        header: String,
        #[serde(with = "credential")]
        key: Credential,
    },
    Bearer {
        #[serde(with = "credential")]
        token: Credential,
    },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: Url,
        client_id: String,
        #[serde(with = "credential")]
        client_secret: Credential,
        #[serde(default)]
        scope: Option<String>,
    },
}

impl AuthV1 {
    fn of(auth: &Auth) -> Self {
        match auth {
            Auth::Basic { username, password } => Self::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            Auth::ApiKey { header, key } => Self::ApiKey {
                header: header.as_str().to_owned(),
                key: key.clone(),
            },
            Auth::Bearer(token) => Self::Bearer {
                token: token.clone(),
            },
            Auth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Self::OAuth2ClientCredentials {
                token_url: Url(token_url.to_string()),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
            },
        }
    }

    fn into_auth(self) -> Result<Auth, EndpointError> {
        Ok(match self {
            Self::Basic { username, password } => Auth::Basic { username, password },
            Self::ApiKey { header, key } => Auth::ApiKey {
                header: HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| EndpointError::InvalidHeader(header))?,
                key,
            },
            Self::Bearer { token } => Auth::Bearer(token),
            Self::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Auth::OAuth2ClientCredentials {
                token_url: token_url.0.parse().map_err(|_| {
                    EndpointError::InvalidUrl("the OAuth2 token URL is not a valid URI")
                })?,
                client_id,
                client_secret,
                scope,
            },
        })
    }
}

/// Key bytes as standard base64 text, wiped on drop, compared in constant
/// time, and left out of `Debug`.
#[derive(Clone)]
struct Material(Zeroizing<String>);

impl Material {
    fn encode(bytes: &[u8]) -> Self {
        // Sized up front, so the text is never reallocated (which would
        // leave an unwiped copy behind).
        let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
        let mut text = Zeroizing::new(String::with_capacity(len));
        base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut text);
        Self(text)
    }

    fn decode(&self) -> Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
        BASE64_LENIENT_PADDING
            .decode(self.0.as_bytes())
            .map(Zeroizing::new)
    }
}

impl PartialEq for Material {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Material {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Material {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Self(Zeroizing::new(text)))
    }
}

/// A [`Credential`] as a plain string; private, so that only the record
/// serialises credentials.
mod credential {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Credential;

    pub(super) fn serialize<S: Serializer>(c: &Credential, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.expose())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Credential, D::Error> {
        String::deserialize(d).map(Credential::new)
    }
}

/// Exact durations: whole milliseconds as an integer, otherwise
/// `{"secs": u64, "nanos": u32}`.
mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Exact {
        secs: u64,
        nanos: u32,
    }

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            if let Ok(ms) = u64::try_from(d.as_millis()) {
                return s.serialize_u64(ms);
            }
        }
        Exact {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration: whole milliseconds, or {"secs": …, "nanos": …}"#)
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Duration, A::Error> {
            let exact = Exact::deserialize(de::value::MapAccessDeserializer::new(map))?;
            if exact.nanos >= 1_000_000_000 {
                return Err(de::Error::custom(
                    "a duration's nanos must be below 1 000 000 000",
                ));
            }
            Ok(Duration::new(exact.secs, exact.nanos))
        }
    }
}

impl Endpoint {
    /// The endpoint as a versioned, serialisable [`EndpointRecord`], keys
    /// and credentials included; [`from_record`](Self::from_record) rebuilds
    /// it. See [`EndpointRecord`] for the format, and why the serialised
    /// record must be stored like a password.
    pub fn to_record(&self) -> EndpointRecord {
        let keys = self
            .signer
            .keys()
            .keys()
            .map(|(key, expires_at)| KeyV1::of(key, expires_at))
            .collect();
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| HeaderV1 {
                name: name.as_str().to_owned(),
                // Built from a `&str`, so always UTF-8; the lossy form is
                // never taken.
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        EndpointRecord(RecordV1 {
            v: EndpointRecord::VERSION,
            id: self.id.clone(),
            url: Url(self.url.to_string()),
            enabled: self.enabled,
            scheme: self.signer.scheme().clone(),
            keys,
            filter: self.filter.clone(),
            channels: self.channels.clone(),
            headers,
            event_header: self.event_header.as_ref().map(|h| h.as_str().to_owned()),
            delivery_header: self.delivery_header.as_ref().map(|h| h.as_str().to_owned()),
            timeout: self.timeout,
            retry: self.retry.clone(),
            classifier: self.classifier.clone(),
            max_in_flight: self.max_in_flight,
            rate_limit: self.rate_limit.map(|l| RateLimitV1 {
                requests: l.requests,
                per: l.per,
            }),
            ordered: self.ordered,
            batching: self.batching.map(|b| BatchingV1 {
                max_events: b.max_events,
                max_wait: b.max_wait,
            }),
            auth: self.auth.as_ref().map(AuthV1::of),
            client_identity: self
                .client_identity
                .as_ref()
                .map(|identity| Material::encode(identity.expose_pem())),
        })
    }

    /// Rebuilds an endpoint from its record, with every check of
    /// [`EndpointBuilder::build`](super::EndpointBuilder::build).
    ///
    /// # Errors
    ///
    /// - [`EndpointError::InvalidKey`] if a key's material is not valid
    ///   base64 or not a valid key of its type (too short, a literal secret
    ///   that is not UTF-8, an Ed25519 key whose halves disagree, or any
    ///   Ed25519 key in a build without the `ed25519` feature);
    /// - [`EndpointError::InvalidClientIdentity`] if the PEM bundle is not
    ///   valid base64;
    /// - [`EndpointError::Keys`] if the keys do not fit the scheme;
    /// - the builder's errors for an invalid URL, header or limit.
    pub fn from_record(record: EndpointRecord) -> Result<Endpoint, EndpointError> {
        let r = record.0;
        let mut keys = Keyring::empty();
        for (index, key) in r.keys.into_iter().enumerate() {
            let (key, expires_at) = key
                .into_key()
                .map_err(|source| EndpointError::InvalidKey { index, source })?;
            keys.push(key, expires_at);
        }
        let mut builder = Endpoint::builder(r.id, &r.url.0, r.scheme, keys)
            .filter(r.filter)
            .enabled(r.enabled)
            .timeout(r.timeout)
            .retry_policy(r.retry)
            .classifier(r.classifier)
            .ordered(r.ordered);
        builder.channels = r.channels;
        for header in &r.headers {
            builder = builder.header(&header.name, &header.value);
        }
        if let Some(name) = &r.event_header {
            builder = builder.event_header(name);
        }
        if let Some(name) = &r.delivery_header {
            builder = builder.delivery_header(name);
        }
        if let Some(n) = r.max_in_flight {
            builder = builder.max_in_flight(n);
        }
        if let Some(limit) = r.rate_limit {
            builder = builder.rate_limit(limit.requests, limit.per);
        }
        if let Some(batching) = r.batching {
            builder = builder.batching(batching.max_events, batching.max_wait);
        }
        if let Some(auth) = r.auth {
            builder = builder.auth(auth.into_auth()?);
        }
        if let Some(pem) = r.client_identity {
            let pem = pem
                .decode()
                .map_err(|_| EndpointError::InvalidClientIdentity)?;
            builder = builder.client_identity(ClientIdentity::from_pem(pem.as_slice()));
        }
        builder.build()
    }
}

/// Key material and credentials serialise only inside a record: none of
/// these types has a `Serialize` of its own.
///
/// ```compile_fail
/// let _ = serde_json::to_string(&hookway::Secret::generate());
/// ```
///
/// ```compile_fail
/// let _ = serde_json::to_string(&hookway::Key::from(hookway::Secret::generate()));
/// ```
///
/// ```compile_fail
/// let _ = serde_json::to_string(&hookway::Keyring::new(hookway::Secret::generate()));
/// ```
///
/// ```compile_fail
/// let _ = serde_json::to_string(&hookway::endpoint::Credential::new("t0ken"));
/// ```
///
/// ```compile_fail
/// use hookway::endpoint::{Auth, Credential};
/// let _ = serde_json::to_string(&Auth::Bearer(Credential::new("t0ken")));
/// ```
///
/// ```compile_fail
/// let pem = hookway::endpoint::ClientIdentity::from_pem(b"pem".to_vec());
/// let _ = serde_json::to_string(&pem);
/// ```
///
/// ```compile_fail
/// use hookway::{Scheme, Secret, Signer};
/// let signer = Signer::new(Scheme::standard(), Secret::generate()).unwrap();
/// let _ = serde_json::to_string(&signer);
/// ```
///
/// The same call compiles for a type that holds no secret:
///
/// ```
/// let _ = serde_json::to_string(&hookway::Scheme::standard());
/// ```
#[cfg(doctest)]
pub struct SecretsSerialiseOnlyInRecords;
