//! OAuth2 client credentials ([RFC 6749 §4.4]): fetching, caching and
//! refreshing the bearer token of an
//! [`Auth::OAuth2ClientCredentials`] endpoint.
//!
//! # Why a cache, and why a margin
//!
//! A sender delivering thousands of events to one endpoint must not ask the
//! token endpoint for a fresh token each time: [`TokenCache`] keeps each
//! client's token and hands it out until [`margin`](TokenCache::with_margin)
//! (60 s by default) before it expires, so a token never runs out while a
//! request carrying it is still on the wire. A receiver may still revoke a
//! token early; the delivery engine then gets a 401 and follows the
//! *refresh once on a 401* rule:
//!
//! 1. take a token with [`TokenCache::token`] and send the request;
//! 2. on a 401, call [`TokenCache::invalidate`] with the token that failed,
//!    take a token again (this fetches a new one) and send once more;
//! 3. a second 401 is an ordinary failed attempt: no further refresh.
//!
//! `invalidate` only drops the cached token if it is still the one that
//! failed, so when many workers see the same 401, the first one's refetch
//! serves all the others.
//!
//! # Concurrency
//!
//! `TokenCache` is `Send + Sync`; share it with an `Arc`. It is runtime
//! agnostic: no tokio, just a `std::sync::Mutex` that is never held across
//! an `.await`. While one caller fetches a client's token, other callers
//! asking for the same client wait for that fetch (woken through their
//! task's `Waker`) instead of sending their own: one expired token costs one
//! request to the token endpoint, not one per worker. If the fetch fails,
//! the callers that waited for it get the same error; if the fetching
//! future is dropped (cancelled, e.g. by a timeout around it), one of the
//! waiters takes over.
//!
//! # Which tokens are shared
//!
//! Tokens are cached per token URL, client id, scope **and client secret**.
//! Keying on the secret as well matters for a sender serving many
//! customers: otherwise an endpoint configured with someone else's token URL
//! and client id (client ids are rarely secret) but a wrong secret would be
//! handed that client's cached token — and send it to its own URL.
//!
//! # Secrets
//!
//! The client secret and the tokens are [`Credential`]s: redacted in `Debug`
//! and `Display`, wiped from memory on drop. No [`TokenError`] carries
//! either: response bodies are reduced to the RFC 6749 `error` code, and
//! parse failures are static descriptions. The token request itself
//! necessarily holds the secret (the `Authorization` header, marked
//! sensitive, or the body); `http` and `bytes` cannot wipe those copies.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use hookway::endpoint::Credential;
//! use hookway::oauth::{ClientCredentials, TokenCache};
//! use hookway::testing::{Reply, ScriptedDispatcher};
//! use time::macros::datetime;
//!
//! let token_url = "https://auth.example.com/oauth/token";
//! let dispatcher = ScriptedDispatcher::new()
//!     .reply_for(token_url, Reply::status(200).body(
//!         r#"{"access_token":"tok_1","token_type":"Bearer","expires_in":3600}"#,
//!     ))
//!     .reply_for(token_url, Reply::status(200).body(
//!         r#"{"access_token":"tok_2","token_type":"Bearer","expires_in":3600}"#,
//!     ));
//! let client = ClientCredentials::new(
//!     token_url.parse()?,
//!     "hookway-sender",
//!     Credential::new("client-secret"),
//! )?
//! .with_scope("webhooks:write");
//! let cache = TokenCache::new();
//! let timeout = Duration::from_secs(10);
//! let now = datetime!(2026-01-01 12:00 UTC);
//!
//! # let run = async {
//! let token = cache.token(&dispatcher, &client, now, timeout).await?;
//! assert_eq!(token.expose(), "tok_1");
//!
//! // Half an hour later the token is still good: no second request.
//! let later = now + time::Duration::minutes(30);
//! assert_eq!(cache.token(&dispatcher, &client, later, timeout).await?, token);
//! assert_eq!(dispatcher.requests_for(token_url).len(), 1);
//!
//! // The endpoint answered 401 with it: drop it and fetch once more.
//! assert!(cache.invalidate(&client, &token));
//! let fresh = cache.token(&dispatcher, &client, later, timeout).await?;
//! assert_eq!(fresh.expose(), "tok_2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # };
//! # block_on(run)?;
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     // The scripted dispatcher's futures are ready at once.
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     match f.as_mut().poll(&mut cx) { std::task::Poll::Ready(v) => v, _ => unreachable!() }
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [RFC 6749 §4.4]: https://www.rfc-editor.org/rfc/rfc6749#section-4.4

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::dispatch::{Dispatcher, TransportError};
use crate::endpoint::{Auth, Credential, DEFAULT_USER_AGENT};

