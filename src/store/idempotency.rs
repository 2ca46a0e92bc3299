//! The receiving side's de-duplication in the SQL stores:
//! [`SqlIdempotency`], an [`IdempotencyStore`] in the database the sender
//! side uses, so several receiver instances share what they have processed.
//!
//! One row per message id in `hookway_idempotency`: claimed while its
//! handler runs, done once it succeeded. Each operation is one statement
//! (two for a [`Began::Duplicate`] or [`Began::InProgress`], the second
//! only reading what the first refused to change), so two receivers never
//! both get [`Began::New`] for one id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::sql::nanos;
use crate::event::MessageId;
use crate::receive::{
    Began, IdempotencyError, IdempotencyStore, DEFAULT_CLAIM_TIMEOUT, DEFAULT_TTL,
};

/// Sweep expired rows on one `begin` in this many.
const SWEEP_EVERY: u64 = 1024;

/// An [`IdempotencyStore`] in a SQL store's database; made by
/// `SqliteStore::idempotency` or `PostgresStore::idempotency`.
///
/// # Default
///
/// Done ids are remembered for [`DEFAULT_TTL`] from their last sighting,
/// and a claim lapses after [`DEFAULT_CLAIM_TIMEOUT`] (a receiver that
/// died mid-handler), as in `MemoryIdempotencyStore`. There is no capacity
/// bound: expired rows are swept now and then by `begin`.
#[derive(Debug)]
pub struct SqlIdempotency<S> {
    store: S,
    ttl: Duration,
    claim_timeout: Duration,
    begun: AtomicU64,
}

impl<S> SqlIdempotency<S> {
    pub(super) fn new(store: S) -> Self {
        Self {
            store,
            ttl: DEFAULT_TTL,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
            begun: AtomicU64::new(0),
        }
    }

    /// How long a processed id is remembered after it was last seen.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim lasts before another delivery of the id may take
    /// it over.
    #[must_use]
    pub fn with_claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout;
        self
    }

    /// `now` less `d`, as stored.
    fn before(now: OffsetDateTime, d: Duration) -> i64 {
        nanos(now).saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    fn sweep_now(&self) -> bool {
        self.begun
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
    }
}

fn failed(error: sqlx::Error) -> IdempotencyError {
    IdempotencyError::Backend(Box::new(error))
}

/// What the row's state says, once `begin` could not claim it.
fn found(state: Option<String>) -> Began {
    match state.as_deref() {
        Some("done") => Began::Duplicate,
        // Claimed, or deleted by an `abandon` in between: let the sender
        // come back.
        _ => Began::InProgress,
    }
}

#[cfg(feature = "sqlite")]
impl IdempotencyStore for SqlIdempotency<super::SqliteStore> {
    async fn begin(&self, id: &MessageId, now: OffsetDateTime) -> Result<Began, IdempotencyError> {
        let pool = self.store.writer();
        let (expired, lapsed) = (
            Self::before(now, self.ttl),
            Self::before(now, self.claim_timeout),
        );
        if self.sweep_now() {
            sqlx::query(
                "DELETE FROM hookway_idempotency
                 WHERE (state = 'done' AND at < ?1) OR (state = 'claimed' AND at < ?2)",
            )
            .bind(expired)
            .bind(lapsed)
            .execute(pool)
            .await
            .map_err(failed)?;
        }
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO hookway_idempotency (id, state, at) VALUES (?1, 'claimed', ?2)
             ON CONFLICT (id) DO UPDATE SET state = 'claimed', at = ?2
             WHERE (hookway_idempotency.state = 'done' AND hookway_idempotency.at < ?3)
                OR (hookway_idempotency.state = 'claimed' AND hookway_idempotency.at < ?4)
             RETURNING id",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .bind(expired)
        .bind(lapsed)
        .fetch_optional(pool)
        .await
        .map_err(failed)?;
        if claimed.is_some() {
            return Ok(Began::New);
        }
        // Seen again: a done id's time-to-live starts over.
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE hookway_idempotency
             SET at = CASE WHEN state = 'done' THEN ?2 ELSE at END
             WHERE id = ?1 RETURNING state",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .fetch_optional(pool)
        .await
        .map_err(failed)?;
        Ok(found(state))
    }

    async fn complete(&self, id: &MessageId, now: OffsetDateTime) -> Result<(), IdempotencyError> {
        sqlx::query(
            "INSERT INTO hookway_idempotency (id, state, at) VALUES (?1, 'done', ?2)
             ON CONFLICT (id) DO UPDATE SET state = 'done', at = ?2",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .execute(self.store.writer())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn abandon(&self, id: &MessageId) -> Result<(), IdempotencyError> {
        sqlx::query("DELETE FROM hookway_idempotency WHERE id = ?1 AND state = 'claimed'")
            .bind(id.as_str())
            .execute(self.store.writer())
            .await
            .map_err(failed)?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl IdempotencyStore for SqlIdempotency<super::PostgresStore> {
    async fn begin(&self, id: &MessageId, now: OffsetDateTime) -> Result<Began, IdempotencyError> {
        let pool = self.store.pool();
        let (expired, lapsed) = (
            Self::before(now, self.ttl),
            Self::before(now, self.claim_timeout),
        );
        if self.sweep_now() {
            sqlx::query(
                "DELETE FROM hookway_idempotency
                 WHERE (state = 'done' AND at < $1) OR (state = 'claimed' AND at < $2)",
            )
            .bind(expired)
            .bind(lapsed)
            .execute(pool)
            .await
            .map_err(failed)?;
        }
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO hookway_idempotency (id, state, at) VALUES ($1, 'claimed', $2)
             ON CONFLICT (id) DO UPDATE SET state = 'claimed', at = $2
             WHERE (hookway_idempotency.state = 'done' AND hookway_idempotency.at < $3)
                OR (hookway_idempotency.state = 'claimed' AND hookway_idempotency.at < $4)
             RETURNING id",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .bind(expired)
        .bind(lapsed)
        .fetch_optional(pool)
        .await
        .map_err(failed)?;
        if claimed.is_some() {
            return Ok(Began::New);
        }
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE hookway_idempotency
             SET at = CASE WHEN state = 'done' THEN $2 ELSE at END
             WHERE id = $1 RETURNING state",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .fetch_optional(pool)
        .await
        .map_err(failed)?;
        Ok(found(state))
    }

    async fn complete(&self, id: &MessageId, now: OffsetDateTime) -> Result<(), IdempotencyError> {
        sqlx::query(
            "INSERT INTO hookway_idempotency (id, state, at) VALUES ($1, 'done', $2)
             ON CONFLICT (id) DO UPDATE SET state = 'done', at = $2",
        )
        .bind(id.as_str())
        .bind(nanos(now))
        .execute(self.store.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn abandon(&self, id: &MessageId) -> Result<(), IdempotencyError> {
        sqlx::query("DELETE FROM hookway_idempotency WHERE id = $1 AND state = 'claimed'")
            .bind(id.as_str())
            .execute(self.store.pool())
            .await
            .map_err(failed)?;
        Ok(())
    }
}
