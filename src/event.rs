//! The event envelope: [`Event`], [`MessageId`], [`EventType`] and
//! [`EventFilter`].
//!
//! The envelope is what hookway sends by default and what its receivers parse
//! by default, with the JSON shape `{"id", "type", "timestamp", "data"}`. It is
//! never forced on anyone: [`Signer`](crate::Signer) signs any bytes, and a
//! receiver of another provider's shape verifies first and then deserialises
//! into its own type (see [`Verifier::verify_json`](crate::Verifier::verify_json)).

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::{Clock, SystemClock};
use time::{OffsetDateTime, UtcOffset};

/// The longest [`MessageId`] accepted, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 256;
/// The longest [`EventType`] accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// Why a string is not a valid [`MessageId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessageId {
    /// The id is empty.
    #[error("message id is empty")]
    Empty,
    /// The id is longer than [`MAX_MESSAGE_ID_LEN`] bytes.
    #[error("message id is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character other than visible ASCII.
    #[error("message id has a character that is not visible ASCII at byte {position}")]
    InvalidChar {
        /// Byte offset of the first offending character.
        position: usize,
    },
    /// The id holds a `.`, which would make the signed content
    /// `{id}.{timestamp}.{body}` ambiguous.
    #[error("message id has a '.' at byte {position}; '.' separates the signed parts")]
    Dot {
        /// Byte offset of the first `.`.
        position: usize,
    },
}

/// A validated message id: 1 to 256 visible ASCII characters, no `.`.
///
/// The id is part of the signed content under Standard Webhooks
/// (`{id}.{timestamp}.{body}`), so a `.` in it is refused, as are spaces and
/// control characters, which cannot travel in an HTTP header unmangled.
///
/// ```
/// use hookway::MessageId;
///
/// let id: MessageId = "msg_p5jXN8AQM9LWM0D4loKWxJek".parse()?;
/// assert_eq!(id.as_str(), "msg_p5jXN8AQM9LWM0D4loKWxJek");
/// assert!("msg.1".parse::<MessageId>().is_err());
///
/// let fresh = MessageId::generate();
/// assert!(fresh.as_str().starts_with("msg_"));
/// # Ok::<(), hookway::event::InvalidMessageId>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(std::sync::Arc<str>);

