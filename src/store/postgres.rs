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
//! # Round trips and commits
//!
//! A claim is one transaction of two statements however many deliveries it
//! takes (the selection, and one `UPDATE … FROM UNNEST(…)` for all of
//! them). Results the engine has gathered, with their attempt log rows, are
//! one statement. Concurrent publishes are written together: each waits
//! for one of two writer tasks, which writes whatever has queued up (up to
//! 256 events with their deliveries) in one statement, so one commit serves
//! them all. Payloads are stored once per event.
//!
//! # Durability
//!
//! A publish returns once its commit is on disk. Claims and results are
//! committed with `synchronous_commit = off`: a crash of the database
//! server (a sender crash loses nothing) can forget the last moments of
//! them, and then those deliveries are sent again, which at-least-once
//! delivery allows and receivers de-duplicate by message id.
//! [`PostgresStore::with_synchronous_results`] makes them wait for the disk
//! too; with a disk that takes milliseconds per flush, that caps how many
//! batches a second the workers can record.
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
//! Each process caches the endpoint list. Every endpoint write bumps the
//! list's version (one row in `hookway_endpoint_version`) in the same
//! statement; a publish's insert checks the version its fan-out was made
//! from and refuses a stale one (the `Outbox` then reads the list again),
//! and a claim reads it to hand over each delivery's endpoint as of the
//! claim. [`Store::endpoint`] and [`Store::endpoints`] always read the
//! database.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::sql::{
    backend, claims, corrupt, finished_at, from_json, from_nanos, nanos, to_json, EndpointCache,
};
use super::{
    Claimed, DeliveryQuery, EndpointList, Inserted, Prune, Save, Store, StoreError, StoredEvent,
};
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
    shared: Arc<Shared>,
    /// Claims and attempt results wait for their commit to reach disk.
    synchronous_results: bool,
}

/// What clones of a store share besides the pool.
#[derive(Default)]
struct Shared {
    /// The newest endpoint list version this process has seen.
    seen: AtomicI64,
    /// The endpoint list at a version, for publishes and claims.
    list: Mutex<Option<Listed>>,
    /// Publishes waiting for a writer.
    publishes: Mutex<PublishQueue>,
    /// Held while a publish reads the endpoint list into the cache.
    reading: tokio::sync::Mutex<()>,
}

/// The endpoint list read at `version`.
struct Listed {
    version: i64,
    endpoints: Vec<Arc<Endpoint>>,
    by_id: HashMap<EndpointId, Arc<Endpoint>>,
}

#[derive(Default)]
struct PublishQueue {
    waiting: VecDeque<Publish>,
    writers: usize,
}

/// One `insert_event_at` waiting to be written with others.
struct Publish {
    event: StoredEvent,
    deliveries: Vec<Delivery>,
    version: Option<u64>,
    reply: oneshot::Sender<Answer>,
}

/// What a writer answers a waiting publish.
enum Answer {
    /// The publish's result.
    Written(Result<Inserted, StoreError>),
    /// The publish, handed back unwritten: the last writer stopped (its
    /// runtime shut down), and the caller, which is running, queues it
    /// again with a writer of its own.
    Orphaned(StoredEvent, Vec<Delivery>, Option<u64>),
}

/// Deliveries removed per statement by `prune`.
const PRUNE_CHUNK: usize = 1000;

