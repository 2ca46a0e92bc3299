//! The Outbox over real loopback HTTP (127.0.0.1 only): the real
//! `ReqwestDispatcher` against a small hand-written HTTP/1.1 receiver that
//! verifies every request's Standard Webhooks signature, logs it, and answers
//! from a per-test script.
//!
//! The fault tests schedule with a `ManualClock`: each round runs at exactly
//! the time the store says is next due, so delays are asserted to the
//! second while every request really crosses a socket. (Timeouts are the
//! one place real time counts: the dispatcher's timeout is a real timer.)
//! The stress tests run workers on real time.
//!
//! Every fault test ends by checking that nothing published was lost: each delivery
//! is in the final state the policy says, each attempt the store logged
//! reached the receiver (or, for a closed port, could not), and the receiver
//! saw no request the store did not log.
#![cfg(all(feature = "outbox", feature = "reqwest"))]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock, ManualClock, SystemClock};
use hookway::delivery::{
    Attempt, AttemptFailure, AttemptOutcome, Delivery, DeliveryId, DeliveryState, EndpointId,
    FailureReason, StateKind, MAX_EXCERPT,
};
use hookway::dispatch::TransportErrorKind;
use hookway::endpoint::Endpoint;
use hookway::outbox::{Outbox, OutboxConfig};
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, MemoryStore, Store};
use hookway::{EventType, MessageId, Scheme, Secret, Verifier};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T0: OffsetDateTime = datetime!(2026-03-15 12:00 UTC);

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

/// What the script sees of a request.
#[derive(Clone, Debug)]
struct Incoming {
    path: String,
    msg_id: String,
    /// 1 for the first request of this message on this path, 2 for the
    /// second, …
    nth: u32,
}

/// How the receiver answers.
#[derive(Clone, Debug)]
enum Action {
    /// After `delay`, a response with a `Content-Length` body; the
    /// connection stays open for the next request.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Closes the connection (FIN) without answering.
    Close,
    /// Resets the connection (RST) without answering.
    Reset,
}

impl Action {
    fn status(status: u16) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Self::Respond { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }

    fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        if let Self::Respond { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }

    fn delay(mut self, by: Duration) -> Self {
        if let Self::Respond { delay, .. } = &mut self {
            *delay = by;
        }
        self
    }

    /// Whether the script answers 2xx (the receiver "processed" the message).
    fn acks(&self) -> bool {
        matches!(self, Self::Respond { status, .. } if (200..300).contains(status))
    }
}

/// One request as the receiver logged it.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    /// The `webhook-id` header.
    msg_id: String,
    nth: u32,
    /// The receiver's clock when the request arrived.
    at: OffsetDateTime,
    /// The signed `webhook-timestamp`, when the signature verified.
    signed_at: Option<i64>,
    verified: bool,
    /// The script answered 2xx.
    acked: bool,
}

type Script = dyn Fn(&Incoming) -> Action + Send + Sync;

struct Shared {
    clock: Box<dyn Clock + Send + Sync>,
    /// One verifier per path: each endpoint has its own secret.
    verifiers: HashMap<String, Verifier>,
    script: Box<Script>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    hits: Vec<Hit>,
    seen: HashMap<(String, String), u32>,
}

struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    async fn start(
        clock: impl Clock + Send + Sync + 'static,
        verifiers: HashMap<String, Verifier>,
        script: impl Fn(&Incoming) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            clock: Box::new(clock),
            verifiers,
            script: Box::new(script),
            log: Mutex::new(Log::default()),
        });
        let for_task = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&for_task)));
            }
        });
        Self { addr, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.log.lock().unwrap().hits.clone()
    }

    fn hits_for(&self, path: &str, msg_id: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.path == path && h.msg_id == msg_id)
            .collect()
    }

    fn request_count(&self) -> usize {
        self.shared.log.lock().unwrap().hits.len()
    }
}

/// Serves one connection: requests one after another (keep-alive), until
/// the client closes it or the script closes or resets it.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let Some((path, headers, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let action = shared.handle(path, &headers, &body);
        match action {
            Action::Respond {
                status,
                headers,
                body,
                delay,
            } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let reason = http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Whatever");
                let mut out = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                let mut out = out.into_bytes();
                out.extend_from_slice(&body);
                // The client may have gone (timeout) or stop reading early
                // (a capped body): either ends this connection.
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            Action::Close => return,
            Action::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
}

