//! Retry policies and outcome classification.
//!
//! Every delivery attempt ends in an [`Outcome`]: delivered, worth retrying, or
//! failed for good. A [`Classifier`] turns a response status (and its
//! `Retry-After` header) or a [`TransportErrorKind`] into that value. A
//! [`RetryPolicy`] then says how long to wait before the next attempt, or that
//! the delivery is over.
//!
//! Both are plain data (`Clone`, `PartialEq`, serde), so a store can persist
//! them per endpoint. Nothing here reads a clock: the caller passes the
//! delivery's age and, to resolve an HTTP-date `Retry-After`, the current time.
//! Jitter draws from an injected [`JitterRng`]; a seeded [`SplitMix64`] makes
//! every delay reproducible in tests.
//!
//! # Attempt numbers
//!
//! Attempt 1 is the first try and is sent immediately. When attempt `n` fails,
//! [`RetryPolicy::next_delay`] gives the wait before attempt `n + 1`, which is
//! retry `n`. So "immediately, 5 s, 5 min" means three attempts: the first at
//! once, retry 1 five seconds after attempt 1 failed, retry 2 five minutes
//! after attempt 2 failed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use hookway::retry::{Classifier, RetryPolicy, SplitMix64};
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use time::macros::datetime;
//!
//! let classifier = Classifier::default();
//! let policy = RetryPolicy::svix();
//! let mut rng = SplitMix64::from_entropy();
//! let now = datetime!(2025-01-01 12:00 UTC);
//!
//! // Attempt 1 got a 503: the schedule says 5 s.
//! let outcome = classifier.classify_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), now);
//! assert_eq!(policy.next_delay(1, Duration::ZERO, &outcome, &mut rng), Some(Duration::from_secs(5)));
//!
//! // Attempt 2 got a 503 asking for two minutes: the schedule's 5 min is later anyway.
//! let mut headers = HeaderMap::new();
//! headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("120"));
//! let outcome = classifier.classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers, now);
//! assert_eq!(policy.next_delay(2, Duration::from_secs(6), &outcome, &mut rng), Some(Duration::from_secs(300)));
//!
//! // A 404 is permanent by default: no retry.
//! let outcome = classifier.classify_response(StatusCode::NOT_FOUND, &HeaderMap::new(), now);
//! assert_eq!(policy.next_delay(3, Duration::from_secs(400), &outcome, &mut rng), None);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::{header::RETRY_AFTER, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use time::{format_description::BorrowedFormatItem, macros::format_description};
use time::{OffsetDateTime, PrimitiveDateTime};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// A source of randomness for jitter.
///
/// One method, so any generator fits: [`SplitMix64`] here, a `rand` RNG behind
/// a two-line impl, or a fake that returns fixed values in a test.
pub trait JitterRng {
    /// Returns the next uniformly distributed 64-bit value.
    fn next_u64(&mut self) -> u64;
}

impl<R: JitterRng + ?Sized> JitterRng for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// A small, fast, seedable generator (Vigna's `SplitMix64`).
///
/// Not cryptographic: jitter only needs spread, not secrecy. The same seed
/// always gives the same sequence, which keeps jittered schedules exact in
/// tests.
///
/// # Examples
///
/// ```
/// use hookway::retry::{JitterRng, SplitMix64};
///
/// let mut a = SplitMix64::from_seed(42);
/// let mut b = a.clone();
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that yields the same sequence for the same `seed`.
    pub const fn from_seed(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the operating system's randomness.
    ///
    /// Never panics: if the OS source fails, the seed comes from
    /// [`RandomState`](std::collections::hash_map::RandomState), which the
    /// standard library keys per process and varies per instance.
    pub fn from_entropy() -> Self {
        let mut seed = [0u8; 8];
        crate::random::fill(&mut seed);
        Self::from_seed(u64::from_le_bytes(seed))
    }
}

impl JitterRng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Uniform in `[0, max]` by the multiply-shift method; the bias is at most
/// `max / 2^64`, far below anything a delay could show.
fn uniform_inclusive<R: JitterRng + ?Sized>(rng: &mut R, max: u64) -> u64 {
    let wide = u128::from(rng.next_u64()) * (u128::from(max) + 1);
    // The shifted product is at most `max`, so it fits.
    u64::try_from(wide >> 64).unwrap_or(max)
}

// ---------------------------------------------------------------------------
// Outcome
// ---------------------------------------------------------------------------

/// Why a request failed below HTTP: no status code was received.
///
/// A `Dispatcher` maps its client's errors onto these kinds;
/// [`Classifier::classify_transport_error`] decides what each one means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No complete response within the endpoint's timeout. Retryable, but not
    /// sooner than the [throttle floor](Classifier::with_throttle_floor).
    Timeout,
    /// The connection could not be made or was reset. Retryable.
    Connect,
    /// The TLS handshake failed (certificate, protocol version). Retryable:
    /// certificates get fixed, and an expired one is a common short outage.
    Tls,
    /// The host name did not resolve. Retryable.
    Dns,
    /// hookway refused to send, e.g. the address is private or loopback and
    /// not allowed (the SSRF guard). Permanent: trying again cannot help.
    RefusedByPolicy,
    /// Any other transport failure. Retryable.
    Other,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timed out",
            Self::Connect => "connection failed",
            Self::Tls => "TLS handshake failed",
            Self::Dns => "DNS resolution failed",
            Self::RefusedByPolicy => "refused by policy",
            Self::Other => "transport error",
        })
    }
}

/// What went wrong with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCause {
    /// The endpoint answered with this non-2xx status.
    Status(StatusCode),
    /// No response was received.
    Transport(TransportErrorKind),
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::Transport(kind) => kind.fmt(f),
        }
    }
}

/// The classification of one delivery attempt.
///
/// Usually made by a [`Classifier`], and fed to [`RetryPolicy::next_delay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The endpoint accepted the message (2xx).
    Delivered,
    /// The attempt failed, and a later one may succeed.
    Retryable {
        /// What happened.
        cause: FailureCause,
        /// The earliest the next attempt may go, measured from now: from the
        /// response's `Retry-After`, or the throttle floor. The policy waits
        /// at least this long, but it never extends the policy's limits.
        not_before: Option<Duration>,
    },
    /// The attempt failed, and retrying will not change that.
    Permanent {
        /// What happened.
        cause: FailureCause,
        /// The endpoint asked not to be called again (410 Gone by default):
        /// the engine should disable it, not just fail this delivery.
        disable_endpoint: bool,
    },
}

impl Outcome {
    /// Whether the attempt succeeded.
    pub const fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered)
    }

    /// What went wrong, or `None` if the attempt was delivered.
    pub const fn cause(&self) -> Option<FailureCause> {
        match self {
            Self::Delivered => None,
            Self::Retryable { cause, .. } | Self::Permanent { cause, .. } => Some(*cause),
        }
    }
}

// ---------------------------------------------------------------------------
// Classifier
// ---------------------------------------------------------------------------

/// How one status code is treated, overriding the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StatusRule {
    Retryable,
    Permanent,
    PermanentAndDisable,
}

