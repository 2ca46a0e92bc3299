//! A [`Dispatcher`] over [reqwest](https://docs.rs/reqwest), with an SSRF guard.
//!
//! [`ReqwestDispatcher`] sends webhook requests through one pooled
//! `reqwest::Client`. It is built to send to addresses that the *sender's
//! customers* choose, so it is locked down by default:
//!
//! - **HTTPS only.** An `http://` URL is refused with
//!   [`TransportErrorKind::RefusedByPolicy`] before anything touches the
//!   network, unless [`allow_http`](ReqwestDispatcherBuilder::allow_http) is
//!   set (for local development and tests).
//! - **TLS via rustls, 1.2 minimum.** No OpenSSL or native-tls. The crypto
//!   provider is `ring`, set on this client's own TLS configuration
//!   (nothing is installed process-wide): it compiles quickly with a plain C
//!   compiler, where `aws-lc-rs` (reqwest's default) builds a large C
//!   library. Server certificates are checked against the operating
//!   system's trust store (`rustls-platform-verifier`, as reqwest does by
//!   default), loaded once when the dispatcher is built. Client
//!   certificates give mutual TLS, per endpoint or for the whole dispatcher
//!   (see [Client certificates](#client-certificates)).
//! - **No redirects.** A 3xx is returned to the caller as a response: a
//!   redirect could lead anywhere, and the delivery log should show it.
//! - **No proxies.** System proxy settings (`HTTP_PROXY`, …) are ignored: a
//!   proxy would connect on our behalf and bypass the address check.
//! - **SSRF guard.** Every address the client connects to is checked against
//!   an [`AddressPolicy`]: loopback, private, link-local, cloud metadata and
//!   the other ranges listed on [`BlockedRange`] are refused unless
//!   [allowlisted](ReqwestDispatcherBuilder::allow_network). The check runs
//!   *after* DNS resolution, inside the client's resolver, on the very
//!   addresses the connection is made to, so a host name that resolves to a
//!   private address (DNS rebinding included) is refused too. URLs with an IP
//!   literal host skip DNS; they are checked before sending.
//! - **Bounded.** The `timeout` given to [`Dispatcher::send`] covers the whole
//!   exchange: DNS, connect, TLS, sending, and reading the response body. At
//!   most [`max_response_body`](ReqwestDispatcherBuilder::max_response_body)
//!   bytes of the body are read; the rest is never buffered (reading stops
//!   and the connection is dropped).
//!
//! HTTP/1.1 only: webhook requests are small and independent, and a pool of
//! keep-alive connections serves them well without an HTTP/2 stack.
//!
//! # Client certificates
//!
//! A request carrying a [`ClientIdentity`] in its extensions (every request
//! [`Endpoint::request`](crate::endpoint::Endpoint::request) builds for an
//! endpoint with a
//! [`client_identity`](crate::endpoint::EndpointBuilder::client_identity))
//! is sent through a client that presents that certificate. That client is
//! built from the same settings as the dispatcher's own (TLS configuration
//! and verifier, address policy and resolver, plain-HTTP rule, redirects,
//! proxies, `User-Agent`, pool settings) with only the client certificate
//! swapped in, and with its own connection pool and TLS session cache, so
//! no connection or resumed session made under one identity is ever used
//! for another.
//!
//! These clients are cached by [`ClientIdentity::id`], at most
//! [`identity_client_capacity`](ReqwestDispatcherBuilder::identity_client_capacity)
//! of them (default [`DEFAULT_IDENTITY_CLIENT_CAPACITY`]); when the cache is
//! full, the one used least recently is dropped (its idle connections
//! close; requests already using it finish normally). Clones of a dispatcher
//! share the cache.
//!
//! A PEM that cannot be used (malformed, no certificate or key, key not
//! matching the certificate, unsupported key type) fails the request with
//! [`TransportErrorKind::Tls`] and a message naming the problem, never the
//! key, before anything touches the network. Over a plain `http://` URL
//! (only sent with [`allow_http`](ReqwestDispatcherBuilder::allow_http))
//! there is no TLS: the identity is still checked, but has nothing to do.
//!
//! Requests without a `ClientIdentity` use the dispatcher's own client,
//! which presents the dispatcher-wide certificate of
//! [`identity_pem`](ReqwestDispatcherBuilder::identity_pem) if one was
//! given, and none otherwise.
//!
//! # Errors
//!
//! A failed exchange becomes a [`TransportError`] whose kind says what went
//! wrong; its message never contains the URL or any header.
//!
//! | what happened | [`TransportErrorKind`] |
//! | --- | --- |
//! | the `timeout` passed | `Timeout` |
//! | the connection was refused, reset or closed early | `Connect` |
//! | the TLS handshake failed (certificate, protocol) | `Tls` |
//! | the request's [`ClientIdentity`] cannot be used (nothing was sent) | `Tls` |
//! | the host name did not resolve | `Dns` |
//! | plain HTTP not allowed, non-HTTP URL, or every address blocked by the [`AddressPolicy`] | `RefusedByPolicy` |
//! | anything else | `Other` |
//!
//! # Runtime
//!
//! The futures returned by [`Dispatcher::send`] must run inside a Tokio
//! runtime with IO and time enabled, as all of reqwest does.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use hookway::adapters::reqwest::ReqwestDispatcher;
//! use hookway::dispatch::Dispatcher;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let dispatcher = ReqwestDispatcher::builder().build()?;
//! let request = http::Request::post("https://example.com/webhooks")
//!     .header("content-type", "application/json")
//!     .body(Bytes::from_static(br#"{"type":"ping"}"#))?;
//! let response = dispatcher.send(request, Duration::from_secs(30)).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! Local development against a receiver on the same machine:
//!
//! ```
//! use hookway::adapters::reqwest::ReqwestDispatcher;
//!
//! let dispatcher = ReqwestDispatcher::builder()
//!     .allow_http(true)
//!     .allow_network("127.0.0.0/8")
//!     .allow_network("::1/128")
//!     .build()?;
//! # Ok::<(), hookway::adapters::reqwest::BuildError>(())
//! ```

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::reqwest::dns::{Addrs, Name, Resolve, Resolving};
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use crate::dispatch::{Dispatcher, TransportError, TransportErrorKind, DEFAULT_MAX_RESPONSE_BODY};
use crate::endpoint::ClientIdentity;

/// The `User-Agent` sent when a request has none: `hookway/<version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("hookway/", env!("CARGO_PKG_VERSION"));

/// The default number of per-[`ClientIdentity`] clients a dispatcher keeps
/// (see [Client certificates](self#client-certificates)).
pub const DEFAULT_IDENTITY_CLIENT_CAPACITY: usize = 256;

// ---------------------------------------------------------------------------
// The dispatcher
// ---------------------------------------------------------------------------

/// A [`Dispatcher`] that sends over a pooled reqwest client, HTTPS-only and
/// SSRF-guarded by default.
///
/// Cheap to clone: clones share one connection pool. See the
/// [module documentation](self) for what it guarantees.
#[derive(Clone)]
pub struct ReqwestDispatcher {
    client: ::reqwest::Client,
    policy: Arc<AddressPolicy>,
    allow_http: bool,
    max_response_body: usize,
    identities: Arc<IdentityClients>,
    urls: Arc<UrlCache>,
}

/// Parsed URLs by request URI. A webhook sender sends to the same few
/// thousand URLs over and over; parsing each (IDNA included) on every
/// request is measurable, a hash lookup is not.
#[derive(Default)]
struct UrlCache {
    urls: Mutex<HashMap<http::Uri, ::reqwest::Url>>,
}

impl UrlCache {
    /// URIs remembered at most; past that the cache starts again.
    const CAPACITY: usize = 4096;

    fn url(&self, uri: &http::Uri) -> Result<::reqwest::Url, TransportError> {
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(url) = urls.get(uri) {
            return Ok(url.clone());
        }
        let url = ::reqwest::Url::parse(&uri.to_string())
            .map_err(|_| refused("the request URI is not an absolute http(s) URL"))?;
        if urls.len() >= Self::CAPACITY {
            urls.clear();
        }
        urls.insert(uri.clone(), url.clone());
        Ok(url)
    }
}

