//! OAuth2 client credentials: the token request, caching until expiry minus
//! the margin, the 401 rule, errors, secrecy and concurrent callers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use hookway::clock::{Clock, ManualClock};
use hookway::dispatch::{Dispatcher, TransportError, TransportErrorKind};
use hookway::endpoint::{Auth, Credential};
use hookway::oauth::{
    ClientAuth, ClientCredentials, TokenCache, TokenError, DEFAULT_LIFETIME, DEFAULT_MARGIN,
};
use hookway::testing::{Reply, ScriptedDispatcher};
use http::StatusCode;
use time::macros::datetime;
use time::OffsetDateTime;

const START: OffsetDateTime = datetime!(2026-03-15 10:30 UTC);
const TOKEN_URL: &str = "https://auth.example.com/oauth/token";
const SECRET: &str = "sup3r-s3cret-value";
const TIMEOUT: Duration = Duration::from_secs(7);

/// Polls a future that must be ready at once (the scripted dispatcher's
/// are).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future was not ready"),
    }
}

fn sender() -> ClientCredentials {
    ClientCredentials::new(
        TOKEN_URL.parse().unwrap(),
        "sender",
        Credential::new(SECRET),
    )
    .unwrap()
}

fn token_reply(token: &str, expires_in: Option<u64>) -> Reply {
    let body = match expires_in {
        Some(secs) => {
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{secs}}}"#)
        }
        None => format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#),
    };
    Reply::status(200)
        .header("content-type", "application/json")
        .body(body)
}

fn json_reply(status: u16, body: &'static str) -> Reply {
    Reply::status(status)
        .header("content-type", "application/json")
        .body(body)
}

fn get(
    cache: &TokenCache,
    dispatcher: &ScriptedDispatcher,
    client: &ClientCredentials,
    now: OffsetDateTime,
) -> Result<Credential, TokenError> {
    block_on(cache.token(dispatcher, client, now, TIMEOUT))
}

fn header<'a>(request: &'a http::Request<Bytes>, name: &str) -> &'a str {
    request.headers()[name].to_str().unwrap()
}

// ---------------------------------------------------------------- requests