/// Turns a response or a transport error into an [`Outcome`].
///
/// | result | outcome |
/// | --- | --- |
/// | 2xx | [`Delivered`](Outcome::Delivered) (always; overrides do not apply) |
/// | 3xx | retryable: redirects are not followed, so a redirect is a failure, and often a passing misconfiguration |
/// | 408, 429, 5xx | retryable |
/// | 410 Gone | permanent, and disable the endpoint |
/// | other 4xx | permanent: the receiver rejected this request and will reject it again |
/// | 1xx, non-standard codes | retryable (losing an event is worse than one more try) |
/// | [`TransportErrorKind::RefusedByPolicy`] | permanent |
/// | other transport errors | retryable |
///
/// Any status can be reclassified with [`retry_on`](Self::retry_on),
/// [`permanent_on`](Self::permanent_on) and [`disable_on`](Self::disable_on);
/// the last call for a status wins.
///
/// `Retry-After` on a retryable response is honoured as delta-seconds (ASCII
/// digits only) or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`); anything
/// else, including the obsolete RFC 850 and asctime date forms, is ignored. A
/// date in the past means "now". The value is clamped to
/// [`max_retry_after`](Self::with_max_retry_after), so a receiver cannot park
/// a delivery for days. A 429, a 408 or a timeout always waits at least the
/// [`throttle_floor`](Self::with_throttle_floor).
///
/// # Default
///
/// The rules above, `max_retry_after` = 1 hour, `throttle_floor` = 5 seconds.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookway::retry::{Classifier, Outcome};
/// use http::{HeaderMap, StatusCode};
/// use time::macros::datetime;
///
/// // This receiver answers 404 while a deployment rolls out: worth retrying.
/// let classifier = Classifier::new().retry_on(StatusCode::NOT_FOUND);
/// let outcome = classifier.classify_response(
///     StatusCode::NOT_FOUND,
///     &HeaderMap::new(),
///     datetime!(2025-01-01 0:00 UTC),
/// );
/// assert!(matches!(outcome, Outcome::Retryable { not_before: None, .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Classifier {
    status_rules: BTreeMap<u16, StatusRule>,
    #[serde(with = "crate::serde_util::millis")]
    max_retry_after: Duration,
    #[serde(with = "crate::serde_util::millis")]
    throttle_floor: Duration,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

/// IMF-fixdate, the preferred HTTP-date form (RFC 9110, section 5.6.7).
const IMF_FIXDATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

impl Classifier {
    /// The default classifier; see [`Classifier`]'s `# Default` section.
    pub const fn new() -> Self {
        Self {
            status_rules: BTreeMap::new(),
            max_retry_after: hours(1),
            throttle_floor: secs(5),
        }
    }

    /// Treats `status` as retryable (e.g. a 404 from an endpoint that is
    /// being deployed).
    #[must_use]
    pub fn retry_on(self, status: StatusCode) -> Self {
        self.with_rule(status, StatusRule::Retryable)
    }

    /// Treats `status` as a permanent failure (e.g. a 301 that will never
    /// go away).
    #[must_use]
    pub fn permanent_on(self, status: StatusCode) -> Self {
        self.with_rule(status, StatusRule::Permanent)
    }

    /// Treats `status` as a permanent failure that also disables the
    /// endpoint, as 410 Gone does by default.
    #[must_use]
    pub fn disable_on(self, status: StatusCode) -> Self {
        self.with_rule(status, StatusRule::PermanentAndDisable)
    }

    fn with_rule(mut self, status: StatusCode, rule: StatusRule) -> Self {
        self.status_rules.insert(status.as_u16(), rule);
        self
    }

    /// The longest delay a `Retry-After` header can ask for; longer values
    /// are clamped to it. Default: 1 hour.
    #[must_use]
    pub const fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The shortest wait after a 429, a 408 or a timeout. Default: 5 seconds.
    ///
    /// All mean the receiver is struggling: a 429 says so outright, and a
    /// timed-out request (ours, or the 408 the receiver reports) may still be
    /// running there. Retrying at once adds
    /// load when it hurts most, and after a timeout may process the same
    /// message twice concurrently. The floor applies even when the schedule
    /// says "immediately" or `Retry-After` says 0; it is not clamped by
    /// [`with_max_retry_after`](Self::with_max_retry_after).
    #[must_use]
    pub const fn with_throttle_floor(mut self, floor: Duration) -> Self {
        self.throttle_floor = floor;
        self
    }

    /// The longest delay honoured from `Retry-After`.
    pub const fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The shortest wait after a 429 or a timeout.
    pub const fn throttle_floor(&self) -> Duration {
        self.throttle_floor
    }

    /// Classifies a response by its status and headers.
    ///
    /// `now` is only used to turn an HTTP-date `Retry-After` into a delay.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::{Classifier, Outcome};
    /// use http::{header::RETRY_AFTER, HeaderMap, HeaderValue, StatusCode};
    /// use time::macros::datetime;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 01 Jan 2025 00:02:00 GMT"));
    /// let now = datetime!(2025-01-01 0:00 UTC);
    ///
    /// let outcome = Classifier::new().classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers, now);
    /// let Outcome::Retryable { not_before, .. } = outcome else { unreachable!() };
    /// assert_eq!(not_before, Some(Duration::from_secs(120)));
    /// ```
    #[must_use]
    pub fn classify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: OffsetDateTime,
    ) -> Outcome {
        if status.is_success() {
            return Outcome::Delivered;
        }
        let cause = FailureCause::Status(status);
        let rule = self
            .status_rules
            .get(&status.as_u16())
            .copied()
            .unwrap_or_else(|| default_rule(status));
        match rule {
            StatusRule::Retryable => {
                let requested = retry_after(headers, now).map(|d| d.min(self.max_retry_after));
                let throttled = status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                let not_before = if throttled {
                    Some(requested.unwrap_or_default().max(self.throttle_floor))
                } else {
                    requested
                };
                Outcome::Retryable { cause, not_before }
            }
            StatusRule::Permanent => Outcome::Permanent {
                cause,
                disable_endpoint: false,
            },
            StatusRule::PermanentAndDisable => Outcome::Permanent {
                cause,
                disable_endpoint: true,
            },
        }
    }

    /// Classifies a request that got no response.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::{Classifier, FailureCause, Outcome, TransportErrorKind};
    ///
    /// let outcome = Classifier::new().classify_transport_error(TransportErrorKind::Timeout);
    /// assert_eq!(
    ///     outcome,
    ///     Outcome::Retryable {
    ///         cause: FailureCause::Transport(TransportErrorKind::Timeout),
    ///         not_before: Some(Duration::from_secs(5)),
    ///     }
    /// );
    /// ```
    #[must_use]
    pub fn classify_transport_error(&self, kind: TransportErrorKind) -> Outcome {
        let cause = FailureCause::Transport(kind);
        match kind {
            TransportErrorKind::RefusedByPolicy => Outcome::Permanent {
                cause,
                disable_endpoint: false,
            },
            TransportErrorKind::Timeout => Outcome::Retryable {
                cause,
                not_before: Some(self.throttle_floor),
            },
            _ => Outcome::Retryable {
                cause,
                not_before: None,
            },
        }
    }
}

fn default_rule(status: StatusCode) -> StatusRule {
    match status.as_u16() {
        410 => StatusRule::PermanentAndDisable,
        408 | 429 => StatusRule::Retryable,
        400..=499 => StatusRule::Permanent,
        _ => StatusRule::Retryable,
    }
}

/// Parses `Retry-After` into a delay from `now`; `None` if absent or invalid.
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate: a huge delta is still a valid request, and gets clamped.
        let seconds = value.bytes().fold(0_u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(seconds));
    }
    let date = PrimitiveDateTime::parse(value, IMF_FIXDATE).ok()?;
    // The parser takes a weekday that contradicts the date, and a signed
    // year; the canonical form has neither.
    if date.format(IMF_FIXDATE).ok()? != value {
        return None;
    }
    let date = date.assume_utc();
    // A date in the past fails the conversion: retry now.
    Some(Duration::try_from(date - now).unwrap_or(Duration::ZERO))
}

