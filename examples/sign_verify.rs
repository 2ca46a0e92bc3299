//! Sign a webhook the way a sender does, verify it the way a receiver does.
//!
//! Run with `cargo run --example sign_verify`.

#![allow(clippy::disallowed_methods)] // examples read the wall clock

use hookway::{Event, EventType, Keyring, Scheme, Secret, Signer, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Serialize, Deserialize)]
struct TicketCreated {
    ticket_id: String,
    subject: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The secret both sides share. A sender creates it once per endpoint
    // (`Secret::generate()`) and shows `expose_text()` to the customer.
    let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;

    // --- Sender ---------------------------------------------------------
    let signer = Signer::new(Scheme::standard(), Keyring::new(secret.clone()))?;
    let event = Event::new(
        EventType::new("ticket.created")?,
        TicketCreated {
            ticket_id: "tkt_789".into(),
            subject: "Help needed".into(),
        },
    );
    // Sign every attempt with the time of that attempt.
    let (body, headers) = signer.sign_event(&event, OffsetDateTime::now_utc())?;
    println!("POST /webhooks");
    for (name, value) in &headers {
        println!("{name}: {}", value.to_str()?);
    }
    println!("\n{}\n", String::from_utf8_lossy(&body));

    // --- Receiver -------------------------------------------------------
    let verifier = Verifier::new(Scheme::standard(), secret)?;
    let received: Event<TicketCreated> = verifier.verify_event(&headers, &body)?;
    println!(
        "verified {} {} (ticket {}, \"{}\")",
        received.event_type, received.id, received.data.ticket_id, received.data.subject
    );

    // A tampered body is refused with a typed error and a 401.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    match verifier.verify(&headers, &tampered) {
        Err(err @ VerifyError::NoMatchingSignature) => {
            println!("tampered body: {err} -> HTTP {}", err.status());
        }
        other => return Err(format!("tampered body was not refused: {other:?}").into()),
    }

    // Receiving from GitHub instead: its secret is used as literal bytes.
    let github = Scheme::github();
    let gh_secret = github.parse_secret("It's a Secret to Everybody")?;
    let gh_signer = Signer::new(github.clone(), gh_secret.clone())?;
    let gh_headers = gh_signer.sign(
        &"delivery-1".parse()?,
        OffsetDateTime::now_utc(),
        b"Hello, World!",
    )?;
    println!(
        "GitHub style: x-hub-signature-256: {}",
        gh_headers["x-hub-signature-256"].to_str()?
    );
    Verifier::new(github, gh_secret)?.verify(&gh_headers, b"Hello, World!")?;
    println!("GitHub-style request verified");
    Ok(())
}
