//! Crash recovery: a sender process is killed with SIGKILL in the middle of
//! its retries, started again on the same database, and every event still
//! reaches the receiver. Once with the SQLite store, once with Postgres
//! (which needs `HOOKWAY_TEST_POSTGRES_URL`; without it that test passes
//! with a notice, and with it an unreachable server fails it).
//!
//! The sender is this test binary run again (see `common`); the receiver
//! runs in the test process on 127.0.0.1. The first run publishes `EVENTS`
//! events, one every few milliseconds, while its workers deliver and retry
//! them. The receiver is down at first: it answers 503 to every request
//! until it has seen the first attempts of half the events, and after that
//! to the first request of each event only. When it has acknowledged a
//! tenth of the events, it freezes: it processes one more request with a
//! 2xx but withholds the answer (the sender dies not knowing the event
//! arrived), and holds every later request unanswered and unprocessed, so
//! the sender has attempts outstanding and nothing more is acknowledged.
//! The test then kills the sender and checks the moment was really
//! mid-retry: events not yet tried, deliveries being retried in the store,
//! claims held by the dead process. The second run publishes the events the first never confirmed,
//! and delivers everything, including the dead process's claims once their
//! leases (2 s) run out.
//!
//! At the end every event has been answered 2xx at least once and its
//! delivery is stored as delivered. The event whose answer was withheld is
//! delivered twice (delivery is at-least-once); any event answered 2xx
//! twice must have lost a claim (more claims than recorded attempts).
#![cfg(all(
    feature = "outbox",
    feature = "reqwest",
    feature = "sqlite",
    feature = "postgres"
))]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{
    drop_schema, endpoint, fresh_schema, msg, msg_number, postgres_url, wait_until, Backend,
    Freeze, Opened, Publish, Receiver, Sender, SenderConfig, Tally, TempDb,
};
use hookway::delivery::{DeliveryState, StateKind};
use hookway::Secret;

/// The sender role; does nothing in a normal test run.
#[test]
fn sender_process() {
    common::sender_process_if_asked();
}

const EVENTS: u32 = 200;
const PATH: &str = "/hooks";
/// Longer than the endpoint timeout, so a live sender never loses a claim.
const LEASE: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long a test may take, failing or not (it takes about 3 s).
const BUDGET: Duration = Duration::from_secs(40);

