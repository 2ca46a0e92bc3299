//! Receiving webhooks in an [axum](https://docs.rs/axum/0.8) 0.8 app.
//!
//! Two ways in:
//!
//! - **A ready-made route** from a [`Receiver`]: [`webhook`] gives a
//!   `POST` method router to mount at any path with `Router::route`, and
//!   [`router`] a `Router` to `nest` under one. The receiver does
//!   everything: limit, allowlist, verification, de-duplication, routing
//!   by event type, inline or queued processing, and the providers'
//!   statuses.
//! - **An extractor** for a handler of your own: [`VerifiedEvent<T>`] reads
//!   the raw body under the limit, verifies it and parses it into an
//!   [`Event<T>`], with the [`Intake`] taken from the router's state;
//!   [`VerifiedRaw`] gives the headers and bytes instead. A failure is a
//!   [`Rejection`], answered with its status (413, 403, 401, 400). The
//!   extractor does not de-duplicate: that needs to know whether your
//!   handler succeeded, which the ready-made route does.
//!
//! Either way the body is read by hookway under [`Intake::max_body`]
//! (axum's `DefaultBodyLimit` does not apply): a declared `Content-Length`
//! over the limit is refused before the body is read, a chunked body as
//! soon as it passes the limit.
//!
//! # The client's address
//!
//! An [`IpAllowlist`](crate::receive::IpAllowlist) needs the peer's
//! address, which axum provides when the app is served with
//! `into_make_service_with_connect_info::<SocketAddr>()`. Without it, a
//! receiver with an allowlist refuses every request (403): the check fails
//! closed.
//!
//! # Example: three providers in one app
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use axum::Router;
//! use hookway::adapters::axum::{router, webhook};
//! use hookway::receive::{Envelope, Intake, RawEvent, Receiver};
//! use hookway::{Event, Scheme, Secret, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A Standard Webhooks sender (hookway's Outbox, Svix, …).
//! let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let standard = Receiver::builder(Verifier::new(Scheme::standard(), secret)?)
//!     .on("ticket.*", |event: Event| async move {
//!         println!("{} {}", event.event_type, event.data);
//!         Ok(())
//!     })
//!     .build()?;
//!
//! // GitHub: id and type in headers, the body is not an envelope.
//! let github_secret = Secret::literal("It's a Secret to Everybody")?;
//! let github = Receiver::builder(
//!     Intake::new(Verifier::new(Scheme::github(), github_secret.clone())?)
//!         .with_envelope(Envelope::github())
//!         .with_max_body(25 * 1024 * 1024),
//! )
//! .on_raw("push", |push: RawEvent| async move {
//!     let body: serde_json::Value = push.json()?;
//!     println!("push to {}", body["ref"]);
//!     Ok(())
//! })
//! .build()?;
//!
//! // Stripe: `data` is `{"object": …}`.
//! let stripe_secret = Scheme::stripe().parse_secret("whsec_test_0123456789abcdef")?;
//! let stripe = Receiver::builder(
//!     Intake::new(Verifier::new(Scheme::stripe(), stripe_secret)?)
//!         .with_envelope(Envelope::stripe()),
//! )
//! .on("payment_intent.*", |event: Event| async move {
//!     println!("{}: {}", event.event_type, event.data["object"]["id"]);
//!     Ok(())
//! })
//! .build()?;
//!
//! let app = Router::new()
//!     .route("/webhooks", webhook(standard))
//!     .route("/webhooks/github", webhook(github))
//!     .nest("/webhooks/stripe", router(stripe));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! // With the peer's address, for allowlists.
//! let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
//! # tokio::spawn(async move { server.await });
//! # // One signed push, over loopback.
//! # use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # let body = br#"{"ref":"refs/heads/main"}"#;
//! # let signed = hookway::Signer::new(Scheme::github(), github_secret)?
//! #     .sign(&"72d3162e-cc78-11e3-81ab-4c9367dc0958".parse()?, time::OffsetDateTime::UNIX_EPOCH, body)?;
//! # let mut stream = tokio::net::TcpStream::connect(addr).await?;
//! # let head = format!(
//! #     "POST /webhooks/github HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nx-github-event: push\r\n\
//! #      x-github-delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958\r\nx-hub-signature-256: {}\r\nconnection: close\r\n\r\n",
//! #     body.len(),
//! #     signed["x-hub-signature-256"].to_str()?,
//! # );
//! # stream.write_all(head.as_bytes()).await?;
//! # stream.write_all(body).await?;
//! # let mut response = String::new();
//! # stream.read_to_string(&mut response).await?;
//! # assert!(response.starts_with("HTTP/1.1 200"), "{response}");
//! # Ok(())
//! # }
//! ```
//!
//! # Example: the extractor
//!
//! ```
//! use axum::routing::post;
//! use axum::Router;
//! use hookway::adapters::axum::VerifiedEvent;
//! use hookway::receive::Intake;
//! use hookway::{Scheme, Secret, Verifier};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Ticket {
//!     id: String,
//! }
//!
//! async fn ticket(VerifiedEvent(event): VerifiedEvent<Ticket>) -> &'static str {
//!     println!("{}: ticket {}", event.event_type, event.data.id);
//!     "ok"
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! // The state is the Intake, or any state it can be taken from (`FromRef`).
//! let app: Router = Router::new()
//!     .route("/tickets", post(ticket))
//!     .with_state(Intake::new(Verifier::new(Scheme::standard(), secret)?));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRef, FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Extensions, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::event::Event;
use crate::receive::{log_rejection, Accepted, Admitted, Intake, RawEvent, Receiver, Rejection};

