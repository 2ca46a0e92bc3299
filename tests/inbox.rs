//! Durable processing with the in-memory inbox, over real loopback HTTP: a
//! hyper server hands each request to the receiver, and requests are
//! written on plain TCP streams.
//!
//! Time is tokio's: the receiver's clock follows `tokio::time::Instant`,
//! so under a paused clock retries come exactly on schedule and no test
//! waits for real time.
#![cfg(feature = "receive")]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookway::clock::Clock;
use hookway::receive::{
    BuildError, ClaimedEntry, EntryState, EntryStatus, FailedCursor, FailedEntry, InboxClaim,
    InboxConfig, InboxEntry, InboxError, InboxStore, Intake, MemoryIdempotencyStore, MemoryInbox,
    Notice, Processing, Receiver, Stored, Unrouted,
};
use hookway::retry::{Jitter, RetryPolicy};
use hookway::{Event, EventType, MessageId, Scheme, Secret, Signer, Verifier};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Wall time that moves with tokio's clock (paused or not).
#[derive(Clone, Copy, Debug)]
struct TokioClock {
    base: OffsetDateTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    fn new() -> Self {
        Self {
            base: datetime!(2026-03-15 10:30 UTC),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        self.base + self.start.elapsed()
    }
}

fn secret() -> Secret {
    Secret::base64(SECRET).unwrap()
}

fn intake(clock: TokioClock) -> Intake {
    Intake::new(Verifier::new(Scheme::standard(), secret()).unwrap()).with_clock(clock)
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Ticket {
    id: String,
}

/// A signed `ticket.created` request for message `id`, signed now.
fn ticket(clock: &TokioClock, id: &str) -> (Bytes, HeaderMap) {
    signed(clock, "ticket.created", id, json!({"id": "tkt_1"}))
}

fn signed(
    clock: &TokioClock,
    event_type: &str,
    id: &str,
    data: serde_json::Value,
) -> (Bytes, HeaderMap) {
    let event = Event::new_at(EventType::new(event_type).unwrap(), data, clock.now())
        .with_id(id.parse().unwrap());
    let (body, headers) = Signer::new(Scheme::standard(), secret())
        .unwrap()
        .sign_event(&event, clock.now())
        .unwrap();
    (Bytes::from(body), headers)
}

/// The same message signed again, as a sender's retry is.
fn resigned(clock: &TokioClock, id: &str, body: &Bytes) -> HeaderMap {
    Signer::new(Scheme::standard(), secret())
        .unwrap()
        .sign(&id.parse().unwrap(), clock.now(), body)
        .unwrap()
}

fn id(text: &str) -> MessageId {
    text.parse().unwrap()
}

/// A retry policy without jitter: 1 s, 2 s, 4 s, … for `runs` runs.
fn policy(runs: u32) -> RetryPolicy {
    RetryPolicy::exponential()
        .with_initial_delay(Duration::from_secs(1))
        .with_max_attempts(runs)
        .with_jitter(Jitter::None)
        .build()
        .unwrap()
}

fn config(workers: usize, runs: u32) -> InboxConfig {
    let mut config = InboxConfig::default();
    config.workers = workers;
    config.retry = policy(runs);
    config
}

/// Serves `receiver` on an ephemeral loopback port.
async fn serve(receiver: Receiver) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let receiver = receiver.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = match body.collect().await {
                                Ok(body) => body.to_bytes(),
                                Err(_) => Bytes::new(),
                            };
                            let response = receiver
                                .respond(http::Request::from_parts(parts, body), Some(peer))
                                .await;
                            Ok::<_, Infallible>(response.map(Full::new))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// Posts a request on a fresh connection and reads the whole answer.
async fn post(addr: SocketAddr, headers: &HeaderMap, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /webhooks HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\
         content-type: application/json\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    Reply {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

fn notices() -> (
    mpsc::UnboundedReceiver<Notice>,
    impl Fn(&Notice) + Send + Sync + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (rx, move |n: &Notice| {
        let _ = tx.send(n.clone());
    })
}

/// `future`'s output, failing the test if it takes more than 30 seconds
/// (of tokio's time, so a paused clock gets there at once).
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out")
}

/// The next notice that `pick` takes, skipping the others.
async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Notice>,
    pick: impl Fn(Notice) -> Option<T>,
) -> T {
    within(async {
        loop {
            let notice = rx.recv().await.expect("the receiver is alive");
            if let Some(found) = pick(notice) {
                return found;
            }
        }
    })
    .await
}

async fn status(inbox: &impl InboxStore, text: &str) -> EntryStatus {
    inbox.status(&id(text)).await.unwrap().expect("the entry")
}

// ---------------------------------------------------------------------------
// Accepting
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_event_is_stored_before_the_202_and_a_worker_then_runs_its_handler() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let g = Arc::clone(&gate);
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.created", move |event: Event<Ticket>| {
            let (g, tx) = (Arc::clone(&g), handled_tx.clone());
            async move {
                // Held until the test has looked at the inbox.
                let _permit = g.acquire().await.unwrap();
                tx.send(event).unwrap();
                Ok(())
            }
        })
        .inbox(inbox.clone())
        .inbox_config(config(2, 3))
        .build()
        .unwrap();
    assert!(receiver.processing().is_durable());
    let addr = serve(receiver.clone()).await;

    let (body, mut headers) = ticket(&clock, "msg_stored");
    headers.insert("authorization", HeaderValue::from_static("Bearer not-kept"));
    let reply = post(addr, &headers, &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body, "accepted");

    // Already in the inbox when the sender hears 202; the handler has not
    // finished (it cannot, until the gate opens).
    let stored = inbox
        .entry(&id("msg_stored"))
        .expect("stored before the 202");
    assert_eq!(stored.body, body);
    assert_eq!(stored.event_type, "ticket.created");
    assert!(stored.signed_at.is_some());
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(stored.headers.get(name), headers.get(name), "{name}");
    }
    assert_eq!(stored.headers["content-type"], "application/json");
    assert!(stored.headers.get("authorization").is_none());
    assert!(handled.try_recv().is_err());
    assert!(!matches!(
        status(&inbox, "msg_stored").await.state,
        EntryState::Processed { .. } | EntryState::Failed { .. }
    ));

    gate.add_permits(1);
    let event = within(handled.recv()).await.unwrap();
    assert_eq!(event.id, id("msg_stored"));
    assert_eq!(event.data, Ticket { id: "tkt_1".into() });
    // Shutdown waits for the worker to record the result.
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
    let done = status(&inbox, "msg_stored").await;
    assert!(
        matches!(done.state, EntryState::Processed { .. }),
        "{done:?}"
    );
    assert_eq!(done.attempts, 1);
    // A processed entry keeps its id, not its body.
    let kept = inbox.entry(&id("msg_stored")).unwrap();
    assert!(kept.body.is_empty() && kept.headers.is_empty());
}