/// Publishes written at once by one statement, at most.
const MAX_PUBLISH_BATCH: usize = 256;
/// Payload bytes written by one statement, at most (a batch always takes
/// its first publish, whatever its size).
const MAX_PUBLISH_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Statements writing publishes at once, at most. While they run, new
/// publishes queue up and go together in the next one.
const PUBLISH_WRITERS: usize = 2;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
            shared: Arc::new(Shared::default()),
            synchronous_results: false,
        })
    }

    /// The receiving side's de-duplication in this database, shared by
    /// every receiver instance that connects to it (feature `receive`).
    #[cfg(feature = "receive")]
    pub fn idempotency(&self) -> super::idempotency::SqlIdempotency<Self> {
        super::idempotency::SqlIdempotency::new(self.clone())
    }

    /// Whether claims and attempt results wait until their commit is on
    /// disk, as publishes always do. Off by default: they are committed
    /// with `synchronous_commit = off`, so a crash of the database server
    /// (not of a sender) can forget the last moments of them. Nothing
    /// published is lost by that: a forgotten claim or result leaves its
    /// delivery pending or in flight, and it is sent again (delivery is
    /// at-least-once; receivers de-duplicate by message id). What it costs
    /// is a duplicate send, and attempt log rows of that moment. Turn it on
    /// to trade throughput for exact attempt logs across database crashes.
    #[must_use]
    pub fn with_synchronous_results(mut self, synchronous: bool) -> Self {
        self.synchronous_results = synchronous;
        self
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

    /// Notes an endpoint list version read from the database.
    fn saw(&self, version: i64) {
        self.shared.seen.fetch_max(version, Ordering::AcqRel);
    }

    /// Forgets the cached list after this process changed an endpoint.
    fn endpoints_changed(&self, id: &EndpointId) {
        self.endpoints.forget(id);
        *lock(&self.shared.list) = None;
    }

    /// The cached endpoint list, if it is at the newest version seen (or at
    /// `version`, if given).
    fn cached_list(&self, version: Option<i64>) -> Option<(i64, Vec<Arc<Endpoint>>)> {
        let want = version.unwrap_or_else(|| self.shared.seen.load(Ordering::Acquire));
        lock(&self.shared.list)
            .as_ref()
            .filter(|listed| listed.version == want)
            .map(|listed| (listed.version, listed.endpoints.clone()))
    }

    /// The endpoints of claimed deliveries from the cached list, if it is
    /// at `version` or newer.
    fn listed_endpoints(
        &self,
        version: i64,
        ids: &[&EndpointId],
    ) -> Option<Vec<Option<Arc<Endpoint>>>> {
        let list = lock(&self.shared.list);
        let listed = list.as_ref().filter(|listed| listed.version >= version)?;
        Some(
            ids.iter()
                .map(|id| listed.by_id.get(*id).cloned())
                .collect(),
        )
    }

    /// Reads every endpoint and the list's version, and caches them: the
    /// small columns first, and the records only of endpoints this process
    /// has not built at their revision.
    async fn read_endpoints(&self) -> Result<(i64, Vec<Arc<Endpoint>>), StoreError> {
        let rows = sqlx::query(
            "SELECT v.version, e.id, e.revision, e.enabled
             FROM hookway_endpoint_version v LEFT JOIN hookway_endpoints e ON TRUE
             ORDER BY e.id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut version = 0;
        let mut found = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for row in &rows {
            version = row.try_get("version").map_err(backend)?;
            let Some(id): Option<String> = row.try_get("id").map_err(backend)? else {
                continue;
            };
            let revision: i64 = row.try_get("revision").map_err(backend)?;
            match self.endpoints.current(&id, revision) {
                Some(endpoint) => found.push(Some(endpoint)),
                None => {
                    missing.push((found.len(), id));
                    found.push(None);
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
        // An endpoint deleted between the two reads is left out. One
        // changed between them has a newer revision than `version`, so an
        // event made from this list is refused and made again.
        let endpoints: Vec<Arc<Endpoint>> = found.into_iter().flatten().collect();
        self.saw(version);
        let by_id = endpoints
            .iter()
            .map(|e| (e.id().clone(), Arc::clone(e)))
            .collect();
        let mut list = lock(&self.shared.list);
        if list.as_ref().is_none_or(|listed| listed.version <= version) {
            *list = Some(Listed {
                version,
                endpoints: endpoints.clone(),
                by_id,
            });
        }
        Ok((version, endpoints))
    }

    /// Takes the next batch of waiting publishes, with distinct event ids
    /// (a second publish of an id waits for the next batch, where it finds
    /// the first one's event), or stops being a writer if none wait.
    fn next_publishes(&self) -> Option<Vec<Publish>> {
        let mut queue = lock(&self.shared.publishes);
        if queue.waiting.is_empty() {
            queue.writers = queue.writers.saturating_sub(1);
            return None;
        }
        let mut batch: Vec<Publish> = Vec::new();
        let mut bytes = 0;
        let mut later = VecDeque::new();
        while let Some(publish) = queue.waiting.pop_front() {
            let size = publish.event.payload.len();
            if batch.len() == MAX_PUBLISH_BATCH
                || (!batch.is_empty() && bytes + size > MAX_PUBLISH_BATCH_BYTES)
            {
                later.push_back(publish);
                break;
            }
            if batch.iter().any(|p| p.event.id == publish.event.id) {
                later.push_back(publish);
            } else {
                bytes += size;
                batch.push(publish);
            }
        }
        later.append(&mut queue.waiting);
        queue.waiting = later;
        Some(batch)
    }

    /// A writer: writes waiting publishes, a batch per statement, until
    /// none wait.
    async fn write_publishes(self) {
        // Gives the writer slot back if this task ends other than by
        // finding the queue empty (a panic, or its runtime shutting down),
        // and hands what waits back to its callers if no writer is left to
        // write it. The batch being written, if any, is answered with an
        // error as its replies drop: whether it was stored is unknown (a
        // publish again finds it, if it was).
        struct Stop(PostgresStore, bool);
        impl Drop for Stop {
            fn drop(&mut self) {
                if self.1 {
                    return;
                }
                let mut queue = lock(&self.0.shared.publishes);
                queue.writers = queue.writers.saturating_sub(1);
                if queue.writers == 0 {
                    for publish in queue.waiting.drain(..) {
                        let Publish {
                            event,
                            deliveries,
                            version,
                            reply,
                        } = publish;
                        let _ = reply.send(Answer::Orphaned(event, deliveries, version));
                    }
                }
            }
        }
        let mut stop = Stop(self, false);
        while let Some(batch) = stop.0.next_publishes() {
            stop.0.insert_events(batch).await;
        }
        stop.1 = true;
    }

    /// Writes a batch of publishes in one statement and answers each.
    async fn insert_events(&self, batch: Vec<Publish>) {
        match self.try_insert_events(&batch).await {
            Ok(results) => {
                for (publish, result) in batch.into_iter().zip(results) {
                    let _ = publish.reply.send(Answer::Written(result));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for publish in batch {
                    let _ = publish.reply.send(Answer::Written(Err(StoreError::Backend(
                        message.clone().into(),
                    ))));
                }
            }
        }
    }

    async fn try_insert_events(
        &self,
        batch: &[Publish],
    ) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
        let n = batch.len();
        let (mut ids, mut types, mut channels, mut payloads, mut created, mut expected) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut places = Vec::new();
        let mut deliveries = Vec::new();
        for (i, publish) in batch.iter().enumerate() {
            let event = &publish.event;
            ids.push(event.id.as_str());
            types.push(event.event_type.as_str());
            channels.push(to_json(&event.channels, "channels")?);
            payloads.push(event.payload.as_ref());
            created.push(nanos(event.created_at));
            expected.push(
                publish
                    .version
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            );
            let place = i64::try_from(i + 1).unwrap_or(i64::MAX);
            for delivery in &publish.deliveries {
                places.push(place);
                deliveries.push(delivery);
            }
        }
        let columns = DeliveryColumns::of(deliveries)?;
        // The events and their deliveries in one statement: one round trip
        // and one commit for the batch, atomic without a transaction. An
        // event is left out if its id exists, or if it expects an endpoint
        // list version that is not the current one.
        let rows = sqlx::query(
            "WITH current AS (
                SELECT version FROM hookway_endpoint_version
             ), input AS (
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[],
                                     $5::bigint[], $6::bigint[]) WITH ORDINALITY
                    AS i(id, event_type, channels, payload, created_at, expected, n)
             ), event AS (
                INSERT INTO hookway_events (id, event_type, channels, payload, created_at)
                SELECT i.id, i.event_type, i.channels, i.payload, i.created_at
                FROM input i, current
                WHERE i.expected IS NULL OR i.expected = current.version
                -- Every writer takes the unique index's entries in one
                -- order, so two batches holding the same ids cannot
                -- deadlock.
                ORDER BY i.id
                ON CONFLICT (id) DO NOTHING
                RETURNING seq, id
             ), deliveries AS (
                INSERT INTO hookway_deliveries
                    (id, event_seq, endpoint_id, state, due_at, claims, created_at,
                     finished_at, data)
                SELECT u.id, event.seq, u.endpoint_id, u.state, u.due_at, u.claims,
                       u.created_at, u.finished_at, u.data
                FROM UNNEST($7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                            $12::bigint[], $13::bigint[], $14::bigint[], $15::text[])
                     AS u(n, id, endpoint_id, state, due_at, claims, created_at, finished_at,
                          data)
                JOIN input i ON i.n = u.n
                JOIN event ON event.id = i.id
             )
             SELECT i.n, event.seq, current.version
             FROM input i CROSS JOIN current LEFT JOIN event ON event.id = i.id",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&channels)
        .bind(&payloads)
        .bind(&created)
        .bind(&expected)
        .bind(&places)
        .bind(&columns.ids)
        .bind(&columns.endpoints)
        .bind(&columns.states)
        .bind(&columns.due)
        .bind(&columns.claims)
        .bind(&columns.created)
        .bind(&columns.finished)
        .bind(&columns.data)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut stored = vec![false; n];
        let mut current = 0;
        for row in &rows {
            let place: i64 = row.try_get(0).map_err(backend)?;
            let seq: Option<i64> = row.try_get(1).map_err(backend)?;
            current = row.try_get(2).map_err(backend)?;
            if let Some(slot) = usize::try_from(place - 1)
                .ok()
                .and_then(|i| stored.get_mut(i))
            {
                *slot = seq.is_some();
            }
        }
        self.saw(current);
        let mut results = Vec::with_capacity(n);
        for (publish, stored) in batch.iter().zip(stored) {
            results.push(if stored {
                Ok(Inserted::New(
                    publish.deliveries.iter().map(|d| d.id().clone()).collect(),
                ))
            } else if publish
                .version
                .is_some_and(|v| i64::try_from(v).ok() != Some(current))
            {
                Err(StoreError::EndpointsChanged)
            } else {
                self.existing_deliveries(&publish.event.id).await
            });
        }
        Ok(results)
    }

    /// The deliveries of an event that is already stored.
    async fn existing_deliveries(&self, event: &MessageId) -> Result<Inserted, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM hookway_deliveries d
             JOIN hookway_events e ON e.seq = d.event_seq
             WHERE e.id = $1 ORDER BY d.seq",
        )
        .bind(event.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let ids = ids
            .into_iter()
            .map(|id| DeliveryId::new(id).map_err(|e| corrupt("delivery id", e)))
            .collect::<Result<_, _>>()?;
        Ok(Inserted::Duplicate(ids))
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
    fn of<'a>(deliveries: impl IntoIterator<Item = &'a Delivery>) -> Result<Self, StoreError> {
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
        // The row and the list's version change together.
        sqlx::query(
            "WITH version AS (
                UPDATE hookway_endpoint_version SET version = version + 1 RETURNING version
             )
             INSERT INTO hookway_endpoints (id, record, enabled, revision)
             SELECT $1, $2, $3, version FROM version
             ON CONFLICT (id) DO UPDATE SET
                record = excluded.record,
                enabled = excluded.enabled,
                revision = excluded.revision",
        )
        .bind(endpoint.id().as_str())
        .bind(record)
        .bind(endpoint.is_enabled())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.endpoints_changed(endpoint.id());
        Ok(())
    }

    async fn set_endpoint_enabled(
        &self,
        id: &EndpointId,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "WITH version AS (
                UPDATE hookway_endpoint_version SET version = version + 1 RETURNING version
             )
             UPDATE hookway_endpoints SET enabled = $1, revision = version.version
             FROM version WHERE id = $2",
        )
        .bind(enabled)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.endpoints_changed(id);
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
        Ok(self.read_endpoints().await?.1)
    }

    async fn publish_endpoints(&self) -> Result<EndpointList, StoreError> {
        // The cached list if it is at the newest version this process has
        // seen; the insert checks that it is still the database's.
        if let Some((version, endpoints)) = self.cached_list(None) {
            return Ok(EndpointList::new(endpoints, u64::try_from(version).ok()));
        }
        // One read at a time: publishes that find the cache stale together
        // (at start, or after an endpoint change) wait for the first one's
        // read rather than each reading the list.
        let _reading = self.shared.reading.lock().await;
        let (version, endpoints) = match self.cached_list(None) {
            Some(listed) => listed,
            None => self.read_endpoints().await?,
        };
        Ok(EndpointList::new(endpoints, u64::try_from(version).ok()))
    }

    async fn insert_event(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
    ) -> Result<Inserted, StoreError> {
        self.insert_event_at(event, deliveries, None).await
    }

    async fn insert_event_at(
        &self,
        event: StoredEvent,
        deliveries: Vec<Delivery>,
        version: Option<u64>,
    ) -> Result<Inserted, StoreError> {
        // Concurrent publishes are written together: each waits for a
        // writer task, which writes whatever has queued up in one
        // statement. The task, not this future, owns the write, so a
        // publish whose caller gives up is written whole or not at all.
        let (mut event, mut deliveries, mut version) = (event, deliveries, version);
        loop {
            let (reply, answer) = oneshot::channel();
            let start_writer = {
                let mut queue = lock(&self.shared.publishes);
                queue.waiting.push_back(Publish {
                    event,
                    deliveries,
                    version,
                    reply,
                });
                let start = queue.writers < PUBLISH_WRITERS;
                if start {
                    queue.writers += 1;
                }
                start
            };
            if start_writer {
                tokio::spawn(self.clone().write_publishes());
            }
            match answer.await {
                Ok(Answer::Written(result)) => return result,
                Ok(Answer::Orphaned(e, d, v)) => (event, deliveries, version) = (e, d, v),
                Err(_) => {
                    return Err(StoreError::Backend(
                        "the publish writer stopped while writing".into(),
                    ))
                }
            }
        }
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
            "SELECT d.seq, d.data, e.payload,
                    (SELECT version FROM hookway_endpoint_version) AS version
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
        let mut version = None;
        for row in rows {
            version = Some(row.try_get::<i64, _>("version").map_err(backend)?);
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
                "WITH durability AS (
                    SELECT set_config('synchronous_commit', CASE WHEN $6 THEN 'off'
                        ELSE current_setting('synchronous_commit') END, true)
                 )
                 UPDATE hookway_deliveries AS d
                 SET state = u.state, due_at = u.due_at, claims = u.claims, data = u.data
                 FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
                      AS u(seq, state, due_at, claims, data),
                      durability
                 WHERE d.seq = u.seq",
            )
            .bind(&seqs)
            .bind(&states)
            .bind(&due)
            .bind(&counts)
            .bind(&data)
            .bind(!self.synchronous_results)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        // Each delivery's endpoint as of the claim, from the cached list if
        // it is at the version the claim read (or newer), so attempts need
        // no read of their own.
        if let (Some(version), false) = (version, claimed.is_empty()) {
            self.saw(version);
            let ids: Vec<&EndpointId> = claimed.iter().map(|c| c.delivery.endpoint_id()).collect();
            let endpoints = match self.listed_endpoints(version, &ids) {
                Some(endpoints) => Some(endpoints),
                // The claim is made: if the list cannot be read now, the
                // engine reads each endpoint itself.
                None => match self.read_endpoints().await {
                    Ok((read, _)) if read >= version => self.listed_endpoints(read, &ids),
                    _ => None,
                },
            };
            if let Some(endpoints) = endpoints {
                claimed = claimed
                    .into_iter()
                    .zip(endpoints)
                    .map(|(c, endpoint)| c.with_endpoint(endpoint))
                    .collect();
            }
        }
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
        let chunk = i64::try_from(PRUNE_CHUNK).unwrap_or(i64::MAX);
        let mut total = 0;
        // A chunk per statement, so a large backlog is never one long
        // transaction; rows another process is pruning are skipped.
        loop {
            let removed: i64 = sqlx::query_scalar(
                "WITH doomed AS (
                    SELECT seq, event_seq FROM hookway_deliveries
                    WHERE (state = 'delivered' AND finished_at < $1)
                       OR (state = 'failed' AND finished_at < $2)
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED
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
            .bind(chunk)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
            let removed = usize::try_from(removed).unwrap_or(0);
            total += removed;
            if removed < PRUNE_CHUNK {
                break;
            }
        }
        // Events left with no delivery that are older than the cut: those
        // that never had one (no endpoint matched), and any a concurrent
        // prune left behind (each statement sees its own snapshot).
        if let Some(cut) = prune.delivered_before {
            loop {
                let gone = sqlx::query(
                    "DELETE FROM hookway_events WHERE seq IN (
                        SELECT e.seq FROM hookway_events e WHERE e.created_at < $1
                        AND NOT EXISTS (SELECT 1 FROM hookway_deliveries d
                                        WHERE d.event_seq = e.seq)
                        LIMIT $2
                        FOR UPDATE SKIP LOCKED)",
                )
                .bind(nanos(cut))
                .bind(chunk)
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected();
                if gone < u64::try_from(PRUNE_CHUNK).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        Ok(total)
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
            "WITH durability AS (
                SELECT set_config('synchronous_commit', CASE WHEN $10 THEN 'off'
                    ELSE current_setting('synchronous_commit') END, true)
             ), input AS (
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                     $5::bigint[], $6::text[], $7::bigint[], $8::text[],
                                     $9::text[]) WITH ORDINALITY
                    AS i(id, state, due_at, claims, finished_at, data, expected_claims,
                         expected_state, attempt, n)
             ), updated AS (
                UPDATE hookway_deliveries d
                SET state = i.state, due_at = i.due_at, claims = i.claims,
                    finished_at = i.finished_at, data = i.data
                FROM input i, durability
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
        .bind(!self.synchronous_results)
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
