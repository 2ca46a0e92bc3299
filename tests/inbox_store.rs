//! The `InboxStore` contract, run against `MemoryInbox`, the SQLite inbox
//! and the Postgres inbox: accepting and de-duplicating, claims and their
//! leases, stale claims refused, retries, the failed list and replay,
//! pruning, concurrent claims, and (SQL) rows that cannot be read back.
//!
//! Each check gets a fresh inbox and two handles on it (two receiver
//! processes' worth: two pools on one database for the SQL stores). The
//! Postgres part needs `HOOKWAY_TEST_POSTGRES_URL` and otherwise passes
//! with a one-line notice; each of its checks runs in a schema of its own.
#![cfg(all(
    feature = "receive",
    feature = "sqlite",
    feature = "postgres",
    feature = "outbox",
    feature = "reqwest"
))]

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::{drop_schema, fresh_schema, postgres_store, postgres_url, TempDb};
use hookway::receive::{
    EntryState, EntryStatus, InboxClaim, InboxEntry, InboxError, InboxStore, MemoryInbox, Stored,
};
use hookway::store::{PostgresStore, SqliteStore};
use hookway::{EventType, MessageId};
use http::{HeaderMap, HeaderValue};
use sqlx::Connection as _;
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-05-01 12:00 UTC);
const LEASE: Duration = Duration::from_secs(30);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

fn id(text: &str) -> MessageId {
    text.parse().unwrap()
}

/// An entry received just after `received_at` (times keep their
/// nanoseconds), with headers that test the
/// encoding (several values of one name, a colon in a value, a byte that is
/// not UTF-8) and a body that is not text.
fn entry(text: &str, received_at: OffsetDateTime) -> InboxEntry {
    let mut headers = HeaderMap::new();
    headers.append("content-type", HeaderValue::from_static("application/json"));
    headers.append("webhook-id", HeaderValue::from_str(text).unwrap());
    headers.append("x-many", HeaderValue::from_static("one"));
    headers.append("x-many", HeaderValue::from_static("two: three"));
    headers.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    InboxEntry::new(
        id(text),
        EventType::new("ticket.created").unwrap(),
        Some(received_at - time::Duration::seconds(1)),
        received_at + time::Duration::nanoseconds(123_456_789),
        headers,
        Bytes::from(format!("{{\"id\":\"{text}\",\"bin\":\"\u{0}\"}}\u{ff}").into_bytes()),
    )
}

async fn state<S: InboxStore>(inbox: &S, text: &str) -> EntryStatus {
    inbox.status(&id(text)).await.unwrap().expect("the entry")
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

async fn accept_stores_once_and_is_the_deduplication<S: InboxStore>(a: &S, b: &S) {
    let first = entry("msg_a", at(0));
    assert_eq!(a.accept(&first).await.unwrap(), Stored::New);
    let mut other = entry("msg_a", at(5));
    other.body = Bytes::from_static(b"a different body");
    assert_eq!(a.accept(&other).await.unwrap(), Stored::Duplicate);
    assert_eq!(b.accept(&other).await.unwrap(), Stored::Duplicate);
    assert_eq!(
        state(b, "msg_a").await,
        EntryStatus::new(
            EntryState::Pending {
                due_at: first.received_at
            },
            0,
            None
        )
    );
    assert_eq!(b.next_due().await.unwrap(), Some(first.received_at));
    // What was stored is the first, exactly.
    let claimed = b.claim_due(at(1), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].entry, first);
    assert_eq!(claimed[0].claim.id(), &first.id);
    assert_eq!(claimed[0].claim.attempt(), 1);
    b.complete(&claimed[0].claim, at(2)).await.unwrap();
    assert_eq!(a.accept(&first).await.unwrap(), Stored::Duplicate);
    assert_eq!(a.next_due().await.unwrap(), None);
    assert_eq!(a.status(&id("msg_unknown")).await.unwrap(), None);
}

async fn concurrent_accepts_of_one_id_store_it_once<S: InboxStore>(a: &S, b: &S) {
    let e = entry("msg_race", at(0));
    let results = futures_join((0..8).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        let e = e.clone();
        async move { store.accept(&e).await.unwrap() }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| **r == Stored::New).count(), 1);
}

