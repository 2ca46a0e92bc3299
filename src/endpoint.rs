//! A destination for webhooks: [`Endpoint`], its authentication
//! ([`Auth`], [`ClientIdentity`]) and the request each attempt sends.
//!
//! Building the request is pure: [`Endpoint::request`] takes the payload,
//! the ids and the attempt's time and returns the signed `http::Request`.
//! Every attempt is signed afresh with its own timestamp, so a retry hours
//! later still passes a receiver's five-minute tolerance; the message id
//! stays the same.
//!
//! [`Endpoint::to_record`] and [`Endpoint::from_record`] turn an endpoint
//! into an [`EndpointRecord`] and back: versioned, serialisable data for a
//! store, which holds the endpoint's keys and credentials.

mod record;

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::delivery::{DeliveryId, EndpointId};
use crate::error::{KeyError, SignError};
use crate::event::{EventFilter, EventType, MessageId};
use crate::retry::{Classifier, RetryPolicy};
use crate::scheme::Scheme;
use crate::secret::{Keyring, SecretError};
use crate::sign::Signer;

pub use self::record::{EndpointRecord, EndpointRecordError};

/// The default per-attempt timeout: 30 seconds, as the provider documents
/// hookway follows use.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `User-Agent` of outgoing requests.
pub const DEFAULT_USER_AGENT: &str = concat!("hookway/", env!("CARGO_PKG_VERSION"));

/// Headers an endpoint's extra headers may never set: the signature
/// scheme's own, the body's framing and type, and hop-by-hop headers.
const RESERVED: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// A credential string (password, API key, token, client secret): redacted
/// in `Debug` and `Display`, wiped on drop, and serialised only as part of
/// an [`EndpointRecord`].
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(Zeroizing<String>);

impl Credential {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The value. Named so that every use stands out in review.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A TLS client certificate for mutual TLS (mTLS): a PEM bundle holding the
/// certificate chain (leaf first) and its private key.
///
/// Give it to an endpoint with [`EndpointBuilder::client_identity`];
/// [`Endpoint::request`] then puts a clone into every request's
/// [`http::Extensions`], where any [`Dispatcher`](crate::dispatch::Dispatcher)
/// finds it with `request.extensions().get::<ClientIdentity>()`. The core
/// does not parse it (the default build has no TLS library): the dispatcher
/// that presents it does, and reports a PEM it cannot use as an error of
/// that request. The `reqwest` adapter (feature `reqwest`,
/// `adapters::reqwest::ReqwestDispatcher`) accepts what its builder's
/// `identity_pem` accepts (PKCS#8, PKCS#1 or SEC1 keys; RSA, ECDSA
/// P-256/P-384 or Ed25519), and fails a request whose PEM it cannot use
/// with [`TransportErrorKind::Tls`](crate::dispatch::TransportErrorKind::Tls)
/// before any network activity.
///
/// # The rule for dispatchers
///
/// A dispatcher that does not support client certificates must refuse a
/// request carrying a `ClientIdentity` (with a [`TransportError`] of kind
/// [`RefusedByPolicy`](crate::dispatch::TransportErrorKind::RefusedByPolicy)),
/// never send it without the certificate: the receiver's authentication
/// depends on it. The one exception is a plain `http://` URL (local
/// development, when the dispatcher allows plain HTTP at all): there is no
/// TLS, so no certificate to present, and the identity is ignored.
///
/// # Handling
///
/// - **Wiped on drop.** The PEM bytes live in one shared buffer that is
///   zeroed when the last clone is dropped. Copies made before
///   [`from_pem`](Self::from_pem) (a file read, a `String`) are the
///   caller's to wipe; passing a `Vec<u8>` moves it in without a copy.
/// - **Redacted.** `Debug` shows only the [`id`](Self::id).
/// - **Not serialisable on its own.** The PEM bytes are serialised only as
///   part of an [`EndpointRecord`].
/// - **Cheap to clone.** Clones share the buffer (an [`Arc`]), so putting
///   one into every request costs a reference count.
/// - **A stable id.** [`id`](Self::id) is the SHA-256 of the PEM bytes, in
///   lowercase hex: the same bytes always give the same id, so a dispatcher
///   can cache what it builds from an identity (a TLS client, say) under
///   it. The id is not secret (a one-way hash of high-entropy key material)
///   and may be logged. Equality and hashing compare ids.
///
/// ```
/// use hookway::endpoint::{ClientIdentity, Endpoint};
/// use hookway::{Scheme, Secret};
///
/// # let pem = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".to_vec();
/// // let pem = std::fs::read("/etc/hookway/tenant-42.pem")?;
/// let identity = ClientIdentity::from_pem(pem);
/// let endpoint = Endpoint::builder(
///     "ep_1".parse()?,
///     "https://example.com/webhooks",
///     Scheme::standard(),
///     Secret::generate(),
/// )
/// .client_identity(identity.clone())
/// .build()?;
/// assert_eq!(endpoint.client_identity(), Some(&identity));
/// assert!(!format!("{identity:?}").contains("BEGIN"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`TransportError`]: crate::dispatch::TransportError
#[derive(Clone)]
pub struct ClientIdentity(Arc<IdentityInner>);

struct IdentityInner {
    pem: Zeroizing<Vec<u8>>,
    id: String,
}

impl ClientIdentity {
    /// Wraps `pem`: the certificate chain (leaf first) and the private key,
    /// in PEM. Not parsed here; see the [type documentation](Self).
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Self {
        let pem = Zeroizing::new(pem.into());
        let id = hex::encode(Sha256::digest(pem.as_slice()));
        Self(Arc::new(IdentityInner { pem, id }))
    }