impl ReqwestDispatcher {
    /// A builder, with HTTPS required, no allowlisted networks, no client
    /// certificate, and a response body cap of [`DEFAULT_MAX_RESPONSE_BODY`].
    #[must_use]
    pub fn builder() -> ReqwestDispatcherBuilder {
        ReqwestDispatcherBuilder::new()
    }

    /// The address policy every connection is checked against.
    #[must_use]
    pub fn address_policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Whether plain `http://` URLs are sent.
    #[must_use]
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// The most response body bytes read per request.
    #[must_use]
    pub fn max_response_body(&self) -> usize {
        self.max_response_body
    }

    /// How many per-[`ClientIdentity`] clients are cached now (at most
    /// [`identity_client_capacity`](Self::identity_client_capacity)); shared
    /// by clones. For metrics and tests.
    #[must_use]
    pub fn cached_identity_clients(&self) -> usize {
        self.identities.len()
    }

    /// The most per-[`ClientIdentity`] clients kept.
    #[must_use]
    pub fn identity_client_capacity(&self) -> usize {
        self.identities.capacity
    }

    /// Checks the scheme and, for an IP-literal host, the address, before
    /// anything is sent. Host names are checked by the resolver instead.
    fn check_url(&self, url: &::reqwest::Url) -> Result<(), TransportError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(refused(
                "plain http is not allowed: use https, or allow_http(true) for local development",
            )),
            _ => return Err(refused("only http and https URLs can be sent")),
        }
        let Some(host) = url.host_str() else {
            return Err(refused("the URL has no host"));
        };
        // The same parsing hyper's connector uses to skip DNS for literals.
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.policy
                .check(ip)
                .map_err(|blocked| refused(blocked.to_string()))?;
        }
        Ok(())
    }

    async fn exchange(
        &self,
        mut request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let identity = request.extensions_mut().remove::<ClientIdentity>();
        let (parts, body) = request.into_parts();
        let url = self.urls.url(&parts.uri)?;
        self.check_url(&url)?;
        let mut request = ::reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.version_mut() = parts.version;
        *request.body_mut() = Some(body.into());
        let identity_client;
        let client = match identity {
            None => &self.client,
            Some(identity) => {
                identity_client = self.identities.client(&identity)?;
                &identity_client
            }
        };
        let mut response = client.execute(request).await.map_err(transport_error)?;
        let status = response.status();
        let version = response.version();
        let headers = std::mem::take(response.headers_mut());
        let body = read_capped(&mut response, self.max_response_body).await?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.version_mut() = version;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl fmt::Debug for ReqwestDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestDispatcher")
            .field("allow_http", &self.allow_http)
            .field("max_response_body", &self.max_response_body)
            .field("policy", &self.policy)
            .field("identity_client_capacity", &self.identities.capacity)
            .finish_non_exhaustive()
    }
}

impl Dispatcher for ReqwestDispatcher {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, TransportError> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!("no complete response within {timeout:?}"),
            )),
        }
    }
}

/// Reads at most `max` bytes of the body; stops reading (and so drops the
/// rest, with the connection) once the cap is reached.
async fn read_capped(
    response: &mut ::reqwest::Response,
    max: usize,
) -> Result<Bytes, TransportError> {
    if max == 0 {
        return Ok(Bytes::new());
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        let room = max.saturating_sub(held);
        if room == 0 {
            break;
        }
        let Some(mut chunk) = response.chunk().await.map_err(transport_error)? else {
            break;
        };
        if chunk.len() > room {
            chunk.truncate(room);
        }
        match first.take() {
            // The common case, one chunk: no copy.
            None if buf.is_empty() => first = Some(chunk),
            Some(earlier) => {
                buf.reserve(earlier.len() + chunk.len());
                buf.extend_from_slice(&earlier);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match first {
        Some(only) => only,
        None => buf.freeze(),
    })
}

// ---------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------

/// Configures a [`ReqwestDispatcher`]; made by [`ReqwestDispatcher::builder`].
///
/// Setters never fail: the first invalid value is kept and reported by
/// [`build`](Self::build).
///
/// # Default
///
/// HTTPS required, no allowlisted networks (every [`BlockedRange`] refused),
/// response bodies read up to [`DEFAULT_MAX_RESPONSE_BODY`], `User-Agent`
/// [`DEFAULT_USER_AGENT`], no client certificate, idle pooled connections
/// closed after 90 seconds, no cap on idle connections per host, at most
/// [`DEFAULT_IDENTITY_CLIENT_CAPACITY`] per-identity clients cached.
pub struct ReqwestDispatcherBuilder {
    allow_http: bool,
    policy: AddressPolicy,
    max_response_body: usize,
    user_agent: HeaderValue,
    identity_pem: Option<Zeroizing<Vec<u8>>>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    identity_client_capacity: usize,
    error: Option<BuildError>,
}

impl ReqwestDispatcherBuilder {
    fn new() -> Self {
        Self {
            allow_http: false,
            policy: AddressPolicy::new(),
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
            identity_pem: None,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            identity_client_capacity: DEFAULT_IDENTITY_CLIENT_CAPACITY,
            error: None,
        }
    }

    fn fail(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
    }

    /// Whether plain `http://` URLs may be sent (default `false`).
    ///
    /// Meant for local development and tests. It does not lift the address
    /// check: a local receiver also needs
    /// [`allow_network`](Self::allow_network).
    #[must_use]
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Permits addresses in `network`, a CIDR range such as `"127.0.0.0/8"`,
    /// `"10.1.0.0/16"` or `"::1/128"` (a bare address means a single host),
    /// even if they are in a [`BlockedRange`].
    ///
    /// An invalid range is reported by [`build`](Self::build) as
    /// [`BuildError::InvalidNetwork`].
    #[must_use]
    pub fn allow_network(mut self, network: &str) -> Self {
        match network.parse::<IpNetwork>() {
            Ok(net) => self.policy = self.policy.allow(net),
            Err(reason) => self.fail(BuildError::InvalidNetwork {
                input: network.to_owned(),
                reason,
            }),
        }
        self
    }

    /// Replaces the address policy (including networks allowed so far).
    #[must_use]
    pub fn address_policy(mut self, policy: AddressPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The most response body bytes to read (default
    /// [`DEFAULT_MAX_RESPONSE_BODY`]); the rest is discarded unread. `0`
    /// reads no body at all.
    #[must_use]
    pub fn max_response_body(mut self, max: usize) -> Self {
        self.max_response_body = max;
        self
    }

    /// The `User-Agent` sent when a request has none (default
    /// [`DEFAULT_USER_AGENT`]).
    ///
    /// Requests built by [`Endpoint::request`](crate::endpoint::Endpoint::request),
    /// and so every request the `Outbox` sends, always carry one: the
    /// endpoint's own `User-Agent` header if it has one among its extra
    /// headers, else `hookway/<version>`. Set it per endpoint there; this
    /// setting applies to requests you build yourself.
    ///
    /// A value that is not a valid header value is reported by
    /// [`build`](Self::build) as [`BuildError::InvalidUserAgent`].
    #[must_use]
    pub fn user_agent(mut self, user_agent: &str) -> Self {
        match HeaderValue::from_str(user_agent) {
            Ok(value) => self.user_agent = value,
            Err(_) => self.fail(BuildError::InvalidUserAgent),
        }
        self
    }

    /// A client certificate for mutual TLS, for every request that does not
    /// carry its own [`ClientIdentity`]: PEM text holding the certificate
    /// chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1; RSA,
    /// ECDSA P-256/P-384 or Ed25519). For a certificate per endpoint, use
    /// [`EndpointBuilder::client_identity`](crate::endpoint::EndpointBuilder::client_identity)
    /// instead (see [Client certificates](self#client-certificates)).
    ///
    /// The bytes are copied, and wiped from the builder's memory when it is
    /// dropped. A certificate or key that is missing, malformed, unsupported
    /// or mismatched is reported by [`build`](Self::build) as
    /// [`BuildError::InvalidIdentity`].
    #[must_use]
    pub fn identity_pem(mut self, cert_and_key_pem: &[u8]) -> Self {
        self.identity_pem = Some(Zeroizing::new(cert_and_key_pem.to_vec()));
        self
    }

    /// How long an idle pooled connection is kept (default 90 seconds;
    /// `None` keeps it until the server closes it).
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per host (default: no limit).
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The most per-[`ClientIdentity`] clients kept at once (default
    /// [`DEFAULT_IDENTITY_CLIENT_CAPACITY`]; `0` counts as `1`). Beyond it,
    /// the one used least recently is dropped, with its idle connections.
    ///
    /// Set it to at least the number of endpoints with their own client
    /// certificate that are sent to concurrently: an evicted identity's
    /// next request builds a new client and makes new TLS handshakes. Each
    /// cached client costs a small struct plus its idle connections.
    #[must_use]
    pub fn identity_client_capacity(mut self, capacity: usize) -> Self {
        self.identity_client_capacity = capacity.max(1);
        self
    }

    /// Builds the dispatcher.
    ///
    /// # Errors
    ///
    /// The first invalid setting ([`BuildError::InvalidNetwork`],
    /// [`BuildError::InvalidUserAgent`], [`BuildError::InvalidIdentity`]), or
    /// [`BuildError::Tls`] / [`BuildError::Client`] if the TLS configuration
    /// or the client cannot be set up (e.g. the system trust store cannot be
    /// read).
    pub fn build(mut self) -> Result<ReqwestDispatcher, BuildError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let tls = tls_config(self.identity_pem.as_deref().map(Vec::as_slice))?;
        let policy = Arc::new(self.policy);
        let factory = ClientFactory {
            tls,
            policy: Arc::clone(&policy),
            allow_http: self.allow_http,
            user_agent: self.user_agent,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
        };
        let client = factory
            .client(factory.tls.clone())
            .map_err(|e| BuildError::Client(Box::new(e.without_url())))?;
        Ok(ReqwestDispatcher {
            client,
            policy,
            allow_http: self.allow_http,
            max_response_body: self.max_response_body,
            identities: Arc::new(IdentityClients::new(factory, self.identity_client_capacity)),
            urls: Arc::new(UrlCache::default()),
        })
    }
}

impl fmt::Debug for ReqwestDispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestDispatcherBuilder")
            .field("allow_http", &self.allow_http)
            .field("policy", &self.policy)
            .field("max_response_body", &self.max_response_body)
            .field("user_agent", &self.user_agent)
            .field(
                "identity_pem",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("identity_client_capacity", &self.identity_client_capacity)
            .field("error", &self.error)
            .finish()
    }
}

/// The rustls configuration: `ring`, TLS 1.2 and 1.3, the platform verifier,
/// an optional client certificate, HTTP/1.1 ALPN.
fn tls_config(identity_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, BuildError> {
    use rustls_platform_verifier::BuilderVerifierExt;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| BuildError::Tls(Box::new(e)))?
        .with_platform_verifier()
        .map_err(|e| BuildError::Tls(Box::new(e)))?;
    let mut config = match identity_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let (certs, key) = parse_identity(pem).map_err(BuildError::InvalidIdentity)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|_| BuildError::InvalidIdentity(IdentityError::Rejected))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn parse_identity(pem: &[u8]) -> Result<Identity, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| IdentityError::MalformedPem)?;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => IdentityError::NoPrivateKey,
        _ => IdentityError::MalformedPem,
    })?;
    if certs.is_empty() {
        return Err(IdentityError::NoCertificate);
    }
    Ok((certs, key))
}