async fn a_claim_holds_until_its_lease_ends_then_another_takes_over<S: InboxStore>(a: &S, b: &S) {
    let e = entry("msg_lease", at(0));
    a.accept(&e).await.unwrap();
    // Not due before its receipt.
    assert!(a.claim_due(at(-1), LEASE, 10).await.unwrap().is_empty());
    let first = a.claim_due(at(1), LEASE, 10).await.unwrap().remove(0);
    assert_eq!(first.claim.attempt(), 1);
    assert_eq!(first.claim.lease_until(), at(31));
    assert_eq!(
        state(a, "msg_lease").await.state,
        EntryState::Claimed {
            lease_until: at(31)
        }
    );
    assert!(b.claim_due(at(30), LEASE, 10).await.unwrap().is_empty());
    assert_eq!(b.next_due().await.unwrap(), Some(at(31)));
    // The first worker died: after the lease, the entry comes back. A lost
    // lease is not a recorded run.
    let second = b.claim_due(at(31), LEASE, 10).await.unwrap().remove(0);
    assert_eq!(second.entry, e);
    assert_eq!(second.claim.attempt(), 1);
    assert!(second.claim.token() > first.claim.token());
    // The dead worker's claim is stale, whatever it tries to record.
    for result in [
        a.complete(&first.claim, at(32)).await,
        a.retry(&first.claim, at(40), "late").await,
        a.fail(&first.claim, at(32), "late").await,
        a.release(&first.claim, at(32)).await,
    ] {
        assert!(
            matches!(result, Err(InboxError::Conflict(ref c)) if c == &e.id),
            "{result:?}"
        );
    }
    b.complete(&second.claim, at(33)).await.unwrap();
    let done = state(a, "msg_lease").await;
    assert_eq!(done.state, EntryState::Processed { at: at(33) });
    assert_eq!(done.attempts, 1);
    // Recording twice is refused too.
    assert!(matches!(
        b.complete(&second.claim, at(34)).await,
        Err(InboxError::Conflict(_))
    ));
    // A claim on an entry that is not there.
    let ghost = InboxClaim::new(id("msg_ghost"), second.claim.token(), 1, at(60));
    assert!(matches!(
        a.complete(&ghost, at(34)).await,
        Err(InboxError::NotFound(_))
    ));
}

async fn a_retry_makes_the_entry_due_later<S: InboxStore>(a: &S, b: &S) {
    a.accept(&entry("msg_retry", at(0))).await.unwrap();
    let first = a.claim_due(at(1), LEASE, 1).await.unwrap().remove(0);
    a.retry(&first.claim, at(10), "downstream 503")
        .await
        .unwrap();
    assert_eq!(
        state(b, "msg_retry").await,
        EntryStatus::new(
            EntryState::Pending { due_at: at(10) },
            1,
            Some("downstream 503".into())
        )
    );
    assert_eq!(b.next_due().await.unwrap(), Some(at(10)));
    assert!(b.claim_due(at(9), LEASE, 1).await.unwrap().is_empty());
    let second = b.claim_due(at(10), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(second.claim.attempt(), 2);
    assert_eq!(second.entry, entry("msg_retry", at(0)));
    b.complete(&second.claim, at(11)).await.unwrap();
    assert_eq!(
        state(a, "msg_retry").await,
        EntryStatus::new(EntryState::Processed { at: at(11) }, 2, None)
    );
}

async fn claims_take_the_earliest_due_first_and_respect_the_limit<S: InboxStore>(a: &S, b: &S) {
    for (text, received) in [("msg_c3", 3), ("msg_c1", 1), ("msg_c2", 2), ("msg_c9", 9)] {
        a.accept(&entry(text, at(received))).await.unwrap();
    }
    let first = b.claim_due(at(5), LEASE, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|c| c.entry.id.as_str()).collect();
    assert_eq!(ids, ["msg_c1", "msg_c2"]);
    let rest = a.claim_due(at(5), LEASE, 10).await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|c| c.entry.id.as_str()).collect();
    assert_eq!(ids, ["msg_c3"], "msg_c9 is not due yet");
    assert!(a.claim_due(at(5), LEASE, 0).await.unwrap().is_empty());
}