    /// The stable, non-secret id: the SHA-256 of the PEM bytes, 64
    /// lowercase hex digits.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The PEM bytes. Named so that every use stands out in review.
    pub fn expose_pem(&self) -> &[u8] {
        &self.0.pem
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.id() == other.id()
    }
}

impl Eq for ClientIdentity {}

impl Hash for ClientIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

/// How the sender authenticates to the endpoint, on top of the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Credential,
    },
    /// An API key in a named header (e.g. `ApiKey: …`).
    ApiKey {
        /// The header that carries the key.
        header: HeaderName,
        /// The key.
        key: Credential,
    },
    /// A static bearer token (`Authorization: Bearer …`).
    Bearer(Credential),
    /// OAuth2 client credentials: the engine fetches a token from
    /// `token_url`, caches it until shortly before it expires, refreshes it
    /// once on a 401, and sends it as a bearer token.
    OAuth2ClientCredentials {
        /// The token endpoint.
        token_url: Uri,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Credential,
        /// The scopes to request, space-separated, if any.
        scope: Option<String>,
    },
}

/// Rate limit for one endpoint: at most `requests` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

/// Delivering several events in one request, as a JSON array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// At most this many events per request.
    pub max_events: u32,
    /// Send a partial batch once its oldest event has waited this long.
    pub max_wait: Duration,
}

/// Why an endpoint's settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("invalid endpoint URL: {0}")]
    InvalidUrl(&'static str),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// An extra header would override a header hookway sets.
    #[error("extra header {0:?} is reserved: it is set by the signature scheme, the body or the connection")]
    ReservedHeader(String),
    /// The keys do not fit the scheme.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A limit of zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A key of an [`EndpointRecord`] cannot be restored: its material is
    /// not valid base64, or not a valid key of its type.
    #[error("key {index} of the endpoint record is invalid: {source}")]
    InvalidKey {
        /// The key's position in the record's `keys`, from 0.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: SecretError,
    },
    /// The client identity of an [`EndpointRecord`] is not valid base64.
    #[error("the endpoint record's client identity is not valid base64")]
    InvalidClientIdentity,
}

