//! The receiving pipeline without sockets: verification, de-duplication,
//! routing, processing modes and the statuses each failure answers.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookway::clock::{FixedClock, ManualClock};
use hookway::receive::{
    Accepted, Began, BuildError, Envelope, IdempotencyError, IdempotencyStore, Intake, IpAllowlist,
    Malformed, MemoryIdempotencyStore, Notice, Processing, RawEvent, Receiver, Rejection, Unrouted,
};
use hookway::{Event, EventType, MessageId, Scheme, Secret, Signer, Verifier, VerifyError};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: OffsetDateTime = datetime!(2026-03-15 10:30 UTC);

fn secret() -> Secret {
    Secret::base64(SECRET).unwrap()
}

fn signer() -> Signer {
    Signer::new(Scheme::standard(), secret()).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(Scheme::standard(), secret()).unwrap()
}

fn intake() -> Intake {
    Intake::new(verifier()).with_clock(FixedClock(NOW))
}

fn event(event_type: &str, id: &str, data: Value) -> Event {
    Event::new_at(EventType::new(event_type).unwrap(), data, NOW).with_id(id.parse().unwrap())
}

/// A hookway-signed request for `event`, signed at `NOW`.
fn signed(event: &Event) -> (Bytes, HeaderMap) {
    let (body, headers) = signer().sign_event(event, NOW).unwrap();
    (Bytes::from(body), headers)
}

fn request(body: &Bytes, headers: &HeaderMap) -> http::Request<Bytes> {
    let mut request = http::Request::post("/webhooks").body(body.clone()).unwrap();
    *request.headers_mut() = headers.clone();
    request
}

fn ticket(id: &str) -> (Bytes, HeaderMap) {
    signed(&event("ticket.created", id, json!({"id": "tkt_1"})))
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Ticket {
    id: String,
}

/// A handler that counts its calls.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn notices() -> (
    Arc<Mutex<Vec<Notice>>>,
    impl Fn(&Notice) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |n: &Notice| sink.lock().unwrap().push(n.clone()))
}

fn peer(addr: &str) -> Option<SocketAddr> {
    Some(addr.parse().unwrap())
}

// ---------------------------------------------------------------------------
// Accepting, de-duplicating, retrying
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_typed_route_gets_the_event_and_the_request_is_answered_200() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |event: Event<Ticket>| {
            sink.lock().unwrap().push(event);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_1");
    let response = receiver.respond(request(&body, &headers), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "ok");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "msg_1".parse::<MessageId>().unwrap());
    assert_eq!(got[0].event_type, "ticket.created");
    assert_eq!(got[0].timestamp, NOW);
    assert_eq!(got[0].data, Ticket { id: "tkt_1".into() });
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_and_not_processed_again() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .on("ticket.*", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_dup");
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    // The sender retries later with a fresh timestamp and signature.
    let retry = signer()
        .sign(&"msg_dup".parse().unwrap(), NOW, &body)
        .unwrap();
    let again = receiver.respond(request(&body, &retry), None).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.body(), "duplicate");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_handler_answers_500_and_the_retry_is_processed() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let (seen, observer) = notices();
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |_: Event<Ticket>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("database unavailable".into())
                } else {
                    Ok(())
                }
            }
        })
        .observe(observer)
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_fail");
    let first = receiver
        .receive(request(&body, &headers), None)
        .await
        .unwrap_err();
    assert!(matches!(first, Rejection::HandlerFailed));
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(first.body(), "handler failed");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        match &seen[0] {
            Notice::HandlerFailed {
                id,
                error,
                acknowledged,
                ..
            } => {
                assert_eq!(id.as_str(), "msg_fail");
                assert_eq!(error.to_string(), "database unavailable");
                assert!(!acknowledged);
            }
            other => panic!("unexpected notice {other:?}"),
        }
    }
    // Not marked seen: the retry runs the handler, and then it is seen.
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_gives_its_id_back() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let store = Arc::new(MemoryIdempotencyStore::new());
    let receiver = Receiver::builder(intake())
        .idempotency(Arc::clone(&store))
        .on("ticket.created", move |_: Event| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("handler bug");
                }
                Ok(())
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_panic");
    let first = receiver
        .receive(request(&body, &headers), None)
        .await
        .unwrap_err();
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(store.in_progress(), 0);
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
}