impl MessageId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidMessageId> {
        let id = id.into();
        validate_message_id(&id)?;
        Ok(Self(std::sync::Arc::from(id)))
    }

    /// A fresh, unique id: `msg_` followed by 26 characters (Crockford
    /// base32 of a 48-bit millisecond timestamp, a 32-bit process-wide
    /// sequence number and 48 random bits), so ids sort by creation time;
    /// within one millisecond, ids made by one process sort in the order
    /// they were made (except across the sequence number's wrap, once every
    /// 2³² ids).
    pub fn generate() -> Self {
        Self::generate_at(SystemClock.now())
    }

    /// Like [`generate`](Self::generate), with the time part taken from `now`.
    pub fn generate_at(now: OffsetDateTime) -> Self {
        let millis = (now.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u128;
        // Below the time: a process-wide sequence number (32 bits), then 48
        // random bits. Ids made in the same millisecond by one process sort
        // in the order they were made, even when callers pass different
        // clocks (a test's fixed time beside the wall clock), which a
        // "last id + 1" rule would not ensure.
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut random = [0u8; 6];
        crate::random::fill(&mut random);
        let mut value = (millis << 80) | (u128::from(sequence) << 48);
        for (i, byte) in random.iter().enumerate() {
            value |= u128::from(*byte) << (8 * (5 - i));
        }
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut out = String::with_capacity(30);
        out.push_str("msg_");
        for i in (0..26).rev() {
            out.push(ALPHABET[((value >> (5 * i)) & 31) as usize] as char);
        }
        Self(std::sync::Arc::from(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn validate_message_id(id: &str) -> Result<(), InvalidMessageId> {
    if id.is_empty() {
        return Err(InvalidMessageId::Empty);
    }
    if id.len() > MAX_MESSAGE_ID_LEN {
        return Err(InvalidMessageId::TooLong {
            len: id.len(),
            max: MAX_MESSAGE_ID_LEN,
        });
    }
    for (position, byte) in id.bytes().enumerate() {
        match byte {
            b'.' => return Err(InvalidMessageId::Dot { position }),
            b'!'..=b'~' => {}
            _ => return Err(InvalidMessageId::InvalidChar { position }),
        }
    }
    Ok(())
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for MessageId {
    type Error = InvalidMessageId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::new(s.into_owned()).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a valid [`EventType`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventType {
    /// The name is empty.
    #[error("event type is empty")]
    Empty,
    /// The name is longer than [`MAX_EVENT_TYPE_LEN`] bytes.
    #[error("event type is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Two dots in a row, or a dot at the start or end.
    #[error(
        "event type has an empty segment at byte {position} (a leading, trailing or doubled '.')"
    )]
    EmptySegment {
        /// Byte offset where the empty segment starts.
        position: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ -` and the `.` separator.
    #[error("event type has {found:?} at byte {position}; only ASCII letters, digits, '_', '-' and '.' separators are allowed")]
    InvalidChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        position: usize,
    },
}

/// A validated, dotted event type name such as `ticket.created`,
/// `budget.threshold.reached` or `notification.auth_link_clicked`.
///
/// Segments are separated by `.`; each is non-empty and made of ASCII
/// letters, digits, `_` and `-`. Names are case-sensitive and at most
/// [`MAX_EVENT_TYPE_LEN`] bytes. `*` is reserved for [`EventFilter`] patterns.
///
/// ```
/// use hookway::EventType;
///
/// let t: EventType = "budget.threshold.reached".parse()?;
/// assert_eq!(t.as_str(), "budget.threshold.reached");
///
/// const CREATED: EventType = EventType::from_static("ticket.created");
/// assert_eq!(CREATED, "ticket.created");
///
/// let err = "ticket..created".parse::<EventType>().unwrap_err();
/// assert_eq!(err.to_string(), "event type has an empty segment at byte 7 (a leading, trailing or doubled '.')");
/// # Ok::<(), hookway::event::InvalidEventType>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(Cow<'static, str>);

impl EventType {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidEventType> {
        let name = name.into();
        validate_event_type(name.as_bytes())?;
        Ok(Self(Cow::Owned(name)))
    }

    /// An event type from a string literal, checked at compile time when used
    /// in a `const`.
    ///
    /// # Panics
    ///
    /// Panics if `name` is not a valid event type.
    pub const fn from_static(name: &'static str) -> Self {
        if validate_event_type(name.as_bytes()).is_err() {
            panic!("invalid event type");
        }
        Self(Cow::Borrowed(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

const fn validate_event_type(name: &[u8]) -> Result<(), InvalidEventType> {
    if name.is_empty() {
        return Err(InvalidEventType::Empty);
    }
    if name.len() > MAX_EVENT_TYPE_LEN {
        return Err(InvalidEventType::TooLong {
            len: name.len(),
            max: MAX_EVENT_TYPE_LEN,
        });
    }
    let mut i = 0;
    let mut segment_start = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'.' {
            if i == segment_start {
                return Err(InvalidEventType::EmptySegment { position: i });
            }
            segment_start = i + 1;
        } else if !is_name_byte(b) {
            return Err(InvalidEventType::InvalidChar {
                found: if b.is_ascii() {
                    b as char
                } else {
                    char::REPLACEMENT_CHARACTER
                },
                position: i,
            });
        }
        i += 1;
    }
    if segment_start == name.len() {
        return Err(InvalidEventType::EmptySegment {
            position: name.len(),
        });
    }
    Ok(())
}

impl FromStr for EventType {
    type Err = InvalidEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for EventType {
    type Error = InvalidEventType;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for EventType {
    type Error = InvalidEventType;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::new(s.into_owned()).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a valid [`EventFilter`] pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPattern {
    /// The part before `.*` (or the whole exact name) is not a valid event type.
    #[error("invalid pattern {pattern:?}: {source}")]
    Name {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with its name part.
        #[source]
        source: InvalidEventType,
    },
    /// A `*` somewhere other than a whole final segment (`ticket.*`) or the
    /// whole pattern (`*`).
    #[error("invalid pattern {pattern:?}: '*' may only stand alone or as the last segment, as in \"ticket.*\"")]
    Wildcard {
        /// The pattern as given.
        pattern: String,
    },
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Any,
    Exact(EventType),
    /// `prefix.*`: stores the prefix without the `.*`.
    Prefix(EventType),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, InvalidPattern> {
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let (name, wildcard) = match pattern.strip_suffix(".*") {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        if name.contains('*') {
            return Err(InvalidPattern::Wildcard {
                pattern: pattern.to_owned(),
            });
        }
        let name = EventType::new(name).map_err(|source| InvalidPattern::Name {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(if wildcard {
            Self::Prefix(name)
        } else {
            Self::Exact(name)
        })
    }

    fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name.as_str() == event_type,
            Self::Prefix(prefix) => {
                let prefix = prefix.as_str().as_bytes();
                let t = event_type.as_bytes();
                t.len() > prefix.len() + 1 && t.starts_with(prefix) && t[prefix.len()] == b'.'
            }
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(name) => f.write_str(name.as_str()),
            Self::Prefix(prefix) => write!(f, "{prefix}.*"),
        }
    }
}

/// A subscription: which event types an endpoint or handler wants.
///
/// A filter is a set of patterns and matches a type if any pattern does:
///
/// - an exact name, `ticket.created`;
/// - a prefix wildcard, `ticket.*`, matching every type below `ticket`
///   (`ticket.created`, `ticket.sla.breached`) but not `ticket` itself;
/// - `*`, matching everything.
///
/// An empty filter matches nothing. Matching never allocates.
///
/// ```
/// use hookway::EventFilter;
///
/// let filter = EventFilter::new(["ticket.*", "customer.created"])?;
/// assert!(filter.matches("ticket.created"));
/// assert!(filter.matches("ticket.sla.breached"));
/// assert!(filter.matches("customer.created"));
/// assert!(!filter.matches("customer.updated"));
/// assert!(!filter.matches("ticket"));
///
/// assert!(EventFilter::all().matches("anything.at.all"));
/// # Ok::<(), hookway::event::InvalidPattern>(())
/// ```
///
/// It serialises as a JSON array of pattern strings.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    patterns: Vec<Pattern>,
}

impl EventFilter {
    /// A filter from patterns; fails on the first invalid one.
    pub fn new<I, S>(patterns: I) -> Result<Self, InvalidPattern>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut filter = Self::default();
        for pattern in patterns {
            filter.patterns.push(Pattern::parse(pattern.as_ref())?);
        }
        Ok(filter)
    }

    /// The filter that matches every event type (`*`).
    pub fn all() -> Self {
        Self {
            patterns: vec![Pattern::Any],
        }
    }

    /// The filter that matches nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds a pattern.
    pub fn with(mut self, pattern: &str) -> Result<Self, InvalidPattern> {
        self.patterns.push(Pattern::parse(pattern)?);
        Ok(self)
    }

    /// Whether `event_type` matches any pattern.
    pub fn matches(&self, event_type: impl AsRef<str>) -> bool {
        let event_type = event_type.as_ref();
        self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// Whether the filter has no patterns (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// The patterns, in their text form.
    pub fn patterns(&self) -> impl ExactSizeIterator<Item = String> + '_ {
        self.patterns.iter().map(|p| {
            struct Show<'a>(&'a Pattern);
            impl fmt::Display for Show<'_> {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    self.0.write(f)
                }
            }
            Show(p).to_string()
        })
    }
}

impl FromStr for EventFilter {
    type Err = InvalidPattern;
    /// Parses a comma-separated list of patterns (`"ticket.*, sla.breached"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.split(',').map(str::trim).filter(|p| !p.is_empty()))
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            p.write(f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventFilter({self})")
    }
}

impl Serialize for EventFilter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.patterns())
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let patterns = Vec::<Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(patterns).map_err(serde::de::Error::custom)
    }
}

/// The default envelope: `{"id", "type", "timestamp", "data"}`.
///
/// `timestamp` is RFC 3339 in UTC (`2026-03-15T10:30:00Z`); a timestamp with
/// another offset is converted to UTC when parsed.
///
/// ```
/// use hookway::{Event, EventType};
/// use serde_json::json;
///
/// let event = Event::new(
///     EventType::from_static("ticket.created"),
///     json!({ "ticket": { "id": "tkt_789" } }),
/// );
/// let body = serde_json::to_vec(&event)?;
/// let back: Event = serde_json::from_slice(&body)?;
/// assert_eq!(back, event);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<T = serde_json::Value> {
    /// The message id, unique per event; receivers de-duplicate on it.
    pub id: MessageId,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened, in UTC.
    #[serde(with = "crate::serde_util::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The event's payload.
    pub data: T,
}

impl<T> Event<T> {
    /// An event with a fresh [`MessageId`] and the current time (truncated to
    /// whole milliseconds).
    pub fn new(event_type: EventType, data: T) -> Self {
        Self::new_at(event_type, data, SystemClock.now())
    }

    /// An event with a fresh [`MessageId`] and the given time.
    pub fn new_at(event_type: EventType, data: T, timestamp: OffsetDateTime) -> Self {
        let timestamp = to_utc_millis(timestamp);
        Self {
            id: MessageId::generate_at(timestamp),
            event_type,
            timestamp,
            data,
        }
    }

    /// Replaces the generated id with the caller's.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// Replaces the timestamp (converted to UTC).
    pub fn with_timestamp(mut self, timestamp: OffsetDateTime) -> Self {
        self.timestamp = timestamp.to_offset(UtcOffset::UTC);
        self
    }

    /// Maps the payload, keeping id, type and timestamp.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Event<U> {
        Event {
            id: self.id,
            event_type: self.event_type,
            timestamp: self.timestamp,
            data: f(self.data),
        }
    }
}

fn to_utc_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn message_id_rules() {
        assert_eq!(MessageId::new(""), Err(InvalidMessageId::Empty));
        assert_eq!(
            MessageId::new("a.b"),
            Err(InvalidMessageId::Dot { position: 1 })
        );
        assert_eq!(
            MessageId::new("a b"),
            Err(InvalidMessageId::InvalidChar { position: 1 })
        );
        assert_eq!(
            MessageId::new("é"),
            Err(InvalidMessageId::InvalidChar { position: 0 })
        );
        assert!(matches!(
            MessageId::new("x".repeat(257)),
            Err(InvalidMessageId::TooLong { len: 257, .. })
        ));
        assert!(MessageId::new("x".repeat(256)).is_ok());
        assert!(MessageId::new("ip-10-3-0-224-668176-8h-b98185e8-8a01-1mha").is_ok());
    }

    #[test]
    fn generated_ids_are_valid_unique_and_time_ordered() {
        let a = MessageId::generate_at(datetime!(2026-01-01 0:00 UTC));
        let b = MessageId::generate_at(datetime!(2026-01-01 0:00:01 UTC));
        assert_eq!(a.as_str().len(), 30);
        assert!(validate_message_id(a.as_str()).is_ok());
        assert!(a < b);
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| MessageId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn event_type_rules() {
        for ok in [
            "ticket.created",
            "budget.threshold.reached",
            "notification.auth_link_clicked",
            "test.webhook",
            "push",
            "pull-request.opened",
        ] {
            assert!(EventType::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(EventType::new(""), Err(InvalidEventType::Empty));
        assert_eq!(
            EventType::new(".a"),
            Err(InvalidEventType::EmptySegment { position: 0 })
        );
        assert_eq!(
            EventType::new("a."),
            Err(InvalidEventType::EmptySegment { position: 2 })
        );
        assert_eq!(
            EventType::new("a b"),
            Err(InvalidEventType::InvalidChar {
                found: ' ',
                position: 1
            })
        );
        assert_eq!(
            EventType::new("ticket.*"),
            Err(InvalidEventType::InvalidChar {
                found: '*',
                position: 7
            })
        );
        assert!(matches!(
            EventType::new("a".repeat(300)),
            Err(InvalidEventType::TooLong { .. })
        ));
    }

    #[test]
    fn filter_patterns() {
        let f = EventFilter::new(["ticket.*", "sla.breached"]).unwrap();
        assert!(f.matches("ticket.created"));
        assert!(f.matches("ticket.a.b"));
        assert!(!f.matches("ticket"));
        assert!(!f.matches("ticket."));
        assert!(!f.matches("tickets.created"));
        assert!(f.matches("sla.breached"));
        assert!(!f.matches("sla.warning"));
        assert!(!EventFilter::none().matches("a"));
        assert!(EventFilter::all().matches("a"));
        assert!(matches!(
            EventFilter::new(["ti*"]),
            Err(InvalidPattern::Wildcard { .. })
        ));
        assert!(matches!(
            EventFilter::new(["*.created"]),
            Err(InvalidPattern::Wildcard { .. })
        ));
        assert!(matches!(
            EventFilter::new(["a..b"]),
            Err(InvalidPattern::Name { .. })
        ));
        let parsed: EventFilter = "ticket.*, sla.breached".parse().unwrap();
        assert_eq!(parsed, f);
        assert_eq!(f.to_string(), "ticket.*, sla.breached");
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"["ticket.*","sla.breached"]"#);
        assert_eq!(serde_json::from_str::<EventFilter>(&json).unwrap(), f);
    }

    #[test]
    fn event_json_shape() {
        let event = Event::new_at(
            EventType::from_static("ticket.created"),
            serde_json::json!({"a": 1}),
            datetime!(2026-03-15 10:30:00.123456 +02:00),
        )
        .with_id(MessageId::new("evt_1").unwrap());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "evt_1",
                "type": "ticket.created",
                "timestamp": "2026-03-15T08:30:00.123Z",
                "data": {"a": 1}
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        let offset: Event = serde_json::from_str(
            r#"{"id":"e","type":"a.b","timestamp":"2026-03-15T10:30:00+02:00","data":null}"#,
        )
        .unwrap();
        assert_eq!(offset.timestamp.offset(), UtcOffset::UTC);
        assert!(serde_json::from_str::<Event>(
            r#"{"id":"e.1","type":"a.b","timestamp":"2026-03-15T10:30:00Z","data":null}"#
        )
        .is_err());
    }
}
