//! The axum adapter over real loopback HTTP: interoperability with the
//! `standardwebhooks` crate, the statuses of every refusal, de-duplication,
//! several providers in one app, and the extractors.
//!
//! Requests go out through hookway's own reqwest dispatcher (a real HTTP
//! client); the few that need a hand-made request (a chunked body) are
//! written on a plain TCP stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use hookway::adapters::axum::{router, webhook, VerifiedEvent, VerifiedRaw};
use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock, SystemClock};
use hookway::dispatch::Dispatcher;
use hookway::receive::{Envelope, Intake, IpAllowlist, Processing, RawEvent, Receiver};
use hookway::{Event, EventType, Scheme, Secret, Signer, Verifier};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const STRIPE_SECRET: &str = "whsec_test_0123456789abcdef";

fn now() -> OffsetDateTime {
    SystemClock.now()
}

fn secret() -> Secret {
    Secret::base64(SECRET).unwrap()
}

fn signer() -> Signer {
    Signer::new(Scheme::standard(), secret()).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(Scheme::standard(), secret()).unwrap()
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Ticket {
    id: String,
}

fn ticket_event(id: &str) -> Event {
    Event::new_at(
        EventType::from_static("ticket.created"),
        json!({"id": "tkt_1"}),
        now(),
    )
    .with_id(id.parse().unwrap())
}

/// Serves `app` on an ephemeral loopback port, with the peer's address.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

fn client() -> ReqwestDispatcher {
    // Plain HTTP to loopback, for the tests only.
    ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn post_to(addr: SocketAddr, path: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .body(Bytes::copy_from_slice(body))
        .unwrap();
    request.headers_mut().extend(headers.clone());
    request
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let response = client()
        .send(request, Duration::from_secs(10))
        .await
        .expect("the server answers");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: String::from_utf8(response.body().to_vec()).unwrap(),
    }
}

/// A receiver that records the events it processes.
fn recording() -> (Receiver, Arc<Mutex<Vec<Event>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(verifier())
        .on("ticket.*", move |event: Event| {
            sink.lock().unwrap().push(event);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    (receiver, got)
}

#[tokio::test]
async fn a_hookway_signed_request_is_accepted_and_a_duplicate_processed_once() {
    let (receiver, got) = recording();
    let addr = serve(Router::new().route("/hooks/standard", webhook(receiver))).await;
    let event = ticket_event("msg_axum_1");
    let (body, headers) = signer().sign_event(&event, now()).unwrap();

    let first = post_to(addr, "/hooks/standard", &headers, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "ok");
    // The sender did not hear the answer and retries, signed afresh.
    let (_, again) = signer().sign_event(&event, now()).unwrap();
    let second = post_to(addr, "/hooks/standard", &again, &body).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, "duplicate");

    let got = got.lock().unwrap();
    assert_eq!(*got, [event]);
}

#[tokio::test]
async fn a_request_signed_by_the_standardwebhooks_crate_is_accepted() {
    let (receiver, got) = recording();
    let addr = serve(Router::new().route("/hooks", webhook(receiver))).await;
    // A Standard Webhooks payload: the id travels only in `webhook-id`.
    let body =
        br#"{"type":"ticket.updated","timestamp":"2026-03-15T10:30:00Z","data":{"id":"tkt_2"}}"#;
    let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
    let ts = now().unix_timestamp();
    let signature = theirs.sign("msg_theirs_1", ts, body).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_static("msg_theirs_1"));
    headers.insert("webhook-timestamp", HeaderValue::from(ts));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );

    let reply = post_to(addr, "/hooks", &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id.as_str(), "msg_theirs_1");
    assert_eq!(got[0].event_type, "ticket.updated");
    assert_eq!(got[0].data, json!({"id": "tkt_2"}));
}

