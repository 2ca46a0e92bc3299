//! A webhook receiver to copy into a real axum app.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
//!     cargo run --example receiver --features axum
//! ```
//!
//! It listens on `127.0.0.1:3000` (or `LISTEN_ADDR`) and receives Standard
//! Webhooks (hookway's Outbox, Svix, and any sender following the
//! standard) at `POST /webhooks`. For each request hookway:
//!
//! - refuses a body over 1 MiB (413);
//! - verifies the signature over the raw body and the timestamp within
//!   5 minutes (401 otherwise: never processed);
//! - reads the envelope (400 if it is not one) and routes by event type;
//! - acknowledges a message id it has already processed (200) without
//!   running the handler again, since senders deliver at least once;
//! - runs the handler, and answers 200 once it succeeded, or 500 if it
//!   failed, so the sender retries (and the retry runs the handler again).
//!
//! Event types with no route are acknowledged and logged: providers add
//! new types over time, and refusing them would only make the sender retry
//! and eventually disable the endpoint.
//!
//! Ctrl-C stops the server after the requests in flight.

use std::net::SocketAddr;

use hookway::adapters::axum::webhook;
use hookway::receive::Receiver;
use hookway::{Event, Scheme, Secret, Verifier};
use serde::Deserialize;

/// The payload of `ticket.*` events, as the sender documents it. Fields
/// you do not need can be left out; unknown ones are ignored.
#[derive(Debug, Deserialize)]
struct Ticket {
    ticket_id: String,
    #[serde(default)]
    status: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The secret the sender showed when the endpoint was registered
    // (`whsec_…`). Keep it out of source control.
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "set WEBHOOK_SECRET to the endpoint's secret (whsec_…)")?;
    let secret = Secret::base64(&secret)?;
    let listen: SocketAddr = std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()?;

    let receiver = Receiver::builder(Verifier::new(Scheme::standard(), secret)?)
        .on("ticket.created", |event: Event<Ticket>| async move {
            // Do the work here, or hand it to your own job queue. Returning
            // an error answers 500 and the sender retries.
            println!("{} ticket {} created", event.id, event.data.ticket_id);
            Ok(())
        })
        .on("ticket.*", |event: Event<Ticket>| async move {
            println!(
                "{} {} for ticket {} (status {:?})",
                event.id, event.event_type, event.data.ticket_id, event.data.status
            );
            Ok(())
        })
        .build()?;

    let app = axum::Router::new().route("/webhooks", webhook(receiver));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "receiving webhooks at http://{}/webhooks",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        // The peer's address, for an IP allowlist if you add one
        // (`Intake::with_allowlist`).
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