impl Shared {
    /// Verifies, logs and decides the answer to one request.
    fn handle(&self, path: String, headers: &HeaderMap, body: &[u8]) -> Action {
        let now = self.clock.now();
        let msg_id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let verified = self
            .verifiers
            .get(&path)
            .and_then(|v| v.verify_at(headers, body, now).ok())
            .and_then(|v| {
                // The signed id is the one in the header.
                (v.signed_id() == Some(msg_id.as_str())).then(|| v.unix_timestamp())
            });
        let mut log = self.log.lock().unwrap();
        let nth = {
            let n = log.seen.entry((path.clone(), msg_id.clone())).or_insert(0);
            *n += 1;
            *n
        };
        let action = if verified.is_some() {
            (self.script)(&Incoming {
                path: path.clone(),
                msg_id: msg_id.clone(),
                nth,
            })
        } else {
            Action::status(401).body("bad signature")
        };
        log.hits.push(Hit {
            path,
            msg_id,
            nth,
            at: now,
            signed_at: verified.flatten(),
            verified: verified.is_some(),
            acked: action.acks(),
        });
        action
    }
}

/// Reads one request (request line, headers, a `Content-Length` body) from
/// `stream`, keeping any bytes past it in `buf` for the next one.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, HeaderMap, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (_method, target) = (start.next()?, start.next()?.to_owned());
    if !start.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    let length: usize = match headers.get("content-length") {
        Some(v) => v.to_str().ok()?.parse().ok()?,
        None => 0,
    };
    let total = head_end + 4 + length;
    while buf.len() < total {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Some((target, headers, body))
}

/// A port on 127.0.0.1 with nothing listening: bind, note the port, close.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn dispatcher() -> ReqwestDispatcher {
    // Plain HTTP to loopback for the tests only; production keeps HTTPS and
    // the SSRF guard's defaults.
    ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// The harness for the fault tests: a manual clock, one receiver
// ---------------------------------------------------------------------------

struct Harness {
    outbox: Outbox<MemoryStore, ReqwestDispatcher>,
    clock: ManualClock,
    receiver: Receiver,
    secret: Secret,
    /// Each endpoint's receiver path; `None` for one that points elsewhere
    /// (a closed port).
    paths: Mutex<BTreeMap<EndpointId, Option<String>>>,
}

/// The receiver's paths the fault tests use; all share one secret.
const PATHS: &[&str] = &[
    "/a", "/b", "/gone", "/missing", "/slow", "/close", "/reset", "/big", "/late",
];