/// How long before its expiry a cached token stops being handed out, unless
/// configured otherwise: 60 seconds.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);

/// The lifetime assumed for a token whose response has no `expires_in`
/// (RFC 6749 makes the field optional), unless configured otherwise:
/// 5 minutes. Short on purpose: a token that lives longer is merely fetched
/// again sooner than needed, while one assumed to live too long would be
/// refused by the receiver (and then refreshed by the 401 rule).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The longest `error` code kept from an error response; longer ones are
/// dropped as not being RFC 6749 error codes.
const MAX_ERROR_CODE_LEN: usize = 128;

/// Why no token could be had.
///
/// No variant carries the client secret, a token, or any text of a token
/// response other than the RFC 6749 `error` code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token request got no HTTP response.
    #[error("token request failed: {0}")]
    Transport(TransportError),
    /// The token endpoint refused: a non-2xx status, or a 2xx response
    /// carrying an `error` and no token.
    #[error("token endpoint answered {status}{}", error_suffix(.error))]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The RFC 6749 §5.2 `error` code (e.g. `invalid_client`), if the
        /// body had a well-formed one.
        error: Option<String>,
    },
    /// A 2xx response that is not a usable token response.
    #[error("invalid token response: {0}")]
    InvalidResponse(&'static str),
    /// The client settings cannot work (e.g. a token URL that is not an
    /// absolute `http` or `https` URL).
    #[error("invalid OAuth2 client settings: {0}")]
    InvalidConfig(&'static str),
}

fn error_suffix(error: &Option<String>) -> String {
    match error {
        Some(error) => format!(" ({error})"),
        None => String::new(),
    }
}

impl From<TransportError> for TokenError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`): `Authorization: Basic` with the
    /// client id and secret, each form-urlencoded first as RFC 6749 §2.3.1
    /// requires. Every authorization server must support it.
    #[default]
    Basic,
    /// In the request body (`client_secret_post`): `client_id` and
    /// `client_secret` form fields. For servers that do not support Basic,
    /// or that do not decode the form-urlencoded id and secret inside it
    /// (a common bug when they contain characters such as `:` or `+`).
    RequestBody,
}

/// Identifies one client's tokens in the cache. Includes the secret; see
/// [the module docs](self#which-tokens-are-shared).
#[derive(Clone, PartialEq, Eq)]
struct TokenKey {
    token_url: Uri,
    client_id: String,
    client_secret: Credential,
    scope: Option<String>,
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.token_url.hash(state);
        self.client_id.hash(state);
        self.client_secret.expose().hash(state);
        self.scope.hash(state);
    }
}

/// One OAuth2 client: where to get tokens and how to authenticate there.
///
/// ```
/// use hookway::endpoint::{Auth, Credential};
/// use hookway::oauth::{ClientAuth, ClientCredentials};
///
/// let auth = Auth::OAuth2ClientCredentials {
///     token_url: "https://auth.example.com/token".parse()?,
///     client_id: "sender".into(),
///     client_secret: Credential::new("s3cret"),
///     scope: Some("webhooks".into()),
/// };
/// let client = ClientCredentials::try_from(&auth)?.with_client_auth(ClientAuth::RequestBody);
/// assert_eq!(client.client_id(), "sender");
/// assert_eq!(client.scope(), Some("webhooks"));
/// // The secret stays out of debug output.
/// assert!(!format!("{client:?}").contains("s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    key: TokenKey,
    client_auth: ClientAuth,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.key.token_url)
            .field("client_id", &self.key.client_id)
            .field("client_secret", &self.key.client_secret)
            .field("scope", &self.key.scope)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