#[tokio::test]
async fn a_duplicate_is_answered_200_stored_once_and_handled_once() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (Arc::clone(&gate), Arc::clone(&calls));
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.*", move |_: Event| {
            let (g, c) = (Arc::clone(&g), Arc::clone(&c));
            async move {
                let _permit = g.acquire().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;

    let (body, headers) = ticket(&clock, "msg_dup");
    assert_eq!(
        post(addr, &headers, &body).await.status,
        StatusCode::ACCEPTED
    );
    // The sender did not hear the 202 and retries while the first delivery
    // waits for (or is in) its handler.
    let again = post(addr, &resigned(&clock, "msg_dup", &body), &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, "duplicate");
    assert_eq!(inbox.len(), 1);

    gate.add_permits(10);
    // Once processed, a late retry is still a duplicate.
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let late = Receiver::builder(intake(clock))
        .on("ticket.*", |_: Event| async { Err("must not run".into()) })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let addr = serve(late.clone()).await;
    let third = post(addr, &resigned(&clock, "msg_dup", &body), &body).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.body, "duplicate");
    late.shutdown(Duration::from_secs(5)).await;
    assert_eq!(inbox.len(), 1);
    assert!(matches!(
        status(&inbox, "msg_dup").await.state,
        EntryState::Processed { .. }
    ));
}