impl Harness {
    async fn new(script: impl Fn(&Incoming) -> Action + Send + Sync + 'static) -> Self {
        let clock = ManualClock::new(T0);
        let secret = Secret::generate();
        let verifier = Verifier::new(Scheme::standard(), secret.clone()).unwrap();
        let verifiers = PATHS
            .iter()
            .map(|p| ((*p).to_owned(), verifier.clone()))
            .collect();
        let receiver = Receiver::start(clock.clone(), verifiers, script).await;
        let outbox = Outbox::with_config(
            MemoryStore::new(),
            dispatcher(),
            OutboxConfig::default(),
            clock.clone(),
        );
        Self {
            outbox,
            clock,
            receiver,
            secret,
            paths: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds (or replaces) endpoint `id` at the receiver's `path`.
    async fn endpoint(&self, id: &str, path: &str, policy: RetryPolicy) -> EndpointId {
        let url = self.receiver.url(path);
        self.endpoint_at(id, &url, Some(path), policy, None).await
    }

    async fn endpoint_at(
        &self,
        id: &str,
        url: &str,
        path: Option<&str>,
        policy: RetryPolicy,
        timeout: Option<Duration>,
    ) -> EndpointId {
        let id: EndpointId = id.parse().unwrap();
        let mut builder =
            Endpoint::builder(id.clone(), url, Scheme::standard(), self.secret.clone())
                .retry_policy(policy);
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        self.outbox
            .add_endpoint(builder.build().unwrap())
            .await
            .unwrap();
        self.paths
            .lock()
            .unwrap()
            .insert(id.clone(), path.map(str::to_owned));
        id
    }

    async fn publish(&self, msg_id: &str) -> Vec<DeliveryId> {
        self.outbox
            .publish(
                MessageId::new(msg_id).unwrap(),
                EventType::from_static("ticket.created"),
                &json!({"ticket": msg_id}),
                &[],
            )
            .await
            .unwrap()
    }

    /// Runs rounds until nothing is due, each at exactly the time the store
    /// says the next delivery is due; returns those times.
    async fn drive(&self) -> Vec<OffsetDateTime> {
        let mut rounds = Vec::new();
        while let Some(due) = self.outbox.store().next_due().await.unwrap() {
            assert!(rounds.len() < 50, "runaway schedule: {rounds:?}");
            assert!(due >= self.clock.now(), "due time went back: {due}");
            self.clock.set(due);
            let attempted = self.outbox.run_once().await.unwrap();
            assert!(attempted > 0, "nothing claimed at {due}");
            rounds.push(due);
        }
        rounds
    }

    /// One round at `at`, which must be exactly the next due time.
    async fn round_at(&self, at: OffsetDateTime) -> usize {
        assert_eq!(self.outbox.store().next_due().await.unwrap(), Some(at));
        self.clock.set(at);
        self.outbox.run_once().await.unwrap()
    }

    async fn delivery(&self, id: &DeliveryId) -> Delivery {
        self.outbox.store().delivery(id).await.unwrap().unwrap()
    }

    async fn attempts(&self, id: &DeliveryId) -> Vec<Attempt> {
        self.outbox.store().attempts(id).await.unwrap()
    }

    async fn enabled(&self, id: &EndpointId) -> bool {
        self.outbox
            .store()
            .endpoint(id)
            .await
            .unwrap()
            .unwrap()
            .is_enabled()
    }

    /// Nothing lost, nothing unlogged: every delivery is in a final state
    /// (`Delivered` or `Failed`) or as `allowed`, each logged attempt reached
    /// the receiver at its start time and signed at that time, the receiver
    /// saw no request the store did not log, and each delivered message was
    /// acknowledged by the receiver.
    async fn assert_nothing_lost(&self) {
        let deliveries = self
            .outbox
            .store()
            .deliveries(&DeliveryQuery::default())
            .await
            .unwrap();
        let paths = self.paths.lock().unwrap().clone();
        let mut logged = 0;
        for delivery in &deliveries {
            let kind = delivery.state().kind();
            assert!(kind.is_terminal(), "{} is {kind}", delivery.id());
            let attempts = self.attempts(delivery.id()).await;
            assert_eq!(attempts.len() as u32, delivery.attempts());
            let numbers: Vec<u32> = attempts.iter().map(Attempt::number).collect();
            let expected: Vec<u32> = (1..=delivery.attempts()).collect();
            assert_eq!(numbers, expected);
            let Some(path) = paths[delivery.endpoint_id()].clone() else {
                continue;
            };
            let hits = self.receiver.hits_for(&path, delivery.event_id().as_str());
            // This endpoint's path may have changed (a URL fixed by hand):
            // count only the attempts made while it pointed here.
            let here: Vec<&Attempt> = attempts
                .iter()
                .filter(|a| hits.iter().any(|h| h.at == a.started_at()))
                .collect();
            assert_eq!(hits.len(), here.len(), "{path}: {hits:?} vs {attempts:?}");
            logged += here.len();
            for (hit, attempt) in hits.iter().zip(&here) {
                assert!(hit.verified, "{hit:?}");
                assert_eq!(hit.at, attempt.started_at());
                // Signed afresh at each attempt's own time.
                assert_eq!(hit.signed_at, Some(attempt.started_at().unix_timestamp()));
            }
            if kind == StateKind::Delivered {
                assert!(hits.iter().any(|h| h.acked), "{path}: never acknowledged");
                assert_eq!(
                    attempts.last().unwrap().outcome(),
                    AttemptOutcome::Delivered
                );
            }
        }
        assert_eq!(
            self.receiver.request_count(),
            logged,
            "the receiver saw requests the store did not log"
        );
    }
}

fn fixed(delays: &[u64]) -> RetryPolicy {
    RetryPolicy::fixed(delays.iter().map(|s| Duration::from_secs(*s)))
        .build()
        .unwrap()
}

fn status_of(attempts: &[Attempt]) -> Vec<Option<u16>> {
    attempts.iter().map(Attempt::status).collect()
}

fn started(attempts: &[Attempt]) -> Vec<OffsetDateTime> {
    attempts.iter().map(Attempt::started_at).collect()
}

// ---------------------------------------------------------------------------
// Faults, one at a time
// ---------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_then_success_follow_the_schedule() {
    let h = Harness::new(|r| match r.nth {
        1 => Action::status(503).body("maintenance"),
        2 => Action::status(500),
        _ => Action::status(200).body("ok"),
    })
    .await;
    h.endpoint("ep_a", "/a", fixed(&[60, 300, 1800])).await;
    let ids = h.publish("msg_5xx").await;
    assert_eq!(ids.len(), 1);

    // Immediately, +60 s, then +300 s after that.
    assert_eq!(h.round_at(T0).await, 1);
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Pending {
            due_at: T0 + secs(60)
        }
    );
    assert_eq!(h.round_at(T0 + secs(60)).await, 1);
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Pending {
            due_at: T0 + secs(360)
        }
    );
    assert_eq!(h.drive().await, [T0 + secs(360)]);

    let delivery = h.delivery(&ids[0]).await;
    assert_eq!(
        delivery.state(),
        &DeliveryState::Delivered { at: T0 + secs(360) }
    );
    let attempts = h.attempts(&ids[0]).await;
    assert_eq!(status_of(&attempts), [Some(503), Some(500), Some(200)]);
    assert_eq!(started(&attempts), [T0, T0 + secs(60), T0 + secs(360)]);
    let excerpts: Vec<Option<&str>> = attempts.iter().map(Attempt::response_excerpt).collect();
    assert_eq!(excerpts, [Some("maintenance"), None, Some("ok")]);
    assert_eq!(
        attempts[0].outcome(),
        AttemptOutcome::Retryable {
            cause: AttemptFailure::Status(503),
            not_before: None
        }
    );
    let hits = h.receiver.hits_for("/a", "msg_5xx");
    assert_eq!(hits.iter().map(|h| h.nth).collect::<Vec<_>>(), [1, 2, 3]);
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn too_many_requests_waits_exactly_for_retry_after() {
    let h = Harness::new(|r| match (r.path.as_str(), r.nth) {
        ("/a", 1) => Action::status(429).header("Retry-After", "120"),
        _ => Action::status(204),
    })
    .await;
    // The schedule says 5 s; the receiver asks for 120 s, which wins.
    h.endpoint("ep_a", "/a", fixed(&[5, 5])).await;
    // A healthy endpoint on the same receiver is not slowed down.
    h.endpoint("ep_b", "/b", fixed(&[5, 5])).await;
    let ids = h.publish("msg_429").await;
    assert_eq!(ids.len(), 2);
    let (throttled, healthy) = if h.delivery(&ids[0]).await.endpoint_id().as_str() == "ep_a" {
        (&ids[0], &ids[1])
    } else {
        (&ids[1], &ids[0])
    };

    assert_eq!(h.round_at(T0).await, 2);
    assert_eq!(
        h.delivery(throttled).await.state(),
        &DeliveryState::Pending {
            due_at: T0 + secs(120)
        }
    );
    assert_eq!(
        h.delivery(healthy).await.state(),
        &DeliveryState::Delivered { at: T0 }
    );
    let first = &h.attempts(throttled).await[0];
    assert_eq!(first.status(), Some(429));
    assert_eq!(
        first.outcome(),
        AttemptOutcome::Retryable {
            cause: AttemptFailure::Status(429),
            not_before: Some(Duration::from_secs(120)),
        }
    );

    assert_eq!(h.drive().await, [T0 + secs(120)]);
    assert_eq!(
        h.delivery(throttled).await.state(),
        &DeliveryState::Delivered { at: T0 + secs(120) }
    );
    assert_eq!(started(&h.attempts(throttled).await), [T0, T0 + secs(120)]);
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn gone_fails_disables_the_endpoint_and_holds_later_events() {
    let h = Harness::new(|r| match (r.msg_id.as_str(), r.nth) {
        ("msg_gone_1", 1) => Action::status(410).body("no such hook"),
        _ => Action::status(200),
    })
    .await;
    let ep = h
        .endpoint("ep_gone", "/gone", RetryPolicy::standard_webhooks())
        .await;
    let first = h.publish("msg_gone_1").await;

    assert_eq!(h.drive().await, [T0]);
    let delivery = h.delivery(&first[0]).await;
    assert_eq!(
        delivery.state(),
        &DeliveryState::Failed {
            at: T0,
            reason: FailureReason::Permanent {
                cause: AttemptFailure::Status(410),
                disable_endpoint: true,
            },
        }
    );
    assert_eq!(delivery.attempts(), 1);
    assert!(!h.enabled(&ep).await, "410 disables the endpoint");

    // Later events for it are held, not attempted and not dropped.
    h.clock.advance(Duration::from_secs(600));
    let second = h.publish("msg_gone_2").await;
    assert_eq!(second.len(), 1);
    assert_eq!(h.delivery(&second[0]).await.state().kind(), StateKind::Held);
    assert!(h.drive().await.is_empty());
    assert_eq!(h.receiver.request_count(), 1);

    // Re-enabled: the held event goes at once; the failed one on request.
    h.outbox.enable_endpoint(&ep).await.unwrap();
    let t1 = T0 + secs(600);
    assert_eq!(h.drive().await, [t1]);
    assert_eq!(
        h.delivery(&second[0]).await.state(),
        &DeliveryState::Delivered { at: t1 }
    );
    h.outbox.retry(&first[0]).await.unwrap();
    assert_eq!(h.drive().await, [t1]);
    assert_eq!(
        h.delivery(&first[0]).await.state(),
        &DeliveryState::Delivered { at: t1 }
    );
    assert_eq!(
        status_of(&h.attempts(&first[0]).await),
        [Some(410), Some(200)]
    );
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn other_client_errors_fail_at_once() {
    let h = Harness::new(|_| Action::status(404).body("not found")).await;
    // A generous schedule, which a 404 does not use.
    let ep = h
        .endpoint("ep_missing", "/missing", RetryPolicy::standard_webhooks())
        .await;
    let ids = h.publish("msg_404").await;

    assert_eq!(h.drive().await, [T0]);
    let delivery = h.delivery(&ids[0]).await;
    assert_eq!(
        delivery.state(),
        &DeliveryState::Failed {
            at: T0,
            reason: FailureReason::Permanent {
                cause: AttemptFailure::Status(404),
                disable_endpoint: false,
            },
        }
    );
    let attempts = h.attempts(&ids[0]).await;
    assert_eq!(status_of(&attempts), [Some(404)]);
    assert_eq!(attempts[0].response_excerpt(), Some("not found"));
    assert!(h.enabled(&ep).await, "a 404 does not disable the endpoint");
    assert_eq!(h.receiver.hits_for("/missing", "msg_404").len(), 1);
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn a_slow_response_times_out_and_is_retried_after_the_throttle_floor() {
    let h = Harness::new(|r| match r.nth {
        // Answers, but long after the endpoint's 300 ms timeout.
        1 => Action::status(200).delay(Duration::from_secs(3)),
        _ => Action::status(200),
    })
    .await;
    let url = h.receiver.url("/slow");
    h.endpoint_at(
        "ep_slow",
        &url,
        Some("/slow"),
        fixed(&[1, 1]),
        Some(Duration::from_millis(300)),
    )
    .await;
    let ids = h.publish("msg_slow").await;

    let started_at = Instant::now();
    assert_eq!(h.round_at(T0).await, 1);
    let waited = started_at.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2500),
        "the attempt took {waited:?}"
    );
    let attempts = h.attempts(&ids[0]).await;
    assert_eq!(attempts[0].error_kind(), Some(TransportErrorKind::Timeout));
    assert_eq!(attempts[0].status(), None);
    // The schedule says 1 s; a timeout waits at least the throttle floor.
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Pending {
            due_at: T0 + secs(5)
        }
    );

    assert_eq!(h.drive().await, [T0 + secs(5)]);
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Delivered { at: T0 + secs(5) }
    );
    let attempts = h.attempts(&ids[0]).await;
    assert_eq!(attempts[1].status(), Some(200));
    // The receiver processed the message twice: the first answer came too
    // late for the sender. At-least-once delivery; receivers de-duplicate on
    // `webhook-id`, which is the same on both.
    let hits = h.receiver.hits_for("/slow", "msg_slow");
    assert_eq!(hits.iter().filter(|h| h.acked).count(), 2);
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn connection_refused_fails_after_the_policy_and_can_be_retried() {
    let h = Harness::new(|_| Action::status(200)).await;
    let port = closed_port().await;
    let closed = format!("http://127.0.0.1:{port}/hooks");
    let ep = h
        .endpoint_at("ep_down", &closed, None, fixed(&[10, 20]), None)
        .await;
    let ids = h.publish("msg_refused").await;

    assert_eq!(h.drive().await, [T0, T0 + secs(10), T0 + secs(30)]);
    let delivery = h.delivery(&ids[0]).await;
    assert_eq!(
        delivery.state(),
        &DeliveryState::Failed {
            at: T0 + secs(30),
            reason: FailureReason::Exhausted {
                cause: AttemptFailure::Transport(TransportErrorKind::Connect),
            },
        }
    );
    let attempts = h.attempts(&ids[0]).await;
    let kinds: Vec<_> = attempts.iter().map(Attempt::error_kind).collect();
    assert_eq!(kinds, [Some(TransportErrorKind::Connect); 3]);
    assert_eq!(status_of(&attempts), [None, None, None]);
    assert!(h.enabled(&ep).await);
    assert_eq!(h.receiver.request_count(), 0);

    // Not lost: an hour later the customer fixes the URL and the operator
    // retries by hand.
    let t1 = T0 + secs(3600);
    h.clock.set(t1);
    h.endpoint("ep_down", "/late", fixed(&[10, 20])).await;
    h.outbox.retry(&ids[0]).await.unwrap();
    assert_eq!(h.drive().await, [t1]);
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Delivered { at: t1 }
    );
    assert_eq!(h.attempts(&ids[0]).await.len(), 4);
    assert_eq!(h.receiver.hits_for("/late", "msg_refused").len(), 1);
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn connection_closed_or_reset_without_an_answer_is_retried() {
    let h = Harness::new(|r| match (r.path.as_str(), r.nth) {
        ("/close", 1) => Action::Close,
        ("/reset", 1) => Action::Reset,
        _ => Action::status(200),
    })
    .await;
    h.endpoint("ep_close", "/close", fixed(&[30])).await;
    h.endpoint("ep_reset", "/reset", fixed(&[30])).await;
    let ids = h.publish("msg_dropped").await;
    assert_eq!(ids.len(), 2);

    assert_eq!(h.round_at(T0).await, 2);
    for id in &ids {
        let attempts = h.attempts(id).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].error_kind(),
            Some(TransportErrorKind::Connect),
            "{}: {:?}",
            h.delivery(id).await.endpoint_id(),
            attempts[0].error_message()
        );
        assert_eq!(
            h.delivery(id).await.state(),
            &DeliveryState::Pending {
                due_at: T0 + secs(30)
            }
        );
    }
    assert_eq!(h.drive().await, [T0 + secs(30)]);
    for id in &ids {
        assert_eq!(
            h.delivery(id).await.state(),
            &DeliveryState::Delivered { at: T0 + secs(30) }
        );
    }
    h.assert_nothing_lost().await;
}