impl ClientCredentials {
    /// A client that gets its tokens from `token_url`, authenticating with
    /// HTTP Basic ([`ClientAuth::Basic`]) and asking for no particular
    /// scope.
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidConfig`] if `token_url` is not an absolute
    /// `http` or `https` URL with a host. (Whether plain `http` may be used
    /// is the dispatcher's policy, as for webhook requests.)
    pub fn new(
        token_url: Uri,
        client_id: impl Into<String>,
        client_secret: Credential,
    ) -> Result<Self, TokenError> {
        match token_url.scheme_str() {
            Some("https" | "http") => {}
            _ => {
                return Err(TokenError::InvalidConfig(
                    "the token URL's scheme must be http or https",
                ))
            }
        }
        if token_url.host().is_none_or(str::is_empty) {
            return Err(TokenError::InvalidConfig("the token URL has no host"));
        }
        Ok(Self {
            key: TokenKey {
                token_url,
                client_id: client_id.into(),
                client_secret,
                scope: None,
            },
            client_auth: ClientAuth::default(),
        })
    }

    /// Asks for `scope` (space-separated scope tokens); an empty string
    /// means none.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.key.scope = (!scope.is_empty()).then_some(scope);
        self
    }

    /// How to authenticate to the token endpoint (default:
    /// [`ClientAuth::Basic`]).
    #[must_use]
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Uri {
        &self.key.token_url
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.key.client_id
    }

    /// The scope requested, if any.
    pub fn scope(&self) -> Option<&str> {
        self.key.scope.as_deref()
    }

    /// How the client authenticates to the token endpoint.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The token request: `POST` to the token URL with
    /// `Content-Type: application/x-www-form-urlencoded`,
    /// `Accept: application/json`, hookway's `User-Agent`, and the body
    /// `grant_type=client_credentials`, then `&scope=…` if a scope is set,
    /// then — with [`ClientAuth::RequestBody`] — `&client_id=…&client_secret=…`;
    /// with [`ClientAuth::Basic`], an `Authorization: Basic` header (marked
    /// sensitive) instead.
    ///
    /// Pure: [`TokenCache::token`] sends it through a
    /// [`Dispatcher`]; it is public for callers with their own cache and for
    /// inspection in tests.
    ///
    /// ```
    /// use hookway::endpoint::Credential;
    /// use hookway::oauth::ClientCredentials;
    ///
    /// // The example client of RFC 6749 §4.4.2.
    /// let client = ClientCredentials::new(
    ///     "https://server.example.com/token".parse()?,
    ///     "s6BhdRkqt3",
    ///     Credential::new("gX1fBat3bV"),
    /// )?;
    /// let request = client.token_request();
    /// assert_eq!(request.method(), "POST");
    /// assert_eq!(request.headers()["authorization"], "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW");
    /// assert_eq!(&request.body()[..], b"grant_type=client_credentials");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token_request(&self) -> http::Request<Bytes> {
        let key = &self.key;
        let secret = key.client_secret.expose();
        // Room for the worst case (every byte percent-encoded), so the
        // buffers holding the secret never reallocate and leave copies.
        let capacity = 64
            + 3 * (key.scope.as_ref().map_or(0, String::len) + key.client_id.len() + secret.len());
        let mut body = Zeroizing::new(String::with_capacity(capacity));
        body.push_str("grant_type=client_credentials");
        if let Some(scope) = &key.scope {
            body.push_str("&scope=");
            form_urlencode(&mut body, scope);
        }
        let mut request = http::Request::new(Bytes::new());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = key.token_url.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(DEFAULT_USER_AGENT),
        );
        match self.client_auth {
            ClientAuth::Basic => {
                use base64::Engine as _;
                let mut pair = Zeroizing::new(String::with_capacity(capacity));
                form_urlencode(&mut pair, &key.client_id);
                pair.push(':');
                form_urlencode(&mut pair, secret);
                let mut value = Zeroizing::new(String::with_capacity(8 + 4 * capacity / 3));
                value.push_str("Basic ");
                base64::engine::general_purpose::STANDARD
                    .encode_string(pair.as_bytes(), &mut value);
                // Base64 is always a valid header value.
                if let Ok(mut value) = HeaderValue::from_str(&value) {
                    value.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, value);
                }
            }
            ClientAuth::RequestBody => {
                body.push_str("&client_id=");
                form_urlencode(&mut body, &key.client_id);
                body.push_str("&client_secret=");
                form_urlencode(&mut body, secret);
            }
        }
        *request.body_mut() = Bytes::copy_from_slice(body.as_bytes());
        request
    }

    /// Reads the token endpoint's answer to [`token_request`](Self::token_request),
    /// received at or after `now`.
    ///
    /// A 2xx JSON body with a non-empty `access_token` (usable in a header),
    /// a `token_type` of `Bearer` (in any case) and an optional `expires_in`
    /// in seconds (a non-negative number, or a string of digits as some
    /// servers send) gives a [`Token`] expiring `expires_in` after `now`, or
    /// `default_lifetime` after it if `expires_in` is absent or `null`.
    /// Other fields (`scope`, `refresh_token`, …) are ignored.
    ///
    /// # Errors
    ///
    /// - [`TokenError::Status`] for a non-2xx status, with the RFC 6749
    ///   §5.2 `error` code if the body has a well-formed one (not longer
    ///   than 128 characters, RFC 6749 characters only, not containing the
    ///   client secret); also for a 2xx body with an `error` and no token;
    /// - [`TokenError::InvalidResponse`] for anything else that is not a
    ///   usable bearer token.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::endpoint::Credential;
    /// use hookway::oauth::{ClientCredentials, TokenError, DEFAULT_LIFETIME};
    /// use time::macros::datetime;
    ///
    /// let client = ClientCredentials::new(
    ///     "https://auth.example.com/token".parse()?,
    ///     "sender",
    ///     Credential::new("s3cret"),
    /// )?;
    /// let now = datetime!(2026-01-01 12:00 UTC);
    /// let ok = http::Response::new(r#"{"access_token":"t","token_type":"bearer"}"#.into());
    /// let token = client.parse_response(&ok, now, DEFAULT_LIFETIME)?;
    /// assert_eq!(token.access_token().expose(), "t");
    /// assert_eq!(token.expires_at(), datetime!(2026-01-01 12:05 UTC));
    ///
    /// let mut refused = http::Response::new(r#"{"error":"invalid_client"}"#.into());
    /// *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
    /// assert_eq!(
    ///     client.parse_response(&refused, now, DEFAULT_LIFETIME).unwrap_err(),
    ///     TokenError::Status { status: http::StatusCode::UNAUTHORIZED, error: Some("invalid_client".into()) },
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_response(
        &self,
        response: &http::Response<Bytes>,
        now: OffsetDateTime,
        default_lifetime: Duration,
    ) -> Result<Token, TokenError> {
        let status = response.status();
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorBody>(response.body())
                .ok()
                .and_then(|body| self.error_code(body.error));
            return Err(TokenError::Status { status, error });
        }
        // serde_json's messages may quote the body: keep them out.
        let raw: RawToken = serde_json::from_slice(response.body())
            .map_err(|_| TokenError::InvalidResponse("the body is not a JSON token object"))?;
        // Into a `Credential` at once, so every path below wipes it.
        let access_token = raw.access_token.map(Credential::new);
        let Some(access_token) = access_token else {
            if raw.error.is_some() {
                return Err(TokenError::Status {
                    status,
                    error: self.error_code(raw.error),
                });
            }
            return Err(TokenError::InvalidResponse("no access_token"));
        };
        if access_token.expose().is_empty() {
            return Err(TokenError::InvalidResponse("empty access_token"));
        }
        if HeaderValue::from_str(access_token.expose()).is_err() {
            return Err(TokenError::InvalidResponse(
                "access_token is not valid in an HTTP header",
            ));
        }
        match raw.token_type.as_deref() {
            Some(token_type) if token_type.eq_ignore_ascii_case("bearer") => {}
            Some(_) => return Err(TokenError::InvalidResponse("token_type is not Bearer")),
            None => return Err(TokenError::InvalidResponse("no token_type")),
        }
        let lifetime = match raw.expires_in {
            None => default_lifetime,
            Some(expires_in) => expires_in.seconds().ok_or(TokenError::InvalidResponse(
                "expires_in is not a non-negative number of seconds",
            ))?,
        };
        Ok(Token {
            access_token,
            expires_at: add(now, lifetime),
        })
    }

    /// The `error` code worth keeping from a refusal: RFC 6749 §5.2
    /// characters only, bounded, and never an echo of the secret.
    fn error_code(&self, error: Option<String>) -> Option<String> {
        let error = error?;
        let secret = self.key.client_secret.expose();
        let well_formed = !error.is_empty()
            && error.len() <= MAX_ERROR_CODE_LEN
            && error
                .bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
        (well_formed && (secret.is_empty() || !error.contains(secret))).then_some(error)
    }
}

