//! The one place that reads wall-clock time.
//!
//! Everything else in hookway takes `now` as a value, so signing, verifying
//! and retry decisions are deterministic and tests need no sleeps. The
//! convenience methods that read the clock (`Verifier::verify`,
//! `Event::new`, …) go through [`SystemClock`].

use time::OffsetDateTime;

/// A source of the current time.
///
/// Implement it to drive hookway from a fake clock in tests, or pass `now`
/// directly to the `*_at` methods.
pub trait Clock {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> OffsetDateTime {
        (**self).now()
    }
}

/// A clock that always answers the same instant; useful in tests and
/// examples.
///
/// ```
/// use hookway::clock::{Clock, FixedClock};
/// use time::macros::datetime;
///
/// let clock = FixedClock(datetime!(2021-02-25 15:02:10 UTC));
/// assert_eq!(clock.now().unix_timestamp(), 1614265330);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// A clock that tests move by hand; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use hookway::clock::{Clock, ManualClock};
/// use time::macros::datetime;
///
/// let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
/// let seen_by_engine = clock.clone();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(seen_by_engine.now(), datetime!(2026-01-01 0:01 UTC));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.saturating_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX));
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: OffsetDateTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