// ---------------------------------------------------------------------------
// Clients: the dispatcher's own, and one per client identity
// ---------------------------------------------------------------------------

/// Everything a client is built from, so that per-identity clients differ
/// from the dispatcher's own only in the client certificate.
struct ClientFactory {
    /// The dispatcher's TLS configuration (with the dispatcher-wide client
    /// certificate, if any).
    tls: rustls::ClientConfig,
    policy: Arc<AddressPolicy>,
    allow_http: bool,
    user_agent: HeaderValue,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
}

impl ClientFactory {
    /// A client with these settings over `tls`. No timeouts are set here:
    /// [`Dispatcher::send`] bounds the whole exchange itself.
    fn client(&self, tls: rustls::ClientConfig) -> Result<::reqwest::Client, ::reqwest::Error> {
        ::reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(!self.allow_http)
            .redirect(::reqwest::redirect::Policy::none())
            .retry(::reqwest::retry::never())
            .no_proxy()
            .referer(false)
            .user_agent(self.user_agent.clone())
            .dns_resolver(GuardedResolver {
                policy: Arc::clone(&self.policy),
            })
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build()
    }

    /// The dispatcher's TLS configuration with `pem`'s certificate as the
    /// client certificate, and a session cache of its own: a session
    /// resumed under another identity would authenticate as that identity.
    fn identity_tls(&self, pem: &[u8]) -> Result<rustls::ClientConfig, IdentityError> {
        let (certs, key) = parse_identity(pem)?;
        let certified = CertifiedKey::from_der(certs, key, self.tls.crypto_provider())
            .map_err(|_| IdentityError::Rejected)?;
        let mut tls = self.tls.clone();
        tls.client_auth_cert_resolver = Arc::new(FixedClientCert(Arc::new(certified)));
        tls.resumption = rustls::client::Resumption::default();
        Ok(tls)
    }
}

/// Always presents the same certificate chain and key.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The per-identity clients, keyed by [`ClientIdentity::id`]: at most
/// `capacity` of them, the least recently used dropped first.
struct IdentityClients {
    factory: ClientFactory,
    capacity: usize,
    cache: Mutex<IdentityCache>,
}

#[derive(Default)]
struct IdentityCache {
    clients: HashMap<String, CachedClient>,
    /// Counts uses: the entry with the lowest `last_used` is the least
    /// recently used.
    clock: u64,
}

struct CachedClient {
    client: ::reqwest::Client,
    last_used: u64,
}

impl IdentityCache {
    /// The cached client for `id`, marked as just used.
    fn get(&mut self, id: &str) -> Option<::reqwest::Client> {
        self.clock += 1;
        let now = self.clock;
        self.clients.get_mut(id).map(|entry| {
            entry.last_used = now;
            entry.client.clone()
        })
    }

    /// Caches `client` for `id`, first dropping the least recently used
    /// entry if `capacity` is reached. A linear scan: it runs only when a
    /// client was just built, which costs far more.
    fn insert(&mut self, id: &str, client: ::reqwest::Client, capacity: usize) {
        if self.clients.len() >= capacity {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.clients.remove(&oldest);
            }
        }
        self.clock += 1;
        let last_used = self.clock;
        self.clients
            .insert(id.to_owned(), CachedClient { client, last_used });
    }
}

