//! The front of the pipeline, pure and synchronous: size limit, allowlist,
//! verification, and finding the message id and event type.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::JsonError;
use crate::event::{Event, EventType, MessageId};
use crate::verify::{Verified, Verifier};

use super::allowlist::IpAllowlist;
use super::response::{Malformed, Rejection};
use super::route::RawEvent;

/// The default body limit: 1 MiB, the same as the sending side's
/// `outbox::DEFAULT_MAX_PAYLOAD`.
///
/// Raise it for providers that send more: GitHub caps its payloads at
/// 25 MB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Where a message id or event type is read from.
#[derive(Clone, PartialEq, Eq)]
pub struct Source(SourceKind);

#[derive(Clone, PartialEq, Eq)]
enum SourceKind {
    VerifiedId,
    Header(HeaderName),
    Field(Box<str>),
}

impl Source {
    /// The message id the scheme read while verifying
    /// ([`Verified::id`](crate::Verified::id)): the signed `webhook-id`
    /// under Standard Webhooks, or a scheme's id header.
    pub fn verified_id() -> Self {
        Self(SourceKind::VerifiedId)
    }

    /// A request header, such as GitHub's `X-GitHub-Event`.
    pub fn header(name: HeaderName) -> Self {
        Self(SourceKind::Header(name))
    }

    /// A top-level field of the JSON body, such as `type`. A string, or an
    /// integer (taken as its decimal text); `null` counts as absent.
    pub fn field(name: &str) -> Self {
        Self(SourceKind::Field(name.into()))
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            SourceKind::VerifiedId => f.write_str("verified id"),
            SourceKind::Header(name) => write!(f, "header {name}"),
            SourceKind::Field(name) => write!(f, "field {name:?}"),
        }
    }
}

/// How a receiver finds each request's message id (which de-duplication
/// keys on) and event type (which routing matches on).
///
/// Each is read from the first of its sources that has it. Whatever the
/// source, when the scheme signs a message id (Standard Webhooks'
/// `webhook-id`), the id found must equal it or the request is refused as
/// malformed: de-duplication and the signature must speak of one message.
///
/// | preset | message id | event type |
/// | --- | --- | --- |
/// | [`standard`](Self::standard) (default) | body `id`, else the signed `webhook-id` | body `type` |
/// | [`github`](Self::github) | `X-GitHub-Delivery` | `X-GitHub-Event` |
/// | [`stripe`](Self::stripe) | body `id` | body `type` |
///
/// ```
/// use hookway::receive::{Envelope, Source};
/// use http::HeaderName;
///
/// // A sender that names the event in a header and the id in the body.
/// let envelope = Envelope::new(
///     Source::field("event_id"),
///     Source::header(HeaderName::from_static("x-relay-event")),
/// )
/// .or_id_from(Source::verified_id());
/// # let _ = envelope;
/// ```
#[derive(Clone, Debug)]
pub struct Envelope {
    id: Vec<Source>,
    event_type: Vec<Source>,
}

impl Default for Envelope {
    fn default() -> Self {
        Self::standard()
    }
}

impl Envelope {
    /// Reads the id from `id` and the event type from `event_type`.
    pub fn new(id: Source, event_type: Source) -> Self {
        Self {
            id: vec![id],
            event_type: vec![event_type],
        }
    }

    /// hookway's envelope and Standard Webhooks': the id from the body's
    /// `id` (hookway's [`Event`]) or, where the body has none (other
    /// Standard Webhooks senders), the signed `webhook-id`; the type from
    /// the body's `type`.
    ///
    /// A sender whose body has a top-level `id` that is not the message id
    /// would be refused (the id differs from the signed one); for it, read
    /// the id from the headers only:
    /// `Envelope::new(Source::verified_id(), Source::field("type"))`.
    pub fn standard() -> Self {
        Self::new(Source::field("id"), Source::field("type")).or_id_from(Source::verified_id())
    }