impl TryFrom<&Auth> for ClientCredentials {
    type Error = TokenError;

    /// The client of an [`Auth::OAuth2ClientCredentials`], authenticating
    /// with HTTP Basic; [`TokenError::InvalidConfig`] for any other kind of
    /// authentication or an invalid token URL.
    fn try_from(auth: &Auth) -> Result<Self, TokenError> {
        match auth {
            Auth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let client =
                    Self::new(token_url.clone(), client_id.clone(), client_secret.clone())?;
                Ok(match scope {
                    Some(scope) => client.with_scope(scope.clone()),
                    None => client,
                })
            }
            _ => Err(TokenError::InvalidConfig(
                "not OAuth2 client credentials authentication",
            )),
        }
    }
}

/// Appends `value` form-urlencoded (the WHATWG `application/x-www-form-urlencoded`
/// byte serializer): ASCII letters, digits and `*-._` as they are, space
/// as `+`, every other byte as `%XX`.
fn form_urlencode(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        match byte {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xF)]));
            }
        }
    }
}

/// `now + lifetime`, saturating at the end of time.
fn add(now: OffsetDateTime, lifetime: Duration) -> OffsetDateTime {
    now.saturating_add(time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX))
}

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<ExpiresIn>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Integer(u64),
    Float(f64),
    Text(String),
}