impl IdentityClients {
    fn new(factory: ClientFactory, capacity: usize) -> Self {
        Self {
            factory,
            capacity: capacity.max(1),
            cache: Mutex::new(IdentityCache::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdentityCache> {
        // The cache holds no invariant that a panic could leave broken.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// The client for `identity`: cached, or built (outside the lock) and
    /// cached. An unusable PEM is a [`TransportErrorKind::Tls`] error and is
    /// not cached, so an endpoint whose certificate is fixed works on its
    /// next attempt.
    fn client(&self, identity: &ClientIdentity) -> Result<::reqwest::Client, TransportError> {
        if let Some(client) = self.lock().get(identity.id()) {
            return Ok(client);
        }
        let tls = self
            .factory
            .identity_tls(identity.expose_pem())
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Tls,
                    format!("the request's client certificate cannot be used: {e}"),
                )
            })?;
        let client = self.factory.client(tls).map_err(|e| {
            TransportError::new(
                TransportErrorKind::Other,
                format!(
                    "could not build the HTTP client for the request's client certificate: {}",
                    error_message(&e.without_url())
                ),
            )
        })?;
        let mut cache = self.lock();
        // Another request may have built one meanwhile: share its pool.
        if let Some(existing) = cache.get(identity.id()) {
            return Ok(existing);
        }
        cache.insert(identity.id(), client.clone(), self.capacity);
        Ok(client)
    }
}

/// Why [`ReqwestDispatcherBuilder::build`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A network given to
    /// [`allow_network`](ReqwestDispatcherBuilder::allow_network) is not a
    /// valid CIDR range.
    InvalidNetwork {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: InvalidNetwork,
    },
    /// The [`user_agent`](ReqwestDispatcherBuilder::user_agent) is not a
    /// valid header value.
    InvalidUserAgent,
    /// The [client certificate](ReqwestDispatcherBuilder::identity_pem)
    /// cannot be used.
    InvalidIdentity(IdentityError),
    /// The TLS configuration could not be made (the cause is the
    /// [`source`](StdError::source)).
    Tls(Box<dyn StdError + Send + Sync + 'static>),
    /// The HTTP client could not be built (the cause is the
    /// [`source`](StdError::source)).
    Client(Box<dyn StdError + Send + Sync + 'static>),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidNetwork { input, reason } => {
                write!(f, "invalid network {input:?}: {reason}")
            }
            Self::InvalidUserAgent => f.write_str("invalid User-Agent header value"),
            Self::InvalidIdentity(e) => write!(f, "invalid client certificate: {e}"),
            Self::Tls(_) => f.write_str("could not set up TLS"),
            Self::Client(_) => f.write_str("could not build the HTTP client"),
        }
    }
}

impl StdError for BuildError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::InvalidNetwork { reason, .. } => Some(reason),
            Self::InvalidIdentity(e) => Some(e),
            Self::Tls(e) | Self::Client(e) => Some(&**e),
            Self::InvalidUserAgent => None,
        }
    }
}

/// Why a [client certificate](ReqwestDispatcherBuilder::identity_pem) was
/// not accepted. Deliberately coarse: it never quotes key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The PEM text has a malformed section.
    MalformedPem,
    /// No `CERTIFICATE` section was found.
    NoCertificate,
    /// No private key section (`PRIVATE KEY`, `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY`) was found.
    NoPrivateKey,
    /// The key is of an unsupported type, or does not match the certificate.
    Rejected,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MalformedPem => "malformed PEM",
            Self::NoCertificate => "no certificate found in the PEM",
            Self::NoPrivateKey => "no private key found in the PEM",
            Self::Rejected => "the private key is unsupported or does not match the certificate",
        })
    }
}

impl StdError for IdentityError {}

// ---------------------------------------------------------------------------
// The address policy
// ---------------------------------------------------------------------------

/// Which IP addresses outgoing requests may connect to: the SSRF guard.
///
/// Every address in a [`BlockedRange`] is refused, unless it is in one of
/// the allowed networks. IPv6 forms that embed an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:aabb:ccdd::/48`) are judged by the IPv4 address they embed, since
/// that is where they may lead; an allowed network matching either the IPv6
/// address or the embedded IPv4 address permits them.
///
/// Pure and synchronous: [`check`](Self::check) does no IO.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use hookway::adapters::reqwest::{AddressPolicy, BlockedRange, IpNetwork};
///
/// let policy = AddressPolicy::new();
/// let metadata: IpAddr = "169.254.169.254".parse().unwrap();
/// assert_eq!(policy.check(metadata).unwrap_err().range(), BlockedRange::CloudMetadata);
/// assert!(policy.check("93.184.215.14".parse().unwrap()).is_ok());
///
/// let local = AddressPolicy::new().allow("127.0.0.0/8".parse::<IpNetwork>().unwrap());
/// assert!(local.check("127.0.0.1".parse().unwrap()).is_ok());
/// assert!(local.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
/// assert!(local.check("10.0.0.1".parse().unwrap()).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNetwork>,
}

impl AddressPolicy {
    /// The default policy: every [`BlockedRange`] refused, nothing allowed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Permits the addresses in `network`, blocked or not.
    #[must_use]
    pub fn allow(mut self, network: IpNetwork) -> Self {
        if !self.allowed.contains(&network) {
            self.allowed.push(network);
        }
        self
    }

    /// The allowed networks.
    #[must_use]
    pub fn allowed(&self) -> &[IpNetwork] {
        &self.allowed
    }

    /// Whether a connection to `address` is permitted.
    ///
    /// # Errors
    ///
    /// [`BlockedAddress`] if `address` is in a [`BlockedRange`] and no
    /// allowed network contains it.
    pub fn check(&self, address: IpAddr) -> Result<(), BlockedAddress> {
        let Some(blocked) = Self::classify(address) else {
            return Ok(());
        };
        let allowed = self.allowed.iter().any(|net| {
            net.contains(address)
                || blocked
                    .embedded_ipv4()
                    .is_some_and(|v4| net.contains(IpAddr::V4(v4)))
        });
        if allowed {
            Ok(())
        } else {
            Err(blocked)
        }
    }

    /// The blocked range `address` falls in, ignoring any allowlist; `None`
    /// for an address that is refused by default.
    #[must_use]
    pub fn classify(address: IpAddr) -> Option<BlockedAddress> {
        match address {
            IpAddr::V4(v4) => classify_v4(v4).map(|range| BlockedAddress {
                address,
                range,
                embedded: None,
            }),
            IpAddr::V6(v6) => classify_v6(v6),
        }
    }
}

/// Why an address is refused: which [`BlockedRange`] it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockedAddress {
    address: IpAddr,
    range: BlockedRange,
    embedded: Option<Ipv4Addr>,
}

impl BlockedAddress {
    /// The address that was refused.
    #[must_use]
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The range it is in (for an IPv6 form embedding an IPv4 address: the
    /// range of the embedded address).
    #[must_use]
    pub fn range(&self) -> BlockedRange {
        self.range
    }

    /// For an IPv6 address embedding an IPv4 address (mapped, compatible,
    /// translated, NAT64, 6to4): the embedded address, which is what was
    /// judged.
    #[must_use]
    pub fn embedded_ipv4(&self) -> Option<Ipv4Addr> {
        self.embedded
    }
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some(v4) => write!(
                f,
                "{} embeds {v4}, a {} address, which is not allowed",
                self.address, self.range
            ),
            None => write!(
                f,
                "{} is a {} address, which is not allowed",
                self.address, self.range
            ),
        }
    }
}

impl StdError for BlockedAddress {}