#[tokio::test]
async fn a_delivery_of_an_id_in_progress_gets_503_and_the_handler_runs_once() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            let (s, r) = (Arc::clone(&s), Arc::clone(&r));
            async move {
                s.notify_one();
                r.notified().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_busy");
    let first = tokio::spawn({
        let receiver = receiver.clone();
        let request = request(&body, &headers);
        async move { receiver.receive(request, None).await }
    });
    started.notified().await;

    let busy = receiver
        .receive(request(&body, &headers), None)
        .await
        .unwrap_err();
    assert!(matches!(busy, Rejection::InProgress { .. }));
    let response = busy.to_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");

    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), Accepted::Processed);
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_deliveries_of_one_id_run_the_handler_once() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::task::yield_now().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_race");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let receiver = receiver.clone();
        let request = request(&body, &headers);
        tasks.push(tokio::spawn(async move {
            receiver.receive(request, None).await
        }));
    }
    let mut processed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Accepted::Processed) => processed += 1,
            Ok(Accepted::Duplicate) | Err(Rejection::InProgress { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(processed, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn without_a_runtime_the_handler_runs_in_place() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_plain");
    // Everything here is ready at once: poll with a no-op waker.
    let mut future = std::pin::pin!(receiver.receive(request(&body, &headers), None));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => assert_eq!(result.unwrap(), Accepted::Processed),
        std::task::Poll::Pending => panic!("the in-place pipeline should not wait"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_dropped_mid_handler_does_not_cancel_the_handler() {
    let finished = counter();
    let f = Arc::clone(&finished);
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |_: Event| {
            let (f, s, r) = (Arc::clone(&f), Arc::clone(&s), Arc::clone(&r));
            async move {
                s.notify_one();
                r.notified().await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_hangup");
    // The client hangs up while the handler runs: the server drops the
    // request's future.
    {
        let pending = receiver.receive(request(&body, &headers), None);
        tokio::select! {
            _ = pending => panic!("the handler should still be waiting"),
            () = started.notified() => {}
        }
    }
    release.notify_one();
    for _ in 0..100 {
        if finished.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the handler finished");
    // And its id was settled as processed.
    let mut again = receiver.receive(request(&body, &headers), None).await;
    for _ in 0..100 {
        if !matches!(again, Err(Rejection::InProgress { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        again = receiver.receive(request(&body, &headers), None).await;
    }
    assert_eq!(again.unwrap(), Accepted::Duplicate);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

/// A store with a bug.
struct PanickingStore;

impl IdempotencyStore for PanickingStore {
    async fn begin(&self, _: &MessageId, _: OffsetDateTime) -> Result<Began, IdempotencyError> {
        panic!("store bug")
    }

    async fn complete(&self, _: &MessageId, _: OffsetDateTime) -> Result<(), IdempotencyError> {
        Ok(())
    }

    async fn abandon(&self, _: &MessageId) -> Result<(), IdempotencyError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_store_answers_500_and_the_receiver_keeps_working() {
    let receiver = Receiver::builder(intake())
        .on("ticket.created", |_: Event| async { Ok(()) })
        .idempotency(PanickingStore)
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_store_bug");
    for _ in 0..2 {
        let refused = receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap_err();
        assert!(matches!(refused, Rejection::Internal(_)), "{refused:?}");
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

// ---------------------------------------------------------------------------
// Refusals and their statuses
// ---------------------------------------------------------------------------

/// Every body text a refusal may have: short, fixed, echoing nothing.
const FIXED_BODIES: &[&str] = &[
    "payload too large",
    "forbidden",
    "invalid signature",
    "malformed body",
    "unreadable body",
    "in progress, retry later",
    "busy, retry later",
    "shutting down, retry later",
    "handler failed",
    "unknown event type",
    "unavailable, retry later",
    "internal error",
];

fn assert_refused(result: Result<Accepted, Rejection>, status: u16) -> Rejection {
    let rejection = result.expect_err("the request should be refused");
    assert_eq!(rejection.status(), status, "{rejection}");
    let response = rejection.to_response();
    assert_eq!(response.status(), status);
    let text = std::str::from_utf8(response.body()).unwrap();
    assert!(FIXED_BODIES.contains(&text), "{text}");
    rejection
}

#[tokio::test]
async fn signature_and_timestamp_failures_answer_401_without_echoing_anything() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .on("*", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let event = event("ticket.created", "msg_sig", json!({"amount": 10}));
    let (body, headers) = signed(&event);

    // Tampered body.
    let tampered = Bytes::from(
        String::from_utf8(body.to_vec())
            .unwrap()
            .replace("10", "99"),
    );
    let r = assert_refused(
        receiver.receive(request(&tampered, &headers), None).await,
        401,
    );
    assert!(matches!(
        r,
        Rejection::Unverified(VerifyError::NoMatchingSignature)
    ));
    let response = r.to_response();
    let signature = headers["webhook-signature"].to_str().unwrap();
    let sig_b64 = signature.trim_start_matches("v1,");
    let text = std::str::from_utf8(response.body()).unwrap();
    assert!(!text.contains(sig_b64) && !text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));

    // Wrong secret.
    let other = Signer::new(Scheme::standard(), Secret::generate()).unwrap();
    let (_, wrong) = other.sign_event(&event, NOW).unwrap();
    assert_refused(receiver.receive(request(&body, &wrong), None).await, 401);

    // Stale and future timestamps (tolerance: five minutes).
    for at in [
        NOW - Duration::from_secs(301),
        NOW + Duration::from_secs(301),
    ] {
        let (_, h) = signer().sign_event(&event, at).unwrap();
        assert_refused(receiver.receive(request(&body, &h), None).await, 401);
    }
    let (_, h) = signer()
        .sign_event(&event, NOW - Duration::from_secs(299))
        .unwrap();
    assert!(receiver.receive(request(&body, &h), None).await.is_ok());

    // Each header missing.
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = headers.clone();
        h.remove(name);
        let r = assert_refused(receiver.receive(request(&body, &h), None).await, 401);
        assert!(matches!(
            r,
            Rejection::Unverified(VerifyError::MissingHeader(_))
        ));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The configuration prints without its secret.
    assert!(!format!("{receiver:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

#[tokio::test]
async fn malformed_bodies_answer_400_and_claim_nothing() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let store = Arc::new(MemoryIdempotencyStore::new());
    let receiver = Receiver::builder(intake())
        .idempotency(Arc::clone(&store))
        .on("ticket.created", move |_: Event<Ticket>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let sign_raw = |id: &str, body: &[u8]| {
        let headers = signer().sign(&id.parse().unwrap(), NOW, body).unwrap();
        (Bytes::copy_from_slice(body), headers)
    };
    type Case = (Bytes, HeaderMap, fn(&Malformed) -> bool);
    let cases: Vec<Case> = vec![
        {
            let (b, h) = sign_raw("msg_a", b"not json");
            (b, h, |m| matches!(m, Malformed::Json(_)))
        },
        {
            let (b, h) = sign_raw("msg_b", br#"{"id":"msg_b","data":{}}"#);
            (b, h, |m| matches!(m, Malformed::MissingType))
        },
        {
            let (b, h) = sign_raw("msg_c", br#"{"id":"msg_c","type":"a..b","data":{}}"#);
            (b, h, |m| matches!(m, Malformed::InvalidType(_)))
        },
        {
            // The body's id is not the signed one.
            let (b, h) = sign_raw(
                "msg_d",
                br#"{"id":"msg_other","type":"ticket.created","data":{"id":"t"}}"#,
            );
            (b, h, |m| matches!(m, Malformed::IdMismatch))
        },
        {
            // The payload does not fit the route's type.
            let (b, h) = sign_raw(
                "msg_e",
                br#"{"id":"msg_e","type":"ticket.created","data":{"id":5}}"#,
            );
            (b, h, |m| matches!(m, Malformed::Payload(_)))
        },
        {
            let (b, h) = sign_raw(
                "msg_f",
                br#"{"id":"msg_f","type":"ticket.created","timestamp":"yesterday","data":{"id":"t"}}"#,
            );
            (b, h, |m| matches!(m, Malformed::Payload(_)))
        },
    ];
    for (body, headers, expected) in cases {
        let r = assert_refused(receiver.receive(request(&body, &headers), None).await, 400);
        match &r {
            Rejection::Malformed(m) => assert!(expected(m), "{m:?}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(r.body(), "malformed body");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(store.in_progress(), 0);
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413() {
    let receiver = Receiver::builder(intake().with_max_body(100))
        .on_raw("*", |_: RawEvent| async { Ok(()) })
        .build()
        .unwrap();
    let big = event("ticket.created", "msg_big", json!({"pad": "x".repeat(100)}));
    let (body, headers) = signed(&big);
    assert!(body.len() > 100);
    let r = assert_refused(receiver.receive(request(&body, &headers), None).await, 413);
    assert!(matches!(r, Rejection::PayloadTooLarge { limit: 100 }));
    // Exactly at the limit passes.
    let small = event("a.b", "m", json!(null));
    let (body, headers) = signed(&small);
    let receiver = Receiver::builder(intake().with_max_body(body.len()))
        .on_raw("*", |_: RawEvent| async { Ok(()) })
        .build()
        .unwrap();
    assert!(receiver
        .receive(request(&body, &headers), None)
        .await
        .is_ok());
    // The declared length is checked before reading.
    let intake = intake().with_max_body(10);
    assert!(intake.check_length(Some(10)).is_ok());
    assert!(intake.check_length(None).is_ok());
    assert_eq!(
        intake.check_length(Some(11)).unwrap_err().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn the_allowlist_answers_403_outside_it_and_trusts_only_named_proxies() {
    let allow = IpAllowlist::new(["203.0.113.0/24"])
        .unwrap()
        .trust_proxies(["10.0.0.0/8"])
        .unwrap();
    let receiver = Receiver::builder(intake().with_allowlist(allow))
        .on_raw("*", |_: RawEvent| async { Ok(()) })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_ip");
    let with_xff = |xff: &str| {
        let mut h = headers.clone();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    };

    let r = assert_refused(
        receiver
            .receive(request(&body, &headers), peer("198.51.100.7:4000"))
            .await,
        403,
    );
    assert_eq!(r.body(), "forbidden");
    // No peer address with an allowlist: refused.
    assert_refused(receiver.receive(request(&body, &headers), None).await, 403);
    // A forwarded-for header from an untrusted peer is ignored.
    assert_refused(
        receiver
            .receive(
                request(&body, &with_xff("203.0.113.5")),
                peer("198.51.100.7:4000"),
            )
            .await,
        403,
    );
    // From the trusted proxy: the right-most untrusted entry is the client.
    assert_refused(
        receiver
            .receive(
                request(&body, &with_xff("203.0.113.5, 198.51.100.9")),
                peer("10.0.0.2:4000"),
            )
            .await,
        403,
    );
    assert_eq!(
        receiver
            .receive(
                request(&body, &with_xff("198.51.100.9, 203.0.113.5, 10.0.0.3")),
                peer("10.0.0.2:4000"),
            )
            .await
            .unwrap(),
        Accepted::Processed
    );
    // Straight from an allowed address.
    assert_eq!(
        receiver
            .receive(request(&body, &headers), peer("203.0.113.1:4000"))
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    // The allowlist is checked before the signature: an unsigned request
    // from outside is 403, not 401.
    assert_refused(
        receiver
            .receive(request(&body, &HeaderMap::new()), peer("198.51.100.7:4000"))
            .await,
        403,
    );
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn routes_match_in_order_and_unknown_types_are_acknowledged_by_default() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (a, b) = (Arc::clone(&log), Arc::clone(&log));
    let receiver = Receiver::builder(intake())
        .on("ticket.created", move |e: Event<Ticket>| {
            a.lock()
                .unwrap()
                .push(format!("exact {} {}", e.event_type, e.data.id));
            async { Ok(()) }
        })
        .on_raw("ticket.*, sla.breached", move |e: RawEvent| {
            b.lock().unwrap().push(format!("pattern {}", e.event_type));
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let send = |t: &str, id: &str| {
        let (body, headers) = signed(&event(t, id, json!({"id": "tkt_9"})));
        request(&body, &headers)
    };
    assert_eq!(
        receiver
            .receive(send("ticket.created", "m1"), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    assert_eq!(
        receiver
            .receive(send("ticket.sla.breached", "m2"), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    assert_eq!(
        receiver
            .receive(send("sla.breached", "m3"), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    let ignored = receiver.respond(send("customer.created", "m4"), None).await;
    assert_eq!(ignored.status(), StatusCode::OK);
    assert_eq!(ignored.body(), "ignored");
    // `ticket.*` does not match `ticket` itself.
    assert_eq!(
        receiver.receive(send("ticket", "m5"), None).await.unwrap(),
        Accepted::Ignored
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "exact ticket.created tkt_9",
            "pattern ticket.sla.breached",
            "pattern sla.breached"
        ]
    );
}

#[tokio::test]
async fn unknown_types_can_be_rejected_or_caught_by_a_last_route() {
    let strict = Receiver::builder(intake())
        .on("ticket.*", |_: Event| async { Ok(()) })
        .unrouted(Unrouted::Reject(StatusCode::UNPROCESSABLE_ENTITY))
        .build()
        .unwrap();
    let (body, headers) = signed(&event("customer.created", "m1", json!({})));
    let r = assert_refused(strict.receive(request(&body, &headers), None).await, 422);
    assert_eq!(r.body(), "unknown event type");

    let caught = counter();
    let c = Arc::clone(&caught);
    let catch_all = Receiver::builder(intake())
        .on("ticket.*", |_: Event| async { Ok(()) })
        .on_raw("*", move |_: RawEvent| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    assert_eq!(
        catch_all
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    assert_eq!(caught.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_settings_fail_the_build() {
    let build = |b: hookway::receive::ReceiverBuilder| b.build().unwrap_err();
    assert!(matches!(
        build(Receiver::builder(verifier()).on("ti*", |_: Event| async { Ok(()) })),
        BuildError::Pattern(_)
    ));
    assert!(matches!(
        build(Receiver::builder(verifier()).on_raw("", |_: RawEvent| async { Ok(()) })),
        BuildError::EmptyPattern
    ));
    assert!(matches!(
        build(Receiver::builder(verifier()).unrouted(Unrouted::Reject(StatusCode::OK))),
        BuildError::UnroutedStatus(_)
    ));
    assert!(matches!(
        build(Receiver::builder(verifier()).processing(Processing::queued(0, 1))),
        BuildError::Queue(_)
    ));
    assert!(matches!(
        build(Receiver::builder(verifier()).processing(Processing::queued(1, 0))),
        BuildError::Queue(_)
    ));
    // Workers need a runtime; this test has none.
    assert!(matches!(
        build(Receiver::builder(verifier()).processing(Processing::queued(8, 1))),
        BuildError::NoRuntime
    ));
}

// ---------------------------------------------------------------------------
// Other providers' envelopes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn github_deliveries_route_by_header_and_deduplicate_by_delivery_id() {
    let github_secret = Secret::literal("It's a Secret to Everybody").unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(
        Intake::new(Verifier::new(Scheme::github(), github_secret.clone()).unwrap())
            .with_envelope(Envelope::github())
            .with_clock(FixedClock(NOW)),
    )
    .on_raw("push", move |e: RawEvent| {
        sink.lock().unwrap().push(e);
        async { Ok(()) }
    })
    .build()
    .unwrap();
    let body = Bytes::from_static(br#"{"ref":"refs/heads/main","commits":[]}"#);
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let mut headers = Signer::new(Scheme::github(), github_secret)
        .unwrap()
        .sign(&delivery.parse().unwrap(), NOW, &body)
        .unwrap();
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    headers.insert("x-github-delivery", HeaderValue::from_static(delivery));

    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id.as_str(), delivery);
        assert_eq!(got[0].event_type, "push");
        assert_eq!(got[0].signed_at, None);
        assert_eq!(got[0].body, body);
        assert_eq!(got[0].headers["x-github-event"], "push");
        let parsed: Value = got[0].json().unwrap();
        assert_eq!(parsed["ref"], "refs/heads/main");
        // Debug shows no header values.
        assert!(!format!("{:?}", got[0]).contains("sha256="));
    }
    let mut no_type = headers.clone();
    no_type.remove("x-github-event");
    let r = assert_refused(receiver.receive(request(&body, &no_type), None).await, 400);
    assert!(matches!(r, Rejection::Malformed(Malformed::MissingType)));
}

#[tokio::test]
async fn stripe_events_parse_into_typed_events() {
    #[derive(Debug, Deserialize)]
    struct Object<T> {
        object: T,
    }
    #[derive(Debug, Deserialize)]
    struct PaymentIntent {
        id: String,
        amount: u64,
    }
    let stripe = Scheme::stripe();
    let stripe_secret = stripe.parse_secret("whsec_test_0123456789abcdef").unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(
        Intake::new(Verifier::new(stripe.clone(), stripe_secret.clone()).unwrap())
            .with_envelope(Envelope::stripe())
            .with_clock(FixedClock(NOW)),
    )
    .on(
        "payment_intent.succeeded",
        move |e: Event<Object<PaymentIntent>>| {
            sink.lock().unwrap().push(e);
            async { Ok(()) }
        },
    )
    .build()
    .unwrap();
    let body = Bytes::from(
        json!({
            "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": 1686089970,
            "data": {"object": {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "amount": 2000}}
        })
        .to_string(),
    );
    let headers = Signer::new(stripe, stripe_secret)
        .unwrap()
        .sign(&"unused".parse().unwrap(), NOW, &body)
        .unwrap();
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    let got = got.lock().unwrap();
    assert_eq!(got[0].id.as_str(), "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    assert_eq!(got[0].data.object.id, "pi_3MtwBwLkdIwHu7ix28a3tqPa");
    assert_eq!(got[0].data.object.amount, 2000);
    // No `timestamp` in the body: the signed one.
    assert_eq!(got[0].timestamp, NOW);
}

#[tokio::test]
async fn a_standard_webhooks_body_without_id_takes_the_signed_id() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(intake())
        .on("invoice.paid", move |e: Event| {
            sink.lock().unwrap().push(e);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let body = Bytes::from_static(
        br#"{"type":"invoice.paid","timestamp":"2026-03-15T10:29:59Z","data":{"n":1}}"#,
    );
    let headers = signer()
        .sign(
            &"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".parse().unwrap(),
            NOW,
            &body,
        )
        .unwrap();
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Processed
    );
    let got = got.lock().unwrap();
    assert_eq!(got[0].id.as_str(), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
    assert_eq!(got[0].timestamp, datetime!(2026-03-15 10:29:59 UTC));
    assert_eq!(got[0].data, json!({"n": 1}));
}

// ---------------------------------------------------------------------------
// Acknowledge-then-process
// ---------------------------------------------------------------------------

#[tokio::test]
async fn queued_mode_answers_202_and_a_worker_runs_the_handler() {
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let receiver = Receiver::builder(intake())
        .processing(Processing::queued(8, 2))
        .on("ticket.created", move |e: Event<Ticket>| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(e.id).unwrap();
                Ok(())
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_q1");
    let response = receiver.respond(request(&body, &headers), None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(done.recv().await.unwrap().as_str(), "msg_q1");
    // The worker records the id once the handler succeeded; wait for it.
    let mut answer = receiver.receive(request(&body, &headers), None).await;
    while matches!(answer, Err(Rejection::InProgress { .. })) {
        tokio::task::yield_now().await;
        answer = receiver.receive(request(&body, &headers), None).await;
    }
    assert_eq!(answer.unwrap(), Accepted::Duplicate);
    let report = receiver.shutdown(Duration::from_secs(1)).await;
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
}

#[tokio::test]
async fn a_full_queue_answers_503_and_claims_nothing() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let calls = counter();
    let c = Arc::clone(&calls);
    let store = Arc::new(MemoryIdempotencyStore::new());
    let receiver = Receiver::builder(intake())
        .idempotency(Arc::clone(&store))
        .processing(Processing::queued(1, 1))
        .retry_after(Duration::from_secs(30))
        .on("ticket.created", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            let (s, r) = (Arc::clone(&s), Arc::clone(&r));
            async move {
                s.notify_one();
                r.notified().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let send = |id: &str| {
        let (body, headers) = ticket(id);
        request(&body, &headers)
    };
    // The worker takes the first, the queue holds the second.
    assert_eq!(
        receiver.receive(send("q1"), None).await.unwrap(),
        Accepted::Queued
    );
    started.notified().await;
    assert_eq!(
        receiver.receive(send("q2"), None).await.unwrap(),
        Accepted::Queued
    );
    let full = assert_refused(receiver.receive(send("q3"), None).await, 503);
    assert!(matches!(full, Rejection::QueueFull { .. }));
    assert_eq!(full.to_response().headers()["retry-after"], "30");
    assert_eq!(
        store.begin(&"q3".parse().unwrap(), NOW).await.unwrap(),
        Began::New
    );
    store.abandon(&"q3".parse().unwrap()).await.unwrap();

    release.notify_one();
    started.notified().await;
    release.notify_one();
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The sender's retry of the refused one is taken after a restart.
    let after = assert_refused(receiver.receive(send("q3"), None).await, 503);
    assert!(matches!(after, Rejection::ShuttingDown { .. }));
}

#[tokio::test]
async fn a_queued_handler_error_is_reported_and_the_id_given_back() {
    let (seen, observer) = notices();
    let (done_tx, mut done) = mpsc::unbounded_channel::<bool>();
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .processing(Processing::queued(4, 1))
        .observe(observer)
        .on("ticket.created", move |_: Event| {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(first).unwrap();
                if first {
                    Err(std::io::Error::other("downstream refused").into())
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_qf");
    assert_eq!(
        receiver
            .receive(request(&body, &headers), None)
            .await
            .unwrap(),
        Accepted::Queued
    );
    assert!(done.recv().await.unwrap());
    // Acknowledged already; a redelivery (a replay) is processed once the
    // failure gave the id back.
    let mut answer = receiver.receive(request(&body, &headers), None).await;
    while matches!(answer, Err(Rejection::InProgress { .. })) {
        tokio::task::yield_now().await;
        answer = receiver.receive(request(&body, &headers), None).await;
    }
    assert_eq!(answer.unwrap(), Accepted::Queued);
    assert!(!done.recv().await.unwrap());
    receiver.shutdown(Duration::from_secs(1)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    match &seen[0] {
        Notice::HandlerFailed {
            id,
            error,
            acknowledged,
            ..
        } => {
            assert_eq!(id.as_str(), "msg_qf");
            assert_eq!(error.to_string(), "downstream refused");
            assert!(acknowledged);
        }
        other => panic!("unexpected notice {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_the_queue_within_the_deadline() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake())
        .processing(Processing::queued(16, 2))
        .on("ticket.created", move |_: Event| {
            let c = Arc::clone(&c);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    for i in 0..6 {
        let (body, headers) = ticket(&format!("msg_s{i}"));
        assert_eq!(
            receiver
                .receive(request(&body, &headers), None)
                .await
                .unwrap(),
            Accepted::Queued
        );
    }
    let start = tokio::time::Instant::now();
    let report = receiver.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // Two workers, six one-second jobs.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let (body, headers) = ticket("msg_late");
    assert_refused(receiver.receive(request(&body, &headers), None).await, 503);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_back_what_it_could_not_finish_by_the_deadline() {
    let (seen, observer) = notices();
    let store = Arc::new(MemoryIdempotencyStore::new());
    let started = Arc::new(Notify::new());
    let s = Arc::clone(&started);
    let receiver = Receiver::builder(intake())
        .idempotency(Arc::clone(&store))
        .processing(Processing::queued(4, 1))
        .observe(observer)
        .on("ticket.created", move |_: Event| {
            let s = Arc::clone(&s);
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    for id in ["stuck", "queued"] {
        let (body, headers) = ticket(id);
        assert_eq!(
            receiver
                .receive(request(&body, &headers), None)
                .await
                .unwrap(),
            Accepted::Queued
        );
    }
    started.notified().await;
    let start = tokio::time::Instant::now();
    let report = receiver.shutdown(Duration::from_secs(10)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(!report.drained);
    assert_eq!(report.unfinished, 2);
    let mut lost: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|n| match n {
            Notice::Unprocessed { id, .. } => id.to_string(),
            other => panic!("unexpected notice {other:?}"),
        })
        .collect();
    lost.sort();
    assert_eq!(lost, ["queued", "stuck"]);
    // Both ids were given back: a redelivery elsewhere is processed.
    assert_eq!(store.in_progress(), 0);
    for id in ["stuck", "queued"] {
        assert_eq!(
            store.begin(&id.parse().unwrap(), NOW).await.unwrap(),
            Began::New
        );
    }
}

// ---------------------------------------------------------------------------
// The in-memory idempotency store
// ---------------------------------------------------------------------------

fn id(text: &str) -> MessageId {
    text.parse().unwrap()
}

#[tokio::test]
async fn processed_ids_expire_after_the_ttl_counted_from_the_last_sighting() {
    let day = Duration::from_secs(24 * 60 * 60);
    let store = MemoryIdempotencyStore::new().with_ttl(2 * day);
    let t0 = NOW;
    assert_eq!(store.begin(&id("a"), t0).await.unwrap(), Began::New);
    store.complete(&id("a"), t0).await.unwrap();
    assert_eq!(
        store.begin(&id("a"), t0 + day).await.unwrap(),
        Began::Duplicate
    );
    // Seen on day 1: remembered until day 3.
    assert_eq!(
        store
            .begin(&id("a"), t0 + 3 * day - Duration::from_secs(1))
            .await
            .unwrap(),
        Began::Duplicate
    );
    assert_eq!(
        store.begin(&id("a"), t0 + 6 * day).await.unwrap(),
        Began::New
    );
    // The default outlives every retry schedule hookway ships.
    assert_eq!(MemoryIdempotencyStore::new().ttl(), 8 * day);
}

#[tokio::test]
async fn the_least_recently_seen_id_is_evicted_first() {
    let store = MemoryIdempotencyStore::new().with_capacity(NonZeroUsize::new(2).unwrap());
    for name in ["a", "b"] {
        store.begin(&id(name), NOW).await.unwrap();
        store.complete(&id(name), NOW).await.unwrap();
    }
    // `a` is seen again, so `b` is now the least recently seen.
    assert_eq!(store.begin(&id("a"), NOW).await.unwrap(), Began::Duplicate);
    store.begin(&id("c"), NOW).await.unwrap();
    store.complete(&id("c"), NOW).await.unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.begin(&id("a"), NOW).await.unwrap(), Began::Duplicate);
    assert_eq!(store.begin(&id("c"), NOW).await.unwrap(), Began::Duplicate);
    assert_eq!(store.begin(&id("b"), NOW).await.unwrap(), Began::New);
}

#[tokio::test]
async fn claims_block_until_completed_abandoned_or_timed_out() {
    let store = MemoryIdempotencyStore::new()
        .with_claim_timeout(Duration::from_secs(60))
        .with_capacity(NonZeroUsize::new(1).unwrap());
    assert_eq!(store.begin(&id("a"), NOW).await.unwrap(), Began::New);
    assert_eq!(
        store
            .begin(&id("a"), NOW + Duration::from_secs(59))
            .await
            .unwrap(),
        Began::InProgress
    );
    // One claim at most: another id is refused, not silently allowed.
    assert!(matches!(
        store.begin(&id("b"), NOW).await,
        Err(IdempotencyError::Full(1))
    ));
    // A claim older than the timeout is taken over.
    assert_eq!(
        store
            .begin(&id("a"), NOW + Duration::from_secs(60))
            .await
            .unwrap(),
        Began::New
    );
    store.abandon(&id("a")).await.unwrap();
    assert_eq!(store.in_progress(), 0);
    assert_eq!(store.begin(&id("b"), NOW).await.unwrap(), Began::New);
}

#[tokio::test]
async fn a_full_store_answers_503_rather_than_skipping_deduplication() {
    let store = MemoryIdempotencyStore::new().with_capacity(NonZeroUsize::new(1).unwrap());
    store.begin(&id("held"), NOW).await.unwrap();
    let receiver = Receiver::builder(intake())
        .idempotency(store)
        .on("*", |_: Event| async { Ok(()) })
        .build()
        .unwrap();
    let (body, headers) = ticket("msg_other");
    let r = assert_refused(receiver.receive(request(&body, &headers), None).await, 503);
    assert!(matches!(r, Rejection::Store(IdempotencyError::Full(_))));
}

#[tokio::test]
async fn the_receiver_remembers_ids_for_the_ttl_on_its_clock() {
    let clock = ManualClock::new(NOW);
    let calls = counter();
    let c = Arc::clone(&calls);
    let receiver = Receiver::builder(intake().with_clock(clock.clone()))
        .idempotency(MemoryIdempotencyStore::new().with_ttl(Duration::from_secs(3600)))
        .on("*", move |_: Event| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let body = ticket("msg_ttl").0;
    let at = |t: OffsetDateTime| {
        let headers = signer().sign(&id("msg_ttl"), t, &body).unwrap();
        request(&body, &headers)
    };
    assert_eq!(
        receiver.receive(at(NOW), None).await.unwrap(),
        Accepted::Processed
    );
    clock.advance(Duration::from_secs(1800));
    assert_eq!(
        receiver.receive(at(clock_now(&clock)), None).await.unwrap(),
        Accepted::Duplicate
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        receiver.receive(at(clock_now(&clock)), None).await.unwrap(),
        Accepted::Processed
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

fn clock_now(clock: &ManualClock) -> OffsetDateTime {
    hookway::clock::Clock::now(clock)
}