async fn failures_go_to_the_failed_list_and_replay_brings_them_back<S: InboxStore>(a: &S, b: &S) {
    for text in ["msg_f1", "msg_f2", "msg_f3"] {
        a.accept(&entry(text, at(0))).await.unwrap();
    }
    let claimed = a.claim_due(at(1), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for (n, c) in claimed.iter().enumerate() {
        let n = i64::try_from(n).unwrap();
        a.fail(&c.claim, at(10 - n), &format!("bad {}", c.entry.id))
            .await
            .unwrap();
    }
    // In the order they failed.
    let failed = b.failed(None, 0).await.unwrap();
    let ids: Vec<&str> = failed.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["msg_f3", "msg_f2", "msg_f1"]);
    assert_eq!(failed[0].failed_at, at(8));
    assert_eq!(failed[0].attempts, 1);
    assert_eq!(failed[0].last_error, "bad msg_f3");
    assert_eq!(failed[0].event_type, "ticket.created");
    assert_eq!(failed[0].received_at, entry("msg_f3", at(0)).received_at);
    // Pages.
    let page = b.failed(None, 2).await.unwrap();
    assert_eq!(page, failed[..2]);
    let next = b.failed(Some(&page[1].cursor()), 2).await.unwrap();
    assert_eq!(next, failed[2..]);
    assert!(b
        .failed(Some(&next[0].cursor()), 2)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        state(a, "msg_f1").await,
        EntryStatus::new(
            EntryState::Failed { at: at(10) },
            1,
            Some("bad msg_f1".into())
        )
    );
    // Nothing is due; a redelivery is a duplicate.
    assert_eq!(a.next_due().await.unwrap(), None);
    assert_eq!(
        a.accept(&entry("msg_f1", at(20))).await.unwrap(),
        Stored::Duplicate
    );
    // Replay: due again now, its run count reset.
    assert!(b.replay(&id("msg_f1"), at(30)).await.unwrap());
    assert!(!b.replay(&id("msg_f1"), at(30)).await.unwrap());
    assert!(!b.replay(&id("msg_unknown"), at(30)).await.unwrap());
    assert_eq!(
        state(a, "msg_f1").await.state,
        EntryState::Pending { due_at: at(30) }
    );
    let ids: Vec<MessageId> = b
        .failed(None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, [id("msg_f3"), id("msg_f2")]);
    let again = a.claim_due(at(30), LEASE, 10).await.unwrap().remove(0);
    assert_eq!(
        again.entry,
        entry("msg_f1", at(0)),
        "the body is kept for replay"
    );
    assert_eq!(again.claim.attempt(), 1);
    a.complete(&again.claim, at(31)).await.unwrap();
}

