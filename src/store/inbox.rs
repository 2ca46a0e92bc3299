//! The receiving side's durable inbox in the SQL stores: [`SqlInbox`], an
//! [`InboxStore`] in the database the sender side uses, so an acknowledged
//! event survives a crash of the receiver and, with Postgres, is shared by
//! every receiver process.
//!
//! One row per message id in `hookway_inbox` (migration 3). Accepting is
//! one `INSERT … ON CONFLICT (id) DO NOTHING`: storing and de-duplicating
//! are one step. A claim is one `UPDATE … RETURNING` of the due rows
//! (under `FOR UPDATE SKIP LOCKED` in Postgres, so processes never wait on
//! each other's claims; through the store's single writer connection in
//! SQLite); every result is an `UPDATE` that checks the claim count, so a
//! stale claim is refused.
//!
//! A row that cannot be read back (damaged, or written by a newer release)
//! is moved to the failed list with the reason when it is claimed, rather
//! than stopping the workers; the failed list skips (and logs) rows it
//! cannot read.

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use super::sql::nanos;
use crate::event::{EventType, MessageId};
use crate::receive::inbox::{decode_headers, encode_headers, later};
use crate::receive::{
    ClaimedEntry, EntryState, EntryStatus, FailedCursor, FailedEntry, InboxClaim, InboxEntry,
    InboxError, InboxStore, Stored,
};

/// A durable [`InboxStore`] in a SQL store's database; made by
/// `SqliteStore::inbox` or `PostgresStore::inbox`. Cheap to clone.
///
/// Give it to [`ReceiverBuilder::inbox`](crate::receive::ReceiverBuilder::inbox).
/// With SQLite, one process should own the database file (as for the
/// sending side); with Postgres, any number of receiver processes may share
/// one inbox, each running its own workers.
#[derive(Clone, Debug)]
pub struct SqlInbox<S> {
    store: S,
}

impl<S> SqlInbox<S> {
    pub(super) fn new(store: S) -> Self {
        Self { store }
    }
}

/// A row that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable inbox row: {0}")]
struct Unreadable(String);

fn failed(error: sqlx::Error) -> InboxError {
    InboxError::Backend(Box::new(error))
}

fn unreadable(reason: impl std::fmt::Display) -> InboxError {
    InboxError::Backend(Box::new(Unreadable(reason.to_string())))
}

fn time_from(n: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| e.to_string())
}

fn count(n: i64) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("count {n} out of range"))
}

/// A stored count as the claim token it is compared with.
fn token(claim: &InboxClaim) -> i64 {
    i64::try_from(claim.token()).unwrap_or(i64::MAX)
}

