//! The whole loop in one program: an Outbox sends signed webhooks to two
//! axum receivers over loopback, one of which fails its first attempts, and
//! retries until everything is delivered and verified.
//!
//! Run with `cargo run --example quickstart --features outbox,reqwest,axum`.
//!
//! - The **receivers** are hookway `Receiver`s mounted in one axum app on an
//!   ephemeral 127.0.0.1 port: they verify each request's signature over the
//!   raw body, de-duplicate by message id, and route by event type.
//!   `/hooks/crm` processes every event; `/hooks/billing`'s handler fails
//!   the first two times it sees a message (it answers 500, as a receiver
//!   whose database is briefly down would), so the sender retries.
//! - The **sender** is an `Outbox` on the in-memory store with a shortened
//!   retry schedule (100 ms, 200 ms, 400 ms, 800 ms) so the demo ends in
//!   well under a second of retrying.
//!
//! At the end it prints the delivery log (every attempt, with its time
//! from the first publish, status and what happened next) and the events
//! each receiver verified and processed, and checks that every event
//! reached both receivers exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookway::adapters::axum::webhook;
use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock, SystemClock};
use hookway::delivery::{AttemptOutcome, DeliveryState};
use hookway::endpoint::Endpoint;
use hookway::outbox::Outbox;
use hookway::receive::Receiver;
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, MemoryStore, Store};
use hookway::{Event, EventType, MessageId, Scheme, Secret, Verifier};
use serde::Deserialize;
use serde_json::json;

/// The payload the receivers expect, typed.
#[derive(Debug, Deserialize)]
struct Ticket {
    ticket_id: String,
    #[serde(default)]
    subject: Option<String>,
}

impl Ticket {
    fn describe(self) -> String {
        match self.subject {
            Some(subject) => format!("{} ({subject})", self.ticket_id),
            None => self.ticket_id,
        }
    }
}