#[tokio::test]
async fn hookway_signed_requests_as_received_pass_the_standardwebhooks_verifier() {
    let got = Arc::new(Mutex::new(Vec::<RawEvent>::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(verifier())
        .on_raw("*", move |raw: RawEvent| {
            sink.lock().unwrap().push(raw);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let addr = serve(Router::new().route("/hooks", webhook(receiver))).await;
    let event = ticket_event("msg_interop_2");
    let (body, headers) = signer().sign_event(&event, now()).unwrap();
    assert_eq!(
        post_to(addr, "/hooks", &headers, &body).await.status,
        StatusCode::OK
    );

    let raw = got.lock().unwrap().pop().unwrap();
    let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
    theirs.verify(&raw.body, &raw.headers).unwrap();
    // And what their verifier refuses, hookway refused too.
    let mut tampered = raw.body.to_vec();
    tampered[0] = b' ';
    assert!(theirs.verify(&tampered, &raw.headers).is_err());
}

#[tokio::test]
async fn every_refusal_gets_its_status_over_http() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let receiver = Receiver::builder(Intake::new(verifier()).with_max_body(1024))
        .on("ticket.*", move |event: Event| {
            sink.lock().unwrap().push(event);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let addr = serve(Router::new().route("/hooks", webhook(receiver))).await;
    let event = ticket_event("msg_refusals");
    let (body, headers) = signer().sign_event(&event, now()).unwrap();

    let expect = |reply: Reply, status: StatusCode, text: &str| {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.body, text);
        // Nothing of the request or the secret comes back.
        let sig = headers["webhook-signature"].to_str().unwrap();
        assert!(!reply.body.contains(&sig[3..]));
    };

    // Tampered body.
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] = b'X';
    expect(
        post_to(addr, "/hooks", &headers, &tampered).await,
        StatusCode::UNAUTHORIZED,
        "invalid signature",
    );
    // Stale timestamp (ten minutes; the tolerance is five).
    let (_, stale) = signer()
        .sign_event(&event, now() - Duration::from_secs(600))
        .unwrap();
    expect(
        post_to(addr, "/hooks", &stale, &body).await,
        StatusCode::UNAUTHORIZED,
        "invalid signature",
    );
    // Wrong secret.
    let (_, wrong) = Signer::new(Scheme::standard(), Secret::generate())
        .unwrap()
        .sign_event(&event, now())
        .unwrap();
    expect(
        post_to(addr, "/hooks", &wrong, &body).await,
        StatusCode::UNAUTHORIZED,
        "invalid signature",
    );
    // Missing headers.
    expect(
        post_to(addr, "/hooks", &HeaderMap::new(), &body).await,
        StatusCode::UNAUTHORIZED,
        "invalid signature",
    );
    let mut no_signature = headers.clone();
    no_signature.remove("webhook-signature");
    expect(
        post_to(addr, "/hooks", &no_signature, &body).await,
        StatusCode::UNAUTHORIZED,
        "invalid signature",
    );
    // Signed, but not an event.
    let (junk, junk_headers) = {
        let junk = b"[1, 2, 3]".to_vec();
        let h = signer()
            .sign(&"msg_junk".parse().unwrap(), now(), &junk)
            .unwrap();
        (junk, h)
    };
    expect(
        post_to(addr, "/hooks", &junk_headers, &junk).await,
        StatusCode::BAD_REQUEST,
        "malformed body",
    );
    // Oversized, with its length declared.
    let big = Event::new_at(
        EventType::from_static("ticket.created"),
        json!({"pad": "x".repeat(2000)}),
        now(),
    );
    let (big_body, big_headers) = signer().sign_event(&big, now()).unwrap();
    expect(
        post_to(addr, "/hooks", &big_headers, &big_body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
    );
    // Oversized and chunked: refused while reading.
    let reply = raw_chunked(addr, "/hooks", &big_headers, &big_body).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // None of those ran the handler; the genuine request does.
    assert!(got.lock().unwrap().is_empty());
    expect(
        post_to(addr, "/hooks", &headers, &body).await,
        StatusCode::OK,
        "ok",
    );
    assert_eq!(got.lock().unwrap().len(), 1);
}

/// Sends `body` in chunks with `Transfer-Encoding: chunked` (no declared
/// length) and returns the raw response.
async fn raw_chunked(addr: SocketAddr, path: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(256) {
        let framed = format!("{:x}\r\n", chunk.len());
        // The server may answer and close before the last chunk.
        if stream.write_all(framed.as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_client_outside_the_allowlist_gets_403() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let excluding_loopback = Receiver::builder(
        Intake::new(verifier()).with_allowlist(IpAllowlist::new(["10.0.0.0/8"]).unwrap()),
    )
    .on("*", move |_: Event| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
    .build()
    .unwrap();
    let including_loopback = Receiver::builder(
        Intake::new(verifier()).with_allowlist(IpAllowlist::new(["127.0.0.0/8"]).unwrap()),
    )
    .on("*", |_: Event| async { Ok(()) })
    .build()
    .unwrap();
    let addr = serve(
        Router::new()
            .route("/closed", webhook(excluding_loopback.clone()))
            .route("/open", webhook(including_loopback.clone())),
    )
    .await;
    let (body, headers) = signer().sign_event(&ticket_event("msg_ip"), now()).unwrap();

    let reply = post_to(addr, "/closed", &headers, &body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "forbidden");
    // Claiming to be forwarded from an allowed address does not help: the
    // peer is no trusted proxy.
    let mut forged = headers.clone();
    forged.insert("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
    assert_eq!(
        post_to(addr, "/closed", &forged, &body).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        post_to(addr, "/open", &headers, &body).await.status,
        StatusCode::OK
    );

    // Served without the peer's address, an allowlist refuses everything.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let blind = listener.local_addr().unwrap();
    let app = Router::new().route("/open", webhook(including_loopback));
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        post_to(blind, "/open", &headers, &body).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let receiver = Receiver::builder(verifier())
        .processing(Processing::queued(1, 1))
        .on("ticket.created", move |_: Event| {
            let (s, r) = (Arc::clone(&s), Arc::clone(&r));
            async move {
                s.notify_one();
                r.notified().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let addr = serve(Router::new().route("/hooks", webhook(receiver.clone()))).await;
    let send = |id: &str| {
        let (body, headers) = signer().sign_event(&ticket_event(id), now()).unwrap();
        async move { post_to(addr, "/hooks", &headers, &body).await }
    };
    let first = send("msg_q1").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    started.notified().await;
    assert_eq!(send("msg_q2").await.status, StatusCode::ACCEPTED);
    let full = send("msg_q3").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.body, "busy, retry later");
    assert_eq!(full.headers["retry-after"], "5");

    release.notify_one();
    started.notified().await;
    release.notify_one();
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
}

#[tokio::test]
async fn github_and_stripe_are_received_beside_standard_webhooks_at_other_paths() {
    let (standard, standard_got) = recording();
    let github_got = Arc::new(Mutex::new(Vec::<RawEvent>::new()));
    let g = Arc::clone(&github_got);
    let github_secret = Secret::literal(GITHUB_SECRET).unwrap();
    let github = Receiver::builder(
        Intake::new(Verifier::new(Scheme::github(), github_secret.clone()).unwrap())
            .with_envelope(Envelope::github()),
    )
    .on_raw("push", move |raw: RawEvent| {
        g.lock().unwrap().push(raw);
        async { Ok(()) }
    })
    .build()
    .unwrap();
    let stripe_got = Arc::new(Mutex::new(Vec::<Event>::new()));
    let s = Arc::clone(&stripe_got);
    let stripe_secret = Scheme::stripe().parse_secret(STRIPE_SECRET).unwrap();
    let stripe = Receiver::builder(
        Intake::new(Verifier::new(Scheme::stripe(), stripe_secret.clone()).unwrap())
            .with_envelope(Envelope::stripe()),
    )
    .on("payment_intent.*", move |event: Event| {
        s.lock().unwrap().push(event);
        async { Ok(()) }
    })
    .build()
    .unwrap();
    let addr = serve(
        Router::new()
            .route("/webhooks", webhook(standard))
            .route("/webhooks/github", webhook(github))
            .nest("/webhooks/stripe", router(stripe)),
    )
    .await;

    // Standard Webhooks.
    let (body, headers) = signer()
        .sign_event(&ticket_event("msg_multi"), now())
        .unwrap();
    assert_eq!(
        post_to(addr, "/webhooks", &headers, &body).await.status,
        StatusCode::OK
    );

    // GitHub.
    let push = br#"{"ref":"refs/heads/main","commits":[]}"#;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let mut gh = Signer::new(Scheme::github(), github_secret)
        .unwrap()
        .sign(&delivery.parse().unwrap(), now(), push)
        .unwrap();
    gh.insert("x-github-event", HeaderValue::from_static("push"));
    gh.insert("x-github-delivery", HeaderValue::from_static(delivery));
    assert_eq!(
        post_to(addr, "/webhooks/github", &gh, push).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_to(addr, "/webhooks/github", &gh, push).await.body,
        "duplicate"
    );
    // A Standard Webhooks request at the GitHub path does not pass.
    assert_eq!(
        post_to(addr, "/webhooks/github", &headers, &body)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Stripe.
    let intent = json!({
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "amount": 2000}}
    })
    .to_string();
    let st = Signer::new(Scheme::stripe(), stripe_secret)
        .unwrap()
        .sign(&"unused".parse().unwrap(), now(), intent.as_bytes())
        .unwrap();
    assert!(st.contains_key("stripe-signature"));
    assert_eq!(
        post_to(addr, "/webhooks/stripe", &st, intent.as_bytes())
            .await
            .status,
        StatusCode::OK
    );

    assert_eq!(standard_got.lock().unwrap().len(), 1);
    let github_got = github_got.lock().unwrap();
    assert_eq!(github_got.len(), 1);
    assert_eq!(github_got[0].id.as_str(), delivery);
    assert_eq!(github_got[0].body.as_ref(), push);
    let stripe_got = stripe_got.lock().unwrap();
    assert_eq!(stripe_got.len(), 1);
    assert_eq!(stripe_got[0].id.as_str(), "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    assert_eq!(
        stripe_got[0].data["object"]["id"],
        "pi_3MtwBwLkdIwHu7ix28a3tqPa"
    );
}

#[tokio::test]
async fn the_extractors_verify_and_parse_under_the_limit() {
    async fn typed(VerifiedEvent(event): VerifiedEvent<Ticket>) -> String {
        format!("{} {} {}", event.id, event.event_type, event.data.id)
    }
    async fn raw(VerifiedRaw(raw): VerifiedRaw) -> String {
        format!("{} {}", raw.id, raw.body.len())
    }
    let app = Router::new()
        .route("/typed", post(typed))
        .route("/raw", post(raw))
        .with_state(Intake::new(verifier()).with_max_body(512));
    let addr = serve(app).await;
    let (body, headers) = signer()
        .sign_event(&ticket_event("msg_extract"), now())
        .unwrap();

    let reply = post_to(addr, "/typed", &headers, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "msg_extract ticket.created tkt_1");
    let reply = post_to(addr, "/raw", &headers, &body).await;
    assert_eq!(reply.body, format!("msg_extract {}", body.len()));

    let mut tampered = body.clone();
    tampered.push(b' ');
    let reply = post_to(addr, "/typed", &headers, &tampered).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body, "invalid signature");

    // A payload that does not fit the handler's type.
    let other = Event::new_at(
        EventType::from_static("ticket.created"),
        json!({"id": 42}),
        now(),
    );
    let (other_body, other_headers) = signer().sign_event(&other, now()).unwrap();
    assert_eq!(
        post_to(addr, "/typed", &other_headers, &other_body)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let big = Event::new_at(
        EventType::from_static("ticket.created"),
        json!({"id": "x".repeat(600)}),
        now(),
    );
    let (big_body, big_headers) = signer().sign_event(&big, now()).unwrap();
    assert_eq!(
        post_to(addr, "/raw", &big_headers, &big_body).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let reply = raw_chunked(addr, "/typed", &big_headers, &big_body).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

#[tokio::test]
async fn the_extractor_takes_its_intake_from_a_receiver_state() {
    async fn handler(VerifiedEvent(event): VerifiedEvent<Value>) -> String {
        event.id.to_string()
    }
    let (receiver, _) = recording();
    let app = Router::new()
        .route("/manual", post(handler))
        .with_state(receiver);
    let addr = serve(app).await;
    let (body, headers) = signer()
        .sign_event(&ticket_event("msg_state"), now())
        .unwrap();
    let reply = post_to(addr, "/manual", &headers, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "msg_state");
}