// ---------------------------------------------------------------------------
// Retries and the failed list
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_on_schedule_until_it_succeeds() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let (runs_tx, mut runs) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let (mut seen, observer) = notices();
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.created", move |_: Event<Ticket>| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            runs_tx.send(tokio::time::Instant::now()).unwrap();
            async move {
                if n < 3 {
                    Err(format!("downstream not ready ({n})").into())
                } else {
                    Ok(())
                }
            }
        })
        .inbox(inbox.clone())
        .inbox_config(config(2, 5))
        .observe(observer)
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;
    let (body, headers) = ticket(&clock, "msg_retry");
    assert_eq!(
        post(addr, &headers, &body).await.status,
        StatusCode::ACCEPTED
    );

    let first = within(runs.recv()).await.unwrap();
    let second = within(runs.recv()).await.unwrap();
    let third = within(runs.recv()).await.unwrap();
    // The schedule exactly: 1 s after the first failure, 2 s after the
    // second.
    assert_eq!(second - first, Duration::from_secs(1));
    assert_eq!(third - second, Duration::from_secs(2));
    for n in 1..=2 {
        let (failed_id, error, acknowledged) = next(&mut seen, |notice| match notice {
            Notice::HandlerFailed {
                id,
                error,
                acknowledged,
                ..
            } => Some((id, error.to_string(), acknowledged)),
            _ => None,
        })
        .await;
        assert_eq!(failed_id, id("msg_retry"));
        assert_eq!(error, format!("downstream not ready ({n})"));
        assert!(acknowledged);
    }
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    let done = status(&inbox, "msg_retry").await;
    assert!(
        matches!(done.state, EntryState::Processed { .. }),
        "{done:?}"
    );
    assert_eq!(done.attempts, 3);
    assert_eq!(done.last_error, None);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_keeps_failing_ends_on_the_failed_list_and_replay_runs_it_again() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let healed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (runs_tx, mut runs) = mpsc::unbounded_channel();
    let (h, c) = (Arc::clone(&healed), Arc::clone(&calls));
    let (mut seen, observer) = notices();
    let receiver = Receiver::builder(intake(clock))
        .on_raw("ticket.*", move |event| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let healed = h.load(Ordering::SeqCst);
            runs_tx.send(event.id).unwrap();
            async move {
                if healed {
                    Ok(())
                } else {
                    Err(format!("boom {n}").into())
                }
            }
        })
        .inbox(inbox.clone())
        .inbox_config(config(1, 3))
        .observe(observer)
        .build()
        .unwrap();
    let handle = receiver.inbox().unwrap();
    let addr = serve(receiver.clone()).await;
    let (body, headers) = ticket(&clock, "msg_doomed");
    assert_eq!(
        post(addr, &headers, &body).await.status,
        StatusCode::ACCEPTED
    );

    let (gave_up, attempts, reason) = next(&mut seen, |notice| match notice {
        Notice::GaveUp {
            id,
            attempts,
            error,
            ..
        } => Some((id, attempts, error.to_string())),
        _ => None,
    })
    .await;
    assert_eq!(
        (gave_up, attempts, reason.as_str()),
        (id("msg_doomed"), 3, "boom 3")
    );
    let failed = handle.failed(None, 0).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, id("msg_doomed"));
    assert_eq!(failed[0].event_type, "ticket.created");
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].last_error, "boom 3");
    assert!(handle
        .failed(Some(&failed[0].cursor()), 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A redelivery by the sender does not bring it back: it is a duplicate.
    let again = post(addr, &resigned(&clock, "msg_doomed", &body), &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, "duplicate");

    // The fix is deployed; replay runs it again, with a fresh schedule.
    healed.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        within(runs.recv()).await.unwrap();
    }
    assert!(handle.replay(&id("msg_doomed")).await.unwrap());
    assert_eq!(within(runs.recv()).await.unwrap(), id("msg_doomed"));
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let done = handle.status(&id("msg_doomed")).await.unwrap().unwrap();
    assert!(
        matches!(done.state, EntryState::Processed { .. }),
        "{done:?}"
    );
    assert_eq!(done.attempts, 1);
    assert!(handle.failed(None, 0).await.unwrap().is_empty());
    // Only a failed entry can be replayed.
    assert!(!handle.replay(&id("msg_doomed")).await.unwrap());
    assert!(!handle.replay(&id("msg_unknown")).await.unwrap());
}

