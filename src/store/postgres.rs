//! [`PostgresStore`]: one delivery queue shared by any number of sender
//! processes (feature `postgres`).
//!
//! Every process opens the same database and runs its own `Outbox`; there
//! is no coordinator. Workers claim due deliveries with
//! `SELECT … FOR UPDATE SKIP LOCKED`, so two processes never claim the same
//! delivery at once, and each claim carries a lease: if a process dies
//! mid-attempt, its deliveries become claimable again when their leases
//! expire, and another process sends them (delivery is at-least-once).
//!
//! # Round trips
//!
//! A claim is one transaction of two statements however many deliveries it
//! takes (the selection, and one `UPDATE … FROM UNNEST(…)` for all of
//! them); recording an attempt's result, with its attempt log row, is one
//! statement. Payloads are stored once per event.
//!
//! # Schema
//!
//! Tables are prefixed `hookway_` and live in the connection's
//! `search_path` (a schema of their own, if you set one). Migrations are
//! numbered and recorded in `hookway_migrations`; [`PostgresStore::connect`]
//! applies the missing ones under an advisory lock, so processes starting
//! together do not race, and refuses a database migrated by a newer
//! release.
//!
//! Endpoint rows hold each endpoint's full
//! [`EndpointRecord`](crate::endpoint::EndpointRecord), **signing secrets
//! and credentials included**: restrict access to the tables accordingly.
//! Processes cache endpoints and notice changes made by other processes
//! through a revision number read with each lookup.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use time::OffsetDateTime;

use super::sql::{
    backend, claims, corrupt, finished_at, from_json, from_nanos, nanos, to_json, EndpointCache,
};
use super::{Claimed, DeliveryQuery, Inserted, Prune, Save, Store, StoreError, StoredEvent};
use crate::delivery::{Attempt, Delivery, DeliveryId, EndpointId, StateKind};
use crate::endpoint::Endpoint;
use crate::event::{EventType, MessageId};

/// The migrations, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("postgres/0001_init.sql")),
    (2, include_str!("postgres/0002_idempotency.sql")),
    (3, include_str!("postgres/0003_inbox.sql")),
];

/// The advisory lock key migrations run under (`hookway` in ASCII).
const MIGRATION_LOCK: i64 = 0x0068_6f6f_6b77_6179;

/// A store in Postgres shared by several processes; see the
/// [module documentation](self).
///
/// Cheap to clone: clones share the pool and the endpoint cache.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    endpoints: Arc<EndpointCache>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn delivery_from(row: &PgRow) -> Result<Delivery, StoreError> {
    let text: String = row.try_get("data").map_err(backend)?;
    from_json(&text, "delivery")
}