/// The address ranges an [`AddressPolicy`] refuses by default.
///
/// Each is either not reachable on the public internet, or reachable only
/// from inside the sender's own network, where a webhook URL chosen by a
/// customer must not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockedRange {
    /// `0.0.0.0` and `::`: on many systems a connection to it reaches the
    /// local host.
    Unspecified,
    /// `0.0.0.0/8` ("this network", RFC 1122), other than `0.0.0.0`.
    ThisNetwork,
    /// `127.0.0.0/8` and `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT shared address space (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16` and `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata services: `169.254.169.254` (AWS, GCP, Azure,
    /// Oracle and others), `169.254.170.2` (AWS ECS task metadata),
    /// `100.100.100.200` (Alibaba Cloud) and `fd00:ec2::254` (AWS, IPv6).
    /// The most valuable target of SSRF: it can hand out credentials.
    CloudMetadata,
    /// `192.0.0.0/24`, IETF protocol assignments (RFC 6890), and
    /// `2001::/23` (including Teredo `2001::/32`).
    ProtocolAssignments,
    /// Documentation examples: `192.0.2.0/24`, `198.51.100.0/24`,
    /// `203.0.113.0/24` (RFC 5737), `2001:db8::/32` (RFC 3849) and
    /// `3fff::/20` (RFC 9637).
    Documentation,
    /// `198.18.0.0/15` (RFC 2544) and `2001:2::/48` (RFC 5180), for
    /// benchmarking.
    Benchmarking,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4` (other than broadcast); `192.88.99.0/24`, the
    /// deprecated 6to4 relay anycast prefix (RFC 7526); and every IPv6
    /// address outside global unicast `2000::/3` not named by another
    /// variant (e.g. the discard prefix `100::/64`, local-use NAT64
    /// `64:ff9b:1::/48`, the SRv6 prefix `5f00::/16`).
    Reserved,
    /// `fc00::/7`, unique local addresses (RFC 4193), the IPv6 counterpart
    /// of private ranges.
    UniqueLocal,
    /// `fec0::/10`, deprecated site-local addresses (RFC 3879), still
    /// routed locally by some stacks.
    SiteLocal,
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "\"this network\"",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedAddressSpace => "shared (carrier-grade NAT)",
            Self::LinkLocal => "link-local",
            Self::CloudMetadata => "cloud metadata",
            Self::ProtocolAssignments => "IETF protocol assignment",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique local",
            Self::SiteLocal => "site-local",
        })
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// IPv4 ranges, most specific first: the first match wins.
const BLOCKED_V4: &[(u32, u8, BlockedRange)] = &[
    (v4(0, 0, 0, 0), 32, BlockedRange::Unspecified),
    (v4(0, 0, 0, 0), 8, BlockedRange::ThisNetwork),
    (v4(10, 0, 0, 0), 8, BlockedRange::Private),
    (v4(100, 100, 100, 200), 32, BlockedRange::CloudMetadata),
    (v4(100, 64, 0, 0), 10, BlockedRange::SharedAddressSpace),
    (v4(127, 0, 0, 0), 8, BlockedRange::Loopback),
    (v4(169, 254, 169, 254), 32, BlockedRange::CloudMetadata),
    (v4(169, 254, 170, 2), 32, BlockedRange::CloudMetadata),
    (v4(169, 254, 0, 0), 16, BlockedRange::LinkLocal),
    (v4(172, 16, 0, 0), 12, BlockedRange::Private),
    (v4(192, 0, 0, 0), 24, BlockedRange::ProtocolAssignments),
    (v4(192, 0, 2, 0), 24, BlockedRange::Documentation),
    (v4(192, 88, 99, 0), 24, BlockedRange::Reserved),
    (v4(192, 168, 0, 0), 16, BlockedRange::Private),
    (v4(198, 18, 0, 0), 15, BlockedRange::Benchmarking),
    (v4(198, 51, 100, 0), 24, BlockedRange::Documentation),
    (v4(203, 0, 113, 0), 24, BlockedRange::Documentation),
    (v4(224, 0, 0, 0), 4, BlockedRange::Multicast),
    (v4(255, 255, 255, 255), 32, BlockedRange::Broadcast),
    (v4(240, 0, 0, 0), 4, BlockedRange::Reserved),
];

/// IPv6 ranges inside or beside global unicast, most specific first.
/// Everything outside `2000::/3` not listed here is [`BlockedRange::Reserved`].
const BLOCKED_V6: &[(u128, u8, BlockedRange)] = &[
    (0, 128, BlockedRange::Unspecified),
    (1, 128, BlockedRange::Loopback),
    (
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
        128,
        BlockedRange::CloudMetadata,
    ),
    (0xfc00 << 112, 7, BlockedRange::UniqueLocal),
    (0xfe80 << 112, 10, BlockedRange::LinkLocal),
    (0xfec0 << 112, 10, BlockedRange::SiteLocal),
    (0xff00 << 112, 8, BlockedRange::Multicast),
    (0x2001_0db8 << 96, 32, BlockedRange::Documentation),
    (0x3fff << 112, 20, BlockedRange::Documentation),
    (0x2001_0002 << 96, 48, BlockedRange::Benchmarking),
    (0x2001 << 112, 23, BlockedRange::ProtocolAssignments),
];

const fn mask_u32(prefix: u8) -> u32 {
    match u32::MAX.checked_shl(32u32.saturating_sub(prefix as u32)) {
        Some(mask) => mask,
        None => 0,
    }
}

const fn mask_u128(prefix: u8) -> u128 {
    match u128::MAX.checked_shl(128u32.saturating_sub(prefix as u32)) {
        Some(mask) => mask,
        None => 0,
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<BlockedRange> {
    let bits = u32::from(address);
    BLOCKED_V4
        .iter()
        .find(|&&(net, prefix, _)| bits & mask_u32(prefix) == net)
        .map(|&(_, _, range)| range)
}

/// The IPv4 address an IPv6 address embeds, for the forms that can lead to
/// an IPv4 destination. `::` and `::1` are not embeddings.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(address);
    let low = Ipv4Addr::from(bits as u32);
    let top96 = bits >> 32;
    match top96 {
        // ::ffff:a.b.c.d, IPv4-mapped (RFC 4291).
        0xffff => Some(low),
        // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765).
        0xffff_0000 => Some(low),
        // ::a.b.c.d, IPv4-compatible (deprecated, RFC 4291).
        0 if bits > 1 => Some(low),
        // 64:ff9b::a.b.c.d, well-known NAT64 prefix (RFC 6052).
        0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        // 2002:aabb:ccdd::/48, 6to4 (RFC 3056).
        _ if bits >> 112 == 0x2002 => Some(Ipv4Addr::from((bits >> 80) as u32)),
        _ => None,
    }
}

fn classify_v6(address: Ipv6Addr) -> Option<BlockedAddress> {
    let blocked = |range| BlockedAddress {
        address: IpAddr::V6(address),
        range,
        embedded: None,
    };
    if let Some(v4) = embedded_v4(address) {
        return classify_v4(v4).map(|range| BlockedAddress {
            address: IpAddr::V6(address),
            range,
            embedded: Some(v4),
        });
    }
    let bits = u128::from(address);
    if let Some(&(_, _, range)) = BLOCKED_V6
        .iter()
        .find(|&&(net, prefix, _)| bits & mask_u128(prefix) == net)
    {
        return Some(blocked(range));
    }
    // Global unicast is 2000::/3; nothing else is allocated for it.
    if bits >> 125 != 0b001 {
        return Some(blocked(BlockedRange::Reserved));
    }
    None
}

/// A CIDR range of IP addresses, such as `10.0.0.0/8` or `fd00::/8`.
///
/// Parsed from `address/prefix-length`, or from a bare address (a single
/// host). Bits beyond the prefix must be zero, so a typo such as
/// `10.0.0.1/8` is caught rather than silently widened.
///
/// # Examples
///
/// ```
/// use hookway::adapters::reqwest::IpNetwork;
///
/// let net: IpNetwork = "192.168.0.0/16".parse().unwrap();
/// assert!(net.contains("192.168.4.2".parse().unwrap()));
/// assert!(!net.contains("192.169.0.1".parse().unwrap()));
/// assert_eq!(net.to_string(), "192.168.0.0/16");
/// assert!("10.0.0.1/8".parse::<IpNetwork>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    address: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// The network of `address` with the first `prefix_len` bits fixed.
    ///
    /// # Errors
    ///
    /// [`InvalidNetwork::PrefixTooLong`] if `prefix_len` exceeds 32 (IPv4)
    /// or 128 (IPv6); [`InvalidNetwork::HostBitsSet`] if `address` has bits
    /// set beyond the prefix.
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, InvalidNetwork> {
        let host_bits_set = match address {
            IpAddr::V4(v4) => {
                if prefix_len > 32 {
                    return Err(InvalidNetwork::PrefixTooLong);
                }
                u32::from(v4) & !mask_u32(prefix_len) != 0
            }
            IpAddr::V6(v6) => {
                if prefix_len > 128 {
                    return Err(InvalidNetwork::PrefixTooLong);
                }
                u128::from(v6) & !mask_u128(prefix_len) != 0
            }
        };
        if host_bits_set {
            return Err(InvalidNetwork::HostBitsSet);
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }

    /// The first address of the network.
    #[must_use]
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The number of fixed leading bits.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `address` is in this network. An IPv4 network contains no
    /// IPv6 address and the reverse ([`AddressPolicy`] handles IPv6 forms of
    /// IPv4 addresses itself).
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_u32(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_u128(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = InvalidNetwork;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let address: IpAddr = addr.parse().map_err(|_| InvalidNetwork::Syntax)?;
        let prefix_len = match prefix {
            None => match address {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| InvalidNetwork::PrefixTooLong)?
            }
            Some(_) => return Err(InvalidNetwork::Syntax),
        };
        Self::new(address, prefix_len)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Why a text or value is not a valid [`IpNetwork`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidNetwork {
    /// Not `address/prefix-length` or a bare address.
    Syntax,
    /// The prefix length exceeds the address size (32 or 128 bits).
    PrefixTooLong,
    /// The address has bits set beyond the prefix (e.g. `10.0.0.1/8`;
    /// write `10.0.0.0/8`).
    HostBitsSet,
}

impl fmt::Display for InvalidNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "expected an IP address with an optional /prefix-length",
            Self::PrefixTooLong => "the prefix length is longer than the address",
            Self::HostBitsSet => "the address has bits set beyond the prefix length",
        })
    }
}