/// What a receiver processed: (receiver, message id, event type, ticket).
type Log = Arc<Mutex<Vec<(&'static str, MessageId, EventType, String)>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each endpoint has its own secret. The sender keeps it; the customer
    // who registered the endpoint is shown it once and configures their
    // receiver with it.
    let crm_secret = Secret::generate();
    let billing_secret = Secret::generate();
    let processed: Log = Arc::new(Mutex::new(Vec::new()));

    // --- The receivers ----------------------------------------------------
    let crm = {
        let log = Arc::clone(&processed);
        Receiver::builder(Verifier::new(Scheme::standard(), crm_secret.clone())?)
            .on("ticket.*", move |event: Event<Ticket>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().map_err(|_| "log poisoned")?.push((
                        "crm",
                        event.id,
                        event.event_type,
                        event.data.describe(),
                    ));
                    Ok(())
                }
            })
            .build()?
    };
    let billing = {
        let log = Arc::clone(&processed);
        let seen: Arc<Mutex<HashMap<MessageId, u32>>> = Arc::default();
        Receiver::builder(Verifier::new(Scheme::standard(), billing_secret.clone())?)
            .on("ticket.*", move |event: Event<Ticket>| {
                let (log, seen) = (Arc::clone(&log), Arc::clone(&seen));
                async move {
                    let tries = {
                        let mut seen = seen.lock().map_err(|_| "poisoned")?;
                        let tries = seen.entry(event.id.clone()).or_default();
                        *tries += 1;
                        *tries
                    };
                    if tries <= 2 {
                        // Answered 500; the id is not marked processed, so
                        // the sender's retry runs this handler again.
                        return Err("billing database unavailable".into());
                    }
                    log.lock().map_err(|_| "log poisoned")?.push((
                        "billing",
                        event.id,
                        event.event_type,
                        event.data.describe(),
                    ));
                    Ok(())
                }
            })
            .build()?
    };
    let app = axum::Router::new()
        .route("/hooks/crm", webhook(crm))
        .route("/hooks/billing", webhook(billing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("receivers listening on http://{address}/hooks/{{crm,billing}}");

    // --- The sender -------------------------------------------------------
    let dispatcher = ReqwestDispatcher::builder()
        // Plain HTTP to loopback, for this demo only. A production sender
        // keeps the defaults: HTTPS only, and an SSRF guard that refuses
        // loopback, private and cloud-metadata addresses.
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()?;
    let outbox = Outbox::new(MemoryStore::new(), dispatcher);
    let policy = RetryPolicy::fixed([100, 200, 400, 800].map(Duration::from_millis)).build()?;
    for (id, path, secret) in [
        ("ep_crm", "/hooks/crm", crm_secret),
        ("ep_billing", "/hooks/billing", billing_secret),
    ] {
        let endpoint = Endpoint::builder(
            id.parse()?,
            &format!("http://{address}{path}"),
            Scheme::standard(),
            secret,
        )
        .timeout(Duration::from_secs(5))
        .retry_policy(policy.clone())
        .build()?;
        outbox.add_endpoint(endpoint).await?;
    }
    let workers = outbox.start(2);

    let started = SystemClock.now();
    let tickets = [
        ("ticket.created", "tkt_1", Some("Printer on fire")),
        ("ticket.updated", "tkt_1", None),
        ("ticket.created", "tkt_2", Some("Password reset")),
        ("ticket.closed", "tkt_1", None),
    ];
    let mut published = Vec::new();
    for (event_type, ticket, subject) in tickets {
        let event = Event::new(
            EventType::new(event_type)?,
            json!({ "ticket_id": ticket, "subject": subject }),
        );
        let deliveries = outbox.publish_event(&event, &[]).await?;
        println!(
            "published {} {event_type:<15} → {} deliveries",
            event.id,
            deliveries.len()
        );
        // Publishing the same event again creates nothing new.
        assert_eq!(outbox.publish_event(&event, &[]).await?, deliveries);
        published.push(event.id);
    }

    // Wait (at most 10 s) until nothing is pending or in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox.store().next_due().await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err("deliveries still pending after 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    workers.shutdown(Duration::from_secs(5)).await;

    // --- What happened ----------------------------------------------------
    println!("\ndelivery log (ms from the first publish):");
    let store = outbox.store();
    let mut delivered = 0;
    for delivery in store.deliveries(&DeliveryQuery::default()).await? {
        let state = match delivery.state() {
            DeliveryState::Delivered { .. } => {
                delivered += 1;
                "delivered".to_owned()
            }
            DeliveryState::Failed { reason, .. } => format!("FAILED ({reason})"),
            other => other.kind().to_string(),
        };
        println!(
            "{} {:<15} → {:<10} {state}",
            delivery.event_id(),
            delivery.event_type().as_str(),
            delivery.endpoint_id().as_str(),
        );
        for attempt in store.attempts(delivery.id()).await? {
            let at = (attempt.started_at() - started).whole_milliseconds();
            let status = attempt
                .status()
                .map_or_else(|| "no response".to_owned(), |s| s.to_string());
            let outcome = match attempt.outcome() {
                AttemptOutcome::Delivered => "delivered",
                AttemptOutcome::Retryable { .. } => "will retry",
                AttemptOutcome::Permanent { .. } => "permanent failure",
                _ => "",
            };
            println!(
                "    attempt {} at {at:>4} ms: {status} ({outcome})",
                attempt.number()
            );
        }
    }

    println!("\nverified and processed by the receivers:");
    let processed = processed.lock().map_err(|_| "log poisoned")?.clone();
    for (receiver, id, event_type, ticket) in &processed {
        println!(
            "    {receiver:<8} {id} {:<15} {ticket}",
            event_type.as_str()
        );
    }

    // Every event reached both receivers exactly once.
    for receiver in ["crm", "billing"] {
        let mut ids: Vec<&MessageId> = processed
            .iter()
            .filter(|(r, ..)| *r == receiver)
            .map(|(_, id, ..)| id)
            .collect();
        ids.sort();
        let mut expected: Vec<&MessageId> = published.iter().collect();
        expected.sort();
        if ids != expected {
            return Err(format!("{receiver} processed {ids:?}, expected {expected:?}").into());
        }
    }
    if delivered != 2 * published.len() {
        return Err(format!(
            "{delivered} of {} deliveries delivered",
            2 * published.len()
        )
        .into());
    }
    println!(
        "\nall {} events delivered to both endpoints and processed once each",
        published.len()
    );
    Ok(())
}