#[tokio::test]
async fn an_oversized_response_body_is_kept_as_a_bounded_excerpt() {
    fn pattern(len: usize) -> Vec<u8> {
        b"0123456789abcdef"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }
    let h = Harness::new(|r| match r.nth {
        1 => Action::status(500).body(pattern(4 * 1024 * 1024)),
        _ => Action::status(200).body(pattern(256 * 1024)),
    })
    .await;
    h.endpoint("ep_big", "/big", fixed(&[60])).await;
    let ids = h.publish("msg_big").await;

    assert_eq!(h.drive().await, [T0, T0 + secs(60)]);
    assert_eq!(
        h.delivery(&ids[0]).await.state(),
        &DeliveryState::Delivered { at: T0 + secs(60) }
    );
    let attempts = h.attempts(&ids[0]).await;
    assert_eq!(status_of(&attempts), [Some(500), Some(200)]);
    let expected = String::from_utf8(pattern(MAX_EXCERPT)).unwrap();
    assert_eq!(MAX_EXCERPT, 1024);
    for attempt in &attempts {
        assert_eq!(attempt.response_excerpt(), Some(expected.as_str()));
    }
    h.assert_nothing_lost().await;
}

// ---------------------------------------------------------------------------
// Stress: real time, workers, a flaky receiver
// ---------------------------------------------------------------------------