impl ExpiresIn {
    fn seconds(&self) -> Option<Duration> {
        match self {
            Self::Integer(seconds) => Some(Duration::from_secs(*seconds)),
            Self::Float(seconds) => Duration::try_from_secs_f64(seconds.trunc()).ok(),
            Self::Text(text) => {
                let text = text.trim();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)))
            }
        }
    }
}

/// An access token and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    access_token: Credential,
    expires_at: OffsetDateTime,
}

impl Token {
    /// The bearer token.
    pub fn access_token(&self) -> &Credential {
        &self.access_token
    }

    /// When the token endpoint said it expires (counted from the `now` the
    /// request was made at, so a little early rather than late).
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// The bearer token, consuming the `Token`.
    pub fn into_access_token(self) -> Credential {
        self.access_token
    }
}

/// Caches OAuth2 client-credentials tokens, fetching them through a
/// [`Dispatcher`] when missing or about to expire. See the
/// [module docs](self) for the 401 rule, concurrency and what is shared.
///
/// # Default
///
/// [`DEFAULT_MARGIN`] (60 s) and [`DEFAULT_LIFETIME`] (5 minutes).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use hookway::oauth::TokenCache;
///
/// let cache = Arc::new(TokenCache::new().with_margin(Duration::from_secs(30)));
/// assert_eq!(cache.margin(), Duration::from_secs(30));
/// ```
pub struct TokenCache {
    inner: Mutex<Inner>,
    margin: Duration,
    default_lifetime: Duration,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<TokenKey, Slot>,
    next_flight: u64,
}

#[derive(Default)]
struct Slot {
    token: Option<Cached>,
    flight: Option<Flight>,
    /// The flight that failed last, and why, for the callers that waited
    /// for it.
    failure: Option<(u64, TokenError)>,
}

struct Cached {
    token: Credential,
    /// Handed out while `now` is before this.
    refresh_at: OffsetDateTime,
}