#[test]
fn request_shape_matches_rfc_6749_example() {
    // RFC 6749 §4.4.2: client s6BhdRkqt3 / gX1fBat3bV.
    let client = ClientCredentials::new(
        "https://server.example.com/token".parse().unwrap(),
        "s6BhdRkqt3",
        Credential::new("gX1fBat3bV"),
    )
    .unwrap();
    let dispatcher =
        ScriptedDispatcher::new().reply(token_reply("2YotnFZFEjr1zCsicMWpAA", Some(3600)));
    let cache = TokenCache::new();
    let token = get(&cache, &dispatcher, &client, START).unwrap();
    assert_eq!(token.expose(), "2YotnFZFEjr1zCsicMWpAA");

    let recorded = dispatcher.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].timeout, TIMEOUT);
    let request = &recorded[0].request;
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), "https://server.example.com/token");
    assert_eq!(
        header(request, "content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(header(request, "accept"), "application/json");
    assert!(header(request, "user-agent").starts_with("hookway/"));
    assert_eq!(
        header(request, "authorization"),
        "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"
    );
    assert!(request.headers()["authorization"].is_sensitive());
    assert_eq!(&request.body()[..], b"grant_type=client_credentials");
}

#[test]
fn basic_credentials_and_scope_are_form_urlencoded() {
    let client = ClientCredentials::new(
        TOKEN_URL.parse().unwrap(),
        "client id:1",
        Credential::new("p@ss w/rd~+é"),
    )
    .unwrap()
    .with_scope("read:hooks write");
    let request = client.token_request();
    // base64("client+id%3A1:p%40ss+w%2Frd%7E%2B%C3%A9")
    assert_eq!(
        header(&request, "authorization"),
        "Basic Y2xpZW50K2lkJTNBMTpwJTQwc3MrdyUyRnJkJTdFJTJCJUMzJUE5"
    );
    assert_eq!(
        &request.body()[..],
        b"grant_type=client_credentials&scope=read%3Ahooks+write"
    );
}

#[test]
fn credentials_can_go_in_the_body_instead() {
    let client = ClientCredentials::new(
        TOKEN_URL.parse().unwrap(),
        "client id",
        Credential::new("a&b=c"),
    )
    .unwrap()
    .with_scope("hooks")
    .with_client_auth(ClientAuth::RequestBody);
    assert_eq!(client.client_auth(), ClientAuth::RequestBody);
    let dispatcher = ScriptedDispatcher::new().reply(token_reply("t", Some(3600)));
    get(&TokenCache::new(), &dispatcher, &client, START).unwrap();
    let request = &dispatcher.requests()[0].request;
    assert!(request.headers().get("authorization").is_none());
    assert_eq!(
        header(request, "content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        &request.body()[..],
        b"grant_type=client_credentials&scope=hooks&client_id=client+id&client_secret=a%26b%3Dc"
    );
}

#[test]
fn empty_scope_means_none() {
    let client = sender().with_scope("");
    assert_eq!(client.scope(), None);
    assert_eq!(
        &client.token_request().body()[..],
        b"grant_type=client_credentials"
    );
}

#[test]
fn settings_come_from_endpoint_auth() {
    let auth = Auth::OAuth2ClientCredentials {
        token_url: TOKEN_URL.parse().unwrap(),
        client_id: "sender".into(),
        client_secret: Credential::new(SECRET),
        scope: Some("webhooks".into()),
    };
    let client = ClientCredentials::try_from(&auth).unwrap();
    assert_eq!(client.token_url(), TOKEN_URL);
    assert_eq!(client.client_id(), "sender");
    assert_eq!(client.scope(), Some("webhooks"));
    assert_eq!(client.client_auth(), ClientAuth::Basic);
    assert_eq!(client, sender().with_scope("webhooks"));

    assert!(matches!(
        ClientCredentials::try_from(&Auth::Bearer(Credential::new("x"))),
        Err(TokenError::InvalidConfig(_))
    ));
}

#[test]
fn token_url_must_be_absolute_http() {
    for url in ["/token", "ftp://auth.example.com/token"] {
        assert!(
            matches!(
                ClientCredentials::new(url.parse().unwrap(), "id", Credential::new(SECRET)),
                Err(TokenError::InvalidConfig(_))
            ),
            "{url}"
        );
    }
    assert!(ClientCredentials::new(
        "http://localhost:8080/t".parse().unwrap(),
        "id",
        Credential::new(SECRET)
    )
    .is_ok());
}

// ----------------------------------------------------------------- caching

#[test]
fn token_is_cached_until_expiry_minus_margin() {
    assert_eq!(DEFAULT_MARGIN, Duration::from_secs(60));
    let clock = ManualClock::new(START);
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", Some(3600)))
        .reply(token_reply("second", Some(3600)));
    let cache = TokenCache::new();
    let client = sender();

    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "first"
    );
    // Good until 3600 − 60 = 3540 s after it was fetched.
    clock.advance(Duration::from_secs(3539));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "first"
    );
    assert_eq!(dispatcher.requests().len(), 1);

    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "second"
    );
    assert_eq!(dispatcher.requests().len(), 2);
    // And the new one is cached from its own fetch time.
    clock.advance(Duration::from_secs(3539));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "second"
    );
    assert_eq!(dispatcher.requests().len(), 2);
}

#[test]
fn margin_is_configurable() {
    let clock = ManualClock::new(START);
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", Some(600)))
        .reply(token_reply("second", Some(600)));
    let cache = TokenCache::new().with_margin(Duration::from_secs(10));
    assert_eq!(cache.margin(), Duration::from_secs(10));
    let client = sender();

    get(&cache, &dispatcher, &client, clock.now()).unwrap();
    clock.advance(Duration::from_secs(589));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "first"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "second"
    );
}