const ENDPOINTS: usize = 10;
const FAILURE_RATE_PERCENT: u64 = 30;
const SEED: u64 = 0x05ee_d0ff_1a4e;
/// Enough that no (event, endpoint) pair of the seeded script runs out:
/// checked before the run.
const STRESS_MAX_ATTEMPTS: u32 = 40;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the `nth` request of `msg_id` on `path` fails with 503: about 30%
/// at random, but a pure function of the seed and the request, so the run is
/// the same whatever order requests arrive in.
fn flaky_fails(path: &str, msg_id: &str, nth: u32) -> bool {
    let mut h = SEED;
    for b in path.bytes().chain([0]).chain(msg_id.bytes()) {
        h = splitmix(h ^ u64::from(b));
    }
    splitmix(h ^ u64::from(nth)) % 100 < FAILURE_RATE_PERCENT
}

/// How many requests the pair needs: failures, then one success.
fn requests_needed(path: &str, msg_id: &str) -> u32 {
    (1..).find(|&n| !flaky_fails(path, msg_id, n)).unwrap()
}

fn stress_path(i: usize) -> String {
    format!("/hooks/{i}")
}

fn stress_msg(i: usize) -> String {
    format!("msg_{i:06}")
}

async fn stress(events: usize, workers: usize) {
    let started_at = Instant::now();
    let total = events * ENDPOINTS;

    // What the seeded script will do, computed up front.
    let mut expected_requests = 0_u64;
    let mut worst = 0;
    for e in 0..events {
        for p in 0..ENDPOINTS {
            let n = requests_needed(&stress_path(p), &stress_msg(e));
            worst = worst.max(n);
            expected_requests += u64::from(n);
        }
    }
    assert!(
        worst < STRESS_MAX_ATTEMPTS,
        "the seed needs {worst} attempts"
    );

    let secrets: Vec<Secret> = (0..ENDPOINTS).map(|_| Secret::generate()).collect();
    let verifiers = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                stress_path(i),
                Verifier::new(Scheme::standard(), s.clone()).unwrap(),
            )
        })
        .collect();
    let receiver = Receiver::start(SystemClock, verifiers, |r| {
        if flaky_fails(&r.path, &r.msg_id, r.nth) {
            Action::status(503).body("flaky")
        } else {
            Action::status(200)
        }
    })
    .await;

    let mut config = OutboxConfig::default();
    config.max_in_flight = 128;
    config.claim_batch = 64;
    let outbox = Outbox::with_config(MemoryStore::new(), dispatcher(), config, SystemClock);
    let policy = RetryPolicy::fixed([Duration::ZERO])
        .repeat_last()
        .with_max_attempts(STRESS_MAX_ATTEMPTS)
        .build()
        .unwrap();
    for (i, secret) in secrets.iter().enumerate() {
        let endpoint = Endpoint::builder(
            format!("ep_{i:02}").parse().unwrap(),
            &receiver.url(&stress_path(i)),
            Scheme::standard(),
            secret.clone(),
        )
        .retry_policy(policy.clone())
        .build()
        .unwrap();
        outbox.add_endpoint(endpoint).await.unwrap();
    }

    // Workers first: publishing must wake them.
    let running = outbox.start(workers);
    let publish_started = Instant::now();
    let event_type = EventType::from_static("ticket.created");
    for e in 0..events {
        let ids = outbox
            .publish(
                MessageId::new(stress_msg(e)).unwrap(),
                event_type.clone(),
                &json!({"ticket": e, "subject": "stress"}),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(ids.len(), ENDPOINTS);
    }
    let publish_took = publish_started.elapsed();

    // Until every pair is acknowledged and nothing is pending or in flight.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let requests = receiver.request_count() as u64;
        let idle = outbox.store().next_due().await.unwrap().is_none();
        if requests >= expected_requests && idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stalled: {requests} of {expected_requests} requests, idle: {idle}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_in = publish_started.elapsed();
    running.shutdown(Duration::from_secs(5)).await;

    // The store: everything delivered, nothing failed.
    let store = outbox.store();
    let all = store.deliveries(&DeliveryQuery::default()).await.unwrap();
    assert_eq!(all.len(), total);
    let mut by_state: BTreeMap<StateKind, usize> = BTreeMap::new();
    for d in &all {
        *by_state.entry(d.state().kind()).or_default() += 1;
    }
    assert_eq!(by_state, BTreeMap::from([(StateKind::Delivered, total)]));
    let store_attempts: u64 = all.iter().map(|d| u64::from(d.attempts())).sum();

    // The receiver: every request verified; every (event, endpoint) pair
    // acknowledged exactly once; as many requests as the store logged
    // attempts, which is what the seeded script makes.
    let hits = receiver.hits();
    assert!(hits.iter().all(|h| h.verified), "a signature failed");
    let mut acks: HashMap<(&str, &str), u32> = HashMap::with_capacity(total);
    for hit in hits.iter().filter(|h| h.acked) {
        *acks.entry((&hit.path, &hit.msg_id)).or_default() += 1;
    }
    assert_eq!(acks.len(), total, "de-duplicated log");
    let paths: Vec<String> = (0..ENDPOINTS).map(stress_path).collect();
    for e in 0..events {
        let msg = stress_msg(e);
        for path in &paths {
            assert_eq!(
                acks.get(&(path.as_str(), msg.as_str())),
                Some(&1),
                "{path} {msg}"
            );
        }
    }
    assert_eq!(hits.len() as u64, expected_requests);
    assert_eq!(store_attempts, expected_requests);

    let failures = expected_requests - total as u64;
    eprintln!(
        "stress: {events} events x {ENDPOINTS} endpoints = {total} deliveries, \
         {expected_requests} requests ({failures} answered 503, {:.1}%), {workers} workers: \
         published in {publish_took:.2?}, all delivered {delivered_in:.2?} after the first \
         publish ({:.0} requests/s); test total {:.2?}",
        failures as f64 * 100.0 / expected_requests as f64,
        expected_requests as f64 / delivered_in.as_secs_f64(),
        started_at.elapsed(),
    );
}