impl StdError for InvalidNetwork {}

// ---------------------------------------------------------------------------
// The resolver: the check on the addresses actually connected to
// ---------------------------------------------------------------------------

/// Resolves with the system resolver (getaddrinfo, via tokio), then keeps
/// only the addresses the policy permits. The connector dials only what this
/// returns, so the check applies to the real destination.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(ResolveError {
                        kind: TransportErrorKind::Dns,
                        message: e.to_string(),
                    }) as Box<dyn StdError + Send + Sync>
                })?;
            let permitted = permitted_addrs(&policy, addrs)?;
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// The permitted addresses among `addrs`, in order; an error if none is.
fn permitted_addrs(
    policy: &AddressPolicy,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let mut permitted = Vec::new();
    let mut first_blocked = None;
    let mut blocked = 0usize;
    for addr in addrs {
        match policy.check(addr.ip()) {
            Ok(()) => permitted.push(addr),
            Err(why) => {
                blocked += 1;
                first_blocked.get_or_insert(why);
            }
        }
    }
    match (permitted.is_empty(), first_blocked) {
        (false, _) => Ok(permitted),
        (true, None) => Err(ResolveError {
            kind: TransportErrorKind::Dns,
            message: "the host name resolved to no address".to_owned(),
        }),
        (true, Some(why)) => Err(ResolveError {
            kind: TransportErrorKind::RefusedByPolicy,
            message: if blocked == 1 {
                why.to_string()
            } else {
                format!("all {blocked} resolved addresses are blocked; {why}")
            },
        }),
    }
}

/// The resolver's error; found again in reqwest's error chain to pick the
/// [`TransportErrorKind`].
#[derive(Debug)]
struct ResolveError {
    kind: TransportErrorKind,
    message: String,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ResolveError {}

// ---------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------

fn refused(message: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::RefusedByPolicy, message)
}

fn transport_error(error: ::reqwest::Error) -> TransportError {
    let error = error.without_url();
    TransportError::new(error_kind(&error), error_message(&error))
}

/// A kind decided by one error in the chain, if it decides one.
fn decisive_kind(error: &(dyn StdError + 'static)) -> Option<TransportErrorKind> {
    if let Some(e) = error.downcast_ref::<ResolveError>() {
        return Some(e.kind);
    }
    if error.downcast_ref::<rustls::Error>().is_some() {
        return Some(TransportErrorKind::Tls);
    }
    if let Some(e) = error.downcast_ref::<hyper::Error>() {
        // The peer closed or reset the connection mid-exchange.
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            return Some(TransportErrorKind::Connect);
        }
    }
    None
}