/// A fetch in progress, and who waits for it.
struct Flight {
    id: u64,
    waiters: Vec<Waker>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("margin", &self.margin)
            .field("default_lifetime", &self.default_lifetime)
            .field("clients", &self.lock().slots.len())
            .finish()
    }
}

/// What [`TokenCache::token`] does next, decided under the lock.
enum Step {
    Ready(Credential),
    Failed(TokenError),
    Wait(u64),
    Fetch(u64),
}

impl TokenCache {
    /// An empty cache with the [defaults](Self#default).
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            margin: DEFAULT_MARGIN,
            default_lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Stops handing out a token `margin` before it expires (default:
    /// [`DEFAULT_MARGIN`]). For a token whose lifetime is under twice the
    /// margin, half its lifetime is used instead, so short-lived tokens are
    /// still reused rather than fetched for every request.
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The lifetime assumed when a token response has no `expires_in`
    /// (default: [`DEFAULT_LIFETIME`]).
    #[must_use]
    pub fn with_default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// How long before expiry a token stops being handed out.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The lifetime assumed when a response has no `expires_in`.
    pub fn default_lifetime(&self) -> Duration {
        self.default_lifetime
    }

    /// `client`'s token at `now`: the cached one if it is good until past
    /// `now` + margin, else a new one from the token endpoint (sent through
    /// `dispatcher` with `timeout`), which is then cached.
    ///
    /// While another caller is fetching `client`'s token, this waits for
    /// that fetch and shares its result (token or error) instead of
    /// sending a second request. No lock is held across an `.await`.
    ///
    /// # Errors
    ///
    /// A [`TokenError`] if the token could not be fetched; nothing is
    /// cached then, and the next call tries again.
    pub async fn token<D: Dispatcher>(
        &self,
        dispatcher: &D,
        client: &ClientCredentials,
        now: OffsetDateTime,
        timeout: Duration,
    ) -> Result<Credential, TokenError> {
        let mut waited_for = None;
        loop {
            match self.next_step(client, now, waited_for) {
                Step::Ready(token) => return Ok(token),
                Step::Failed(error) => return Err(error),
                Step::Wait(flight) => {
                    Wait {
                        cache: self,
                        key: &client.key,
                        flight,
                    }
                    .await;
                    waited_for = Some(flight);
                }
                Step::Fetch(flight) => {
                    let guard = FlightGuard {
                        cache: self,
                        key: &client.key,
                        flight,
                        landed: false,
                    };
                    let result = self.fetch(dispatcher, client, now, timeout).await;
                    return guard.land(result, now);
                }
            }
        }
    }

    /// Drops `client`'s cached token if it is still `failed` — the token an
    /// endpoint just answered 401 to — so the next [`token`](Self::token)
    /// fetches a new one. Returns whether it did.
    ///
    /// A token that was already replaced (another worker saw the 401 first
    /// and refetched) stays, so many workers failing with the same token
    /// cause one refetch, not one each.
    pub fn invalidate(&self, client: &ClientCredentials, failed: &Credential) -> bool {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(&client.key) else {
            return false;
        };
        if slot
            .token
            .as_ref()
            .is_some_and(|cached| cached.token == *failed)
        {
            slot.token = None;
            true
        } else {
            false
        }
    }

    /// Forgets `client`'s token (e.g. when its endpoint is deleted or its
    /// settings change). A fetch in progress still completes and caches its
    /// result.
    pub fn remove(&self, client: &ClientCredentials) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&client.key) {
            if slot.flight.is_some() {
                slot.token = None;
                slot.failure = None;
            } else {
                inner.slots.remove(&client.key);
            }
        }
    }

    /// Forgets every token. Fetches in progress still complete and cache
    /// their results.
    pub fn clear(&self) {
        self.lock().slots.retain(|_, slot| {
            slot.token = None;
            slot.failure = None;
            slot.flight.is_some()
        });
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_step(
        &self,
        client: &ClientCredentials,
        now: OffsetDateTime,
        waited_for: Option<u64>,
    ) -> Step {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(slot) = inner.slots.get_mut(&client.key) {
            if let Some(cached) = &slot.token {
                if now < cached.refresh_at {
                    return Step::Ready(cached.token.clone());
                }
            }
            if let Some(flight) = &slot.flight {
                return Step::Wait(flight.id);
            }
            if let (Some(waited), Some((failed, error))) = (waited_for, &slot.failure) {
                if waited == *failed {
                    return Step::Failed(error.clone());
                }
            }
        }
        let id = inner.next_flight;
        inner.next_flight = inner.next_flight.wrapping_add(1);
        inner.slots.entry(client.key.clone()).or_default().flight = Some(Flight {
            id,
            waiters: Vec::new(),
        });
        Step::Fetch(id)
    }

    async fn fetch<D: Dispatcher>(
        &self,
        dispatcher: &D,
        client: &ClientCredentials,
        now: OffsetDateTime,
        timeout: Duration,
    ) -> Result<Token, TokenError> {
        let response = dispatcher.send(client.token_request(), timeout).await?;
        client.parse_response(&response, now, self.default_lifetime)
    }

    /// When a token expiring at `expires_at`, fetched at `now`, stops
    /// being handed out.
    fn refresh_at(&self, now: OffsetDateTime, expires_at: OffsetDateTime) -> OffsetDateTime {
        let lifetime = expires_at - now;
        let margin = time::Duration::try_from(self.margin).unwrap_or(time::Duration::MAX);
        expires_at.saturating_sub(margin.min(lifetime / 2))
    }
}