    /// GitHub: `X-GitHub-Delivery` (a GUID per delivery, the same on a
    /// redelivery) and `X-GitHub-Event` (`push`, `pull_request`, …).
    pub fn github() -> Self {
        Self::new(
            Source::header(HeaderName::from_static("x-github-delivery")),
            Source::header(HeaderName::from_static("x-github-event")),
        )
    }

    /// Stripe: the event object's `id` (`evt_…`) and `type`
    /// (`payment_intent.succeeded`, …).
    pub fn stripe() -> Self {
        Self::new(Source::field("id"), Source::field("type"))
    }

    /// Adds a fallback source of the id, tried after the others.
    #[must_use]
    pub fn or_id_from(mut self, source: Source) -> Self {
        self.id.push(source);
        self
    }

    /// Adds a fallback source of the event type, tried after the others.
    #[must_use]
    pub fn or_type_from(mut self, source: Source) -> Self {
        self.event_type.push(source);
        self
    }

    /// The body fields any source reads, each once.
    fn fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = Vec::new();
        for source in self.id.iter().chain(&self.event_type) {
            if let SourceKind::Field(name) = &source.0 {
                if !fields.contains(&&**name) {
                    fields.push(name);
                }
            }
        }
        fields
    }

    /// The id and type of a verified request.
    fn resolve(
        &self,
        headers: &HeaderMap,
        verified: &Verified<'_>,
    ) -> Result<(MessageId, EventType), Malformed> {
        let names = self.fields();
        let values = if names.is_empty() {
            Vec::new()
        } else {
            top_level_fields(verified.body(), &names)?
        };
        let find = |sources: &[Source]| -> Result<Option<String>, Malformed> {
            for source in sources {
                let found = match &source.0 {
                    SourceKind::VerifiedId => verified.id().map(str::to_owned),
                    SourceKind::Header(name) => match headers.get(name) {
                        None => None,
                        Some(value) => Some(
                            value
                                .to_str()
                                .map_err(|_| Malformed::NotText(name.as_str().into()))?
                                .to_owned(),
                        ),
                    },
                    SourceKind::Field(name) => names
                        .iter()
                        .position(|n| *n == &**name)
                        .and_then(|i| values.get(i).cloned().flatten()),
                };
                if found.is_some() {
                    return Ok(found);
                }
            }
            Ok(None)
        };
        let id = find(&self.id)?.ok_or(Malformed::MissingId)?;
        let id = MessageId::new(id).map_err(Malformed::InvalidId)?;
        if verified.signed_id().is_some_and(|s| s != id.as_str()) {
            return Err(Malformed::IdMismatch);
        }
        let event_type = find(&self.event_type)?.ok_or(Malformed::MissingType)?;
        let event_type = EventType::new(event_type).map_err(Malformed::InvalidType)?;
        Ok((id, event_type))
    }
}

/// Reads the top-level fields `names` of a JSON object in one pass,
/// skipping everything else without building it.
fn top_level_fields(body: &[u8], names: &[&str]) -> Result<Vec<Option<String>>, Malformed> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let values = FieldsSeed { names }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Malformed::Json(JsonError(e)))?;
    Ok(values)
}

struct FieldsSeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // `None` until the field is seen, so a repeated one is caught. One
        // allocation, and not a zeroed one: glibc's `calloc` bypasses its
        // per-thread cache, and a `vec![false; n]` here cost more than
        // anything else in this function.
        let mut values: Vec<Option<Option<String>>> = vec![None; self.names.len()];
        while let Some(slot) = map.next_key_seed(KeySeed { names: self.names })? {
            match slot {
                Some(i) => {
                    if values[i].is_some() {
                        return Err(de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            self.names[i]
                        )));
                    }
                    values[i] = Some(map.next_value::<Option<Text>>()?.map(|t| t.0));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values.into_iter().map(Option::flatten).collect())
    }
}

/// A key: the index of the wanted name it equals, if any. Compared in
/// place, never copied.
struct KeySeed<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|n| *n == key))
    }
}