// ---------------------------------------------------------------------------
// Storage failures
// ---------------------------------------------------------------------------

/// A memory inbox whose `accept` fails while `down` is set, and whose
/// `claim_due` fails while `claims_down` is set (counting those, and
/// signalling `spinning` at the 50th).
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryInbox,
    down: Arc<AtomicBool>,
    claims_down: Arc<AtomicBool>,
    failed_claims: Arc<AtomicUsize>,
    spinning: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("disk full")]
struct DiskFull;

impl InboxStore for Flaky {
    async fn accept(&self, entry: &InboxEntry) -> Result<Stored, InboxError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(InboxError::Backend(Box::new(DiskFull)));
        }
        self.inner.accept(entry).await
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedEntry>, InboxError> {
        if self.claims_down.load(Ordering::SeqCst) {
            // Give the runtime a turn, as a real store's I/O would.
            tokio::task::yield_now().await;
            if self.failed_claims.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                self.spinning.notify_one();
            }
            return Err(InboxError::Backend(Box::new(DiskFull)));
        }
        self.inner.claim_due(now, lease, limit).await
    }

    fn complete(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        self.inner.complete(claim, now)
    }

    fn retry(
        &self,
        claim: &InboxClaim,
        next_at: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        self.inner.retry(claim, next_at, error)
    }

    fn fail(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
        error: &str,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        self.inner.fail(claim, now, error)
    }

    fn release(
        &self,
        claim: &InboxClaim,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), InboxError>> + Send {
        self.inner.release(claim, now)
    }

    fn failed(
        &self,
        after: Option<&FailedCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FailedEntry>, InboxError>> + Send {
        self.inner.failed(after, limit)
    }

    fn replay(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, InboxError>> + Send {
        self.inner.replay(id, now)
    }

    fn prune(
        &self,
        processed_before: OffsetDateTime,
        failed_before: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<usize, InboxError>> + Send {
        self.inner.prune(processed_before, failed_before)
    }

    fn next_due(&self) -> impl Future<Output = Result<Option<OffsetDateTime>, InboxError>> + Send {
        self.inner.next_due()
    }

    fn status(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<EntryStatus>, InboxError>> + Send {
        self.inner.status(id)
    }
}

/// A worker whose claims fail (a read-only or full database) while an
/// entry is due waits `idle_poll` before trying again, rather than
/// retrying at once, for as long as the store keeps failing.
#[tokio::test(start_paused = true)]
async fn a_worker_waits_after_a_failed_claim() {
    let clock = TokioClock::new();
    let store = Flaky {
        claims_down: Arc::new(AtomicBool::new(true)),
        ..Flaky::default()
    };
    let entry = InboxEntry::new(
        id("msg_due"),
        EventType::new("ticket.created").unwrap(),
        None,
        clock.now(),
        HeaderMap::new(),
        Bytes::from_static(b"{}"),
    );
    assert_eq!(store.inner.accept(&entry).await.unwrap(), Stored::New);
    let mut config = config(1, 3);
    config.idle_poll = Duration::from_secs(1);
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.*", |_: Event| async { Ok(()) })
        .inbox(store.clone())
        .inbox_config(config)
        .build()
        .unwrap();
    tokio::select! {
        () = store.spinning.notified() => panic!(
            "the worker retried a failing claim 50 times without waiting"
        ),
        () = tokio::time::sleep(Duration::from_millis(3500)) => {}
    }
    // One claim at start, then one a second.
    let failed = store.failed_claims.load(Ordering::SeqCst);
    assert!((3..=5).contains(&failed), "{failed} claims in 3.5 s");
    receiver.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_storage_error_answers_503_with_retry_after_and_nothing_is_handled() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.*", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .inbox(Flaky {
            inner: inbox.clone(),
            down: Arc::clone(&down),
            ..Flaky::default()
        })
        .retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;
    let (body, headers) = ticket(&clock, "msg_unstored");
    let refused = post(addr, &headers, &body).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers["retry-after"], "30");
    assert_eq!(refused.body, "unavailable, retry later");
    assert!(inbox.is_empty());

    // The sender retries once the store is back: stored and handled once.
    down.store(false, Ordering::SeqCst);
    let accepted = post(addr, &resigned(&clock, "msg_unstored", &body), &body).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        status(&inbox, "msg_unstored").await.state,
        EntryState::Processed { .. }
    ));
}