#[test]
fn short_lived_tokens_are_reused_for_half_their_life() {
    // 60 s lifetime, 60 s margin: reused for 30 s rather than never.
    let clock = ManualClock::new(START);
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", Some(60)))
        .reply(token_reply("second", Some(60)));
    let cache = TokenCache::new();
    let client = sender();
    get(&cache, &dispatcher, &client, clock.now()).unwrap();
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "first"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "second"
    );
}

#[test]
fn missing_expires_in_means_the_default_lifetime() {
    assert_eq!(DEFAULT_LIFETIME, Duration::from_secs(300));
    let clock = ManualClock::new(START);
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", None))
        .reply(token_reply("second", None));
    let cache = TokenCache::new();
    let client = sender();
    get(&cache, &dispatcher, &client, clock.now()).unwrap();
    // 300 − 60 = 240 s.
    clock.advance(Duration::from_secs(239));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "first"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get(&cache, &dispatcher, &client, clock.now())
            .unwrap()
            .expose(),
        "second"
    );

    let token = client
        .parse_response(
            &http::Response::new(
                r#"{"access_token":"t","token_type":"Bearer","expires_in":null}"#.into(),
            ),
            START,
            Duration::from_secs(42),
        )
        .unwrap();
    assert_eq!(token.expires_at(), START + time::Duration::seconds(42));
}

#[test]
fn default_lifetime_is_configurable() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", None))
        .reply(token_reply("second", None));
    let cache = TokenCache::new().with_default_lifetime(Duration::from_secs(3600));
    assert_eq!(cache.default_lifetime(), Duration::from_secs(3600));
    let client = sender();
    get(&cache, &dispatcher, &client, START).unwrap();
    let later = START + time::Duration::seconds(3539);
    assert_eq!(
        get(&cache, &dispatcher, &client, later).unwrap().expose(),
        "first"
    );
}

#[test]
fn expires_in_as_a_string_is_accepted() {
    let response = http::Response::new(
        r#"{"access_token":"t","token_type":"bearer","expires_in":"3600","scope":"x"}"#.into(),
    );
    let token = sender()
        .parse_response(&response, START, DEFAULT_LIFETIME)
        .unwrap();
    assert_eq!(token.expires_at(), START + time::Duration::hours(1));
}

#[test]
fn tokens_are_shared_only_by_identical_clients() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("a", Some(3600)))
        .reply(token_reply("b", Some(3600)))
        .reply(token_reply("c", Some(3600)))
        .reply(token_reply("d", Some(3600)));
    let cache = TokenCache::new();
    let base = sender();
    assert_eq!(
        get(&cache, &dispatcher, &base, START).unwrap().expose(),
        "a"
    );
    // A clone, or the same client sending its secret in the body: shared.
    assert_eq!(
        get(&cache, &dispatcher, &base.clone(), START)
            .unwrap()
            .expose(),
        "a"
    );
    let in_body = sender().with_client_auth(ClientAuth::RequestBody);
    assert_eq!(
        get(&cache, &dispatcher, &in_body, START).unwrap().expose(),
        "a"
    );
    assert_eq!(dispatcher.requests().len(), 1);

    // Another scope, client id or secret: a token of its own. The secret
    // matters: an endpoint naming someone else's client id with a wrong
    // secret must never be handed their token.
    let scoped = sender().with_scope("other");
    assert_eq!(
        get(&cache, &dispatcher, &scoped, START).unwrap().expose(),
        "b"
    );
    let other_id = ClientCredentials::new(
        TOKEN_URL.parse().unwrap(),
        "someone",
        Credential::new(SECRET),
    )
    .unwrap();
    assert_eq!(
        get(&cache, &dispatcher, &other_id, START).unwrap().expose(),
        "c"
    );
    let wrong_secret = ClientCredentials::new(
        TOKEN_URL.parse().unwrap(),
        "sender",
        Credential::new("guess"),
    )
    .unwrap();
    assert_eq!(
        get(&cache, &dispatcher, &wrong_secret, START)
            .unwrap()
            .expose(),
        "d"
    );
    assert_eq!(dispatcher.requests().len(), 4);
}