/// 1 000 events × 10 endpoints: always runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_1k_events_to_10_endpoints_all_delivered_exactly_once() {
    stress(1_000, 4).await;
}

/// The full size from the issue: 10 000 events × 10 endpoints (100 000
/// deliveries, 143 014 requests with this seed). About 6.5 s in a release
/// build on 2 cores, where it runs by default; 30 to 45 s in a debug build,
/// where it is ignored (`-- --ignored` runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    debug_assertions,
    ignore = "100 000 deliveries: 30-45 s in a debug build; runs by default with --release"
)]
async fn stress_10k_events_to_10_endpoints_all_delivered_exactly_once() {
    stress(10_000, 4).await;
}

// ---------------------------------------------------------------------------
// Shutdown, and regressions of bugs these tests found
// ---------------------------------------------------------------------------

/// A receiver on real time and an outbox with one endpoint, `ep_q` at `/q`.
async fn real_time_setup(
    config: OutboxConfig,
    timeout: Duration,
    script: impl Fn(&Incoming) -> Action + Send + Sync + 'static,
) -> (Outbox<MemoryStore, ReqwestDispatcher>, Receiver) {
    let secret = Secret::generate();
    let verifier = Verifier::new(Scheme::standard(), secret.clone()).unwrap();
    let receiver = Receiver::start(
        SystemClock,
        HashMap::from([("/q".to_owned(), verifier)]),
        script,
    )
    .await;
    let outbox = Outbox::with_config(MemoryStore::new(), dispatcher(), config, SystemClock);
    let endpoint = Endpoint::builder(
        "ep_q".parse().unwrap(),
        &receiver.url("/q"),
        Scheme::standard(),
        secret,
    )
    .timeout(timeout)
    .retry_policy(fixed(&[1, 1, 1]))
    .build()
    .unwrap();
    outbox.add_endpoint(endpoint).await.unwrap();
    (outbox, receiver)
}