async fn release_gives_a_claim_back_without_counting_a_run<S: InboxStore>(a: &S, b: &S) {
    a.accept(&entry("msg_rel", at(0))).await.unwrap();
    let first = a.claim_due(at(1), LEASE, 1).await.unwrap().remove(0);
    a.release(&first.claim, at(3)).await.unwrap();
    assert_eq!(
        state(b, "msg_rel").await,
        EntryStatus::new(EntryState::Pending { due_at: at(3) }, 0, None)
    );
    let second = b.claim_due(at(3), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(second.claim.attempt(), 1);
    b.complete(&second.claim, at(4)).await.unwrap();
}

async fn prune_removes_old_processed_and_chosen_failed_entries<S: InboxStore>(a: &S, b: &S) {
    for text in ["msg_p1", "msg_p2", "msg_p3", "msg_p4", "msg_p5"] {
        a.accept(&entry(text, at(0))).await.unwrap();
    }
    let mut claimed = a.claim_due(at(1), LEASE, 4).await.unwrap().into_iter();
    let mut next = || claimed.next().unwrap().claim;
    a.complete(&next(), at(10)).await.unwrap(); // p1: processed at 10
    a.complete(&next(), at(30)).await.unwrap(); // p2: processed at 30
    a.fail(&next(), at(10), "bad").await.unwrap(); // p3: failed at 10
    let held = next(); // p4: claimed; p5: pending
    assert_eq!(b.prune(at(20), None).await.unwrap(), 1);
    assert_eq!(b.status(&id("msg_p1")).await.unwrap(), None);
    assert!(b.status(&id("msg_p2")).await.unwrap().is_some());
    assert!(
        b.status(&id("msg_p3")).await.unwrap().is_some(),
        "failed entries stay"
    );
    assert_eq!(b.prune(at(20), Some(at(20))).await.unwrap(), 1);
    assert_eq!(b.status(&id("msg_p3")).await.unwrap(), None);
    // Waiting and claimed entries are never pruned.
    assert_eq!(b.prune(at(1_000), Some(at(1_000))).await.unwrap(), 1);
    assert!(b.status(&id("msg_p4")).await.unwrap().is_some());
    assert!(b.status(&id("msg_p5")).await.unwrap().is_some());
    a.complete(&held, at(40)).await.unwrap();
    // A pruned id is new again.
    assert_eq!(
        a.accept(&entry("msg_p1", at(50))).await.unwrap(),
        Stored::New
    );
}

async fn concurrent_workers_never_claim_one_entry_twice<S: InboxStore>(a: &S, b: &S) {
    const N: usize = 60;
    for n in 0..N {
        a.accept(&entry(&format!("msg_w{n:03}"), at(0)))
            .await
            .unwrap();
    }
    let all = futures_join([drain(a), drain(b), drain(a), drain(b)]).await;
    let total: usize = all.iter().map(Vec::len).sum();
    let distinct: BTreeSet<&MessageId> = all.iter().flatten().collect();
    assert_eq!(total, N, "an entry was claimed twice");
    assert_eq!(distinct.len(), N);
}

/// A worker's loop: claims a few entries at a time and completes them,
/// until nothing is due; returns what it claimed.
async fn drain<S: InboxStore>(store: &S) -> Vec<MessageId> {
    let mut got = Vec::new();
    loop {
        let claimed = store.claim_due(at(1), LEASE, 3).await.unwrap();
        if claimed.is_empty() {
            return got;
        }
        for c in claimed {
            store.complete(&c.claim, at(2)).await.unwrap();
            got.push(c.entry.id);
        }
    }
}

/// Runs futures concurrently on the current task; their outputs in order.
async fn futures_join<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futures.iter_mut().zip(out.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *result = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Every check, each on a fresh inbox from `fresh`.
macro_rules! run_all {
    ($fresh:expr) => {{
        let fresh = $fresh;
        macro_rules! check {
            ($check:ident) => {{
                let (a, b, keep) = fresh().await;
                $check(&a, &b).await;
                drop((a, b));
                keep.finish().await;
            }};
        }
        check!(accept_stores_once_and_is_the_deduplication);
        check!(concurrent_accepts_of_one_id_store_it_once);
        check!(a_claim_holds_until_its_lease_ends_then_another_takes_over);
        check!(a_retry_makes_the_entry_due_later);
        check!(claims_take_the_earliest_due_first_and_respect_the_limit);
        check!(failures_go_to_the_failed_list_and_replay_brings_them_back);
        check!(release_gives_a_claim_back_without_counting_a_run);
        check!(prune_removes_old_processed_and_chosen_failed_entries);
        check!(concurrent_workers_never_claim_one_entry_twice);
    }};
}

/// What a fresh inbox leaves to clean up.
enum Keep {
    Nothing,
    Sqlite(SqliteStore, TempDb),
    Postgres(PostgresStore, PostgresStore, String, String),
}

impl Keep {
    async fn finish(self) {
        match self {
            Self::Nothing => {}
            Self::Sqlite(store, db) => {
                store.close().await;
                drop(db);
            }
            Self::Postgres(a, b, url, schema) => {
                a.pool().close().await;
                b.pool().close().await;
                drop_schema(&url, &schema).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The backends
// ---------------------------------------------------------------------------

#[tokio::test]
async fn memory_inbox_keeps_the_contract() {
    run_all!(|| async {
        let inbox = MemoryInbox::new();
        (inbox.clone(), inbox, Keep::Nothing)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_keeps_the_contract() {
    run_all!(|| async {
        let db = TempDb::new("inbox");
        let store = SqliteStore::open(&db.0).await.unwrap();
        (store.inbox(), store.inbox(), Keep::Sqlite(store, db))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_keeps_the_contract() {
    let Some(url) = postgres_url("postgres_inbox_keeps_the_contract") else {
        return;
    };
    run_all!(|| async {
        let schema = fresh_schema(&url, "inbox").await;
        // Two pools: two receiver processes' worth.
        let a = postgres_store(&url, &schema, 3).await;
        let b = postgres_store(&url, &schema, 3).await;
        (
            a.inbox(),
            b.inbox(),
            Keep::Postgres(a, b, url.clone(), schema),
        )
    });
}

// ---------------------------------------------------------------------------
// Rows that cannot be read back (SQL)
// ---------------------------------------------------------------------------

/// Rows as a damaged database (or a newer release) might hold them.
const BAD_ROWS: &str = "INSERT INTO hookway_inbox
    (id, event_type, headers, body, signed_at, received_at, state, due_at, claims, attempts)
    VALUES
    ('msg_bad_type', 'not a type!', X'', X'', NULL, 0, 'pending', 0, 0, 0),
    ('msg_bad_headers', 'ticket.created', X'6E6F20636F6C6F6E0D0A', X'', NULL, 0, 'pending', 0, 0, 0),
    ('msg_bad_time', 'ticket.created', X'', X'', NULL, 9223372036854775807, 'pending', 0, 0, -5)";

async fn unreadable_rows_go_to_the_failed_list<S: InboxStore>(inbox: &S) {
    inbox.accept(&entry("msg_good", at(0))).await.unwrap();
    // Claims go on past the bad rows, which land on the failed list.
    let claimed = inbox.claim_due(at(1), LEASE, 10).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.entry.id.as_str()).collect();
    assert_eq!(ids, ["msg_good"]);
    assert!(inbox.claim_due(at(1), LEASE, 10).await.unwrap().is_empty());
    let failed = inbox.failed(None, 0).await.unwrap();
    let mut ids: Vec<&str> = failed.iter().map(|f| f.id.as_str()).collect();
    ids.sort_unstable();
    // `msg_bad_type` and `msg_bad_time` cannot be listed either (an invalid
    // type, a negative count): the list skips them rather than failing.
    assert_eq!(ids, ["msg_bad_headers"]);
    assert!(
        failed[0]
            .last_error
            .starts_with("unreadable inbox row: headers"),
        "{}",
        failed[0].last_error
    );
    for text in ["msg_bad_type", "msg_bad_headers"] {
        assert!(matches!(
            state(inbox, text).await.state,
            EntryState::Failed { at: failed_at } if failed_at == at(1)
        ));
    }
    // The status of a row it cannot read is an error, not a panic.
    assert!(matches!(
        inbox.status(&id("msg_bad_time")).await,
        Err(InboxError::Backend(_))
    ));
}

#[tokio::test]
async fn sqlite_unreadable_rows_do_not_stop_the_workers() {
    let db = TempDb::new("inbox-bad");
    let store = SqliteStore::open(&db.0).await.unwrap();
    let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.0.display()))
        .await
        .unwrap();
    sqlx::query(BAD_ROWS).execute(&mut raw).await.unwrap();
    raw.close().await.unwrap();
    unreadable_rows_go_to_the_failed_list(&store.inbox()).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_unreadable_rows_do_not_stop_the_workers() {
    let Some(url) = postgres_url("postgres_unreadable_rows_do_not_stop_the_workers") else {
        return;
    };
    let schema = fresh_schema(&url, "inbox_bad").await;
    let store = postgres_store(&url, &schema, 2).await;
    sqlx::query(&BAD_ROWS.replace("X''", "'\\x'::bytea").replace(
        "X'6E6F20636F6C6F6E0D0A'",
        "'\\x6e6f20636f6c6f6e0d0a'::bytea",
    ))
    .execute(store.pool())
    .await
    .unwrap();
    unreadable_rows_go_to_the_failed_list(&store.inbox()).await;
    store.pool().close().await;
    drop_schema(&url, &schema).await;
}