#[test]
fn remove_and_clear_forget_tokens() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("a", Some(3600)))
        .reply(token_reply("b", Some(3600)))
        .reply(token_reply("c", Some(3600)));
    let cache = TokenCache::new();
    let client = sender();
    assert_eq!(
        get(&cache, &dispatcher, &client, START).unwrap().expose(),
        "a"
    );
    cache.remove(&client);
    assert_eq!(
        get(&cache, &dispatcher, &client, START).unwrap().expose(),
        "b"
    );
    cache.clear();
    assert_eq!(
        get(&cache, &dispatcher, &client, START).unwrap().expose(),
        "c"
    );
}

// ------------------------------------------------------------ the 401 rule

#[test]
fn invalidate_then_refetch() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", Some(3600)))
        .reply(token_reply("second", Some(3600)));
    let cache = TokenCache::new();
    let client = sender();
    let first = get(&cache, &dispatcher, &client, START).unwrap();

    // The endpoint answered 401 with `first`.
    assert!(cache.invalidate(&client, &first));
    let second = get(&cache, &dispatcher, &client, START).unwrap();
    assert_eq!(second.expose(), "second");
    assert_eq!(dispatcher.requests().len(), 2);
    // Cached again.
    assert_eq!(get(&cache, &dispatcher, &client, START).unwrap(), second);
    assert_eq!(dispatcher.requests().len(), 2);
}

#[test]
fn invalidate_with_a_stale_token_does_nothing() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(token_reply("first", Some(3600)))
        .reply(token_reply("second", Some(3600)));
    let cache = TokenCache::new();
    let client = sender();
    let first = get(&cache, &dispatcher, &client, START).unwrap();

    // Two workers got 401 with `first`; the first one refreshes...
    assert!(cache.invalidate(&client, &first));
    let second = get(&cache, &dispatcher, &client, START).unwrap();
    // ... and the second one's invalidation keeps the new token.
    assert!(!cache.invalidate(&client, &first));
    assert_eq!(get(&cache, &dispatcher, &client, START).unwrap(), second);
    assert_eq!(dispatcher.requests().len(), 2);

    // Nothing cached for a client: nothing to do.
    let other = client.clone().with_scope("x");
    assert!(!cache.invalidate(&other, &second));
}

// ------------------------------------------------------------------ errors

#[test]
fn error_status_carries_the_rfc_6749_error_code() {
    let dispatcher = ScriptedDispatcher::new().reply(json_reply(
        401,
        r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
    ));
    let cache = TokenCache::new();
    let error = get(&cache, &dispatcher, &sender(), START).unwrap_err();
    assert_eq!(
        error,
        TokenError::Status {
            status: StatusCode::UNAUTHORIZED,
            error: Some("invalid_client".into()),
        }
    );
    assert_eq!(
        error.to_string(),
        "token endpoint answered 401 Unauthorized (invalid_client)"
    );
}