async fn publish_n(outbox: &Outbox<MemoryStore, ReqwestDispatcher>, n: usize) {
    for i in 0..n {
        outbox
            .publish(
                MessageId::new(format!("msg_q{i}")).unwrap(),
                EventType::from_static("ticket.created"),
                &json!({"n": i}),
                &[],
            )
            .await
            .unwrap();
    }
}

/// Waits (real time, bounded) until no delivery is pending or in flight.
async fn wait_idle(outbox: &Outbox<MemoryStore, ReqwestDispatcher>, within: Duration) {
    let deadline = Instant::now() + within;
    while outbox.store().next_due().await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "deliveries still pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_attempt_loses_nothing() {
    // The first request of each of the first three messages hangs past the
    // shutdown deadline.
    let mut config = OutboxConfig::default();
    config.lease = Duration::from_millis(1500);
    let (outbox, receiver) = real_time_setup(config, Duration::from_secs(1), |r| {
        if r.nth == 1 && r.msg_id != "msg_q3" {
            Action::status(200).delay(Duration::from_secs(3))
        } else {
            Action::status(200)
        }
    })
    .await;
    publish_n(&outbox, 3).await;
    let workers = outbox.start(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.request_count() < 3 {
        assert!(Instant::now() < deadline, "the attempts did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers.shutdown(Duration::from_millis(100)).await;

    // Stopped: nothing new is claimed, nothing was dropped.
    publish_n(&outbox, 4).await; // msg_q3 is new
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.request_count(), 3);
    let all = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|d| !d.state().is_terminal()));

    // A new set of workers delivers everything: the aborted attempts come
    // back (when their lease expires), the new event at once.
    let workers = outbox.start(1);
    wait_idle(&outbox, Duration::from_secs(10)).await;
    workers.shutdown(Duration::from_secs(1)).await;
    for delivery in outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap()
    {
        assert_eq!(delivery.state().kind(), StateKind::Delivered);
        // An aborted attempt is not counted: no result was recorded.
        assert_eq!(
            delivery.attempts(),
            1,
            "{}: {:#?}",
            delivery.event_id(),
            outbox.store().attempts(delivery.id()).await.unwrap()
        );
        let hits = receiver.hits_for("/q", delivery.event_id().as_str());
        let expected = if delivery.event_id().as_str() == "msg_q3" {
            1
        } else {
            2
        };
        assert_eq!(hits.len(), expected, "{}", delivery.event_id());
    }
}

