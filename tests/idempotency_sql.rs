//! The receiving side's de-duplication in the SQL stores: the same
//! contract as `MemoryIdempotencyStore`, shared by every store opened on
//! one database. Postgres needs `HOOKWAY_TEST_POSTGRES_URL` (see
//! tests/store_postgres.rs); without it that half passes with a notice.
#![cfg(all(feature = "receive", feature = "sqlite", feature = "postgres"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookway::receive::{Began, IdempotencyStore};
use hookway::store::{PostgresStore, SqliteStore};
use hookway::MessageId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection as _;
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-05-01 12:00 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

/// The contract, on two handles to one database (two receiver instances).
async fn contract<S: IdempotencyStore>(a: S, b: S) {
    let id = MessageId::new("msg_1").unwrap();
    assert_eq!(a.begin(&id, at(0)).await.unwrap(), Began::New);
    // Another instance while the handler runs.
    assert_eq!(b.begin(&id, at(1)).await.unwrap(), Began::InProgress);
    a.complete(&id, at(2)).await.unwrap();
    assert_eq!(b.begin(&id, at(3)).await.unwrap(), Began::Duplicate);
    // Remembered for the TTL (60 s here) from the last sighting (at 3 s).
    assert_eq!(a.begin(&id, at(62)).await.unwrap(), Began::Duplicate);
    assert_eq!(a.begin(&id, at(123)).await.unwrap(), Began::New);
    // A failed handler gives its claim back: the retry is processed.
    a.abandon(&id).await.unwrap();
    assert_eq!(b.begin(&id, at(124)).await.unwrap(), Began::New);
    // A claim whose receiver died lapses after the claim timeout (10 s).
    assert_eq!(a.begin(&id, at(133)).await.unwrap(), Began::InProgress);
    assert_eq!(a.begin(&id, at(135)).await.unwrap(), Began::New);
    // Other ids are their own.
    let other = MessageId::new("msg_2").unwrap();
    assert_eq!(b.begin(&other, at(135)).await.unwrap(), Began::New);
}

#[tokio::test]
async fn sqlite_instances_share_what_was_processed() {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join("hookway-sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "idem-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let store = SqliteStore::open(&path).await.unwrap();
    let handle = |s: &SqliteStore| {
        s.idempotency()
            .with_ttl(Duration::from_secs(60))
            .with_claim_timeout(Duration::from_secs(10))
    };
    contract(handle(&store), handle(&store)).await;
    // What a receiver is given.
    let secret = hookway::Secret::generate();
    hookway::receive::Receiver::builder(
        hookway::Verifier::new(hookway::Scheme::standard(), secret).unwrap(),
    )
    .idempotency(store.idempotency())
    .build()
    .unwrap();
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::test]
async fn postgres_instances_share_what_was_processed() {
    let Ok(url) = std::env::var("HOOKWAY_TEST_POSTGRES_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "idempotency_sql: Postgres part skipped, set HOOKWAY_TEST_POSTGRES_URL to run it"
        );
        return;
    };
    let schema = format!("hookway_test_idem_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("HOOKWAY_TEST_POSTGRES_URL is set but unreachable: {e}"));
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    let options: PgConnectOptions = url.parse().unwrap();
    let options = options.options([("search_path", schema.as_str())]);
    // Two stores, two pools: two receiver processes' worth.
    let first =
        PostgresStore::connect_with(PgPoolOptions::new().max_connections(2), options.clone())
            .await
            .unwrap();
    let second = PostgresStore::connect_with(PgPoolOptions::new().max_connections(2), options)
        .await
        .unwrap();
    let handle = |s: &PostgresStore| {
        s.idempotency()
            .with_ttl(Duration::from_secs(60))
            .with_claim_timeout(Duration::from_secs(10))
    };
    contract(handle(&first), handle(&second)).await;
    first.pool().close().await;
    second.pool().close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}