/// Waits until flight `flight` of `key` is over.
struct Wait<'a> {
    cache: &'a TokenCache,
    key: &'a TokenKey,
    flight: u64,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.cache.lock();
        match inner
            .slots
            .get_mut(self.key)
            .and_then(|slot| slot.flight.as_mut())
        {
            Some(flight) if flight.id == self.flight => {
                if !flight.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    flight.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

/// Ends flight `flight` of `key`: with its result via [`land`](Self::land),
/// or — if the fetching future is dropped — without one, so a waiter takes
/// over.
struct FlightGuard<'a> {
    cache: &'a TokenCache,
    key: &'a TokenKey,
    flight: u64,
    landed: bool,
}

impl FlightGuard<'_> {
    fn land(
        mut self,
        result: Result<Token, TokenError>,
        now: OffsetDateTime,
    ) -> Result<Credential, TokenError> {
        let waiters = {
            let mut inner = self.cache.lock();
            let slot = inner.slots.entry(self.key.clone()).or_default();
            let waiters = take_waiters(slot, self.flight);
            match &result {
                Ok(token) => {
                    slot.token = Some(Cached {
                        token: token.access_token.clone(),
                        refresh_at: self.cache.refresh_at(now, token.expires_at),
                    });
                    slot.failure = None;
                }
                Err(error) => slot.failure = Some((self.flight, error.clone())),
            }
            waiters
        };
        self.landed = true;
        waiters.into_iter().for_each(Waker::wake);
        result.map(Token::into_access_token)
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if self.landed {
            return;
        }
        let waiters = {
            let mut inner = self.cache.lock();
            match inner.slots.get_mut(self.key) {
                Some(slot) => take_waiters(slot, self.flight),
                None => Vec::new(),
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Ends `flight` in `slot` if it is still the current one, returning its
/// waiters (to be woken once the lock is released).
fn take_waiters(slot: &mut Slot, flight: u64) -> Vec<Waker> {
    match slot.flight.take() {
        Some(current) if current.id == flight => current.waiters,
        other => {
            slot.flight = other;
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_urlencoding_follows_whatwg() {
        let mut out = String::new();
        form_urlencode(&mut out, "aZ09*-._ ~:/+%&=é");
        assert_eq!(out, "aZ09*-._+%7E%3A%2F%2B%25%26%3D%C3%A9");
    }

    #[test]
    fn expires_in_forms() {
        let secs = |json: &str| serde_json::from_str::<ExpiresIn>(json).unwrap().seconds();
        assert_eq!(secs("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(secs("3600.9"), Some(Duration::from_secs(3600)));
        assert_eq!(secs("\"3600\""), Some(Duration::from_secs(3600)));
        assert_eq!(secs("-1"), None);
        assert_eq!(secs("\"soon\""), None);
        assert_eq!(secs("\"\""), None);
    }
}