/// Calls `visit` on `error` and each of its causes, looking inside
/// `io::Error`s too: `io::Error::source` skips the error it wraps, and the
/// TLS stack wraps rustls errors in (nested) `io::Error`s.
fn for_each_cause(
    error: &(dyn StdError + 'static),
    depth: usize,
    visit: &mut dyn FnMut(&(dyn StdError + 'static)),
) {
    if depth == 0 {
        return;
    }
    visit(error);
    let wrapped = error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref);
    if let Some(inner) = wrapped {
        // The inner error's own causes are what `io::Error::source` gives.
        for_each_cause(inner, depth - 1, visit);
    } else if let Some(source) = error.source() {
        for_each_cause(source, depth - 1, visit);
    }
}

fn error_kind(error: &::reqwest::Error) -> TransportErrorKind {
    let mut decided = None;
    let mut io_kind = None;
    for_each_cause(error, 32, &mut |cause| {
        if decided.is_none() {
            decided = decisive_kind(cause);
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
    });
    if let Some(kind) = decided {
        return kind;
    }
    if error.is_timeout() || io_kind == Some(io::ErrorKind::TimedOut) {
        return TransportErrorKind::Timeout;
    }
    if error.is_connect() {
        return TransportErrorKind::Connect;
    }
    match io_kind {
        Some(
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof,
        ) => TransportErrorKind::Connect,
        _ => TransportErrorKind::Other,
    }
}

/// The error and its causes, joined by `": "` (the URL already removed).
fn error_message(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut next = error.source();
    while let Some(current) = next {
        let text = current.to_string();
        if !text.is_empty() && !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        next = current.source();
    }
    message
}

// ---------------------------------------------------------------------------
// Tests (no network: the policy, parsing and mapping only)
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range_of(s: &str) -> Option<BlockedRange> {
        AddressPolicy::classify(ip(s)).map(|b| b.range())
    }

    #[test]
    fn ipv4_blocked_classes() {
        use BlockedRange::*;
        let cases: &[(&str, BlockedRange)] = &[
            ("0.0.0.0", Unspecified),
            ("0.0.0.1", ThisNetwork),
            ("0.255.255.255", ThisNetwork),
            ("10.0.0.0", Private),
            ("10.255.255.255", Private),
            ("172.16.0.0", Private),
            ("172.31.255.255", Private),
            ("192.168.0.0", Private),
            ("192.168.255.255", Private),
            ("100.64.0.0", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("100.100.100.200", CloudMetadata),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("169.254.0.0", LinkLocal),
            ("169.254.255.255", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("169.254.170.2", CloudMetadata),
            ("192.0.0.0", ProtocolAssignments),
            ("192.0.0.192", ProtocolAssignments),
            ("192.0.0.255", ProtocolAssignments),
            ("192.0.2.1", Documentation),
            ("198.51.100.255", Documentation),
            ("203.0.113.0", Documentation),
            ("198.18.0.0", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.88.99.1", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.0", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
        ];
        for &(addr, expected) in cases {
            assert_eq!(range_of(addr), Some(expected), "{addr}");
        }
    }

    #[test]
    fn ipv4_public_and_range_edges_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.88.98.255",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ] {
            assert_eq!(range_of(addr), None, "{addr}");
            assert!(AddressPolicy::new().check(ip(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn every_ipv4_table_range_is_blocked_at_both_ends() {
        for &(net, prefix, range) in BLOCKED_V4 {
            let first = Ipv4Addr::from(net);
            let last = Ipv4Addr::from(net | !mask_u32(prefix));
            for addr in [first, last] {
                let got = AddressPolicy::classify(IpAddr::V4(addr)).map(|b| b.range());
                assert!(got.is_some(), "{addr} in {range:?}");
            }
            // The first address maps to the range itself, except where a
            // more specific entry (`0.0.0.0`) comes first.
            if range != BlockedRange::ThisNetwork {
                assert_eq!(classify_v4(first), Some(range), "{first}");
            }
        }
    }

    #[test]
    fn ipv6_blocked_classes() {
        use BlockedRange::*;
        let cases: &[(&str, BlockedRange)] = &[
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("3fff:fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("2001::1", ProtocolAssignments),
            ("2001:1ff::1", ProtocolAssignments),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("5f00::1", Reserved),
            ("4000::1", Reserved),
            ("1::1", Reserved),
            ("::1:0:0:0", Reserved),
        ];
        for &(addr, expected) in cases {
            let blocked = AddressPolicy::classify(ip(addr));
            assert_eq!(blocked.map(|b| b.range()), Some(expected), "{addr}");
            assert_eq!(blocked.and_then(|b| b.embedded_ipv4()), None, "{addr}");
        }
    }

    #[test]
    fn ipv6_global_unicast_and_range_edges_pass() {
        for addr in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "2000::1",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "3ffe::1",
            "3fff:1000::1",
            "3fff:ffff::1",
        ] {
            assert_eq!(range_of(addr), None, "{addr}");
        }
        // A neighbour of the IPv6 metadata address is still unique local.
        assert_eq!(range_of("fd00:ec2::253"), Some(BlockedRange::UniqueLocal));
    }

    #[test]
    fn every_ipv6_table_range_is_blocked_at_both_ends() {
        for &(net, prefix, range) in BLOCKED_V6 {
            let first = Ipv6Addr::from(net);
            let last = Ipv6Addr::from(net | !mask_u128(prefix));
            assert_eq!(
                AddressPolicy::classify(IpAddr::V6(first)).map(|b| b.range()),
                Some(range),
                "{first}"
            );
            assert!(
                AddressPolicy::classify(IpAddr::V6(last)).is_some(),
                "{last} in {range:?}"
            );
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_are_judged_by_the_ipv4_address() {
        use BlockedRange::*;
        let embeddings: &[fn(&str) -> String] = &[
            |v4| format!("::ffff:{v4}"),
            |v4| format!("::ffff:0:{v4}"),
            |v4| format!("::{v4}"),
            |v4| format!("64:ff9b::{v4}"),
            |v4| {
                let o = v4.parse::<Ipv4Addr>().unwrap().octets();
                format!("2002:{:02x}{:02x}:{:02x}{:02x}::1", o[0], o[1], o[2], o[3])
            },
        ];
        let blocked: &[(&str, BlockedRange)] = &[
            ("127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("169.254.169.254", CloudMetadata),
            ("169.254.1.1", LinkLocal),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Documentation),
            ("198.18.0.1", Benchmarking),
            ("192.0.0.8", ProtocolAssignments),
        ];
        for embed in embeddings {
            for &(v4, range) in blocked {
                // `::0.0.0.0` is `::` itself, `::0.0.0.1` is `::1`.
                let v6 = embed(v4);
                let got = AddressPolicy::classify(ip(&v6)).unwrap();
                if v6 == "::0.0.0.0" {
                    assert_eq!(got.range(), Unspecified);
                    continue;
                }
                assert_eq!(got.range(), range, "{v6}");
                assert_eq!(got.embedded_ipv4(), Some(v4.parse().unwrap()), "{v6}");
                assert_eq!(got.address(), ip(&v6));
            }
            // A public IPv4 address in any of these forms passes.
            let v6 = embed("93.184.215.14");
            assert_eq!(range_of(&v6), None, "{v6}");
        }
    }

    #[test]
    fn allowlist_overrides_exactly_its_networks() {
        let policy = AddressPolicy::new()
            .allow("127.0.0.0/8".parse().unwrap())
            .allow("::1/128".parse().unwrap())
            .allow("10.1.0.0/16".parse().unwrap())
            .allow("fd12:3456::/32".parse().unwrap());
        for ok in [
            "127.0.0.1",
            "127.255.255.255",
            "::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "10.1.200.3",
            "::ffff:10.1.0.1",
            "fd12:3456:1::1",
            "8.8.8.8",
        ] {
            assert!(policy.check(ip(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "10.2.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd12:3457::1",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
        ] {
            let err = policy.check(ip(refused)).unwrap_err();
            assert_eq!(err.address(), ip(refused));
        }
        // Allowing everything allows everything.
        let open = AddressPolicy::new()
            .allow("0.0.0.0/0".parse().unwrap())
            .allow("::/0".parse().unwrap());
        for addr in [
            "127.0.0.1",
            "169.254.169.254",
            "fd00:ec2::254",
            "ff02::1",
            "::",
        ] {
            assert!(open.check(ip(addr)).is_ok(), "{addr}");
        }
        // An allowance for the metadata address alone.
        let metadata = AddressPolicy::new().allow("169.254.169.254".parse().unwrap());
        assert!(metadata.check(ip("169.254.169.254")).is_ok());
        assert!(metadata.check(ip("169.254.169.253")).is_err());
    }

    #[test]
    fn blocked_address_messages() {
        let err = AddressPolicy::new().check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.0.0.1 is a private address, which is not allowed"
        );
        let err = AddressPolicy::new()
            .check(ip("::ffff:169.254.169.254"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "::ffff:169.254.169.254 embeds 169.254.169.254, a cloud metadata address, which is not allowed"
        );
    }

    #[test]
    fn network_parsing() {
        let net: IpNetwork = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.address(), ip("10.0.0.0"));
        assert_eq!(net.prefix_len(), 8);
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert_eq!("::1".parse::<IpNetwork>().unwrap().prefix_len(), 128);
        assert_eq!("1.2.3.4".parse::<IpNetwork>().unwrap().prefix_len(), 32);
        assert_eq!("0.0.0.0/0".parse::<IpNetwork>().unwrap().prefix_len(), 0);
        assert_eq!("::/0".parse::<IpNetwork>().unwrap().prefix_len(), 0);
        assert_eq!(
            "fd00::/8".parse::<IpNetwork>().unwrap().to_string(),
            "fd00::/8"
        );
        for (bad, why) in [
            ("", InvalidNetwork::Syntax),
            ("10.0.0.0/", InvalidNetwork::Syntax),
            ("10.0.0.0/+8", InvalidNetwork::Syntax),
            ("10.0.0.0/-8", InvalidNetwork::Syntax),
            ("10.0.0.0/8/8", InvalidNetwork::Syntax),
            ("10.0.0.0/ 8", InvalidNetwork::Syntax),
            (" 10.0.0.0/8", InvalidNetwork::Syntax),
            ("10.0.0.0/0008", InvalidNetwork::Syntax),
            ("[::1]/128", InvalidNetwork::Syntax),
            ("localhost", InvalidNetwork::Syntax),
            ("10.0.0/8", InvalidNetwork::Syntax),
            ("10.0.0.0/33", InvalidNetwork::PrefixTooLong),
            ("10.0.0.0/999", InvalidNetwork::PrefixTooLong),
            ("::/129", InvalidNetwork::PrefixTooLong),
            ("10.0.0.1/8", InvalidNetwork::HostBitsSet),
            ("fd00::1/8", InvalidNetwork::HostBitsSet),
        ] {
            assert_eq!(bad.parse::<IpNetwork>(), Err(why), "{bad:?}");
        }
        assert_eq!(
            IpNetwork::new(ip("10.0.0.0"), 40),
            Err(InvalidNetwork::PrefixTooLong)
        );
    }

    #[test]
    fn network_membership() {
        let v4: IpNetwork = "172.16.0.0/12".parse().unwrap();
        assert!(v4.contains(ip("172.16.0.0")));
        assert!(v4.contains(ip("172.31.255.255")));
        assert!(!v4.contains(ip("172.32.0.0")));
        assert!(!v4.contains(ip("::ffff:172.16.0.1")));
        let v6: IpNetwork = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::")));
        assert!(!v6.contains(ip("32.1.13.184")));
        let host: IpNetwork = "::1".parse().unwrap();
        assert!(host.contains(ip("::1")));
        assert!(!host.contains(ip("::2")));
    }

    #[test]
    fn resolver_keeps_only_permitted_addresses() {
        let policy = AddressPolicy::new();
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.5:0".parse().unwrap();
        let metadata: SocketAddr = "[fd00:ec2::254]:0".parse().unwrap();

        // DNS rebinding style answers: the blocked ones are dropped.
        let kept = permitted_addrs(&policy, [private, public, metadata]).unwrap();
        assert_eq!(kept, vec![public]);

        // A name resolving only to private addresses is refused.
        let err = permitted_addrs(&policy, [private, metadata]).unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::RefusedByPolicy);
        assert!(err.message.contains("10.0.0.5"), "{}", err.message);
        assert!(err.message.starts_with("all 2 resolved"), "{}", err.message);

        let err = permitted_addrs(&policy, [private]).unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::RefusedByPolicy);

        // No answer at all is a DNS failure.
        let err = permitted_addrs(&policy, []).unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Dns);

        // The allowlist applies.
        let allowed = AddressPolicy::new().allow("10.0.0.0/8".parse().unwrap());
        assert_eq!(
            permitted_addrs(&allowed, [private, metadata]).unwrap(),
            vec![private]
        );
    }

    #[test]
    fn error_kinds_from_the_chain() {
        fn kinds(error: &(dyn StdError + 'static)) -> Vec<TransportErrorKind> {
            let mut found = Vec::new();
            for_each_cause(error, 32, &mut |cause| found.extend(decisive_kind(cause)));
            found
        }
        // A rustls error in an io::Error in an io::Error, as tokio-rustls and
        // hyper-rustls make.
        let inner = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let outer = io::Error::other(inner);
        assert_eq!(decisive_kind(&outer), None);
        assert_eq!(kinds(&outer), vec![TransportErrorKind::Tls]);
        let resolve = ResolveError {
            kind: TransportErrorKind::RefusedByPolicy,
            message: String::new(),
        };
        assert_eq!(kinds(&resolve), vec![TransportErrorKind::RefusedByPolicy]);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(kinds(&refused).is_empty());
        // The depth bound holds.
        let mut calls = 0;
        for_each_cause(&outer, 1, &mut |_| calls += 1);
        assert_eq!(calls, 1);
    }

    #[test]
    fn identity_parsing() {
        assert_eq!(
            parse_identity(b"not pem").unwrap_err(),
            IdentityError::NoPrivateKey
        );
        assert_eq!(
            parse_identity(b"").unwrap_err(),
            IdentityError::NoPrivateKey
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(
            parse_identity(broken).unwrap_err(),
            IdentityError::MalformedPem
        );
        let unterminated = b"-----BEGIN PRIVATE KEY-----\nAAAA\n";
        assert_eq!(
            parse_identity(unterminated).unwrap_err(),
            IdentityError::MalformedPem
        );
    }

    #[test]
    fn builder_reports_the_first_error() {
        let err = ReqwestDispatcher::builder()
            .allow_network("10.0.0.1/8")
            .user_agent("bad\nvalue")
            .build()
            .unwrap_err();
        match err {
            BuildError::InvalidNetwork { input, reason } => {
                assert_eq!(input, "10.0.0.1/8");
                assert_eq!(reason, InvalidNetwork::HostBitsSet);
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = ReqwestDispatcher::builder()
            .user_agent("bad\nvalue")
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::InvalidUserAgent), "{err:?}");
    }

    #[test]
    fn builder_debug_redacts_the_identity() {
        let builder =
            ReqwestDispatcher::builder().identity_pem(b"-----BEGIN PRIVATE KEY-----SECRET");
        let debug = format!("{builder:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    // The same throwaway self-signed P-256 pair as in
    // tests/reqwest_dispatcher.rs; nothing trusts it.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUaCvpeDgmb8qT5k0fUzNdVH7HR64wCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTaG9va3dheSB0ZXN0IGNsaWVudDAgFw0yNjExMjMwMDA0NTRa
GA8yMTI2MTAzMDAwMDQ1NFowHjEcMBoGA1UEAwwTaG9va3dheSB0ZXN0IGNsaWVu
dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJH/fW7sDA29MPputyq1p2UFLa8g
9u8FX8Ys9ojsVAO25Laxa0rd7fwi9areuZamfQIlOM7Ymd4pS1lT2Y072qGjUzBR
MB0GA1UdDgQWBBSaSG9IPqpDXu9+q5SkILjhcrXeDzAfBgNVHSMEGDAWgBSaSG9I
PqpDXu9+q5SkILjhcrXeDzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIEGIy6oocE13GaJo/5FYXU8Apr4mF1JK/G6gNUpJMRWTAiEAlnoiYp2KsIs9
EbxVhI81sXeGqP09D7T3+XBRJGvJ7+k=
-----END CERTIFICATE-----
";

    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgpXfUaNJbJzUJK8at
4H4YULDAXjauy/3zrmVFcgSmBLahRANCAASR/31u7AwNvTD6brcqtadlBS2vIPbv
BV/GLPaI7FQDtuS2sWtK3e38IvWq3rmWpn0CJTjO2JneKUtZU9mNO9qh
-----END PRIVATE KEY-----
";

    /// Three byte-distinct PEMs of the same valid pair: three ids.
    fn three_identities() -> [ClientIdentity; 3] {
        [
            ClientIdentity::from_pem(format!("{TEST_CERT}{TEST_KEY}")),
            ClientIdentity::from_pem(format!("{TEST_KEY}{TEST_CERT}")),
            ClientIdentity::from_pem(format!("{TEST_CERT}\n{TEST_KEY}")),
        ]
    }

    #[test]
    fn an_identity_config_differs_from_the_base_only_in_the_client_certificate() {
        let dispatcher = ReqwestDispatcher::builder().build().unwrap();
        let factory = &dispatcher.identities.factory;
        let base = &factory.tls;
        assert!(!base.client_auth_cert_resolver.has_certs());

        let [identity, ..] = three_identities();
        let tls = factory.identity_tls(identity.expose_pem()).unwrap();
        assert!(tls.client_auth_cert_resolver.has_certs());
        let presented = tls.client_auth_cert_resolver.resolve(&[], &[]).unwrap();
        let expected = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        assert_eq!(presented.cert, vec![expected]);
        assert_eq!(tls.alpn_protocols, base.alpn_protocols);
        assert!(Arc::ptr_eq(tls.crypto_provider(), base.crypto_provider()));
        assert_eq!(tls.enable_sni, base.enable_sni);

        // A dispatcher-wide certificate is in the base configuration.
        let wide = ReqwestDispatcher::builder()
            .identity_pem(format!("{TEST_CERT}{TEST_KEY}").as_bytes())
            .build()
            .unwrap();
        assert!(wide
            .identities
            .factory
            .tls
            .client_auth_cert_resolver
            .has_certs());
    }

    #[test]
    fn an_unusable_identity_is_a_tls_error_and_is_not_cached() {
        let dispatcher = ReqwestDispatcher::builder().build().unwrap();
        for pem in [
            TEST_CERT.to_owned(),
            TEST_KEY.to_owned(),
            "garbage".to_owned(),
            format!("{}{TEST_KEY}", TEST_CERT.replace("MIIB", "!!!!")),
        ] {
            let identity = ClientIdentity::from_pem(pem.clone());
            let err = dispatcher.identities.client(&identity).unwrap_err();
            assert_eq!(err.kind(), TransportErrorKind::Tls, "{err}");
            assert!(err.message().contains("client certificate"), "{err}");
            assert!(!err.message().contains("BEGIN"), "{err}");
            assert!(!err.message().contains("MIGHAgEA"), "{err}");
        }
        assert_eq!(dispatcher.cached_identity_clients(), 0);
    }

    #[test]
    fn the_identity_cache_drops_the_least_recently_used() {
        let dispatcher = ReqwestDispatcher::builder()
            .identity_client_capacity(2)
            .build()
            .unwrap();
        let [a, b, c] = three_identities();
        let cached = |identity: &ClientIdentity| {
            dispatcher
                .identities
                .lock()
                .clients
                .contains_key(identity.id())
        };
        dispatcher.identities.client(&a).unwrap();
        dispatcher.identities.client(&b).unwrap();
        // Using `a` again makes `b` the least recently used.
        dispatcher.identities.client(&a).unwrap();
        dispatcher.identities.client(&c).unwrap();
        assert_eq!(dispatcher.cached_identity_clients(), 2);
        assert!(cached(&a) && cached(&c) && !cached(&b));
        // `b` comes back, and `a` (now the oldest) goes.
        dispatcher.identities.client(&b).unwrap();
        assert!(cached(&b) && cached(&c) && !cached(&a));
    }
}