/// Regression (fixed in `Outbox::run_once`, which now takes its in-flight
/// permits before claiming): a delivery's lease started when it
/// is claimed, but its request starts only once an in-flight permit is free.
/// A batch claimed behind a small `max_in_flight` (or behind other workers'
/// requests) can outlive its lease before it is even sent, although the lease
/// exceeds the endpoint timeout as `OutboxConfig::lease` asks. Another
/// worker then takes the delivery over and sends it again, and the first
/// worker's result is refused by the store (`Conflict`): the receiver gets
/// duplicates and sees requests the delivery log never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waiting_for_an_in_flight_permit_is_not_sent_twice() {
    let mut config = OutboxConfig::default();
    // Lease (1 s) > endpoint timeout (500 ms) > response time (300 ms).
    config.lease = Duration::from_secs(1);
    config.max_in_flight = 1;
    let (outbox, receiver) = real_time_setup(config, Duration::from_millis(500), |_| {
        Action::status(200).delay(Duration::from_millis(300))
    })
    .await;
    publish_n(&outbox, 6).await;
    let workers = outbox.start(2);
    wait_idle(&outbox, Duration::from_secs(20)).await;
    workers.shutdown(Duration::from_secs(2)).await;

    let all = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    let mut sent = BTreeMap::new();
    let mut logged = 0;
    for delivery in &all {
        assert_eq!(delivery.state().kind(), StateKind::Delivered);
        logged += delivery.attempts() as usize;
        let msg = delivery.event_id().as_str();
        sent.insert(msg.to_owned(), receiver.hits_for("/q", msg).len());
    }
    let requests = receiver.request_count();
    assert!(
        sent.values().all(|&n| n == 1) && requests == logged,
        "requests per message: {sent:?}; {requests} requests received, {logged} attempts logged"
    );
}

/// Regression (fixed: the engine now disables in place with
/// `Store::set_endpoint_enabled`): on a 410 the engine disabled the
/// endpoint by writing back the copy it read before sending
/// (`store.put_endpoint(endpoint)` with `set_enabled(false)`), so a change
/// made to the endpoint while the request was in flight (a new URL, rotated
/// keys, another policy) is silently reverted.
#[tokio::test]
async fn a_gone_response_does_not_revert_a_concurrent_endpoint_update() {
    let h = Harness::new(|r| match r.path.as_str() {
        "/gone" => Action::status(410).delay(Duration::from_millis(300)),
        _ => Action::status(200),
    })
    .await;
    let ep = h
        .endpoint("ep_moving", "/gone", RetryPolicy::standard_webhooks())
        .await;
    h.publish("msg_moving").await;
    let outbox = h.outbox.clone();
    let round = tokio::spawn(async move { outbox.run_once().await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.receiver.request_count() == 0 {
        assert!(Instant::now() < deadline, "the request did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While the old URL is answering, the customer moves the endpoint.
    h.endpoint("ep_moving", "/b", RetryPolicy::standard_webhooks())
        .await;
    assert_eq!(round.await.unwrap().unwrap(), 1);

    let stored = h.outbox.store().endpoint(&ep).await.unwrap().unwrap();
    assert_eq!(
        stored.url().to_string(),
        h.receiver.url("/b"),
        "the engine reverted the endpoint to the copy it read before sending"
    );
}
