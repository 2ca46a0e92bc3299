//! A sender service: publish each event once; the Outbox signs it, delivers
//! it to every subscribed endpoint, retries on schedule and logs every
//! attempt.
//!
//! Run with `cargo run --example sender --features outbox,reqwest`.
//!
//! So that it runs anywhere, the example starts its own receiver on
//! 127.0.0.1 with two endpoints: `/healthy` accepts everything; `/flaky`
//! answers the first request of each message with 503, drops the connection
//! on the second, accepts the third, and rejects `ticket.deleted` with 422
//! (a permanent failure). Everything after "The sender" is what a real
//! service would copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock, SystemClock};
use hookway::delivery::{Attempt, AttemptOutcome, DeliveryState};
use hookway::endpoint::Endpoint;
use hookway::outbox::Outbox;
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, MemoryStore, Store};
use hookway::{Event, EventType, Scheme, Secret, Verifier};
use serde_json::json;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each endpoint has its own secret, shown once to the customer who
    // registers it (`secret.expose_text()`).
    let healthy_secret = Secret::generate();
    let flaky_secret = Secret::generate();
    let receiver = start_receiver(HashMap::from([
        (
            "/healthy",
            Verifier::new(Scheme::standard(), healthy_secret.clone())?,
        ),
        (
            "/flaky",
            Verifier::new(Scheme::standard(), flaky_secret.clone())?,
        ),
    ]))
    .await?;

    // --- The sender -------------------------------------------------------
    let dispatcher = ReqwestDispatcher::builder()
        // This demo talks plain HTTP to loopback. A production sender keeps
        // the defaults: HTTPS only, and the SSRF guard refusing loopback,
        // private, link-local and cloud-metadata addresses, which a customer
        // could otherwise register as an endpoint URL.
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()?;
    let outbox = Outbox::new(MemoryStore::new(), dispatcher);

    // A short schedule so the demo ends quickly; real senders use a preset
    // such as `RetryPolicy::standard_webhooks()` (5 s, 5 min, 30 min, …).
    let policy = RetryPolicy::fixed([
        Duration::from_millis(200),
        Duration::from_millis(400),
        Duration::from_millis(800),
    ])
    .build()?;
    for (id, path, secret) in [
        ("ep_healthy", "/healthy", healthy_secret),
        ("ep_flaky", "/flaky", flaky_secret),
    ] {
        let endpoint = Endpoint::builder(
            id.parse()?,
            &format!("http://{receiver}{path}"),
            Scheme::standard(),
            secret,
        )
        .timeout(Duration::from_secs(5))
        .retry_policy(policy.clone())
        .event_header("X-Relay-Event")
        .delivery_header("X-Relay-Delivery")
        .build()?;
        outbox.add_endpoint(endpoint).await?;
    }

    let workers = outbox.start(2);
    let started = SystemClock.now();
    let events = [
        (
            "ticket.created",
            json!({"ticket_id": "tkt_1", "subject": "Printer on fire"}),
        ),
        (
            "ticket.updated",
            json!({"ticket_id": "tkt_1", "status": "open"}),
        ),
        (
            "customer.created",
            json!({"customer_id": "cus_7", "name": "Ada"}),
        ),
        (
            "ticket.created",
            json!({"ticket_id": "tkt_2", "subject": "Password reset"}),
        ),
        ("ticket.deleted", json!({"ticket_id": "tkt_2"})),
    ];
    for (event_type, data) in events {
        let event = Event::new(EventType::new(event_type)?, data);
        // Publishing the same event id again would create no new delivery.
        let ids = outbox.publish_event(&event, &[]).await?;
        println!(
            "published {} {event_type} → {} deliveries",
            event.id,
            ids.len()
        );
    }

    // Wait (at most 10 s) until no delivery is pending or in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox.store().next_due().await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err("deliveries still pending after 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.shutdown(Duration::from_secs(5)).await;

    // The delivery log: what an operator's dashboard would show.
    println!("\ndelivery log (times from the first publish):");
    let store = outbox.store();
    for delivery in store.deliveries(&DeliveryQuery::default()).await? {
        let state = match delivery.state() {
            DeliveryState::Delivered { .. } => "delivered".to_owned(),
            DeliveryState::Failed { reason, .. } => format!("FAILED ({reason})"),
            other => other.kind().to_string(),
        };
        println!(
            "{} {} {:<16} → {:<10} {state}",
            delivery.id(),
            delivery.event_id(),
            delivery.event_type().as_str(),
            delivery.endpoint_id().as_str(),
        );
        for attempt in store.attempts(delivery.id()).await? {
            println!("    {}", describe(&attempt, started));
        }
    }
    Ok(())
}

/// One line of the log: number, start time, result.
fn describe(attempt: &Attempt, since: OffsetDateTime) -> String {
    let at = (attempt.started_at() - since).as_seconds_f64();
    let result = match (attempt.status(), attempt.error_kind()) {
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(kind)) => kind.to_string(),
        (None, None) => "no result".to_owned(),
    };
    let verdict = match attempt.outcome() {
        AttemptOutcome::Delivered => "ok",
        AttemptOutcome::Retryable { .. } => "will retry",
        AttemptOutcome::Permanent { .. } => "permanent",
        _ => "",
    };
    let mut line = format!(
        "#{} at +{at:.3}s, {:>4} ms: {result} ({verdict})",
        attempt.number(),
        attempt.duration().as_millis()
    );
    if let Some(body) = attempt.response_excerpt() {
        line.push_str(&format!(" body {body:?}"));
    }
    line
}

// ---------------------------------------------------------------------------
// The demo receiver: one request per connection, signature checked first.
// ---------------------------------------------------------------------------

type Seen = Arc<Mutex<HashMap<(String, String), u32>>>;

async fn start_receiver(
    verifiers: HashMap<&'static str, Verifier>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let verifiers = Arc::new(verifiers);
    let seen: Seen = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, Arc::clone(&verifiers), Arc::clone(&seen)));
        }
    });
    Ok(addr)
}

async fn answer(
    mut stream: TcpStream,
    verifiers: Arc<HashMap<&'static str, Verifier>>,
    seen: Seen,
) {
    let Some((path, headers, body)) = read_request(&mut stream).await else {
        return;
    };
    // Verify the raw body before anything else.
    let verified = verifiers
        .get(path.as_str())
        .map(|v| v.verify(&headers, &body));
    let reply: Option<(u16, &str)> = match verified {
        None => Some((404, "no such endpoint")),
        Some(Err(e)) => Some((e.status().as_u16(), "bad signature")),
        Some(Ok(_)) => {
            let id = header(&headers, "webhook-id");
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry((path.clone(), id)).or_insert(0);
                *n += 1;
                *n
            };
            match (path.as_str(), n) {
                ("/flaky", _) if header(&headers, "x-relay-event") == "ticket.deleted" => {
                    Some((422, "unknown ticket"))
                }
                ("/flaky", 1) => Some((503, "maintenance, back soon")),
                ("/flaky", 2) => None, // drop the connection without answering
                _ => Some((204, "")),
            }
        }
    };
    if let Some((status, text)) = reply {
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            text.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Reads one HTTP/1.1 request with a `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Option<(String, http::HeaderMap, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            http::HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    let length: usize = match headers.get("content-length") {
        Some(v) => v.to_str().ok()?.parse().ok()?,
        None => 0,
    };
    let mut body = buf.split_off(head_end + 4);
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, headers, body))
}
