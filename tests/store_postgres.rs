//! `PostgresStore`: the conformance suite, and what only a shared store can
//! show (several stores on one database).
//!
//! Needs a server: set `HOOKWAY_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema
//! of its own. Without the variable the tests pass with a notice; with it,
//! an unreachable server fails them.
#![cfg(all(feature = "postgres", feature = "test-support"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookway::delivery::{Delivery, DeliveryId, EndpointId};
use hookway::store::{PostgresStore, Store, StoredEvent};
use hookway::{EventType, MessageId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection;
use time::macros::datetime;

const VAR: &str = "HOOKWAY_TEST_POSTGRES_URL";

fn url() -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Once, and past the test harness's capture, so it is seen.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "store_postgres: skipped, set {VAR} to run the Postgres tests"
                );
            });
            None
        }
    }
}

/// A store in a fresh schema of its own.
async fn fresh_in(url: &str) -> PostgresStore {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "hookway_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{VAR} is set but Postgres is unreachable: {e}"));
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::query(&drop).execute(&mut admin).await.unwrap();
    let create = format!("CREATE SCHEMA {schema}");
    sqlx::query(&create).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    PostgresStore::connect_with(
        PgPoolOptions::new().max_connections(4),
        options.options([("search_path", schema.as_str())]),
    )
    .await
    .unwrap()
}

async fn fresh() -> Option<PostgresStore> {
    Some(fresh_in(&url()?).await)
}

hookway::store_conformance!(optional: fresh());

/// Two stores (two processes' worth) on one database never claim the same
/// delivery at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_split_the_queue() {
    let Some(url) = url() else { return };
    let first = fresh_in(&url).await;
    let pool = first.pool().clone();
    let second = PostgresStore::from_pool(pool).await.unwrap();
    let t0 = datetime!(2026-01-01 12:00 UTC);
    let ep = EndpointId::from_static("ep_a");
    for n in 0..500 {
        let id = MessageId::new(format!("msg_{n}")).unwrap();
        let delivery = Delivery::new(
            DeliveryId::new(format!("dlv_{n}")).unwrap(),
            id.clone(),
            EventType::from_static("ticket.created"),
            ep.clone(),
            t0,
        );
        first
            .insert_event(
                StoredEvent {
                    id,
                    event_type: EventType::from_static("ticket.created"),
                    channels: Vec::new(),
                    payload: bytes::Bytes::from_static(b"{}"),
                    created_at: t0,
                },
                vec![delivery],
            )
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let claim = |store: PostgresStore| async move {
        let mut ids = Vec::new();
        loop {
            let batch = store.claim_due(t0, lease, 7).await.unwrap();
            if batch.is_empty() {
                return ids;
            }
            ids.extend(batch.into_iter().map(|c| c.delivery.id().clone()));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim(first.clone())),
        tokio::spawn(claim(second))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<_> = a.iter().chain(b.iter()).cloned().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 500, "every delivery claimed once");
}