#[test]
fn error_status_without_a_usable_error_code() {
    let cases: &[(u16, &'static str)] = &[
        (500, ""),
        (502, "<html>Bad Gateway</html>"),
        (400, r#"{"error":42}"#),
        (400, r#"{"error":""}"#),
        (400, r#"{"error":"bad \"quote\""}"#),
        (400, r#"{"error":"line\nbreak"}"#),
    ];
    for &(status, body) in cases {
        let dispatcher = ScriptedDispatcher::new().reply(json_reply(status, body));
        let error = get(&TokenCache::new(), &dispatcher, &sender(), START).unwrap_err();
        assert_eq!(
            error,
            TokenError::Status {
                status: StatusCode::from_u16(status).unwrap(),
                error: None,
            },
            "{status} {body}"
        );
    }
    let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(129));
    let response = {
        let mut response = http::Response::new(Bytes::from(long));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response
    };
    assert_eq!(
        sender().parse_response(&response, START, DEFAULT_LIFETIME),
        Err(TokenError::Status {
            status: StatusCode::BAD_REQUEST,
            error: None
        })
    );
}

#[test]
fn an_error_code_echoing_the_secret_is_dropped() {
    let body = format!(r#"{{"error":"invalid_client {SECRET}"}}"#);
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let error = sender()
        .parse_response(&response, START, DEFAULT_LIFETIME)
        .unwrap_err();
    assert_eq!(
        error,
        TokenError::Status {
            status: StatusCode::UNAUTHORIZED,
            error: None
        }
    );
}

#[test]
fn ok_status_with_an_error_body_is_a_refusal() {
    // Some servers (GitHub's among them) answer 200 with an error object.
    let dispatcher =
        ScriptedDispatcher::new().reply(json_reply(200, r#"{"error":"invalid_scope"}"#));
    let error = get(&TokenCache::new(), &dispatcher, &sender(), START).unwrap_err();
    assert_eq!(
        error,
        TokenError::Status {
            status: StatusCode::OK,
            error: Some("invalid_scope".into())
        }
    );
}

#[test]
fn unusable_token_responses_are_invalid() {
    let cases: &[&'static str] = &[
        "",
        "not json",
        "[]",
        r#"{"access_token":"t","token_type":"Bearer""#,
        r#"{"token_type":"Bearer","expires_in":3600}"#,
        r#"{"access_token":"","token_type":"Bearer"}"#,
        r#"{"access_token":"a\nb","token_type":"Bearer"}"#,
        r#"{"access_token":42,"token_type":"Bearer"}"#,
        r#"{"access_token":"t","token_type":"mac"}"#,
        r#"{"access_token":"t","token_type":"Bearerish"}"#,
        r#"{"access_token":"t"}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":-1}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":"soon"}"#,
        r#"{"access_token":"t","token_type":"Bearer","expires_in":true}"#,
    ];
    for body in cases {
        let dispatcher = ScriptedDispatcher::new().reply(json_reply(200, body));
        let error = get(&TokenCache::new(), &dispatcher, &sender(), START).unwrap_err();
        assert!(
            matches!(error, TokenError::InvalidResponse(_)),
            "{body}: {error:?}"
        );
    }
}

#[test]
fn token_type_is_case_insensitive() {
    for token_type in ["Bearer", "bearer", "BEARER"] {
        let body = format!(r#"{{"access_token":"t","token_type":"{token_type}","expires_in":60}}"#);
        let dispatcher = ScriptedDispatcher::new().reply(Reply::status(200).body(body));
        assert_eq!(
            get(&TokenCache::new(), &dispatcher, &sender(), START)
                .unwrap()
                .expose(),
            "t"
        );
    }
}

#[test]
fn failures_are_not_cached() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(Reply::error(TransportErrorKind::Timeout))
        .reply(json_reply(503, ""))
        .reply(token_reply("t", Some(3600)));
    let cache = TokenCache::new();
    let client = sender();
    let error = get(&cache, &dispatcher, &client, START).unwrap_err();
    match &error {
        TokenError::Transport(transport) => {
            assert_eq!(transport.kind(), TransportErrorKind::Timeout)
        }
        other => panic!("{other:?}"),
    }
    assert!(error
        .to_string()
        .starts_with("token request failed: timed out"));
    assert!(matches!(
        get(&cache, &dispatcher, &client, START),
        Err(TokenError::Status { .. })
    ));
    assert_eq!(
        get(&cache, &dispatcher, &client, START).unwrap().expose(),
        "t"
    );
    assert_eq!(dispatcher.requests().len(), 3);
}

// ----------------------------------------------------------------- secrecy

#[test]
fn no_secret_or_token_in_debug_display_or_errors() {
    const TOKEN: &str = "tok-very-secret-access-token";
    let leaks = |text: String| {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    };
    let client = sender().with_scope("hooks");
    leaks(format!("{client:?}"));
    leaks(format!("{:?}", client.token_request().headers()));

    let cache = TokenCache::new();
    let body = format!(r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":3600}}"#);
    let dispatcher = ScriptedDispatcher::new().reply(Reply::status(200).body(body.clone()));
    let token = get(&cache, &dispatcher, &client, START).unwrap();
    assert_eq!(token.expose(), TOKEN);
    leaks(format!("{token:?} {token}"));
    leaks(format!("{cache:?}"));
    let parsed = client
        .parse_response(
            &http::Response::new(Bytes::from(body)),
            START,
            DEFAULT_LIFETIME,
        )
        .unwrap();
    leaks(format!("{parsed:?}"));

    // Every kind of failure, with bodies that quote the secret and a token.
    let bodies = [
        format!(r#"{{"error":"{SECRET}","error_description":"{SECRET} {TOKEN}"}}"#),
        format!(r#"{{"access_token":"{TOKEN}","token_type":"{SECRET}"}}"#),
        format!(r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":"{SECRET}"}}"#),
        format!(
            r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":{{"x":"{SECRET}"}}}}"#
        ),
        format!(r#"{{"access_token":"{TOKEN}" "{SECRET}"}}"#),
        format!(r#"{{"access_token":"{TOKEN}\n","token_type":"Bearer"}}"#),
    ];
    for status in [200, 400, 401] {
        for body in &bodies {
            let dispatcher =
                ScriptedDispatcher::new().reply(Reply::status(status).body(body.clone()));
            let error = get(&TokenCache::new(), &dispatcher, &client, START).unwrap_err();
            leaks(format!("{error:?}"));
            leaks(error.to_string());
        }
    }
}

// ------------------------------------------------------------- concurrency

#[test]
fn cache_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<TokenCache>();
    send_sync::<Arc<TokenCache>>();
    send_sync::<ClientCredentials>();
    send_sync::<TokenError>();
    let cache = TokenCache::new();
    let dispatcher = ScriptedDispatcher::new();
    let client = sender();
    send(&cache.token(&dispatcher, &client, START, TIMEOUT));
}

/// A dispatcher whose answers wait until the test opens the gate.
struct Gated {
    open: Arc<AtomicBool>,
    calls: AtomicUsize,
    replies: Mutex<VecDeque<Result<http::Response<Bytes>, TransportError>>>,
}

impl Gated {
    fn new(
        replies: impl IntoIterator<Item = Result<http::Response<Bytes>, TransportError>>,
    ) -> Self {
        Self {
            open: Arc::new(AtomicBool::new(false)),
            calls: AtomicUsize::new(0),
            replies: Mutex::new(replies.into_iter().collect()),
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn ok(token: &str) -> Result<http::Response<Bytes>, TransportError> {
    Ok(http::Response::new(Bytes::from(format!(
        r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#
    ))))
}

struct GateFuture {
    open: Arc<AtomicBool>,
    reply: Option<Result<http::Response<Bytes>, TransportError>>,
}

impl Future for GateFuture {
    type Output = Result<http::Response<Bytes>, TransportError>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(self.reply.take().expect("polled after completion"))
        } else {
            Poll::Pending
        }
    }
}

impl Dispatcher for Gated {
    fn send(
        &self,
        _: http::Request<Bytes>,
        _: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted reply");
        GateFuture {
            open: self.open.clone(),
            reply: Some(reply),
        }
    }
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn poll<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

#[test]
fn concurrent_misses_cause_one_fetch() {
    let dispatcher = Gated::new([ok("shared")]);
    let cache = TokenCache::new();
    let client = sender();
    let (wa, wb) = (
        Arc::new(CountingWaker::default()),
        Arc::new(CountingWaker::default()),
    );
    let (waker_a, waker_b) = (Waker::from(wa.clone()), Waker::from(wb.clone()));

    let mut a = pin!(cache.token(&dispatcher, &client, START, TIMEOUT));
    let mut b = pin!(cache.token(&dispatcher, &client, START, TIMEOUT));
    assert!(poll(a.as_mut(), &waker_a).is_pending());
    assert!(poll(b.as_mut(), &waker_b).is_pending());
    assert!(poll(b.as_mut(), &waker_b).is_pending());
    assert_eq!(dispatcher.calls(), 1);

    dispatcher.open();
    let Poll::Ready(Ok(token_a)) = poll(a.as_mut(), &waker_a) else {
        panic!("a should be done")
    };
    assert_eq!(wb.count(), 1, "the waiter is woken once the fetch lands");
    let Poll::Ready(Ok(token_b)) = poll(b.as_mut(), &waker_b) else {
        panic!("b should be done")
    };
    assert_eq!(token_a.expose(), "shared");
    assert_eq!(token_b, token_a);
    assert_eq!(dispatcher.calls(), 1);
}

#[test]
fn waiters_share_a_failed_fetch() {
    let dispatcher = Gated::new([
        Err(TransportError::new(TransportErrorKind::Connect, "refused")),
        ok("later"),
    ]);
    let cache = TokenCache::new();
    let client = sender();
    let waker = Waker::noop();

    let mut a = pin!(cache.token(&dispatcher, &client, START, TIMEOUT));
    let mut b = pin!(cache.token(&dispatcher, &client, START, TIMEOUT));
    assert!(poll(a.as_mut(), waker).is_pending());
    assert!(poll(b.as_mut(), waker).is_pending());
    dispatcher.open();
    let Poll::Ready(Err(error_a)) = poll(a.as_mut(), waker) else {
        panic!("a should fail")
    };
    let Poll::Ready(Err(error_b)) = poll(b.as_mut(), waker) else {
        panic!("b should fail")
    };
    assert_eq!(error_a, error_b);
    assert!(matches!(error_a, TokenError::Transport(_)));
    assert_eq!(dispatcher.calls(), 1);

    // A later caller tries again.
    let token = block_on(cache.token(&dispatcher, &client, START, TIMEOUT)).unwrap();
    assert_eq!(token.expose(), "later");
    assert_eq!(dispatcher.calls(), 2);
}

#[test]
fn a_waiter_takes_over_when_the_fetching_caller_is_dropped() {
    let dispatcher = Gated::new([ok("abandoned"), ok("taken over")]);
    let cache = TokenCache::new();
    let client = sender();
    let wb = Arc::new(CountingWaker::default());
    let waker_b = Waker::from(wb.clone());

    let mut b = pin!(cache.token(&dispatcher, &client, START, TIMEOUT));
    {
        let mut a = Box::pin(cache.token(&dispatcher, &client, START, TIMEOUT));
        assert!(poll(a.as_mut(), Waker::noop()).is_pending());
        assert!(poll(b.as_mut(), &waker_b).is_pending());
        // `a` is cancelled (e.g. a timeout around it fired).
    }
    assert_eq!(
        wb.count(),
        1,
        "the waiter is woken when the fetch is abandoned"
    );
    assert!(poll(b.as_mut(), &waker_b).is_pending());
    assert_eq!(dispatcher.calls(), 2);
    dispatcher.open();
    let Poll::Ready(Ok(token)) = poll(b.as_mut(), &waker_b) else {
        panic!("b should be done")
    };
    // The dispatcher pops replies in call order: b's request got the second.
    assert_eq!(token.expose(), "taken over");
    assert_eq!(
        block_on(cache.token(&dispatcher, &client, START, TIMEOUT)).unwrap(),
        token
    );
    assert_eq!(dispatcher.calls(), 2);
}

/// A dispatcher that answers after a real delay, on a multi-threaded
/// runtime.
struct Slow {
    calls: AtomicUsize,
}

impl Dispatcher for Slow {
    fn send(
        &self,
        _: http::Request<Bytes>,
        _: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ok(&format!("token-{n}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_at_once_share_one_fetch() {
    let cache = Arc::new(TokenCache::new());
    let dispatcher = Arc::new(Slow {
        calls: AtomicUsize::new(0),
    });
    let client = Arc::new(sender());
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (cache, dispatcher, client) = (cache.clone(), dispatcher.clone(), client.clone());
            tokio::spawn(async move { cache.token(&dispatcher, &client, START, TIMEOUT).await })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.await.unwrap().unwrap().expose(), "token-0");
    }
    assert_eq!(dispatcher.calls.load(Ordering::SeqCst), 1);
}