/// A string, or an integer as its decimal text.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// A request that passed the [`Intake`]: from an allowed client, within the
/// size limit, verified, with a valid message id and event type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admitted {
    /// The message id.
    pub id: MessageId,
    /// The event type.
    pub event_type: EventType,
    /// The signed timestamp, if the scheme has one.
    pub signed_at: Option<OffsetDateTime>,
    /// When the request was admitted (the intake's clock).
    pub received_at: OffsetDateTime,
}

/// The envelope's `data` and `timestamp`; its `id` and `type` were read
/// already.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Payload<T> {
    data: T,
    #[serde(default, with = "crate::serde_util::rfc3339::option")]
    timestamp: Option<OffsetDateTime>,
}

impl Admitted {
    /// Parses the body's `data` field as `T` into an [`Event<T>`] with this
    /// request's id and type.
    ///
    /// The event's `timestamp` is the body's `timestamp` (RFC 3339) if it
    /// has one, else the signed timestamp, else the time of receipt. This
    /// fits hookway's envelope, Standard Webhooks' (`{type, timestamp,
    /// data}`) and Stripe's (`data` is `{"object": …}`); for bodies without
    /// a `data` field, take a [`RawEvent`] and parse it whole.
    pub fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<Event<T>, Malformed> {
        let payload: Payload<T> =
            serde_json::from_slice(body).map_err(|e| Malformed::Payload(JsonError(e)))?;
        Ok(Event {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            timestamp: payload
                .timestamp
                .or(self.signed_at)
                .unwrap_or(self.received_at),
            data: payload.data,
        })
    }

    /// The request as a [`RawEvent`]: id, type and timestamps with the
    /// headers and body untouched.
    pub fn into_raw(self, headers: HeaderMap, body: Bytes) -> RawEvent {
        RawEvent {
            id: self.id,
            event_type: self.event_type,
            signed_at: self.signed_at,
            received_at: self.received_at,
            headers,
            body,
        }
    }
}

/// The checks every request passes before any handler sees it, in order:
/// body size limit, IP allowlist, signature ([`Verifier`]), then the message
/// id and event type ([`Envelope`]).
///
/// Pure and synchronous: the axum extractor uses it alone; a
/// [`Receiver`](super::Receiver) adds de-duplication, routing and
/// processing behind it.
///
/// ```
/// use hookway::{Event, Scheme, Secret, Signer, Verifier, EventType};
/// use hookway::receive::{Intake, IpAllowlist, Rejection};
/// use time::macros::datetime;
///
/// let secret = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let intake = Intake::new(Verifier::new(Scheme::standard(), secret.clone())?)
///     .with_max_body(64 * 1024)
///     .with_allowlist(IpAllowlist::new(["127.0.0.0/8"])?);
///
/// let now = datetime!(2026-03-15 10:30 UTC);
/// let event = Event::new_at(EventType::new("ticket.created")?, serde_json::json!({"n": 1}), now);
/// let (body, headers) = Signer::new(Scheme::standard(), secret)?.sign_event(&event, now)?;
///
/// let peer = Some("127.0.0.1:50000".parse()?);
/// let admitted = intake.admit_at(&headers, &body, peer, now)?;
/// assert_eq!(admitted.id, event.id);
/// assert_eq!(admitted.decode::<serde_json::Value>(&body)?, event);
///
/// let elsewhere = Some("198.51.100.7:50000".parse()?);
/// let refused = intake.admit_at(&headers, &body, elsewhere, now).unwrap_err();
/// assert_eq!(refused.status(), 403);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Intake {
    verifier: Arc<Verifier>,
    max_body: usize,
    allowlist: Option<Arc<IpAllowlist>>,
    envelope: Arc<Envelope>,
    clock: Arc<dyn Clock + Send + Sync>,
}