fn event_from(row: &PgRow) -> Result<StoredEvent, StoreError> {
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

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host/db`) with a pool of up to
    /// 16 connections and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(backend)?;
        Self::connect_with(PgPoolOptions::new().max_connections(16), options).await
    }

    /// Connects with your own pool and connection options (TLS, a
    /// `search_path` for a schema of hookway's own, pool size…).
    pub async fn connect_with(
        pool: PgPoolOptions,
        options: PgConnectOptions,
    ) -> Result<Self, StoreError> {
        let pool = pool.connect_with(options).await.map_err(backend)?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool, and brings the schema up to date.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        migrate(&pool).await?;
        Ok(Self {
            pool,
            endpoints: Arc::new(EndpointCache::default()),
        })
    }

    /// The receiving side's de-duplication in this database, shared by
    /// every receiver instance that connects to it (feature `receive`).
    #[cfg(feature = "receive")]
    pub fn idempotency(&self) -> super::idempotency::SqlIdempotency<Self> {
        super::idempotency::SqlIdempotency::new(self.clone())
    }

    /// The receiving side's durable inbox in this database, shared by every
    /// receiver process that connects to it (feature `receive`): give it to
    /// `ReceiverBuilder::inbox`.
    #[cfg(feature = "receive")]
    pub fn inbox(&self) -> super::inbox::SqlInbox<Self> {
        super::inbox::SqlInbox::new(self.clone())
    }

    /// The pool, for your own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn endpoint_from(&self, row: &PgRow) -> Result<Arc<Endpoint>, StoreError> {
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
}

/// Applies the migrations the database lacks, one process at a time.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS hookway_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM hookway_migrations")
        .fetch_all(&mut *tx)
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
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO hookway_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(nanos(crate::clock::Clock::now(&crate::clock::SystemClock)))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(())
}

/// Deliveries as the columns of an `UNNEST` insert.
#[derive(Default)]
struct DeliveryColumns {
    ids: Vec<String>,
    endpoints: Vec<String>,
    states: Vec<&'static str>,
    due: Vec<Option<i64>>,
    claims: Vec<i64>,
    created: Vec<i64>,
    finished: Vec<Option<i64>>,
    data: Vec<String>,
}

impl DeliveryColumns {
    fn of(deliveries: &[Delivery]) -> Result<Self, StoreError> {
        let mut columns = Self::default();
        for delivery in deliveries {
            columns.ids.push(delivery.id().as_str().to_owned());
            columns
                .endpoints
                .push(delivery.endpoint_id().as_str().to_owned());
            columns.states.push(delivery.state().kind().as_str());
            columns.due.push(delivery.next_attempt_at().map(nanos));
            columns.claims.push(claims(delivery));
            columns.created.push(nanos(delivery.created_at()));
            columns.finished.push(finished_at(delivery).map(nanos));
            columns.data.push(to_json(delivery, "delivery")?);
        }
        Ok(columns)
    }
}

/// Inserts deliveries of stored events (`event_seqs`, one per delivery) in
/// one statement.
async fn insert_deliveries_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    deliveries: &[Delivery],
    event_seqs: &[i64],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let columns = DeliveryColumns::of(deliveries)?;
    sqlx::query(
        "INSERT INTO hookway_deliveries
            (id, event_seq, endpoint_id, state, due_at, claims, created_at, finished_at, data)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                              $6::bigint[], $7::bigint[], $8::bigint[], $9::text[])",
    )
    .bind(&columns.ids)
    .bind(event_seqs)
    .bind(&columns.endpoints)
    .bind(&columns.states)
    .bind(&columns.due)
    .bind(&columns.claims)
    .bind(&columns.created)
    .bind(&columns.finished)
    .bind(&columns.data)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

impl Store for PostgresStore {
    const GROUPS_SAVES: bool = true;

    async fn put_endpoint(&self, endpoint: Endpoint) -> Result<(), StoreError> {
        let record = to_json(&endpoint.to_record(), "endpoint record")?;
        sqlx::query(
            "INSERT INTO hookway_endpoints (id, record, enabled, revision)
             VALUES ($1, $2, $3, 1)
             ON CONFLICT (id) DO UPDATE SET
                record = excluded.record,
                enabled = excluded.enabled,
                revision = hookway_endpoints.revision + 1",
        )
        .bind(endpoint.id().as_str())
        .bind(record)
        .bind(endpoint.is_enabled())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.endpoints.forget(endpoint.id());
        Ok(())
    }

    async fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hookway_endpoints SET enabled = $1, revision = revision + 1 WHERE id = $2",
        )
        .bind(enabled)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.endpoints.forget(id);
        Ok(done.rows_affected() > 0)
    }

    async fn held_count(&self, endpoint: &EndpointId) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM hookway_deliveries
             WHERE endpoint_id = $1 AND state = 'held'",
        )
        .bind(endpoint.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn endpoint(&self, id: &EndpointId) -> Result<Option<Arc<Endpoint>>, StoreError> {
        let row = sqlx::query(
            "SELECT id, revision, record, enabled FROM hookway_endpoints WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| self.endpoint_from(&row)).transpose()
    }

    async fn endpoints(&self) -> Result<Vec<Arc<Endpoint>>, StoreError> {
        // Read on every publish: the small columns first, and the records
        // only of endpoints this process has not built at their revision.
        let rows = sqlx::query(
            "SELECT id, revision, enabled FROM hookway_endpoints ORDER BY id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut found = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let id: String = row.try_get("id").map_err(backend)?;
            let revision: i64 = row.try_get("revision").map_err(backend)?;
            match self.endpoints.current(&id, revision) {
                Some(endpoint) => found.push(Some(endpoint)),
                None => {
                    found.push(None);
                    missing.push((i, id));
                }
            }
        }
        if !missing.is_empty() {
            let ids: Vec<&str> = missing.iter().map(|(_, id)| id.as_str()).collect();
            let rows = sqlx::query(
                "SELECT id, revision, record, enabled FROM hookway_endpoints WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            for row in &rows {
                let endpoint = self.endpoint_from(row)?;
                if let Some((i, _)) = missing.iter().find(|(_, id)| id == endpoint.id().as_str()) {
                    found[*i] = Some(endpoint);
                }
            }
        }
        // An endpoint deleted between the two reads is left out.
        Ok(found.into_iter().flatten().collect())
    }

    async fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> Result<Inserted, StoreError> {
        let channels = to_json(&event.channels, "channels")?;
        let columns = DeliveryColumns::of(&deliveries)?;
        // The event and its deliveries in one statement: one round trip,
        // atomic without a transaction, and nothing if the id exists.
        let seq: Option<i64> = sqlx::query_scalar(
            "WITH event AS (
                INSERT INTO hookway_events (id, event_type, channels, payload, created_at)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (id) DO NOTHING
                RETURNING seq
             ), deliveries AS (
                INSERT INTO hookway_deliveries
                    (id, event_seq, endpoint_id, state, due_at, claims, created_at,
                     finished_at, data)
                SELECT u.id, event.seq, u.endpoint_id, u.state, u.due_at, u.claims,
                       u.created_at, u.finished_at, u.data
                FROM event, UNNEST($6::text[], $7::text[], $8::text[], $9::bigint[],
                                   $10::bigint[], $11::bigint[], $12::bigint[], $13::text[])
                     AS u(id, endpoint_id, state, due_at, claims, created_at, finished_at, data)
             )
             SELECT seq FROM event",
        )
        .bind(event.id.as_str())
        .bind(event.event_type.as_str())
        .bind(channels)
        .bind(event.payload.as_ref())
        .bind(nanos(event.created_at))
        .bind(&columns.ids)
        .bind(&columns.endpoints)
        .bind(&columns.states)
        .bind(&columns.due)
        .bind(&columns.claims)
        .bind(&columns.created)
        .bind(&columns.finished)
        .bind(&columns.data)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if seq.is_some() {
            return Ok(Inserted::New(
                deliveries.iter().map(|d| d.id().clone()).collect(),
            ));
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM hookway_deliveries d
             JOIN hookway_events e ON e.seq = d.event_seq
             WHERE e.id = $1 ORDER BY d.seq",
        )
        .bind(event.id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let ids = ids
            .into_iter()
            .map(|id| DeliveryId::new(id).map_err(|e| corrupt("delivery id", e)))
            .collect::<Result<_, _>>()?;
        Ok(Inserted::Duplicate(ids))
    }

    async fn event(&self, id: &MessageId) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT id, event_type, channels, payload, created_at
             FROM hookway_events WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Rows another process is claiming right now are skipped, not
        // waited for.
        let rows = sqlx::query(
            "SELECT d.seq, d.data, e.payload
             FROM hookway_deliveries d JOIN hookway_events e ON e.seq = d.event_seq
             WHERE d.due_at IS NOT NULL AND d.due_at <= $1
             ORDER BY d.due_at, d.id
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(nanos(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut claimed = Vec::with_capacity(rows.len());
        let (mut seqs, mut states, mut due, mut counts, mut data) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
            seqs.push(seq);
            states.push(delivery.state().kind().as_str());
            due.push(delivery.next_attempt_at().map(nanos));
            counts.push(claims(&delivery));
            data.push(to_json(&delivery, "delivery")?);
            claimed.push(Claimed::new(delivery, claim, Bytes::from(payload)));
        }
        if !seqs.is_empty() {
            sqlx::query(
                "UPDATE hookway_deliveries AS d
                 SET state = u.state, due_at = u.due_at, claims = u.claims, data = u.data
                 FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
                      AS u(seq, state, due_at, claims, data)
                 WHERE d.seq = u.seq",
            )
            .bind(&seqs)
            .bind(&states)
            .bind(&due)
            .bind(&counts)
            .bind(&data)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    async fn queue_head(&self, endpoint: &EndpointId) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT data FROM hookway_deliveries
             WHERE endpoint_id = $1 AND state IN ('pending', 'in_flight', 'held')
             ORDER BY seq LIMIT 1",
        )
        .bind(endpoint.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| delivery_from(&row)).transpose()
    }

    async fn prune(&self, prune: Prune) -> Result<usize, StoreError> {
        // A cut of `None` matches nothing: no finish time is below it.
        let delivered = prune.delivered_before.map_or(i64::MIN, nanos);
        let failed = prune.failed_before.map_or(i64::MIN, nanos);
        let removed: i64 = sqlx::query_scalar(
            "WITH doomed AS (
                SELECT seq, event_seq FROM hookway_deliveries
                WHERE (state = 'delivered' AND finished_at < $1)
                   OR (state = 'failed' AND finished_at < $2)
                FOR UPDATE
             ), attempts AS (
                DELETE FROM hookway_attempts WHERE delivery_seq IN (SELECT seq FROM doomed)
             ), removed AS (
                DELETE FROM hookway_deliveries WHERE seq IN (SELECT seq FROM doomed)
                RETURNING event_seq
             ), events AS (
                DELETE FROM hookway_events e
                WHERE e.seq IN (SELECT event_seq FROM removed)
                  AND NOT EXISTS (
                    SELECT 1 FROM hookway_deliveries d
                    WHERE d.event_seq = e.seq
                      AND d.seq NOT IN (SELECT seq FROM doomed)
                  )
             )
             SELECT count(*) FROM removed",
        )
        .bind(delivered)
        .bind(failed)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        // Events left with no delivery that are older than the cut: those
        // that never had one (no endpoint matched), and any a concurrent
        // prune left behind (each statement sees its own snapshot).
        if let Some(cut) = prune.delivered_before {
            sqlx::query(
                "DELETE FROM hookway_events e WHERE e.created_at < $1
                 AND NOT EXISTS (SELECT 1 FROM hookway_deliveries d WHERE d.event_seq = e.seq)",
            )
            .bind(nanos(cut))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        }
        Ok(usize::try_from(removed).unwrap_or(0))
    }

    async fn save(
        &self,
        delivery: Delivery,
        expected_claims: u64,
        expected_state: StateKind,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        let save = Save::new(delivery, expected_claims, expected_state, attempt);
        let mut results = self.save_all(vec![save]).await?;
        results
            .pop()
            .unwrap_or_else(|| Err(corrupt("save", "no result for the save")))
    }

    async fn save_all(&self, saves: Vec<Save>) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if saves.is_empty() {
            return Ok(Vec::new());
        }
        let n = saves.len();
        let mut ids = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut due = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        let mut finished = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n);
        let mut expected_claims = Vec::with_capacity(n);
        let mut expected_states = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        for save in &saves {
            let delivery = &save.delivery;
            ids.push(delivery.id().as_str().to_owned());
            states.push(delivery.state().kind().as_str());
            due.push(delivery.next_attempt_at().map(nanos));
            counts.push(claims(delivery));
            finished.push(finished_at(delivery).map(nanos));
            data.push(to_json(delivery, "delivery")?);
            expected_claims.push(i64::try_from(save.expected_claims).unwrap_or(i64::MAX));
            expected_states.push(save.expected_state.as_str());
            attempts.push(
                save.attempt
                    .as_ref()
                    .map(|a| to_json(a, "attempt"))
                    .transpose()?,
            );
        }
        // Every update, with its attempt log row, in one statement.
        // Rows are matched by their place in the input (`n`), not by id:
        // the same delivery may come twice (a stale result beside the
        // result of the claim that took it over), and only the one whose
        // check passes is written.
        let saved: Vec<i64> = sqlx::query_scalar(
            "WITH input AS (
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                     $5::bigint[], $6::text[], $7::bigint[], $8::text[],
                                     $9::text[]) WITH ORDINALITY
                    AS i(id, state, due_at, claims, finished_at, data, expected_claims,
                         expected_state, attempt, n)
             ), updated AS (
                UPDATE hookway_deliveries d
                SET state = i.state, due_at = i.due_at, claims = i.claims,
                    finished_at = i.finished_at, data = i.data
                FROM input i
                WHERE d.id = i.id AND d.claims = i.expected_claims AND d.state = i.expected_state
                RETURNING d.seq, i.n, i.attempt
             ), logged AS (
                INSERT INTO hookway_attempts (delivery_seq, ordinal, data)
                SELECT u.seq,
                       (SELECT count(*) FROM hookway_attempts a WHERE a.delivery_seq = u.seq),
                       u.attempt
                FROM updated u
                WHERE u.attempt IS NOT NULL
             )
             SELECT n FROM updated",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&due)
        .bind(&counts)
        .bind(&finished)
        .bind(&data)
        .bind(&expected_claims)
        .bind(&expected_states)
        .bind(&attempts)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        // 1-based places in the input of the saves that were written.
        let saved: std::collections::HashSet<i64> = saved.into_iter().collect();
        let written = |i: usize| saved.contains(&(i64::try_from(i).unwrap_or(i64::MAX) + 1));
        let missed: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !written(*i))
            .map(|(_, id)| id.as_str())
            .collect();
        let existing: std::collections::HashSet<String> = if missed.is_empty() {
            std::collections::HashSet::new()
        } else {
            sqlx::query_scalar("SELECT id FROM hookway_deliveries WHERE id = ANY($1)")
                .bind(&missed)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?
                .into_iter()
                .collect()
        };
        Ok(saves
            .iter()
            .enumerate()
            .map(|(i, save)| {
                let id = save.delivery.id();
                if written(i) {
                    Ok(())
                } else if existing.contains(id.as_str()) {
                    Err(StoreError::Conflict(id.clone()))
                } else {
                    Err(StoreError::NotFound(format!("delivery {id}")))
                }
            })
            .collect())
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query("SELECT data FROM hookway_deliveries WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|row| delivery_from(&row)).transpose()
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT data FROM hookway_deliveries
             WHERE ($1::text IS NULL OR endpoint_id = $1)
               AND ($2::text IS NULL OR state = $2)
               AND ($3::bigint IS NULL OR created_at >= $3)
             ORDER BY seq
             LIMIT $4",
        )
        .bind(query.endpoint.as_ref().map(EndpointId::as_str))
        .bind(query.state.map(StateKind::as_str))
        .bind(query.since.map(nanos))
        .bind(if query.limit == 0 {
            None
        } else {
            Some(i64::try_from(query.limit).unwrap_or(i64::MAX))
        })
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(delivery_from).collect()
    }

    async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT a.data FROM hookway_attempts a
             JOIN hookway_deliveries d ON d.seq = a.delivery_seq
             WHERE d.id = $1 ORDER BY a.ordinal",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(|text| from_json(text, "attempt")).collect()
    }

    async fn events_since(&self, since: OffsetDateTime) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_type, channels, payload, created_at
             FROM hookway_events WHERE created_at >= $1 ORDER BY created_at, seq",
        )
        .bind(nanos(since))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(event_from).collect()
    }

    async fn insert_deliveries(&self, deliveries: Vec<Delivery>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut seqs = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let seq: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM hookway_events WHERE id = $1")
                    .bind(delivery.event_id().as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            let Some(seq) = seq else {
                return Err(StoreError::NotFound(format!(
                    "event {}",
                    delivery.event_id()
                )));
            };
            seqs.push(seq);
        }
        insert_deliveries_of(&mut tx, &deliveries, &seqs).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM hookway_deliveries WHERE due_at IS NOT NULL
             ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        at.map(from_nanos).transpose()
    }
}