// ---------------------------------------------------------------------------
// RetryPolicy
// ---------------------------------------------------------------------------

/// How an exponential schedule's delays are randomised.
///
/// Jitter spreads the retries of many deliveries that failed together (an
/// endpoint's outage) so they do not all land on it at the same instant when
/// it comes back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the nominal delay `d`.
    None,
    /// Uniform in `[0, d]`: the widest spread, but a retry may come at once.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`: spread, yet never less than half the
    /// nominal delay, so the backoff still backs off.
    #[default]
    Equal,
}

impl Jitter {
    fn apply<R: JitterRng + ?Sized>(self, delay: Duration, rng: &mut R) -> Duration {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        match self {
            Self::None => delay,
            Self::Full => Duration::from_nanos(uniform_inclusive(rng, nanos)),
            Self::Equal => {
                let half = nanos / 2;
                Duration::from_nanos(half + uniform_inclusive(rng, nanos - half))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Strategy {
    Fixed {
        #[serde(with = "crate::serde_util::millis::vec")]
        delays: Vec<Duration>,
        repeat_last: bool,
    },
    Exponential {
        #[serde(with = "crate::serde_util::millis")]
        initial: Duration,
        factor: f64,
        #[serde(with = "crate::serde_util::millis")]
        max_delay: Duration,
        jitter: Jitter,
    },
}

impl Strategy {
    /// The jitter-free delay before retry `retry` (1-based), or `None` once
    /// the schedule has run out.
    fn nominal(&self, retry: u32) -> Option<Duration> {
        match self {
            Self::Fixed {
                delays,
                repeat_last,
            } => {
                let index = usize::try_from(retry.saturating_sub(1)).unwrap_or(usize::MAX);
                match delays.get(index) {
                    Some(delay) => Some(*delay),
                    None if *repeat_last => delays.last().copied(),
                    None => None,
                }
            }
            Self::Exponential {
                initial,
                factor,
                max_delay,
                ..
            } => {
                let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                // f64 keeps this overflow-free: a huge product becomes
                // infinity, which the comparison sends to the cap.
                let nanos = initial.as_nanos() as f64 * factor.powi(exponent);
                let cap = (max_delay.as_nanos() as f64).min(u64::MAX as f64);
                Some(if nanos < cap {
                    // `min`: the f64 image of a huge cap may round up.
                    Duration::from_nanos(nanos.round() as u64).min(*max_delay)
                } else {
                    *max_delay
                })
            }
        }
    }

    fn delay<R: JitterRng + ?Sized>(&self, retry: u32, rng: &mut R) -> Option<Duration> {
        let nominal = self.nominal(retry)?;
        Some(match self {
            Self::Fixed { .. } => nominal,
            Self::Exponential { jitter, .. } => jitter.apply(nominal, rng),
        })
    }
}

/// Why a retry policy's settings were rejected.
///
/// Invalid settings are errors, not silently clamped, so a typo in a stored
/// policy shows up when it is loaded rather than as odd delivery times.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryPolicyError {
    /// The backoff factor was below 1, infinite or NaN.
    #[error("backoff factor must be a finite number of at least 1, got {0}")]
    InvalidFactor(f64),
    /// The exponential initial delay was zero, so every delay would be zero.
    #[error("initial delay must be greater than zero")]
    ZeroInitialDelay,
    /// The cap on a single delay was below the initial delay.
    #[error("maximum delay {max_delay:?} is below the initial delay {initial:?}")]
    MaxDelayBelowInitial {
        /// The initial delay.
        initial: Duration,
        /// The cap on a single delay.
        max_delay: Duration,
    },
    /// Max attempts was zero; 1 means "no retries".
    #[error("max attempts must be at least 1")]
    ZeroMaxAttempts,
    /// A repeating or exponential schedule had no max attempts, so it would
    /// retry forever.
    #[error("a repeating or exponential schedule needs a max attempts cap")]
    Unbounded,
    /// A schedule was asked to repeat its last delay but has none.
    #[error("cannot repeat the last delay of an empty schedule")]
    EmptySchedule,
}

/// When to try a failed delivery again, and when to give up.
///
/// A policy is data: a schedule of delays, either a [fixed
/// table](Self::fixed) or [exponential backoff](Self::exponential), plus
/// optional caps on the number of attempts and on the delivery's total age.
/// It is validated when built (and when deserialised), so a policy in hand is
/// always a sound one, and always finite: every policy ends after
/// [`max_attempts`](Self::max_attempts) attempts at most.
///
/// # Presets
///
/// | preset | retries after |
/// | --- | --- |
/// | [`standard_webhooks`](Self::standard_webhooks) (the default) | 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h |
/// | [`svix`](Self::svix) | 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h |
/// | [`hook0`](Self::hook0) | 3 s, 10 s, 3 min, 30 min, 1 h, 3 h, 5 h, then 10 h; ≤ 24 retries, ≤ 8 days |
/// | [`raily`](Self::raily) | 1 min, 5 min, 30 min, 2 h, 24 h |
/// | [`raven`](Self::raven) | 1 s, 2 s, 4 s |
/// | [`media_moderation`](Self::media_moderation) | 1 min, 5 min, 30 min, 2 h |
/// | [`relay_helpdesk`](Self::relay_helpdesk) | 1 min, 5 min, 30 min, 2 h, 8 h |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookway::retry::RetryPolicy;
///
/// let policy = RetryPolicy::fixed([Duration::from_secs(10), Duration::from_secs(60)])
///     .repeat_last()
///     .with_max_attempts(5)
///     .build()?;
/// let secs: Vec<u64> = policy.schedule().map(|d| d.as_secs()).collect();
/// assert_eq!(secs, [10, 60, 60, 60]);
/// # Ok::<(), hookway::retry::RetryPolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PolicyRepr")]
pub struct RetryPolicy {
    strategy: Strategy,
    max_attempts: Option<u32>,
    #[serde(with = "crate::serde_util::millis::option")]
    max_age: Option<Duration>,
}

/// The unvalidated shape of a [`RetryPolicy`], for deserialising.
#[derive(Deserialize)]
struct PolicyRepr {
    strategy: Strategy,
    max_attempts: Option<u32>,
    #[serde(with = "crate::serde_util::millis::option", default)]
    max_age: Option<Duration>,
}

impl TryFrom<PolicyRepr> for RetryPolicy {
    type Error = RetryPolicyError;

    fn try_from(repr: PolicyRepr) -> Result<Self, Self::Error> {
        let policy = Self {
            strategy: repr.strategy,
            max_attempts: repr.max_attempts,
            max_age: repr.max_age,
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl Default for RetryPolicy {
    /// [`RetryPolicy::standard_webhooks`].
    fn default() -> Self {
        Self::standard_webhooks()
    }
}

impl RetryPolicy {
    /// Starts a fixed schedule: `delays[i]` is the wait before retry `i + 1`.
    ///
    /// Without [`repeat_last`](FixedBuilder::repeat_last), the delivery fails
    /// once the table runs out. An empty table means "never retry".
    pub fn fixed(delays: impl IntoIterator<Item = Duration>) -> FixedBuilder {
        FixedBuilder {
            delays: delays.into_iter().collect(),
            repeat_last: false,
            max_attempts: None,
            max_age: None,
        }
    }

    /// Starts an exponential backoff with the defaults of
    /// [`ExponentialBuilder`].
    pub const fn exponential() -> ExponentialBuilder {
        ExponentialBuilder::new()
    }

    fn preset(delays: &[Duration]) -> Self {
        Self {
            strategy: Strategy::Fixed {
                delays: delays.to_vec(),
                repeat_last: false,
            },
            max_attempts: None,
            max_age: None,
        }
    }

    /// The [Standard Webhooks](https://www.standardwebhooks.com/) schedule:
    /// immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    ///
    /// Ten attempts; the last goes 3 days 3 h 35 min 5 s after the first.
    /// This is the [`Default`].
    pub fn standard_webhooks() -> Self {
        Self::preset(&[
            secs(5),
            mins(5),
            mins(30),
            hours(2),
            hours(5),
            hours(10),
            hours(14),
            hours(20),
            hours(24),
        ])
    }

    /// Svix's schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h, 10 h.
    ///
    /// Eight attempts; the last goes 27 h 35 min 5 s after the first.
    pub fn svix() -> Self {
        Self::preset(&[
            secs(5),
            mins(5),
            mins(30),
            hours(2),
            hours(5),
            hours(10),
            hours(10),
        ])
    }

    /// Hook0's schedule: retries after 3 s, 10 s, 3 min, 30 min, 1 h, 3 h,
    /// 5 h, then every 10 h; at most 24 retries (25 attempts) and 8 days.
    ///
    /// With instant attempts, retry 24 goes 7 days 11 h 33 min 13 s after the
    /// first attempt, so the retry cap usually ends it; the 8-day age cap
    /// bites when attempts are slow or deliveries wait in a queue.
    pub fn hook0() -> Self {
        Self {
            strategy: Strategy::Fixed {
                delays: vec![
                    secs(3),
                    secs(10),
                    mins(3),
                    mins(30),
                    hours(1),
                    hours(3),
                    hours(5),
                    hours(10),
                ],
                repeat_last: true,
            },
            max_attempts: Some(25),
            max_age: Some(hours(8 * 24)),
        }
    }

    /// Raily's schedule: retries after 1 min, 5 min, 30 min, 2 h, 24 h.
    ///
    /// Six attempts; the last goes 26 h 36 min after the first.
    pub fn raily() -> Self {
        Self::preset(&[mins(1), mins(5), mins(30), hours(2), hours(24)])
    }

    /// Raven's schedule: immediately, then 1 s, 2 s, 4 s.
    ///
    /// Four attempts within 7 seconds: for receivers that are up or not at
    /// all. Raven also gives each attempt a 10-second timeout; set that on
    /// the endpoint, it is not part of a retry policy. Note that a 429 or
    /// timeout still waits the classifier's
    /// [throttle floor](Classifier::with_throttle_floor) (5 s by default).
    pub fn raven() -> Self {
        Self::preset(&[secs(1), secs(2), secs(4)])
    }

    /// The schedule of a content-moderation provider's webhooks:
    /// immediately, then 1 min, 5 min, 30 min, 2 h.
    ///
    /// Five attempts; the last goes 2 h 36 min after the first. That provider
    /// times each attempt out after 30 seconds (an endpoint setting).
    pub fn media_moderation() -> Self {
        Self::preset(&[mins(1), mins(5), mins(30), hours(2)])
    }

    /// The schedule of Relay's helpdesk webhooks (ticket, message, customer
    /// and SLA events): immediately, then 1 min, 5 min, 30 min, 2 h, 8 h.
    ///
    /// Six attempts; the last goes 10 h 36 min after the first. Relay retries
    /// on timeouts, connection errors and 5xx, and not on 4xx except 429,
    /// which is what the default [`Classifier`] does. (Not to be confused with
    /// Relay's messaging push webhooks, an unrelated product.)
    pub fn relay_helpdesk() -> Self {
        Self::preset(&[mins(1), mins(5), mins(30), hours(2), hours(8)])
    }

    /// Adds (or replaces) a cap on the delivery's age: no retry is scheduled
    /// later than `max_age` after the first attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::RetryPolicy;
    ///
    /// // Svix's schedule, but nothing after the first hour.
    /// let policy = RetryPolicy::svix().with_max_age(Duration::from_secs(3600));
    /// let secs: Vec<u64> = policy.schedule().map(|d| d.as_secs()).collect();
    /// assert_eq!(secs, [5, 300, 1800]);
    /// ```
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The most attempts this policy makes, the first included. The age cap
    /// may end a delivery sooner.
    pub fn max_attempts(&self) -> u32 {
        let schedule_end = match &self.strategy {
            Strategy::Fixed {
                delays,
                repeat_last: false,
            } => u32::try_from(delays.len()).map_or(u32::MAX, |n| n.saturating_add(1)),
            _ => u32::MAX,
        };
        self.max_attempts
            .map_or(schedule_end, |n| n.min(schedule_end))
    }

    /// The cap on a delivery's age, if any.
    pub const fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The delay before the next attempt, or `None` to give up.
    ///
    /// - `failed_attempt`: the number of the attempt that just failed, the
    ///   first being 1 (0 is read as 1).
    /// - `age`: the time from the first attempt until now.
    /// - `outcome`: the failed attempt's classification. Only a
    ///   [`Retryable`](Outcome::Retryable) outcome is retried; its
    ///   `not_before` is a lower bound on the delay.
    /// - `rng`: drawn from only by a jittered exponential schedule.
    ///
    /// Gives up when the attempt cap is reached, when the schedule runs out,
    /// or when the next attempt would fall later than `max_age` after the
    /// first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::{FailureCause, Outcome, RetryPolicy, SplitMix64};
    /// use http::StatusCode;
    ///
    /// let policy = RetryPolicy::raven();
    /// let mut rng = SplitMix64::from_seed(1);
    /// let failed = Outcome::Retryable {
    ///     cause: FailureCause::Status(StatusCode::BAD_GATEWAY),
    ///     not_before: None,
    /// };
    /// assert_eq!(policy.next_delay(3, Duration::from_secs(3), &failed, &mut rng), Some(Duration::from_secs(4)));
    /// assert_eq!(policy.next_delay(4, Duration::from_secs(7), &failed, &mut rng), None);
    /// ```
    #[must_use]
    pub fn next_delay<R: JitterRng + ?Sized>(
        &self,
        failed_attempt: u32,
        age: Duration,
        outcome: &Outcome,
        rng: &mut R,
    ) -> Option<Duration> {
        let Outcome::Retryable { not_before, .. } = outcome else {
            return None;
        };
        self.delay_after(failed_attempt, age, not_before.unwrap_or_default(), rng)
    }

    /// The delay before the next attempt after attempt `failed_attempt`
    /// failed in a way worth retrying, or `None` to give up: the schedule
    /// alone, for work that is not an HTTP request (a receiver's handler,
    /// say). The same as [`next_delay`](Self::next_delay) with a
    /// [`Retryable`](Outcome::Retryable) outcome and no `not_before`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::{RetryPolicy, SplitMix64};
    ///
    /// let policy = RetryPolicy::raven();
    /// let mut rng = SplitMix64::from_seed(1);
    /// assert_eq!(policy.next_retry(1, Duration::ZERO, &mut rng), Some(Duration::from_secs(1)));
    /// assert_eq!(policy.next_retry(4, Duration::from_secs(7), &mut rng), None);
    /// ```
    #[must_use]
    pub fn next_retry<R: JitterRng + ?Sized>(
        &self,
        failed_attempt: u32,
        age: Duration,
        rng: &mut R,
    ) -> Option<Duration> {
        self.delay_after(failed_attempt, age, Duration::ZERO, rng)
    }

    fn delay_after<R: JitterRng + ?Sized>(
        &self,
        failed_attempt: u32,
        age: Duration,
        not_before: Duration,
        rng: &mut R,
    ) -> Option<Duration> {
        let attempt = failed_attempt.max(1);
        if attempt >= self.max_attempts() {
            return None;
        }
        let delay = self.strategy.delay(attempt, rng)?.max(not_before);
        match self.max_age {
            Some(max_age) if age.saturating_add(delay) > max_age => None,
            _ => Some(delay),
        }
    }

    /// The nominal (jitter-free) delays before retries 1, 2, …, as far as
    /// the caps allow when every attempt takes no time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookway::retry::{Jitter, RetryPolicy};
    ///
    /// let policy = RetryPolicy::exponential()
    ///     .with_initial_delay(Duration::from_secs(1))
    ///     .with_max_delay(Duration::from_secs(10))
    ///     .with_max_attempts(6)
    ///     .with_jitter(Jitter::Full)
    ///     .build()?;
    /// let secs: Vec<u64> = policy.schedule().map(|d| d.as_secs()).collect();
    /// assert_eq!(secs, [1, 2, 4, 8, 10]);
    /// # Ok::<(), hookway::retry::RetryPolicyError>(())
    /// ```
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        let max_attempts = self.max_attempts();
        let mut elapsed = Duration::ZERO;
        (1..max_attempts)
            .map_while(|retry| self.strategy.nominal(retry))
            .map_while(move |delay| {
                elapsed = elapsed.saturating_add(delay);
                self.max_age
                    .is_none_or(|max_age| elapsed <= max_age)
                    .then_some(delay)
            })
    }

    fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.max_attempts == Some(0) {
            return Err(RetryPolicyError::ZeroMaxAttempts);
        }
        match &self.strategy {
            Strategy::Fixed {
                delays,
                repeat_last,
            } => {
                if *repeat_last && delays.is_empty() {
                    return Err(RetryPolicyError::EmptySchedule);
                }
                if *repeat_last && self.max_attempts.is_none() {
                    return Err(RetryPolicyError::Unbounded);
                }
            }
            Strategy::Exponential {
                initial,
                factor,
                max_delay,
                ..
            } => {
                if !factor.is_finite() || *factor < 1.0 {
                    return Err(RetryPolicyError::InvalidFactor(*factor));
                }
                if initial.is_zero() {
                    return Err(RetryPolicyError::ZeroInitialDelay);
                }
                if max_delay < initial {
                    return Err(RetryPolicyError::MaxDelayBelowInitial {
                        initial: *initial,
                        max_delay: *max_delay,
                    });
                }
                if self.max_attempts.is_none() {
                    return Err(RetryPolicyError::Unbounded);
                }
            }
        }
        Ok(())
    }
}

/// Builds a fixed-schedule [`RetryPolicy`]; see [`RetryPolicy::fixed`].
///
/// # Default
///
/// No repetition, no attempt cap beyond the table, no age cap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct FixedBuilder {
    delays: Vec<Duration>,
    repeat_last: bool,
    max_attempts: Option<u32>,
    max_age: Option<Duration>,
}

impl FixedBuilder {
    /// After the table runs out, keep retrying with its last delay. Needs
    /// [`with_max_attempts`](Self::with_max_attempts).
    pub const fn repeat_last(mut self) -> Self {
        self.repeat_last = true;
        self
    }

    /// At most `max_attempts` attempts, the first included (1 = no retries).
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// No retry later than `max_age` after the first attempt.
    pub const fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Checks the settings and returns the policy.
    ///
    /// # Errors
    ///
    /// [`ZeroMaxAttempts`](RetryPolicyError::ZeroMaxAttempts);
    /// [`EmptySchedule`](RetryPolicyError::EmptySchedule) or
    /// [`Unbounded`](RetryPolicyError::Unbounded) when repeating an empty
    /// table or without an attempt cap.
    pub fn build(self) -> Result<RetryPolicy, RetryPolicyError> {
        RetryPolicy::try_from(PolicyRepr {
            strategy: Strategy::Fixed {
                delays: self.delays,
                repeat_last: self.repeat_last,
            },
            max_attempts: self.max_attempts,
            max_age: self.max_age,
        })
    }
}

/// Builds an exponential-backoff [`RetryPolicy`]; see
/// [`RetryPolicy::exponential`].
///
/// The nominal delay before retry `n` is `initial_delay × factor^(n−1)`,
/// capped at `max_delay`, then jittered.
///
/// # Default
///
/// | setting | value |
/// | --- | --- |
/// | initial delay | 5 s |
/// | factor | 2 |
/// | max delay | 1 h |
/// | max attempts | 12 (11 retries: 5 s, 10 s, 20 s, … 2560 s, 1 h; about 2 h 25 min in all) |
/// | max age | none |
/// | jitter | [`Jitter::Equal`] |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookway::retry::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::exponential()
///     .with_initial_delay(Duration::from_millis(500))
///     .with_factor(3.0)
///     .with_max_attempts(4)
///     .with_jitter(Jitter::None)
///     .build()?;
/// let millis: Vec<u128> = policy.schedule().map(|d| d.as_millis()).collect();
/// assert_eq!(millis, [500, 1500, 4500]);
///
/// assert!(RetryPolicy::exponential().with_factor(0.5).build().is_err());
/// # Ok::<(), hookway::retry::RetryPolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct ExponentialBuilder {
    initial: Duration,
    factor: f64,
    max_delay: Duration,
    max_attempts: u32,
    max_age: Option<Duration>,
    jitter: Jitter,
}

impl Default for ExponentialBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ExponentialBuilder {
    /// The defaults listed under `# Default`.
    pub const fn new() -> Self {
        Self {
            initial: secs(5),
            factor: 2.0,
            max_delay: hours(1),
            max_attempts: 12,
            max_age: None,
            jitter: Jitter::Equal,
        }
    }

    /// The delay before retry 1. Must be non-zero.
    pub const fn with_initial_delay(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// The growth per retry. Must be finite and at least 1 (1 = constant).
    pub const fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The cap on a single delay, before jitter. Must be at least the initial
    /// delay.
    pub const fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// At most `max_attempts` attempts, the first included (1 = no retries).
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// No retry later than `max_age` after the first attempt.
    pub const fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// How delays are randomised.
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the settings and returns the policy.
    ///
    /// # Errors
    ///
    /// [`InvalidFactor`](RetryPolicyError::InvalidFactor),
    /// [`ZeroInitialDelay`](RetryPolicyError::ZeroInitialDelay),
    /// [`MaxDelayBelowInitial`](RetryPolicyError::MaxDelayBelowInitial) or
    /// [`ZeroMaxAttempts`](RetryPolicyError::ZeroMaxAttempts).
    pub fn build(self) -> Result<RetryPolicy, RetryPolicyError> {
        RetryPolicy::try_from(PolicyRepr {
            strategy: Strategy::Exponential {
                initial: self.initial,
                factor: self.factor,
                max_delay: self.max_delay,
                jitter: self.jitter,
            },
            max_attempts: Some(self.max_attempts),
            max_age: self.max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-01 12:00 UTC);

    fn retryable() -> Outcome {
        Outcome::Retryable {
            cause: FailureCause::Status(StatusCode::INTERNAL_SERVER_ERROR),
            not_before: None,
        }
    }

    fn retryable_not_before(delay: Duration) -> Outcome {
        Outcome::Retryable {
            cause: FailureCause::Status(StatusCode::SERVICE_UNAVAILABLE),
            not_before: Some(delay),
        }
    }

    /// Runs a delivery that always fails with `outcome`, with attempts taking
    /// no time, and returns every delay until the policy gives up.
    fn run(policy: &RetryPolicy, outcome: &Outcome) -> Vec<Duration> {
        let mut rng = SplitMix64::from_seed(0);
        let mut delays = Vec::new();
        let mut age = Duration::ZERO;
        let mut attempt = 1;
        while let Some(delay) = policy.next_delay(attempt, age, outcome, &mut rng) {
            delays.push(delay);
            age += delay;
            attempt += 1;
        }
        delays
    }

    fn check_preset(policy: &RetryPolicy, expected: &[Duration]) {
        assert_eq!(run(policy, &retryable()), expected);
        assert_eq!(policy.schedule().collect::<Vec<_>>(), expected);
        assert_eq!(policy.max_attempts() as usize, expected.len() + 1);
    }

    #[test]
    fn preset_standard_webhooks() {
        let policy = RetryPolicy::standard_webhooks();
        check_preset(
            &policy,
            &[
                secs(5),
                mins(5),
                mins(30),
                hours(2),
                hours(5),
                hours(10),
                hours(14),
                hours(20),
                hours(24),
            ],
        );
        assert_eq!(RetryPolicy::default(), policy);
        let total: Duration = policy.schedule().sum();
        assert_eq!(total, hours(3 * 24 + 3) + mins(35) + secs(5));
    }

    #[test]
    fn preset_svix() {
        let policy = RetryPolicy::svix();
        check_preset(
            &policy,
            &[
                secs(5),
                mins(5),
                mins(30),
                hours(2),
                hours(5),
                hours(10),
                hours(10),
            ],
        );
        assert_eq!(
            policy.schedule().sum::<Duration>(),
            hours(27) + mins(35) + secs(5)
        );
    }

    #[test]
    fn preset_hook0_repeats_then_stops_at_24_retries() {
        let policy = RetryPolicy::hook0();
        let mut expected = vec![
            secs(3),
            secs(10),
            mins(3),
            mins(30),
            hours(1),
            hours(3),
            hours(5),
        ];
        expected.extend([hours(10); 17]);
        assert_eq!(expected.len(), 24);
        check_preset(&policy, &expected);
        assert_eq!(
            expected.iter().sum::<Duration>(),
            hours(7 * 24 + 11) + mins(33) + secs(13)
        );
        assert_eq!(policy.max_age(), Some(hours(192)));
    }

    #[test]
    fn preset_hook0_stops_at_8_days() {
        let policy = RetryPolicy::hook0();
        let mut rng = SplitMix64::from_seed(0);
        // Retry 10 would be due exactly at 8 days: allowed; a second later is not.
        let age = hours(182);
        assert_eq!(
            policy.next_delay(10, age, &retryable(), &mut rng),
            Some(hours(10))
        );
        assert_eq!(
            policy.next_delay(10, age + secs(1), &retryable(), &mut rng),
            None
        );
    }

    #[test]
    fn preset_raily() {
        check_preset(
            &RetryPolicy::raily(),
            &[mins(1), mins(5), mins(30), hours(2), hours(24)],
        );
    }

    #[test]
    fn preset_raven() {
        check_preset(&RetryPolicy::raven(), &[secs(1), secs(2), secs(4)]);
        assert_eq!(RetryPolicy::raven().max_attempts(), 4);
    }

    #[test]
    fn preset_media_moderation() {
        check_preset(
            &RetryPolicy::media_moderation(),
            &[mins(1), mins(5), mins(30), hours(2)],
        );
    }

    #[test]
    fn preset_relay_helpdesk() {
        check_preset(
            &RetryPolicy::relay_helpdesk(),
            &[mins(1), mins(5), mins(30), hours(2), hours(8)],
        );
    }

    #[test]
    fn splitmix64_known_answers() {
        // Reference values of SplitMix64 seeded with 0.
        let mut rng = SplitMix64::from_seed(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn from_entropy_does_not_panic() {
        let mut rng = SplitMix64::from_entropy();
        let _ = rng.next_u64();
    }

    #[test]
    fn uniform_covers_both_ends() {
        struct Fixed(u64);
        impl JitterRng for Fixed {
            fn next_u64(&mut self) -> u64 {
                self.0
            }
        }
        assert_eq!(uniform_inclusive(&mut Fixed(0), 10), 0);
        assert_eq!(uniform_inclusive(&mut Fixed(u64::MAX), 10), 10);
        assert_eq!(uniform_inclusive(&mut Fixed(u64::MAX), u64::MAX), u64::MAX);
        assert_eq!(uniform_inclusive(&mut Fixed(u64::MAX), 0), 0);
    }

    fn exponential(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::exponential()
            .with_initial_delay(secs(1))
            .with_factor(2.0)
            .with_max_delay(secs(30))
            .with_max_attempts(8)
            .with_jitter(jitter)
            .build()
            .unwrap()
    }

    const NOMINAL: [u64; 7] = [1, 2, 4, 8, 16, 30, 30];

    #[test]
    fn exponential_without_jitter_is_exact() {
        let delays = run(&exponential(Jitter::None), &retryable());
        assert_eq!(delays, NOMINAL.map(secs));
        assert_eq!(
            exponential(Jitter::Full).schedule().collect::<Vec<_>>(),
            delays
        );
    }

    #[test]
    fn exponential_full_jitter_is_bounded_and_reproducible() {
        let policy = exponential(Jitter::Full);
        let delays = run(&policy, &retryable());
        assert_eq!(delays.len(), NOMINAL.len());
        for (delay, nominal) in delays.iter().zip(NOMINAL) {
            assert!(*delay <= secs(nominal));
        }
        assert_eq!(run(&policy, &retryable()), delays);
        assert_ne!(delays, NOMINAL.map(secs));
    }

    #[test]
    fn exponential_equal_jitter_is_bounded_and_reproducible() {
        let policy = exponential(Jitter::Equal);
        let delays = run(&policy, &retryable());
        assert_eq!(delays.len(), NOMINAL.len());
        for (delay, nominal) in delays.iter().zip(NOMINAL) {
            assert!(*delay >= secs(nominal) / 2 && *delay <= secs(nominal));
        }
        assert_eq!(run(&policy, &retryable()), delays);
    }

    #[test]
    fn exponential_fractional_and_huge() {
        let policy = RetryPolicy::exponential()
            .with_initial_delay(Duration::from_millis(100))
            .with_factor(1.5)
            .with_max_delay(Duration::MAX)
            .with_max_attempts(u32::MAX)
            .with_jitter(Jitter::None)
            .build()
            .unwrap();
        let first: Vec<_> = policy.schedule().take(3).collect();
        assert_eq!(first, [100, 150, 225].map(Duration::from_millis).to_vec());
        let mut rng = SplitMix64::from_seed(0);
        // Far along, the product overflows to infinity and yields the cap.
        assert_eq!(
            policy.next_delay(100_000, Duration::ZERO, &retryable(), &mut rng),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn exponential_builder_defaults() {
        let policy = RetryPolicy::exponential()
            .with_jitter(Jitter::None)
            .build()
            .unwrap();
        let secs: Vec<u64> = policy.schedule().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
        assert_eq!(policy.max_attempts(), 12);
        assert_eq!(ExponentialBuilder::default().jitter, Jitter::Equal);
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let base = RetryPolicy::exponential();
        assert_eq!(
            base.with_factor(0.5).build(),
            Err(RetryPolicyError::InvalidFactor(0.5))
        );
        assert!(matches!(
            base.with_factor(f64::NAN).build(),
            Err(RetryPolicyError::InvalidFactor(_))
        ));
        assert_eq!(
            base.with_factor(f64::INFINITY).build(),
            Err(RetryPolicyError::InvalidFactor(f64::INFINITY))
        );
        assert_eq!(
            base.with_max_attempts(0).build(),
            Err(RetryPolicyError::ZeroMaxAttempts)
        );
        assert_eq!(
            base.with_initial_delay(Duration::ZERO).build(),
            Err(RetryPolicyError::ZeroInitialDelay)
        );
        assert_eq!(
            base.with_max_delay(secs(1)).build(),
            Err(RetryPolicyError::MaxDelayBelowInitial {
                initial: secs(5),
                max_delay: secs(1)
            })
        );
        assert!(base.with_factor(1.0).build().is_ok());

        assert_eq!(
            RetryPolicy::fixed([secs(1)]).repeat_last().build(),
            Err(RetryPolicyError::Unbounded)
        );
        assert_eq!(
            RetryPolicy::fixed([])
                .repeat_last()
                .with_max_attempts(3)
                .build(),
            Err(RetryPolicyError::EmptySchedule)
        );
        assert_eq!(
            RetryPolicy::fixed([secs(1)]).with_max_attempts(0).build(),
            Err(RetryPolicyError::ZeroMaxAttempts)
        );
    }

    #[test]
    fn fixed_caps() {
        let empty = RetryPolicy::fixed([]).build().unwrap();
        assert!(run(&empty, &retryable()).is_empty());
        assert_eq!(empty.max_attempts(), 1);

        let truncated = RetryPolicy::fixed([secs(1), secs(2), secs(3)])
            .with_max_attempts(2)
            .build()
            .unwrap();
        assert_eq!(run(&truncated, &retryable()), [secs(1)]);

        let no_retries = RetryPolicy::fixed([secs(1)])
            .repeat_last()
            .with_max_attempts(1)
            .build()
            .unwrap();
        assert!(run(&no_retries, &retryable()).is_empty());
    }

    #[test]
    fn max_age_cuts_off() {
        // 5 s + 5 min + 30 min = 35 min 5 s; the 2 h retry would pass 1 h.
        let policy = RetryPolicy::standard_webhooks().with_max_age(hours(1));
        assert_eq!(run(&policy, &retryable()), [secs(5), mins(5), mins(30)]);
        assert_eq!(policy.schedule().count(), 3);

        // The age passed in counts, not just the delays.
        let mut rng = SplitMix64::from_seed(0);
        assert_eq!(
            policy.next_delay(1, mins(59) + secs(55), &retryable(), &mut rng),
            Some(secs(5))
        );
        assert_eq!(
            policy.next_delay(1, mins(59) + secs(56), &retryable(), &mut rng),
            None
        );

        let exp = RetryPolicy::exponential()
            .with_initial_delay(secs(10))
            .with_jitter(Jitter::None)
            .with_max_age(secs(70))
            .build()
            .unwrap();
        assert_eq!(run(&exp, &retryable()), [secs(10), secs(20), secs(40)]);
    }

    #[test]
    fn not_before_is_a_lower_bound() {
        let policy = RetryPolicy::svix();
        let mut rng = SplitMix64::from_seed(0);
        let later = retryable_not_before(mins(2));
        assert_eq!(
            policy.next_delay(1, Duration::ZERO, &later, &mut rng),
            Some(mins(2))
        );
        // The schedule's 5 min is already later than 2 min.
        assert_eq!(
            policy.next_delay(2, secs(5), &later, &mut rng),
            Some(mins(5))
        );
        // Exhaustion still applies.
        assert_eq!(policy.next_delay(8, hours(30), &later, &mut rng), None);
        // And the age cap counts the lengthened delay.
        let capped = RetryPolicy::svix().with_max_age(mins(1));
        assert_eq!(capped.next_delay(1, Duration::ZERO, &later, &mut rng), None);
    }

    #[test]
    fn delivered_and_permanent_give_none() {
        let policy = RetryPolicy::standard_webhooks();
        let mut rng = SplitMix64::from_seed(0);
        let permanent = Outcome::Permanent {
            cause: FailureCause::Status(StatusCode::BAD_REQUEST),
            disable_endpoint: false,
        };
        for outcome in [Outcome::Delivered, permanent] {
            assert_eq!(
                policy.next_delay(1, Duration::ZERO, &outcome, &mut rng),
                None
            );
        }
    }

    #[test]
    fn attempt_zero_reads_as_one() {
        let mut rng = SplitMix64::from_seed(0);
        assert_eq!(
            RetryPolicy::svix().next_delay(0, Duration::ZERO, &retryable(), &mut rng),
            Some(secs(5))
        );
    }

    // --- Classifier ---------------------------------------------------------

    fn classify(status: u16) -> Outcome {
        Classifier::new().classify_response(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            NOW,
        )
    }

    fn retry_after_outcome(classifier: &Classifier, status: StatusCode, value: &str) -> Outcome {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        classifier.classify_response(status, &headers, NOW)
    }

    fn not_before(outcome: Outcome) -> Option<Duration> {
        match outcome {
            Outcome::Retryable { not_before, .. } => not_before,
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[test]
    fn status_classes() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(status), Outcome::Delivered, "{status}");
        }
        for status in [
            100, 300, 301, 302, 304, 307, 308, 408, 429, 500, 502, 503, 504, 599, 600, 999,
        ] {
            let outcome = classify(status);
            assert!(matches!(outcome, Outcome::Retryable { .. }), "{status}");
            assert_eq!(
                outcome.cause(),
                Some(FailureCause::Status(StatusCode::from_u16(status).unwrap()))
            );
        }
        for status in [400, 401, 403, 404, 405, 409, 413, 422, 499] {
            assert!(
                matches!(
                    classify(status),
                    Outcome::Permanent {
                        disable_endpoint: false,
                        ..
                    }
                ),
                "{status}"
            );
        }
        assert_eq!(
            classify(410),
            Outcome::Permanent {
                cause: FailureCause::Status(StatusCode::GONE),
                disable_endpoint: true
            }
        );
    }

    #[test]
    fn status_overrides() {
        let classifier = Classifier::new()
            .retry_on(StatusCode::NOT_FOUND)
            .permanent_on(StatusCode::MOVED_PERMANENTLY)
            .disable_on(StatusCode::FORBIDDEN)
            .permanent_on(StatusCode::OK)
            .permanent_on(StatusCode::CONFLICT)
            .retry_on(StatusCode::CONFLICT);
        let outcome = |s: StatusCode| classifier.classify_response(s, &HeaderMap::new(), NOW);
        assert!(matches!(
            outcome(StatusCode::NOT_FOUND),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            outcome(StatusCode::CONFLICT),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            outcome(StatusCode::MOVED_PERMANENTLY),
            Outcome::Permanent {
                disable_endpoint: false,
                ..
            }
        ));
        assert!(matches!(
            outcome(StatusCode::FORBIDDEN),
            Outcome::Permanent {
                disable_endpoint: true,
                ..
            }
        ));
        // 2xx is always delivered.
        assert_eq!(outcome(StatusCode::OK), Outcome::Delivered);
    }

    #[test]
    fn transport_errors() {
        let classifier = Classifier::new();
        for kind in [
            TransportErrorKind::Connect,
            TransportErrorKind::Tls,
            TransportErrorKind::Dns,
            TransportErrorKind::Other,
        ] {
            assert_eq!(
                classifier.classify_transport_error(kind),
                Outcome::Retryable {
                    cause: FailureCause::Transport(kind),
                    not_before: None
                }
            );
        }
        assert_eq!(
            not_before(classifier.classify_transport_error(TransportErrorKind::Timeout)),
            Some(secs(5))
        );
        assert_eq!(
            classifier.classify_transport_error(TransportErrorKind::RefusedByPolicy),
            Outcome::Permanent {
                cause: FailureCause::Transport(TransportErrorKind::RefusedByPolicy),
                disable_endpoint: false
            }
        );
    }

    #[test]
    fn retry_after_seconds() {
        let c = Classifier::new();
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            not_before(retry_after_outcome(&c, unavailable, "120")),
            Some(secs(120))
        );
        assert_eq!(
            not_before(retry_after_outcome(&c, unavailable, "0")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            not_before(retry_after_outcome(&c, unavailable, " 7\t")),
            Some(secs(7))
        );
        assert_eq!(
            not_before(retry_after_outcome(&c, StatusCode::MOVED_PERMANENTLY, "30")),
            Some(secs(30))
        );
    }

    #[test]
    fn retry_after_http_date() {
        let c = Classifier::new();
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            not_before(retry_after_outcome(
                &c,
                unavailable,
                "Wed, 01 Jan 2025 12:10:00 GMT"
            )),
            Some(mins(10))
        );
        // In the past: now.
        assert_eq!(
            not_before(retry_after_outcome(
                &c,
                unavailable,
                "Sun, 06 Nov 1994 08:49:37 GMT"
            )),
            Some(Duration::ZERO)
        );
        // Far future: clamped.
        assert_eq!(
            not_before(retry_after_outcome(
                &c,
                unavailable,
                "Fri, 31 Dec 9999 23:59:59 GMT"
            )),
            Some(hours(1))
        );
    }

    #[test]
    fn retry_after_huge_is_clamped() {
        let c = Classifier::new();
        for value in [
            "3601",
            "18446744073709551615",
            "99999999999999999999999999999",
        ] {
            assert_eq!(
                not_before(retry_after_outcome(&c, StatusCode::BAD_GATEWAY, value)),
                Some(hours(1)),
                "{value}"
            );
        }
        let c = c.with_max_retry_after(mins(10));
        assert_eq!(
            not_before(retry_after_outcome(&c, StatusCode::BAD_GATEWAY, "3601")),
            Some(mins(10))
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let c = Classifier::new();
        for value in [
            "",
            "-1",
            "+5",
            "1.5",
            "5s",
            "0x10",
            "soon",
            "１２",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Wed, 01 Jan 2025 12:10:00 UTC",
            "wed, 01 jan 2025 12:10:00 GMT",
            "Wed, 1 Jan 2025 12:10:00 GMT",
            "Wed, 32 Jan 2025 12:10:00 GMT",
            "Wed, 01 Jan 2025 25:10:00 GMT",
            "Mon, 01 Jan 2025 12:10:00 GMT",
            "Wed, 01 Jan +2025 12:10:00 GMT",
        ] {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(RETRY_AFTER, v);
            }
            let outcome = c.classify_response(StatusCode::BAD_GATEWAY, &headers, NOW);
            assert_eq!(not_before(outcome), None, "{value:?}");
        }
        // Not even valid UTF-8.
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff12").unwrap());
        let outcome = c.classify_response(StatusCode::BAD_GATEWAY, &headers, NOW);
        assert_eq!(not_before(outcome), None);
    }

    #[test]
    fn retry_after_ignored_on_permanent() {
        let outcome = retry_after_outcome(&Classifier::new(), StatusCode::BAD_REQUEST, "10");
        assert!(matches!(outcome, Outcome::Permanent { .. }));
    }

    #[test]
    fn throttle_floor() {
        let c = Classifier::new();
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(not_before(classify(429)), Some(secs(5)));
        assert_eq!(
            not_before(retry_after_outcome(&c, too_many, "0")),
            Some(secs(5))
        );
        assert_eq!(
            not_before(retry_after_outcome(&c, too_many, "60")),
            Some(secs(60))
        );
        assert_eq!(
            not_before(retry_after_outcome(&c, too_many, "garbage")),
            Some(secs(5))
        );
        // 408 is a timeout too; other statuses have no floor.
        assert_eq!(not_before(classify(408)), Some(secs(5)));
        assert_eq!(not_before(classify(503)), None);

        let c = Classifier::new().with_throttle_floor(secs(30));
        assert_eq!(
            not_before(retry_after_outcome(&c, too_many, "10")),
            Some(secs(30))
        );
        assert_eq!(
            not_before(c.classify_transport_error(TransportErrorKind::Timeout)),
            Some(secs(30))
        );
        // The floor outranks an "immediately" schedule.
        let mut rng = SplitMix64::from_seed(0);
        let outcome = c.classify_response(too_many, &HeaderMap::new(), NOW);
        let policy = RetryPolicy::fixed([Duration::ZERO]).build().unwrap();
        assert_eq!(
            policy.next_delay(1, Duration::ZERO, &outcome, &mut rng),
            Some(secs(30))
        );
    }

    #[test]
    fn display() {
        assert_eq!(
            FailureCause::Status(StatusCode::BAD_GATEWAY).to_string(),
            "HTTP 502 Bad Gateway"
        );
        assert_eq!(
            FailureCause::Transport(TransportErrorKind::Dns).to_string(),
            "DNS resolution failed"
        );
    }

    // --- serde --------------------------------------------------------------

    #[test]
    fn policy_serde_round_trip() {
        for policy in [
            RetryPolicy::standard_webhooks(),
            RetryPolicy::hook0(),
            RetryPolicy::raven().with_max_age(mins(1)),
            exponential(Jitter::Full),
            exponential(Jitter::Equal),
            exponential(Jitter::None),
        ] {
            let json = serde_json::to_string(&policy).unwrap();
            let back: RetryPolicy = serde_json::from_str(&json).unwrap();
            assert_eq!(back, policy, "{json}");
        }
    }

    #[test]
    fn policy_deserialize_validates() {
        let json = r#"{"strategy":{"exponential":{"initial":1000,"factor":0.5,"max_delay":60000,"jitter":"full"}},"max_attempts":5}"#;
        let err = serde_json::from_str::<RetryPolicy>(json).unwrap_err();
        assert!(err.to_string().contains("backoff factor"), "{err}");

        let json = r#"{"strategy":{"fixed":{"delays":[1000],"repeat_last":true}}}"#;
        assert!(serde_json::from_str::<RetryPolicy>(json).is_err());

        let json = r#"{"strategy":{"fixed":{"delays":[1000],"repeat_last":false}}}"#;
        let policy: RetryPolicy = serde_json::from_str(json).unwrap();
        assert_eq!(policy.schedule().collect::<Vec<_>>(), [secs(1)]);
        // Durations are stored as whole milliseconds.
        assert_eq!(
            serde_json::to_string(&policy).unwrap(),
            r#"{"strategy":{"fixed":{"delays":[1000],"repeat_last":false}},"max_attempts":null,"max_age":null}"#
        );
    }

    #[test]
    fn classifier_serde_round_trip() {
        for classifier in [
            Classifier::default(),
            Classifier::new()
                .retry_on(StatusCode::NOT_FOUND)
                .disable_on(StatusCode::FORBIDDEN)
                .permanent_on(StatusCode::MOVED_PERMANENTLY)
                .with_max_retry_after(mins(10))
                .with_throttle_floor(secs(1)),
        ] {
            let json = serde_json::to_string(&classifier).unwrap();
            let back: Classifier = serde_json::from_str(&json).unwrap();
            assert_eq!(back, classifier, "{json}");
        }
        // Missing fields take their defaults.
        let partial: Classifier =
            serde_json::from_str(r#"{"status_rules":{"404":"retryable"}}"#).unwrap();
        assert_eq!(partial, Classifier::new().retry_on(StatusCode::NOT_FOUND));
    }
}