impl From<Verifier> for Intake {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

impl Intake {
    /// An intake that verifies with `verifier`, with a body limit of
    /// [`DEFAULT_MAX_BODY`], no allowlist, [`Envelope::standard`] and the
    /// system clock.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            max_body: DEFAULT_MAX_BODY,
            allowlist: None,
            envelope: Arc::new(Envelope::standard()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the largest body accepted, in bytes; larger ones are answered
    /// 413.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Refuses clients outside `allowlist` with 403.
    #[must_use]
    pub fn with_allowlist(mut self, allowlist: IpAllowlist) -> Self {
        self.allowlist = Some(Arc::new(allowlist));
        self
    }

    /// Sets where the message id and event type are found.
    #[must_use]
    pub fn with_envelope(mut self, envelope: Envelope) -> Self {
        self.envelope = Arc::new(envelope);
        self
    }

    /// Reads time from `clock` (for the timestamp tolerance, and the
    /// de-duplication entries of a [`Receiver`](super::Receiver)).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The body limit, in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The allowlist, if any.
    pub fn allowlist(&self) -> Option<&IpAllowlist> {
        self.allowlist.as_deref()
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The current time, from the intake's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Refuses a body whose declared length (`Content-Length`) exceeds the
    /// limit, before it is read.
    pub fn check_length(&self, declared: Option<u64>) -> Result<(), Rejection> {
        match declared {
            Some(len) if len > self.max_body as u64 => Err(Rejection::PayloadTooLarge {
                limit: self.max_body,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a client outside the allowlist. With an allowlist, an
    /// unknown peer (`None`) is refused: the check fails closed.
    pub fn check_peer(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<(), Rejection> {
        let Some(allowlist) = &self.allowlist else {
            return Ok(());
        };
        let Some(peer) = peer else {
            return Err(Rejection::Forbidden { client: None });
        };
        match allowlist.client_ip(peer.ip(), headers) {
            Some(client) if allowlist.ranges().iter().any(|r| r.contains(client)) => Ok(()),
            client => Err(Rejection::Forbidden { client }),
        }
    }

    /// Runs every check as of the intake's clock.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<Admitted, Rejection> {
        self.admit_at(headers, body, peer, self.now())
    }

    /// Runs every check as of `now`: size limit (413), allowlist (403),
    /// signature and timestamp (401), message id and event type (400).
    pub fn admit_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<SocketAddr>,
        now: OffsetDateTime,
    ) -> Result<Admitted, Rejection> {
        if body.len() > self.max_body {
            return Err(Rejection::PayloadTooLarge {
                limit: self.max_body,
            });
        }
        self.check_peer(headers, peer)?;
        let verified = self.verifier.verify_at(headers, body, now)?;
        let (id, event_type) = self.envelope.resolve(headers, &verified)?;
        Ok(Admitted {
            id,
            event_type,
            signed_at: verified.timestamp(),
            received_at: now,
        })
    }
}

impl fmt::Debug for Intake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intake")
            .field("verifier", &self.verifier)
            .field("max_body", &self.max_body)
            .field("allowlist", &self.allowlist)
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str, names: &[&str]) -> Result<Vec<Option<String>>, Malformed> {
        top_level_fields(body.as_bytes(), names)
    }

    #[test]
    fn top_level_fields_are_read_and_the_rest_skipped() {
        let body = r#"{"data":{"id":"inner","type":"x"},"type":"ticket.created","id":"evt_1","n":[1,{"a":null}]}"#;
        assert_eq!(
            fields(body, &["id", "type"]).unwrap(),
            vec![Some("evt_1".into()), Some("ticket.created".into())]
        );
        assert_eq!(
            fields(r#"{"id":42,"type":null}"#, &["id", "type"]).unwrap(),
            vec![Some("42".into()), None]
        );
        assert_eq!(
            fields(r#"{"i\u0064":"esc"}"#, &["id"]).unwrap(),
            vec![Some("esc".into())]
        );
    }

    #[test]
    fn bad_bodies_are_malformed() {
        for body in [
            "",
            "[]",
            "null",
            "{",
            r#"{"id":"a"} trailing"#,
            r#"{"id":{"nested":1}}"#,
            r#"{"id":1.5}"#,
            r#"{"id":"a","id":"b"}"#,
        ] {
            assert!(
                matches!(fields(body, &["id"]), Err(Malformed::Json(_))),
                "{body}"
            );
        }
    }
}