/// A destination for webhooks.
///
/// ```
/// use hookway::endpoint::{Auth, Credential, Endpoint};
/// use hookway::{EventFilter, Scheme, Secret};
///
/// let endpoint = Endpoint::builder(
///     "ep_1".parse()?,
///     "https://example.com/webhooks",
///     Scheme::standard(),
///     Secret::generate(),
/// )
/// .filter(EventFilter::new(["ticket.*"])?)
/// .channel("tenant_42")
/// .header("X-Tenant", "42")
/// .auth(Auth::Bearer(Credential::new("t0ken")))
/// .build()?;
/// assert!(endpoint.wants(&"ticket.created".parse()?, &["tenant_42"]));
/// assert!(!endpoint.wants(&"ticket.created".parse()?, &["tenant_7"]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Endpoint {
    id: EndpointId,
    url: Uri,
    signer: Signer,
    filter: EventFilter,
    channels: BTreeSet<String>,
    enabled: bool,
    headers: HeaderMap,
    timeout: Duration,
    retry: RetryPolicy,
    classifier: Classifier,
    max_in_flight: Option<u32>,
    rate_limit: Option<RateLimit>,
    ordered: bool,
    batching: Option<Batching>,
    auth: Option<Auth>,
    client_identity: Option<ClientIdentity>,
    event_header: Option<HeaderName>,
    delivery_header: Option<HeaderName>,
}

impl Endpoint {
    /// Starts an endpoint with its id, URL, signature scheme and keys.
    pub fn builder(
        id: EndpointId,
        url: &str,
        scheme: Scheme,
        keys: impl Into<Keyring>,
    ) -> EndpointBuilder {
        EndpointBuilder {
            id,
            url: url.to_owned(),
            scheme,
            keys: keys.into(),
            filter: EventFilter::all(),
            channels: BTreeSet::new(),
            enabled: true,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            classifier: Classifier::default(),
            max_in_flight: None,
            rate_limit: None,
            ordered: false,
            batching: None,
            auth: None,
            client_identity: None,
            event_header: None,
            delivery_header: None,
        }
    }

    /// The endpoint's id.
    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    /// Where requests go.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The signer (scheme and keys).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Which event types it receives.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// Its channels; empty means every channel.
    pub fn channels(&self) -> impl ExactSizeIterator<Item = &str> {
        self.channels.iter().map(String::as_str)
    }

    /// Whether deliveries are attempted.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Enables or disables the endpoint.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When to try again.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How responses are classified.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// At most this many requests in flight to this endpoint at once.
    pub fn max_in_flight(&self) -> Option<u32> {
        self.max_in_flight
    }

    /// The rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Whether deliveries go strictly in order, one at a time.
    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// Batching, if enabled.
    pub fn batching(&self) -> Option<Batching> {
        self.batching
    }

    /// The authentication, if any.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The TLS client certificate, if any; see [`ClientIdentity`].
    pub fn client_identity(&self) -> Option<&ClientIdentity> {
        self.client_identity.as_ref()
    }

    /// Whether an event of `event_type` on `channels` goes to this endpoint:
    /// it is enabled or not (held events count), its filter matches, and it
    /// has no channels or shares one with the event.
    pub fn wants(&self, event_type: &EventType, channels: &[&str]) -> bool {
        self.filter.matches(event_type)
            && (self.channels.is_empty() || channels.iter().any(|c| self.channels.contains(*c)))
    }