/// An extractor: the request's body, verified and parsed into an
/// [`Event<T>`] (see [`Admitted::decode`](crate::receive::Admitted::decode)).
///
/// Needs an [`Intake`] from the state (`Intake: FromRef<S>`; a
/// [`Receiver`] state provides one). Fails with a [`Rejection`]. Named so
/// as not to clash with [`hookway::Verified`](crate::Verified).
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedEvent<T = serde_json::Value>(pub Event<T>);

/// An extractor: the request, verified, with its headers and body as
/// received. Needs an [`Intake`] from the state, as [`VerifiedEvent`] does.
#[derive(Clone, Debug)]
pub struct VerifiedRaw(pub RawEvent);

impl<S, T> FromRequest<S> for VerifiedEvent<T>
where
    S: Send + Sync,
    Intake: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (admitted, _, body) = admit(&Intake::from_ref(state), request).await?;
        match admitted.decode(&body) {
            Ok(event) => Ok(Self(event)),
            Err(malformed) => {
                let rejection = Rejection::Malformed(malformed);
                log_rejection(&rejection, None);
                Err(rejection)
            }
        }
    }
}

impl<S> FromRequest<S> for VerifiedRaw
where
    S: Send + Sync,
    Intake: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (admitted, headers, body) = admit(&Intake::from_ref(state), request).await?;
        Ok(Self(admitted.into_raw(headers, body)))
    }
}

impl FromRef<Receiver> for Intake {
    fn from_ref(receiver: &Receiver) -> Self {
        receiver.intake().clone()
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.to_response().map(Body::from)
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        self.to_response().map(Body::from)
    }
}

/// A `POST` route that hands every request to `receiver`; mount it at any
/// path with `Router::route`.
///
/// Serve the app with `into_make_service_with_connect_info::<SocketAddr>()`
/// if the receiver has an allowlist.
pub fn webhook<S>(receiver: Receiver) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    post(serve).with_state(receiver)
}

/// A router with [`webhook`] at its root, to `nest` at any path
/// (`Router::new().nest("/webhooks/stripe", router(stripe))`).
pub fn router<S>(receiver: Receiver) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/", webhook(receiver))
}

async fn serve(State(receiver): State<Receiver>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = peer(&parts.extensions);
    let body = match read_body(receiver.intake(), &parts.headers, peer, body).await {
        Ok(body) => body,
        Err(rejection) => {
            log_rejection(&rejection, peer);
            return rejection.into_response();
        }
    };
    match receiver.receive_parts(parts.headers, body, peer).await {
        Ok(accepted) => accepted.into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

/// Reads and admits a request for the extractors, logging a refusal.
async fn admit(
    intake: &Intake,
    request: Request,
) -> Result<(Admitted, HeaderMap, Bytes), Rejection> {
    let (parts, body) = request.into_parts();
    let peer = peer(&parts.extensions);
    let admitted = match read_body(intake, &parts.headers, peer, body).await {
        Ok(body) => intake
            .admit(&parts.headers, &body, peer)
            .map(|admitted| (admitted, body)),
        Err(rejection) => Err(rejection),
    };
    match admitted {
        Ok((admitted, body)) => Ok((admitted, parts.headers, body)),
        Err(rejection) => {
            log_rejection(&rejection, peer);
            Err(rejection)
        }
    }
}

fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Reads the body under the intake's limit, after the checks that need no
/// body: the declared length and the client's address.
async fn read_body(
    intake: &Intake,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    body: Body,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    intake.check_length(declared)?;
    intake.check_peer(headers, peer)?;
    match Limited::new(body, intake.max_body()).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Rejection::PayloadTooLarge {
            limit: intake.max_body(),
        }),
        Err(_) => Err(Rejection::BodyUnreadable),
    }
}