/// A limit as bound (0 = none).
fn limit(n: usize) -> i64 {
    if n == 0 {
        i64::MAX
    } else {
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// The columns of a claimed row.
struct ClaimRow {
    id: String,
    event_type: String,
    headers: Vec<u8>,
    body: Vec<u8>,
    signed_at: Option<i64>,
    received_at: i64,
    claims: i64,
    attempts: i64,
}

impl ClaimRow {
    fn decode(self, lease_until: OffsetDateTime) -> Result<ClaimedEntry, String> {
        let id = MessageId::new(self.id).map_err(|e| format!("message id: {e}"))?;
        let event_type = EventType::new(self.event_type).map_err(|e| format!("event type: {e}"))?;
        let headers = decode_headers(&self.headers).map_err(|e| format!("headers: {e}"))?;
        let signed_at = self.signed_at.map(time_from).transpose()?;
        let received_at = time_from(self.received_at)?;
        let token = u64::try_from(self.claims).map_err(|_| "negative claim count".to_owned())?;
        let attempt = count(self.attempts)?.saturating_add(1);
        let entry = InboxEntry::new(
            id.clone(),
            event_type,
            signed_at,
            received_at,
            headers,
            Bytes::from(self.body),
        );
        Ok(ClaimedEntry::new(
            entry,
            InboxClaim::new(id, token, attempt, lease_until),
        ))
    }
}

/// The columns of a failed row.
struct FailedRow {
    id: String,
    event_type: String,
    received_at: i64,
    finished_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl FailedRow {
    fn decode(self) -> Result<FailedEntry, String> {
        Ok(FailedEntry::new(
            MessageId::new(self.id).map_err(|e| format!("message id: {e}"))?,
            EventType::new(self.event_type).map_err(|e| format!("event type: {e}"))?,
            time_from(self.received_at)?,
            time_from(self.finished_at)?,
            count(self.attempts)?,
            self.last_error.unwrap_or_default(),
        ))
    }
}

/// The columns of [`InboxStore::status`].
fn status_from(
    state: &str,
    due_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: i64,
    last_error: Option<String>,
) -> Result<EntryStatus, String> {
    let at = |t: Option<i64>| time_from(t.ok_or_else(|| format!("a {state} row without a time"))?);
    let state = match state {
        "pending" => EntryState::Pending {
            due_at: at(due_at)?,
        },
        "claimed" => EntryState::Claimed {
            lease_until: at(due_at)?,
        },
        "done" => EntryState::Processed {
            at: at(finished_at)?,
        },
        "failed" => EntryState::Failed {
            at: at(finished_at)?,
        },
        other => return Err(format!("unknown state {other:?}")),
    };
    Ok(EntryStatus::new(state, count(attempts)?, last_error))
}

const ACCEPT: &str = "INSERT INTO hookway_inbox
    (id, event_type, headers, body, signed_at, received_at, state, due_at, claims, attempts)
    VALUES ($1, $2, $3, $4, $5, $6, 'pending', $6, 0, 0)
    ON CONFLICT (id) DO NOTHING
    RETURNING id";

/// The claim: `$1` now, `$2` the lease end, `$3` the limit; the
/// selection of due rows is spliced in (Postgres locks it).
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE hookway_inbox SET state = 'claimed', claims = claims + 1, due_at = $2
             WHERE id IN (SELECT id FROM hookway_inbox
                          WHERE due_at IS NOT NULL AND due_at <= $1
                          ORDER BY due_at, id LIMIT $3",
            $lock,
            ")
             RETURNING id, event_type, headers, body, signed_at, received_at, claims, attempts"
        )
    };
}

/// Moves a claimed row that cannot be read to the failed list.
const FAIL_UNREADABLE: &str = "UPDATE hookway_inbox
    SET state = 'failed', due_at = NULL, finished_at = $2, last_error = $3
    WHERE id = $1 AND state = 'claimed'";

const COMPLETE: &str = "UPDATE hookway_inbox
    SET state = 'done', due_at = NULL, finished_at = $3, attempts = attempts + 1,
        last_error = NULL, headers = $4, body = $4
    WHERE id = $1 AND state = 'claimed' AND claims = $2";

const RETRY: &str = "UPDATE hookway_inbox
    SET state = 'pending', due_at = $3, attempts = attempts + 1, last_error = $4
    WHERE id = $1 AND state = 'claimed' AND claims = $2";

const FAIL: &str = "UPDATE hookway_inbox
    SET state = 'failed', due_at = NULL, finished_at = $3, attempts = attempts + 1,
        last_error = $4
    WHERE id = $1 AND state = 'claimed' AND claims = $2";

const RELEASE: &str = "UPDATE hookway_inbox SET state = 'pending', due_at = $3
    WHERE id = $1 AND state = 'claimed' AND claims = $2";

const EXISTS: &str = "SELECT id FROM hookway_inbox WHERE id = $1";

const FAILED_FIRST: &str = "SELECT id, event_type, received_at, finished_at, attempts, last_error
    FROM hookway_inbox
    WHERE state = 'failed' AND finished_at IS NOT NULL
    ORDER BY finished_at, id LIMIT $1";

const FAILED_AFTER: &str = "SELECT id, event_type, received_at, finished_at, attempts, last_error
    FROM hookway_inbox
    WHERE state = 'failed' AND finished_at IS NOT NULL
      AND (finished_at > $2 OR (finished_at = $2 AND id > $3))
    ORDER BY finished_at, id LIMIT $1";

const REPLAY: &str = "UPDATE hookway_inbox
    SET state = 'pending', due_at = $2, attempts = 0, finished_at = NULL
    WHERE id = $1 AND state = 'failed'";

const PRUNE: &str = "DELETE FROM hookway_inbox
    WHERE finished_at IS NOT NULL
      AND ((state = 'done' AND finished_at < $1) OR (state = 'failed' AND finished_at < $2))";

const NEXT_DUE: &str = "SELECT due_at FROM hookway_inbox WHERE due_at IS NOT NULL
    ORDER BY due_at LIMIT 1";

const STATUS: &str = "SELECT state, due_at, finished_at, attempts, last_error
    FROM hookway_inbox WHERE id = $1";

/// The [`InboxStore`] of one SQL store: `$pool` names its method giving the
/// pool to write through, `$claim` its claim statement. The statements are
/// the same in both dialects (sqlx reads `$n` parameters in SQLite too).
macro_rules! sql_inbox {
    ($store:ty, $pool:ident, $claim:expr) => {
        impl SqlInbox<$store> {
            /// Records a result with `claim`: runs `sql` (`$1` id, `$2`
            /// token, then `bind`'s), and tells a stale claim from a
            /// missing entry when no row matched.
            async fn settle(
                &self,
                claim: &InboxClaim,
                query: sqlx::query::Query<
                    'static,
                    <$store as SqlBackend>::Db,
                    <<$store as SqlBackend>::Db as sqlx::Database>::Arguments<'static>,
                >,
            ) -> Result<(), InboxError> {
                let done = query
                    .execute(self.store.$pool())
                    .await
                    .map_err(failed)?;
                if done.rows_affected() > 0 {
                    return Ok(());
                }
                let found: Option<String> = sqlx::query_scalar(EXISTS)
                    .bind(claim.id().as_str().to_owned())
                    .fetch_optional(self.store.$pool())
                    .await
                    .map_err(failed)?;
                Err(match found {
                    Some(_) => InboxError::Conflict(claim.id().clone()),
                    None => InboxError::NotFound(claim.id().clone()),
                })
            }
        }

        impl InboxStore for SqlInbox<$store> {
            async fn accept(&self, entry: &InboxEntry) -> Result<Stored, InboxError> {
                let inserted: Option<String> = sqlx::query_scalar(ACCEPT)
                    .bind(entry.id.as_str())
                    .bind(entry.event_type.as_str())
                    .bind(encode_headers(&entry.headers))
                    .bind(entry.body.as_ref())
                    .bind(entry.signed_at.map(nanos))
                    .bind(nanos(entry.received_at))
                    .fetch_optional(self.store.$pool())
                    .await
                    .map_err(failed)?;
                Ok(match inserted {
                    Some(_) => Stored::New,
                    None => Stored::Duplicate,
                })
            }

            async fn claim_due(
                &self,
                now: OffsetDateTime,
                lease: Duration,
                limit: usize,
            ) -> Result<Vec<ClaimedEntry>, InboxError> {
                use sqlx::Row as _;
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let lease_until = later(now, lease);
                let rows = sqlx::query($claim)
                    .bind(nanos(now))
                    .bind(nanos(lease_until))
                    .bind(self::limit(limit))
                    .fetch_all(self.store.$pool())
                    .await
                    .map_err(failed)?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let read = || -> Result<ClaimRow, sqlx::Error> {
                        Ok(ClaimRow {
                            id: row.try_get("id")?,
                            event_type: row.try_get("event_type")?,
                            headers: row.try_get("headers")?,
                            body: row.try_get("body")?,
                            signed_at: row.try_get("signed_at")?,
                            received_at: row.try_get("received_at")?,
                            claims: row.try_get("claims")?,
                            attempts: row.try_get("attempts")?,
                        })
                    };
                    let decoded = read()
                        .map_err(|e| e.to_string())
                        .and_then(|raw| raw.decode(lease_until));
                    match decoded {
                        Ok(entry) => claimed.push(entry),
                        Err(reason) => {
                            // One unreadable row must not stop every claim:
                            // it goes to the failed list, with the reason.
                            let id: Result<String, _> = row.try_get("id");
                            tracing::error!(id = ?id.as_deref().ok(), %reason, "unreadable inbox row moved to the failed list");
                            if let Ok(id) = id {
                                sqlx::query(FAIL_UNREADABLE)
                                    .bind(id)
                                    .bind(nanos(now))
                                    .bind(format!("unreadable inbox row: {reason}"))
                                    .execute(self.store.$pool())
                                    .await
                                    .map_err(failed)?;
                            }
                        }
                    }
                }
                // The statement returns rows in no set order.
                claimed.sort_by(|a, b| {
                    (a.entry.received_at, &a.entry.id).cmp(&(b.entry.received_at, &b.entry.id))
                });
                Ok(claimed)
            }

            async fn complete(
                &self,
                claim: &InboxClaim,
                now: OffsetDateTime,
            ) -> Result<(), InboxError> {
                let query = sqlx::query(COMPLETE)
                    .bind(claim.id().as_str().to_owned())
                    .bind(token(claim))
                    .bind(nanos(now))
                    .bind(Vec::<u8>::new());
                self.settle(claim, query).await
            }

            async fn retry(
                &self,
                claim: &InboxClaim,
                next_at: OffsetDateTime,
                error: &str,
            ) -> Result<(), InboxError> {
                let query = sqlx::query(RETRY)
                    .bind(claim.id().as_str().to_owned())
                    .bind(token(claim))
                    .bind(nanos(next_at))
                    .bind(error.to_owned());
                self.settle(claim, query).await
            }

            async fn fail(
                &self,
                claim: &InboxClaim,
                now: OffsetDateTime,
                error: &str,
            ) -> Result<(), InboxError> {
                let query = sqlx::query(FAIL)
                    .bind(claim.id().as_str().to_owned())
                    .bind(token(claim))
                    .bind(nanos(now))
                    .bind(error.to_owned());
                self.settle(claim, query).await
            }

            async fn release(
                &self,
                claim: &InboxClaim,
                now: OffsetDateTime,
            ) -> Result<(), InboxError> {
                let query = sqlx::query(RELEASE)
                    .bind(claim.id().as_str().to_owned())
                    .bind(token(claim))
                    .bind(nanos(now));
                self.settle(claim, query).await
            }

            async fn failed(
                &self,
                after: Option<&FailedCursor>,
                limit: usize,
            ) -> Result<Vec<FailedEntry>, InboxError> {
                use sqlx::Row as _;
                let query = match after {
                    None => sqlx::query(FAILED_FIRST).bind(self::limit(limit)),
                    Some(cursor) => sqlx::query(FAILED_AFTER)
                        .bind(self::limit(limit))
                        .bind(nanos(cursor.failed_at()))
                        .bind(cursor.id().as_str().to_owned()),
                };
                let rows = query
                    .fetch_all(self.store.$pool())
                    .await
                    .map_err(failed)?;
                let mut entries = Vec::with_capacity(rows.len());
                for row in rows {
                    let read = || -> Result<FailedRow, sqlx::Error> {
                        Ok(FailedRow {
                            id: row.try_get("id")?,
                            event_type: row.try_get("event_type")?,
                            received_at: row.try_get("received_at")?,
                            finished_at: row.try_get("finished_at")?,
                            attempts: row.try_get("attempts")?,
                            last_error: row.try_get("last_error")?,
                        })
                    };
                    match read().map_err(|e| e.to_string()).and_then(FailedRow::decode) {
                        Ok(entry) => entries.push(entry),
                        Err(reason) => {
                            tracing::error!(%reason, "skipping an unreadable failed inbox row")
                        }
                    }
                }
                Ok(entries)
            }

            async fn replay(
                &self,
                id: &MessageId,
                now: OffsetDateTime,
            ) -> Result<bool, InboxError> {
                let done = sqlx::query(REPLAY)
                    .bind(id.as_str())
                    .bind(nanos(now))
                    .execute(self.store.$pool())
                    .await
                    .map_err(failed)?;
                Ok(done.rows_affected() > 0)
            }

            async fn prune(
                &self,
                processed_before: OffsetDateTime,
                failed_before: Option<OffsetDateTime>,
            ) -> Result<usize, InboxError> {
                let done = sqlx::query(PRUNE)
                    .bind(nanos(processed_before))
                    // No cut: no finish time is below it.
                    .bind(failed_before.map_or(i64::MIN, nanos))
                    .execute(self.store.$pool())
                    .await
                    .map_err(failed)?;
                Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
            }

            async fn next_due(&self) -> Result<Option<OffsetDateTime>, InboxError> {
                let at: Option<i64> = sqlx::query_scalar(NEXT_DUE)
                    .fetch_optional(self.store.$pool())
                    .await
                    .map_err(failed)?;
                at.map(time_from).transpose().map_err(unreadable)
            }

            async fn status(&self, id: &MessageId) -> Result<Option<EntryStatus>, InboxError> {
                use sqlx::Row as _;
                let row = sqlx::query(STATUS)
                    .bind(id.as_str())
                    .fetch_optional(self.store.$pool())
                    .await
                    .map_err(failed)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let state: String = row.try_get("state").map_err(failed)?;
                status_from(
                    &state,
                    row.try_get("due_at").map_err(failed)?,
                    row.try_get("finished_at").map_err(failed)?,
                    row.try_get("attempts").map_err(failed)?,
                    row.try_get("last_error").map_err(failed)?,
                )
                .map(Some)
                .map_err(unreadable)
            }
        }
    };
}

/// Which sqlx database a store runs on.
trait SqlBackend {
    type Db: sqlx::Database;
}

#[cfg(feature = "sqlite")]
impl SqlBackend for super::SqliteStore {
    type Db = sqlx::Sqlite;
}

#[cfg(feature = "postgres")]
impl SqlBackend for super::PostgresStore {
    type Db = sqlx::Postgres;
}

#[cfg(feature = "sqlite")]
sql_inbox!(super::SqliteStore, writer, claim_sql!(""));

#[cfg(feature = "postgres")]
sql_inbox!(
    super::PostgresStore,
    pool,
    claim_sql!(" FOR UPDATE SKIP LOCKED")
);