    /// The signed request for one attempt at `now`.
    ///
    /// Carries the scheme's signature headers (signed at `now`),
    /// `Content-Type: application/json`, the `User-Agent`, the event type and
    /// delivery id headers if configured, the endpoint's extra headers, and
    /// the authentication; `bearer` is the current OAuth2 token for
    /// [`Auth::OAuth2ClientCredentials`] (ignored otherwise). The
    /// endpoint's [`ClientIdentity`], if any, goes into the request's
    /// extensions, for the dispatcher to present in the TLS handshake.
    pub fn request(
        &self,
        payload: Bytes,
        message_id: &MessageId,
        event_type: &EventType,
        delivery_id: &DeliveryId,
        now: OffsetDateTime,
        bearer: Option<&Credential>,
    ) -> Result<http::Request<Bytes>, SignError> {
        let mut headers = self.headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(DEFAULT_USER_AGENT),
            );
        }
        if let Some(name) = &self.event_header {
            if let Ok(value) = HeaderValue::from_str(event_type.as_str()) {
                headers.insert(name.clone(), value);
            }
        }
        if let Some(name) = &self.delivery_header {
            if let Ok(value) = HeaderValue::from_str(delivery_id.as_str()) {
                headers.insert(name.clone(), value);
            }
        }
        match &self.auth {
            None => {}
            Some(Auth::Basic { username, password }) => {
                use base64::Engine as _;
                let mut text = Zeroizing::new(String::with_capacity(64));
                text.push_str(username);
                text.push(':');
                text.push_str(password.expose());
                let encoded = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
                );
                insert_sensitive(&mut headers, header::AUTHORIZATION, "Basic ", &encoded);
            }
            Some(Auth::ApiKey { header, key }) => {
                insert_sensitive(&mut headers, header.clone(), "", key.expose());
            }
            Some(Auth::Bearer(token)) => {
                insert_sensitive(
                    &mut headers,
                    header::AUTHORIZATION,
                    "Bearer ",
                    token.expose(),
                );
            }
            Some(Auth::OAuth2ClientCredentials { .. }) => {
                if let Some(token) = bearer {
                    insert_sensitive(
                        &mut headers,
                        header::AUTHORIZATION,
                        "Bearer ",
                        token.expose(),
                    );
                }
            }
        }
        // Signature headers last, so nothing above can replace them.
        self.signer
            .sign_into(&mut headers, message_id, now, &payload)?;
        let mut request = http::Request::new(payload);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.url.clone();
        *request.headers_mut() = headers;
        if let Some(identity) = &self.client_identity {
            request.extensions_mut().insert(identity.clone());
        }
        Ok(request)
    }
}