/// The tests in this binary start processes and measure real time: one at
/// a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sender_killed_mid_retry_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let db = TempDb::new("crash");
    crash_and_restart(Backend::Sqlite { path: db.0.clone() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sender_killed_mid_retry_loses_nothing() {
    let Some(url) = postgres_url("postgres_sender_killed_mid_retry_loses_nothing") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let schema = fresh_schema(&url, "crash").await;
    crash_and_restart(Backend::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await;
    drop_schema(&url, &schema).await;
}

fn config(name: &str, backend: &Backend, publish: Publish) -> SenderConfig {
    SenderConfig {
        name: name.to_owned(),
        backend: backend.clone(),
        publish,
        lease_ms: LEASE.as_millis() as u64,
        workers: 2,
    }
}

async fn crash_and_restart(backend: Backend) {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let secret = Secret::generate();
    // The receiver is down at first: 503 to everything until it has seen
    // the first attempts of half the events, so those are all being
    // retried. Then 503 to each later event's first request only.
    let receiver = Receiver::start(
        &secret,
        |r, t| {
            if t.first_attempts < u64::from(EVENTS / 2) || r.nth == 1 {
                503
            } else {
                200
            }
        },
        // Once a tenth of the events are acknowledged (most of the first
        // half still waiting for their next retry).
        Some(Freeze {
            when: Box::new(|t: &Tally| t.acked_pairs >= u64::from(EVENTS / 10)),
            swallow_from: "sender-1".to_owned(),
        }),
    )
    .await;
    let store = Opened::open(&backend).await;
    store
        .put_endpoint(endpoint("ep_a", &receiver.url(PATH), &secret, TIMEOUT))
        .await;
    store.close().await;

    // First run: publish one event every 5 ms, so first attempts and
    // retries interleave, until the receiver freezes.
    let mut first = Sender::spawn(&config(
        "sender-1",
        &backend,
        Publish {
            from: 0,
            to: EVENTS,
            step: 1,
            tasks: 1,
            pace_ms: 5,
            report: true,
        },
    ));
    wait_until(
        deadline,
        || format!("the receiver to freeze mid-retry: {:?}", receiver.tally()),
        &mut [&mut first],
        // Swallowed less than the endpoint timeout ago: the sender is still
        // waiting for the answer, so it dies holding the claim.
        || {
            receiver
                .swallowed()
                .is_some_and(|s| s.at.elapsed() < TIMEOUT / 2)
        },
    )
    .await;
    first.kill();
    let swallowed = receiver.swallowed().unwrap();
    assert!(
        swallowed.at.elapsed() < TIMEOUT,
        "the test stalled: the sender may have timed out the withheld request before the kill"
    );
    let killed_at = Instant::now();
    let at_kill = receiver.tally();
    let acked_at_kill: Vec<u32> = receiver
        .pairs()
        .iter()
        .filter(|(_, p)| p.acks > 0)
        .filter_map(|((_, id), _)| msg_number(id))
        .collect();
    receiver.unfreeze();
    let published: Vec<u64> = first.reported("published");
    let confirmed = u32::try_from(published.len()).unwrap();

    // Really mid-retry: some events not tried yet, retries under way, not
    // everything acknowledged.
    assert!(
        at_kill.first_attempts < u64::from(EVENTS),
        "killed too late: every event had been tried once: {at_kill:?}"
    );
    assert!(
        at_kill.retries > 0 && at_kill.acked_pairs > 0,
        "killed too early: no retry had been acknowledged: {at_kill:?}"
    );
    assert!(
        at_kill.acked_pairs < u64::from(confirmed),
        "killed too late: every published event had been acknowledged: {at_kill:?}"
    );
    assert_eq!(
        published,
        (0..u64::from(confirmed)).collect::<Vec<_>>(),
        "the first run confirms its publishes in order"
    );

    // The store as the dead process left it.
    let store = Opened::open(&backend).await;
    let left = store.deliveries().await;
    let events = store.events().await;
    store.close().await;
    let stored: HashMap<u32, _> = left
        .iter()
        .map(|d| (msg_number(d.event_id().as_str()).unwrap(), d))
        .collect();
    let lost_publishes: Vec<u32> = (0..confirmed).filter(|n| !stored.contains_key(n)).collect();
    assert!(
        lost_publishes.is_empty(),
        "published (publish returned) but not stored: {lost_publishes:?}"
    );
    assert_eq!(events.len(), left.len(), "one delivery per event");
    let mut states: BTreeMap<StateKind, usize> = BTreeMap::new();
    for d in &left {
        *states.entry(d.state().kind()).or_default() += 1;
    }
    // Deliveries that failed an attempt and are due again or claimed again.
    let retrying = left
        .iter()
        .filter(|d| d.attempts() > 0 && !d.state().is_terminal())
        .count();
    assert!(
        retrying > 0,
        "no delivery was being retried when the sender died: {states:?}"
    );
    assert!(
        states.get(&StateKind::InFlight).copied().unwrap_or(0) > 0,
        "the dead sender held no claim: {states:?}"
    );
    let m = msg_number(&swallowed.msg_id).unwrap();
    assert_eq!(
        stored.get(&m).map(|d| d.state().kind()),
        Some(StateKind::InFlight),
        "{} was processed but its answer withheld: its sender died holding the claim",
        swallowed.msg_id
    );
    // An event acknowledged before the kill is delivered, or still claimed
    // by the dead process (which died before storing the 2xx); it is never
    // back in the queue as if nothing had happened.
    for n in &acked_at_kill {
        let state = stored.get(n).map(|d| d.state().kind());
        assert!(
            matches!(state, Some(StateKind::Delivered | StateKind::InFlight)),
            "{} was answered 2xx before the kill but is stored as {state:?}",
            msg(*n)
        );
    }
    eprintln!(
        "killed after {:.2?}: {confirmed} of {EVENTS} events published, {} first attempts, \
         {} retries, {} events acknowledged; store: {states:?}, {retrying} being retried",
        killed_at - started,
        at_kill.first_attempts,
        at_kill.retries,
        at_kill.acked_pairs,
    );

    // Second run on the same database: publish what the first did not
    // confirm, deliver everything.
    let mut second = Sender::spawn(&config(
        "sender-2",
        &backend,
        Publish {
            from: confirmed,
            to: EVENTS,
            step: 1,
            tasks: 1,
            pace_ms: 0,
            report: false,
        },
    ));
    let total = u64::from(EVENTS);
    wait_until(
        deadline,
        || {
            let pairs = receiver.pairs();
            let missing: Vec<String> = (0..EVENTS)
                .map(msg)
                .filter(|id| {
                    pairs
                        .get(&(PATH.to_owned(), id.clone()))
                        .is_none_or(|p| p.acks == 0)
                })
                .take(20)
                .collect();
            format!(
                "every event answered 2xx; {} of {EVENTS} are, still missing (first 20): \
                 {missing:?}",
                receiver.tally().acked_pairs
            )
        },
        &mut [&mut second],
        || receiver.tally().acked_pairs == total,
    )
    .await;
    second.finish();
    let status = second.wait_exit(deadline).await;
    assert!(
        status.success(),
        "the second run failed: {status}\n{}",
        second.output()
    );
    let recovered_in = killed_at.elapsed();

    // The store: every event once, delivered.
    let store = Opened::open(&backend).await;
    let all = store.deliveries().await;
    let events = store.events().await;
    store.close().await;
    assert_eq!(events.len(), EVENTS as usize, "events stored");
    assert_eq!(all.len(), EVENTS as usize, "one delivery per event");
    let undelivered: Vec<String> = all
        .iter()
        .filter(|d| !matches!(d.state(), DeliveryState::Delivered { .. }))
        .map(|d| format!("{}: {:?}", d.event_id(), d.state()))
        .collect();
    assert!(undelivered.is_empty(), "not delivered: {undelivered:?}");

    // The receiver: every event acknowledged; twice only where the first
    // 2xx was lost with its claim (more claims than recorded attempts).
    let tally = receiver.tally();
    assert_eq!(tally.bad_signatures, 0, "a signature failed");
    let mut duplicates = Vec::new();
    for d in &all {
        let pair = receiver.pair(PATH, d.event_id().as_str());
        assert!(pair.acks >= 1, "{} never answered 2xx", d.event_id());
        assert!(
            pair.requests >= d.attempts(),
            "{}: {} attempts stored, {} requests received",
            d.event_id(),
            d.attempts(),
            pair.requests
        );
        if pair.acks > 1 {
            assert!(
                d.claims() > u64::from(d.attempts()),
                "{} answered 2xx {} times without losing a claim: {d:?}",
                d.event_id(),
                pair.acks
            );
            duplicates.push(d.event_id().to_string());
        }
    }
    assert!(
        duplicates.contains(&swallowed.msg_id),
        "{} (answer withheld, sender killed) was not delivered again: {duplicates:?}",
        swallowed.msg_id
    );
    let first_requests = at_kill.by_agent.get("sender-1").copied().unwrap_or(0);
    let second_requests = tally.by_agent.get("sender-2").copied().unwrap_or(0);
    let second_attempts = second.reported("attempts");
    eprintln!(
        "recovered {:.2?} after the kill; requests: {first_requests} before the kill, \
         {second_requests} from the second run (which stored {second_attempts:?} attempts); \
         {} events acknowledged twice {duplicates:?} ({} withheld); test total {:.2?}",
        recovered_in,
        duplicates.len(),
        swallowed.msg_id,
        started.elapsed()
    );
}
