//! [`SqliteStore`]: a durable, embedded store (feature `sqlite`).
//!
//! One file holds endpoints, events (each payload once, however many
//! endpoints receive it), deliveries and their attempt logs. Nothing needs
//! to run beside the sender: SQLite is compiled in (sqlx's bundled build),
//! and the schema is created and upgraded when the store opens.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = NORMAL`: every
//! committed step survives a crash or `SIGKILL` of the sender process; a
//! power loss may lose the last few hundred milliseconds of commits. For
//! durability against power loss too, open with
//! [`SqliteStore::open_with`] and `synchronous(SqliteSynchronous::Full)`.
//!
//! # Concurrency
//!
//! Writes go through a single connection, one transaction at a time, so
//! several tasks (workers, publishers, operators) never meet SQLite's
//! "database is locked" errors; reads use a pool of their own and see every
//! committed write. One process should own a database file: a second
//! process writing to it would be serialised by SQLite's file lock but is
//! not what this store is built for (use the Postgres store to share a
//! queue between processes).
//!
//! # Schema
//!
//! Tables are prefixed `hookway_`. Migrations are numbered and recorded in
//! `hookway_migrations`; opening a database applies the ones it lacks, in
//! order, each in its own transaction, so a later release can upgrade an
//! existing file. A database written by a newer release (one with
//! migrations this release does not know) is refused rather than guessed
//! at.
//!
//! Endpoint rows hold each endpoint's full
//! [`EndpointRecord`](crate::endpoint::EndpointRecord), **signing secrets
//! and credentials included**: protect the file like a password store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;

use super::sql::{
    backend, claims, corrupt, finished_at, from_json, from_nanos, nanos, to_json, EndpointCache,
};
use super::{Claimed, DeliveryQuery, Inserted, Prune, Save, Store, StoreError, StoredEvent};
use crate::delivery::{Attempt, Delivery, DeliveryId, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::{EventType, MessageId};

/// The deliveries a prune removes, given the delivered cut as `?1` and the
/// failed cut as `?2`.
macro_rules! doomed {
    () => {
        "((state = 'delivered' AND finished_at < ?1) OR (state = 'failed' AND finished_at < ?2))"
    };
}

/// Deliveries removed per transaction by `prune`.
const PRUNE_CHUNK: usize = 1000;

/// The migrations, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sqlite/0001_init.sql")),
    (2, include_str!("sqlite/0002_idempotency.sql")),
    (3, include_str!("sqlite/0003_inbox.sql")),
];

/// The durable, embedded store; see the [module documentation](self).
///
/// Cheap to clone: clones share the connections and the endpoint cache.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    endpoints: Arc<EndpointCache>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn delivery_from(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let text: String = row.try_get("data").map_err(backend)?;
    from_json(&text, "delivery")
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    ///
    /// `":memory:"` is refused: an in-memory SQLite database belongs to one
    /// connection, and this store reads and writes through several (use
    /// [`MemoryStore`](super::MemoryStore), or a file in a temporary
    /// directory).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        if path.as_ref().as_os_str() == ":memory:" {
            return Err(corrupt(
                "path",
                "an in-memory SQLite database cannot be shared by the store's connections",
            ));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        Self::open_with(options).await
    }

    /// Opens with your own connection options (for example
    /// `synchronous(SqliteSynchronous::Full)`). Foreign keys and a busy
    /// timeout are set on top of them.
    pub async fn open_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self {
            writer,
            reader,
            endpoints: Arc::new(EndpointCache::default()),
        })
    }

    /// Closes the connections, waiting for queries in progress.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// The endpoint of a row, from the cache while its revision is current.
    fn endpoint_from(&self, row: &SqliteRow) -> Result<Arc<Endpoint>, StoreError> {
        let id: String = row.try_get("id").map_err(backend)?;
        let revision: i64 = row.try_get("revision").map_err(backend)?;
        let enabled: bool = row.try_get("enabled").map_err(backend)?;
        self.endpoints.get(
            &id,
            revision,
            || row.try_get("record").map_err(backend),
            enabled,
        )
    }

    /// The write connection (one, so writes never meet a locked database).
    #[cfg(feature = "receive")]
    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The receiving side's de-duplication in this database, shared by
    /// every receiver that opens it (feature `receive`).
    #[cfg(feature = "receive")]
    pub fn idempotency(&self) -> super::idempotency::SqlIdempotency<Self> {
        super::idempotency::SqlIdempotency::new(self.clone())
    }

    /// The receiving side's durable inbox in this database (feature
    /// `receive`): give it to `ReceiverBuilder::inbox`.
    #[cfg(feature = "receive")]
    pub fn inbox(&self) -> super::inbox::SqlInbox<Self> {
        super::inbox::SqlInbox::new(self.clone())
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer.begin().await.map_err(backend)
    }
}