#[tokio::test]
async fn a_full_memory_inbox_answers_503_until_it_has_room() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new().with_capacity(NonZeroUsize::new(1).unwrap());
    let gate = Arc::new(Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (Arc::clone(&gate), Arc::clone(&calls));
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.*", move |_: Event| {
            let (g, c) = (Arc::clone(&g), Arc::clone(&c));
            async move {
                let _permit = g.acquire().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;
    let (first, headers) = ticket(&clock, "msg_room");
    assert_eq!(
        post(addr, &headers, &first).await.status,
        StatusCode::ACCEPTED
    );
    let (second, headers) = ticket(&clock, "msg_no_room");
    let full = post(addr, &headers, &second).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.headers["retry-after"], "5");
    assert_eq!(inbox.len(), 1);
    gate.add_permits(10);
    receiver.shutdown(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Refusals before storing, routes, shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_payload_that_does_not_fit_its_route_is_refused_before_it_is_stored() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.created", |_: Event<Ticket>| async { Ok(()) })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;
    let (body, headers) = signed(&clock, "ticket.created", "msg_bad", json!({"id": 42}));
    let refused = post(addr, &headers, &body).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    // A bad signature too.
    let (body, mut headers) = ticket(&clock, "msg_forged");
    headers.insert("webhook-signature", HeaderValue::from_static("v1,AAAA"));
    assert_eq!(
        post(addr, &headers, &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    // An event type with no route is acknowledged and not stored.
    let (body, headers) = signed(&clock, "order.created", "msg_order", json!({}));
    let ignored = post(addr, &headers, &body).await;
    assert_eq!(
        (ignored.status, ignored.body.as_str()),
        (StatusCode::OK, "ignored")
    );
    receiver.shutdown(Duration::from_secs(5)).await;
    assert!(inbox.is_empty());
}

/// An entry of `event_type`, as a receiver with other routes stored it.
fn entry(text: &str, event_type: &str, at: OffsetDateTime) -> InboxEntry {
    InboxEntry::new(
        id(text),
        EventType::new(event_type).unwrap(),
        Some(at),
        at,
        HeaderMap::new(),
        Bytes::from_static(br#"{"data":{}}"#),
    )
}

#[tokio::test(start_paused = true)]
async fn a_stored_entry_whose_route_is_gone_follows_the_unrouted_setting() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    // Stored by an earlier release that had a route for `order.*`.
    inbox
        .accept(&entry("msg_ack", "order.created", clock.now()))
        .await
        .unwrap();
    let acknowledging = Receiver::builder(intake(clock))
        .on("ticket.*", |_: Event| async {
            Err("not for tickets".into())
        })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    // Nothing wakes the workers but their idle poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    acknowledging.shutdown(Duration::from_secs(5)).await;
    assert!(matches!(
        status(&inbox, "msg_ack").await.state,
        EntryState::Processed { .. }
    ));

    inbox
        .accept(&entry("msg_reject", "order.created", clock.now()))
        .await
        .unwrap();
    let (mut seen, observer) = notices();
    let rejecting = Receiver::builder(intake(clock))
        .on("ticket.*", |_: Event| async { Ok(()) })
        .unrouted(Unrouted::Reject(StatusCode::UNPROCESSABLE_ENTITY))
        .inbox(inbox.clone())
        .observe(observer)
        .build()
        .unwrap();
    let reason = next(&mut seen, |notice| match notice {
        Notice::GaveUp { error, .. } => Some(error.to_string()),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("no route for event type order.created"),
        "{reason}"
    );
    let failed = rejecting.inbox().unwrap().failed(None, 0).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, id("msg_reject"));
    assert_eq!(failed[0].last_error, reason);
    rejecting.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_off_a_handler_past_the_deadline_and_the_entry_waits_in_the_inbox() {
    let clock = TokioClock::new();
    let inbox = MemoryInbox::new();
    let started = Arc::new(Notify::new());
    let s = Arc::clone(&started);
    let (mut seen, observer) = notices();
    let receiver = Receiver::builder(intake(clock))
        .on("ticket.*", move |_: Event| {
            let s = Arc::clone(&s);
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .inbox(inbox.clone())
        .inbox_config(config(1, 3))
        .observe(observer)
        .build()
        .unwrap();
    let addr = serve(receiver.clone()).await;
    for n in ["msg_stuck", "msg_waiting"] {
        let (body, headers) = ticket(&clock, n);
        assert_eq!(
            post(addr, &headers, &body).await.status,
            StatusCode::ACCEPTED
        );
    }
    within(started.notified()).await;
    let start = tokio::time::Instant::now();
    let report = receiver.shutdown(Duration::from_secs(10)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(!report.drained);
    // The handler cut off; the entry no worker had claimed is not counted.
    assert_eq!(report.unfinished, 1);
    let cut = next(&mut seen, |notice| match notice {
        Notice::Unprocessed { id, .. } => Some(id),
        _ => None,
    })
    .await;
    let stuck = status(&inbox, cut.as_str()).await;
    assert_eq!(
        stuck.state,
        EntryState::Pending {
            due_at: clock.now()
        }
    );
    assert_eq!(
        stuck.attempts, 0,
        "a run cut off by shutdown is not counted"
    );
    let (body, headers) = ticket(&clock, "msg_late");
    assert_eq!(
        post(addr, &headers, &body).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The next receiver on the same inbox processes both.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&handled);
    let next_receiver = Receiver::builder(intake(clock))
        .on("ticket.*", move |event: Event| {
            h.lock().unwrap().push(event.id.to_string());
            async { Ok(()) }
        })
        .inbox(inbox.clone())
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    next_receiver.shutdown(Duration::from_secs(5)).await;
    let mut handled = handled.lock().unwrap().clone();
    handled.sort();
    assert_eq!(handled, ["msg_stuck", "msg_waiting"]);
}

#[tokio::test]
async fn invalid_inbox_setups_fail_the_build() {
    let clock = TokioClock::new();
    let err = |builder: hookway::receive::ReceiverBuilder| builder.build().unwrap_err();
    assert!(matches!(
        err(Receiver::builder(intake(clock))
            .inbox(MemoryInbox::new())
            .idempotency(MemoryIdempotencyStore::new())),
        BuildError::Inbox(_)
    ));
    assert!(matches!(
        err(Receiver::builder(intake(clock)).processing(Processing::durable())),
        BuildError::Inbox(_)
    ));
    assert!(matches!(
        err(Receiver::builder(intake(clock))
            .inbox(MemoryInbox::new())
            .processing(Processing::queued(4, 1))),
        BuildError::Inbox(_)
    ));
    let mut no_workers = InboxConfig::default();
    no_workers.workers = 0;
    assert!(matches!(
        err(Receiver::builder(intake(clock))
            .inbox(MemoryInbox::new())
            .inbox_config(no_workers)),
        BuildError::Inbox(_)
    ));
}

#[test]
fn durable_processing_needs_a_runtime() {
    let intake = Intake::new(Verifier::new(Scheme::standard(), secret()).unwrap());
    assert!(matches!(
        Receiver::builder(intake).inbox(MemoryInbox::new()).build(),
        Err(BuildError::NoRuntime)
    ));
}