fn insert_sensitive(headers: &mut HeaderMap, name: HeaderName, prefix: &str, value: &str) {
    let text = Zeroizing::new(format!("{prefix}{value}"));
    if let Ok(mut value) = HeaderValue::from_str(&text) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// Builds an [`Endpoint`]; see [`Endpoint::builder`].
#[derive(Debug)]
#[must_use]
pub struct EndpointBuilder {
    id: EndpointId,
    url: String,
    scheme: Scheme,
    keys: Keyring,
    filter: EventFilter,
    channels: BTreeSet<String>,
    enabled: bool,
    headers: Vec<(String, String)>,
    timeout: Duration,
    retry: RetryPolicy,
    classifier: Classifier,
    max_in_flight: Option<u32>,
    rate_limit: Option<RateLimit>,
    ordered: bool,
    batching: Option<Batching>,
    auth: Option<Auth>,
    client_identity: Option<ClientIdentity>,
    event_header: Option<String>,
    delivery_header: Option<String>,
}

impl EndpointBuilder {
    /// Which event types to receive (default: all).
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Adds a channel (e.g. a tenant id): an endpoint with channels only
    /// receives events published on one of them.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channels.insert(channel.into());
        self
    }

    /// Whether the endpoint starts enabled (default: yes).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// An extra header sent with every request. Headers hookway sets
    /// (signature, `Content-Type`, framing, hop-by-hop) are refused at
    /// [`build`](Self::build).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The per-attempt timeout (default: [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// When to try again (default: [`RetryPolicy::standard_webhooks`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How responses are classified (default: [`Classifier::default`]).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// At most `n` requests in flight to this endpoint.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// At most `requests` per `per` to this endpoint.
    pub fn rate_limit(mut self, requests: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit { requests, per });
        self
    }

    /// Strict per-endpoint FIFO: one delivery in flight, and a failing one
    /// holds back later events for this endpoint only.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Deliver up to `max_events` events per request as a JSON array, or
    /// fewer once the oldest has waited `max_wait`.
    pub fn batching(mut self, max_events: u32, max_wait: Duration) -> Self {
        self.batching = Some(Batching {
            max_events,
            max_wait,
        });
        self
    }

    /// How to authenticate, on top of the signature.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// A TLS client certificate for mutual TLS, presented by the dispatcher
    /// on every request to this endpoint (see [`ClientIdentity`] for what a
    /// dispatcher must do with it).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }

    /// A header carrying the event type (e.g. `X-Relay-Event`).
    pub fn event_header(mut self, name: &str) -> Self {
        self.event_header = Some(name.to_owned());
        self
    }

    /// A header carrying the delivery id (e.g. `X-Relay-Delivery`).
    pub fn delivery_header(mut self, name: &str) -> Self {
        self.delivery_header = Some(name.to_owned());
        self
    }

    /// The endpoint, or the first invalid setting.
    pub fn build(self) -> Result<Endpoint, EndpointError> {
        let url: Uri = self
            .url
            .parse()
            .map_err(|_| EndpointError::InvalidUrl("not a valid URI"))?;
        match url.scheme_str() {
            Some("https" | "http") => {}
            _ => {
                return Err(EndpointError::InvalidUrl(
                    "the scheme must be http or https",
                ))
            }
        }
        if url.host().is_none_or(str::is_empty) {
            return Err(EndpointError::InvalidUrl("no host"));
        }
        let signature_header = self.scheme.signature_header();
        let signer = Signer::new(self.scheme, self.keys)?;
        let parse_name = |name: &str| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| EndpointError::InvalidHeader(name.to_owned()))
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = parse_name(name)?;
            if RESERVED.contains(&name) || name == signature_header || is_scheme_header(&name) {
                return Err(EndpointError::ReservedHeader(name.as_str().to_owned()));
            }
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| EndpointError::InvalidHeader(name.as_str().to_owned()))?;
            // Extra headers often carry tokens: keep them out of `Debug`.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let event_header = self.event_header.as_deref().map(parse_name).transpose()?;
        let delivery_header = self
            .delivery_header
            .as_deref()
            .map(parse_name)
            .transpose()?;
        if self.max_in_flight == Some(0) {
            return Err(EndpointError::Zero("max_in_flight"));
        }
        if let Some(limit) = self.rate_limit {
            if limit.requests == 0 || limit.per.is_zero() {
                return Err(EndpointError::Zero("rate_limit"));
            }
        }
        if let Some(batching) = self.batching {
            if batching.max_events == 0 {
                return Err(EndpointError::Zero("batching max_events"));
            }
        }
        if self.timeout.is_zero() {
            return Err(EndpointError::Zero("timeout"));
        }
        Ok(Endpoint {
            id: self.id,
            url,
            signer,
            filter: self.filter,
            channels: self.channels,
            enabled: self.enabled,
            headers,
            timeout: self.timeout,
            retry: self.retry,
            classifier: self.classifier,
            max_in_flight: self.max_in_flight,
            rate_limit: self.rate_limit,
            ordered: self.ordered,
            batching: self.batching,
            auth: self.auth,
            client_identity: self.client_identity,
            event_header,
            delivery_header,
        })
    }
}

/// Signature-related headers of every scheme, refused as extra headers even
/// when the endpoint's own scheme does not use them, so no extra header can
/// pose as a signature a receiver might check.
fn is_scheme_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("webhook-")
        || name.starts_with("svix-")
        || name.contains("signature")
        || name.starts_with("x-hub-signature")
        || name == "x-slack-request-timestamp"
        || name.starts_with("x-shopify-hmac")
}