/// Applies the migrations the database lacks.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS hookway_migrations (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(pool)
    .await
    .map_err(backend)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM hookway_migrations")
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(corrupt(
            "schema",
            format!("migration {newer} is newer than this release knows ({known})"),
        ));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = pool.begin().await.map_err(backend)?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO hookway_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(nanos(crate::clock::Clock::now(&crate::clock::SystemClock)))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
    }
    Ok(())
}

/// Inserts a new delivery of the event stored as `event_seq`.
async fn insert_delivery(
    tx: &mut Transaction<'static, Sqlite>,
    delivery: &Delivery,
    event_seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hookway_deliveries
            (id, event_seq, endpoint_id, state, due_at, claims, created_at, finished_at, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(delivery.id().as_str())
    .bind(event_seq)
    .bind(delivery.endpoint_id().as_str())
    .bind(delivery.state().kind().as_str())
    .bind(delivery.next_attempt_at().map(nanos))
    .bind(claims(delivery))
    .bind(nanos(delivery.created_at()))
    .bind(finished_at(delivery).map(nanos))
    .bind(to_json(delivery, "delivery")?)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Overwrites a delivery's row.
async fn update_delivery(
    tx: &mut Transaction<'static, Sqlite>,
    seq: i64,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE hookway_deliveries
         SET state = ?, due_at = ?, claims = ?, finished_at = ?, data = ?
         WHERE seq = ?",
    )
    .bind(delivery.state().kind().as_str())
    .bind(delivery.next_attempt_at().map(nanos))
    .bind(claims(delivery))
    .bind(finished_at(delivery).map(nanos))
    .bind(to_json(delivery, "delivery")?)
    .bind(seq)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// One [`Save`] inside a write transaction: `Err` if the database failed,
/// `Ok(Err)` if the delivery changed or does not exist.
async fn save_in(
    tx: &mut Transaction<'static, Sqlite>,
    save: &Save,
) -> Result<Result<(), StoreError>, StoreError> {
    let delivery = &save.delivery;
    let attempt = save
        .attempt
        .as_ref()
        .map(|a| to_json(a, "attempt"))
        .transpose()?;
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE hookway_deliveries
         SET state = ?, due_at = ?, claims = ?, finished_at = ?, data = ?
         WHERE id = ? AND claims = ? AND state = ?
         RETURNING seq",
    )
    .bind(delivery.state().kind().as_str())
    .bind(delivery.next_attempt_at().map(nanos))
    .bind(claims(delivery))
    .bind(finished_at(delivery).map(nanos))
    .bind(to_json(delivery, "delivery")?)
    .bind(delivery.id().as_str())
    .bind(i64::try_from(save.expected_claims).unwrap_or(i64::MAX))
    .bind(save.expected_state.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(backend)?;
    let Some(seq) = seq else {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM hookway_deliveries WHERE id = ?")
                .bind(delivery.id().as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(backend)?;
        return Ok(Err(match exists {
            Some(_) => StoreError::Conflict(delivery.id().clone()),
            None => StoreError::NotFound(format!("delivery {}", delivery.id())),
        }));
    };
    if let Some(attempt) = attempt {
        sqlx::query(
            "INSERT INTO hookway_attempts (delivery_seq, ordinal, data)
             VALUES (?, (SELECT count(*) FROM hookway_attempts WHERE delivery_seq = ?), ?)",
        )
        .bind(seq)
        .bind(seq)
        .bind(attempt)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    }
    Ok(Ok(()))
}

fn event_from(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let id: String = row.try_get("id").map_err(backend)?;
    let event_type: String = row.try_get("event_type").map_err(backend)?;
    let channels: String = row.try_get("channels").map_err(backend)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(backend)?;
    let created_at: i64 = row.try_get("created_at").map_err(backend)?;
    Ok(StoredEvent {
        id: MessageId::new(id).map_err(|e| corrupt("message id", e))?,
        event_type: EventType::new(event_type).map_err(|e| corrupt("event type", e))?,
        channels: from_json(&channels, "channels")?,
        payload: Bytes::from(payload),
        created_at: from_nanos(created_at)?,
    })
}

impl Store for SqliteStore {
    const GROUPS_SAVES: bool = true;

    async fn put_endpoint(&self, endpoint: Endpoint) -> Result<(), StoreError> {
        let record = to_json(&endpoint.to_record(), "endpoint record")?;
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO hookway_endpoints (id, record, enabled, revision)
             VALUES (?, ?, ?, 1)
             ON CONFLICT (id) DO UPDATE SET
                record = excluded.record,
                enabled = excluded.enabled,
                revision = hookway_endpoints.revision + 1",
        )
        .bind(endpoint.id().as_str())
        .bind(record)
        .bind(endpoint.is_enabled())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.endpoints.forget(endpoint.id());
        Ok(())
    }

    async fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE hookway_endpoints SET enabled = ?, revision = revision + 1 WHERE id = ?",
        )
        .bind(enabled)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.endpoints.forget(id);
        Ok(done.rows_affected() > 0)
    }

    async fn held_count(&self, endpoint: &EndpointId) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM hookway_deliveries WHERE endpoint_id = ? AND state = 'held'",
        )
        .bind(endpoint.as_str())
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn endpoint(&self, id: &EndpointId) -> Result<Option<Arc<Endpoint>>, StoreError> {
        let row =
            sqlx::query("SELECT id, revision, record, enabled FROM hookway_endpoints WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        row.map(|row| self.endpoint_from(&row)).transpose()
    }

    async fn endpoints(&self) -> Result<Vec<Arc<Endpoint>>, StoreError> {
        let rows =
            sqlx::query("SELECT id, revision, record, enabled FROM hookway_endpoints ORDER BY id")
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        rows.iter().map(|row| self.endpoint_from(row)).collect()
    }

    async fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> Result<Inserted, StoreError> {
        let channels = to_json(&event.channels, "channels")?;
        let mut tx = self.write().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO hookway_events (id, event_type, channels, payload, created_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING
             RETURNING seq",
        )
        .bind(event.id.as_str())
        .bind(event.event_type.as_str())
        .bind(channels)
        .bind(event.payload.as_ref())
        .bind(nanos(event.created_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(seq) = seq else {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT d.id FROM hookway_deliveries d
                 JOIN hookway_events e ON e.seq = d.event_seq
                 WHERE e.id = ? ORDER BY d.seq",
            )
            .bind(event.id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            let ids = ids
                .into_iter()
                .map(|id| DeliveryId::new(id).map_err(|e| corrupt("delivery id", e)))
                .collect::<Result<_, _>>()?;
            return Ok(Inserted::Duplicate(ids));
        };
        for delivery in &deliveries {
            insert_delivery(&mut tx, delivery, seq).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Inserted::New(
            deliveries.iter().map(|d| d.id().clone()).collect(),
        ))
    }

    async fn event(&self, id: &MessageId) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT id, event_type, channels, payload, created_at
             FROM hookway_events WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.as_ref().map(event_from).transpose()
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "SELECT d.seq, d.data, e.payload
             FROM hookway_deliveries d JOIN hookway_events e ON e.seq = d.event_seq
             WHERE d.due_at IS NOT NULL AND d.due_at <= ?
             ORDER BY d.due_at, d.id
             LIMIT ?",
        )
        .bind(nanos(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(backend)?;
            let mut delivery = match delivery_from(&row) {
                Ok(delivery) => delivery,
                Err(error) => {
                    // One unreadable row (damaged, or written by a
                    // newer release) must not stop every claim.
                    tracing::error!(seq, %error, "skipping an unreadable delivery row");
                    continue;
                }
            };
            let payload: Vec<u8> = row.try_get("payload").map_err(backend)?;
            let Ok(claim) = delivery.claim(now, lease) else {
                continue;
            };
            update_delivery(&mut tx, seq, &delivery).await?;
            claimed.push(Claimed::new(delivery, claim, Bytes::from(payload)));
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    async fn queue_head(&self, endpoint: &EndpointId) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT data FROM hookway_deliveries
             WHERE endpoint_id = ? AND state IN ('pending', 'in_flight', 'held')
             ORDER BY seq LIMIT 1",
        )
        .bind(endpoint.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.map(|row| delivery_from(&row)).transpose()
    }

    async fn prune(&self, prune: Prune) -> Result<usize, StoreError> {
        // A cut of `None` matches nothing: no finish time is below it.
        let delivered = prune.delivered_before.map_or(i64::MIN, nanos);
        let failed = prune.failed_before.map_or(i64::MIN, nanos);
        let chunk = i64::try_from(PRUNE_CHUNK).unwrap_or(i64::MAX);
        let mut removed = 0;
        // A chunk per transaction, so a large backlog does not hold the
        // writer from the workers for the whole prune.
        loop {
            let mut tx = self.write().await?;
            let doomed: Vec<(i64, i64)> = sqlx::query_as(concat!(
                "SELECT seq, event_seq FROM hookway_deliveries WHERE ",
                doomed!(),
                " LIMIT ?3"
            ))
            .bind(delivered)
            .bind(failed)
            .bind(chunk)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            if doomed.is_empty() {
                break;
            }
            let seqs = to_json(
                &doomed.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
                "delivery list",
            )?;
            let mut events: Vec<i64> = doomed.iter().map(|(_, event)| *event).collect();
            events.sort_unstable();
            events.dedup();
            for sql in [
                "DELETE FROM hookway_attempts
                 WHERE delivery_seq IN (SELECT value FROM json_each(?1))",
                "DELETE FROM hookway_deliveries WHERE seq IN (SELECT value FROM json_each(?1))",
            ] {
                sqlx::query(sql)
                    .bind(&seqs)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            sqlx::query(
                "DELETE FROM hookway_events WHERE seq IN (SELECT value FROM json_each(?1))
                 AND NOT EXISTS (SELECT 1 FROM hookway_deliveries d
                                 WHERE d.event_seq = hookway_events.seq)",
            )
            .bind(to_json(&events, "event list")?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            removed += doomed.len();
            if doomed.len() < PRUNE_CHUNK {
                break;
            }
        }
        // Events that never had a delivery go once older than the cut.
        if let Some(cut) = prune.delivered_before {
            loop {
                let mut tx = self.write().await?;
                let gone = sqlx::query(
                    "DELETE FROM hookway_events WHERE seq IN (
                        SELECT seq FROM hookway_events e WHERE created_at < ?1
                        AND NOT EXISTS (SELECT 1 FROM hookway_deliveries d
                                        WHERE d.event_seq = e.seq)
                        LIMIT ?2)",
                )
                .bind(nanos(cut))
                .bind(chunk)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
                tx.commit().await.map_err(backend)?;
                if gone < u64::try_from(PRUNE_CHUNK).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        let save = Save::new(delivery, expected_claims, expected_state, attempt);
        let mut tx = self.write().await?;
        let result = save_in(&mut tx, &save).await?;
        tx.commit().await.map_err(backend)?;
        result
    }

    async fn save_all(&self, saves: Vec<Save>) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // One transaction, so one commit, for the lot.
        let mut tx = self.write().await?;
        let mut results = Vec::with_capacity(saves.len());
        for save in &saves {
            results.push(save_in(&mut tx, save).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(results)
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query("SELECT data FROM hookway_deliveries WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.map(|row| delivery_from(&row)).transpose()
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT data FROM hookway_deliveries
             WHERE (?1 IS NULL OR endpoint_id = ?1)
               AND (?2 IS NULL OR state = ?2)
               AND (?3 IS NULL OR created_at >= ?3)
             ORDER BY seq
             LIMIT ?4",
        )
        .bind(query.endpoint.as_ref().map(EndpointId::as_str))
        .bind(query.state.map(StateKind::as_str))
        .bind(query.since.map(nanos))
        .bind(if query.limit == 0 {
            -1
        } else {
            i64::try_from(query.limit).unwrap_or(i64::MAX)
        })
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(delivery_from).collect()
    }

    async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT a.data FROM hookway_attempts a
             JOIN hookway_deliveries d ON d.seq = a.delivery_seq
             WHERE d.id = ? ORDER BY a.ordinal",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(|text| from_json(text, "attempt")).collect()
    }

    async fn events_since(&self, since: OffsetDateTime) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_type, channels, payload, created_at
             FROM hookway_events WHERE created_at >= ? ORDER BY created_at, seq",
        )
        .bind(nanos(since))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(event_from).collect()
    }

    async fn insert_deliveries(&self, deliveries: Vec<Delivery>) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for delivery in &deliveries {
            let seq: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM hookway_events WHERE id = ?")
                    .bind(delivery.event_id().as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            let Some(seq) = seq else {
                // Dropping the transaction rolls back what was added.
                return Err(StoreError::NotFound(format!(
                    "event {}",
                    delivery.event_id()
                )));
            };
            insert_delivery(&mut tx, delivery, seq).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM hookway_deliveries WHERE due_at IS NOT NULL
             ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        at.map(from_nanos).transpose()
    }
}
