//! Several sender processes, each with its own `Outbox`, share one queue in
//! one Postgres schema and deliver to a receiver on 127.0.0.1, with no
//! coordinator of their own. Needs `HOOKWAY_TEST_POSTGRES_URL`; without it
//! the tests pass with a notice, and with it an unreachable server fails
//! them. (The `sqlite` feature is required only because the sender code in
//! `common` serves both stores.)
//!
//! The senders are this test binary run again (see `common`). Each live
//! sender publishes its share of the events while its workers deliver
//! everybody's. The events fan out to two endpoints; the receiver answers
//! 503 to the first request of every tenth event, so retries are claimed by
//! whichever process comes first. Every (endpoint, event) pair must be
//! answered 2xx:
//!
//! - with leases long enough that none expires: exactly once, and the
//!   receiver saw exactly the requests the store logged as attempts and the
//!   processes reported;
//! - when one process is killed (SIGKILL) with requests outstanding, one of
//!   them processed by the receiver with its answer withheld: the others
//!   take its claims over once their leases (2 s) run out and deliver that
//!   pair again; a pair is answered 2xx twice only where a claim was lost
//!   (the delivery was claimed more often than attempts were recorded).
//!
//! The full size, 10 000 events, runs by default in a release build only:
//! `cargo test --release --all-features --test multi_process`.
#![cfg(all(
    feature = "outbox",
    feature = "reqwest",
    feature = "sqlite",
    feature = "postgres"
))]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    drop_schema, endpoint, fresh_schema, msg, msg_number, postgres_url, wait_until, Backend,
    Freeze, Opened, Publish, Receiver, Sender, SenderConfig, Tally,
};
use hookway::delivery::StateKind;
use hookway::Secret;

/// The sender role; does nothing in a normal test run.
#[test]
fn sender_process() {
    common::sender_process_if_asked();
}

/// Each endpoint's id and path on the receiver.
const ENDPOINTS: [(&str, &str); 2] = [("ep_a", "/a"), ("ep_b", "/b")];
const TIMEOUT: Duration = Duration::from_secs(1);

/// The tests in this binary start processes and measure real time: one at
/// a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 2 000 events × 2 endpoints, two processes: always runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_2k_events_without_duplicates() {
    let Some(url) = postgres_url("two_processes_deliver_2k_events_without_duplicates") else {
        return;
    };
    share_one_queue(&url, 2_000, 2, None).await;
}

/// The full size from the issue: 10 000 events × 2 endpoints, two
/// processes. Runs by default in a release build
/// (`cargo test --release --all-features --test multi_process`); ignored
/// in a debug build, where it takes longer than a test should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    debug_assertions,
    ignore = "20 000 deliveries across processes: run with --release"
)]
async fn two_processes_deliver_10k_events_without_duplicates() {
    let Some(url) = postgres_url("two_processes_deliver_10k_events_without_duplicates") else {
        return;
    };
    share_one_queue(&url, 10_000, 2, None).await;
}

/// Three processes; one is killed with requests outstanding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processs_claims_are_taken_over_by_the_others() {
    let Some(url) = postgres_url("a_killed_processs_claims_are_taken_over_by_the_others") else {
        return;
    };
    share_one_queue(&url, 1_000, 3, Some(0)).await;
}

/// `senders` processes deliver `events` events to both endpoints. The
/// `victim`, if any, publishes nothing and is killed once a third of the
/// pairs are acknowledged; the others publish an equal share each.
async fn share_one_queue(url: &str, events: u32, senders: usize, victim: Option<usize>) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // How long the test may take, failing or not.
    let deadline = started + Duration::from_secs(50);
    let total = u64::from(events) * ENDPOINTS.len() as u64;
    let schema = fresh_schema(url, "multi").await;
    let backend = Backend::Postgres {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let secret = Secret::generate();
    // With a victim: once a third of the pairs are acknowledged, one of its
    // requests is processed with its answer withheld, and every other
    // request is held until the victim is dead.
    let freeze = victim.map(|v| Freeze {
        when: Box::new(move |t: &Tally| t.acked_pairs >= total / 3),
        swallow_from: format!("sender-{v}"),
    });
    let receiver = Receiver::start(
        &secret,
        |r, _| {
            let n = msg_number(r.msg_id).unwrap_or(0);
            if r.nth == 1 && n.is_multiple_of(10) {
                503
            } else {
                200
            }
        },
        freeze,
    )
    .await;
    let store = Opened::open(&backend).await;
    for (id, path) in ENDPOINTS {
        store
            .put_endpoint(endpoint(id, &receiver.url(path), &secret, TIMEOUT))
            .await;
    }
    store.close().await;

    // Leases: 2 s (longer than the endpoint timeout) when a process dies,
    // so its claims come back soon; otherwise long enough that none can
    // expire in this test.
    let lease = if victim.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(120)
    };
    let publishers: Vec<usize> = (0..senders).filter(|i| Some(*i) != victim).collect();
    let mut processes: Vec<Sender> = (0..senders)
        .map(|i| {
            let publish = match publishers.iter().position(|p| *p == i) {
                Some(k) => Publish {
                    from: k as u32,
                    to: events,
                    step: publishers.len() as u32,
                    tasks: 4,
                    pace_ms: 0,
                    report: false,
                },
                None => Publish::none(),
            };
            Sender::spawn(&SenderConfig {
                name: format!("sender-{i}"),
                backend: backend.clone(),
                publish,
                lease_ms: lease.as_millis() as u64,
                workers: 2,
            })
        })
        .collect();

    let mut at_kill = None;
    if let Some(v) = victim {
        let name = processes[v].name.clone();
        {
            let mut running: Vec<&mut Sender> = processes.iter_mut().collect();
            wait_until(
                deadline,
                || format!("a request of {name}'s swallowed: {:?}", receiver.tally()),
                &mut running,
                // Less than the endpoint timeout ago: the victim is still
                // waiting for the answer, so it dies holding the claim.
                || {
                    receiver
                        .swallowed()
                        .is_some_and(|s| s.at.elapsed() < TIMEOUT / 2)
                },
            )
            .await;
        }
        processes[v].kill();
        let swallowed = receiver.swallowed().unwrap();
        assert!(
            swallowed.at.elapsed() < TIMEOUT,
            "the test stalled: {name} may have timed out the withheld request before the kill"
        );
        let tally = receiver.tally();
        receiver.unfreeze();
        assert!(
            tally.acked_pairs < total,
            "killed too late: every pair had been acknowledged: {tally:?}"
        );
        at_kill = Some((tally, swallowed, started.elapsed()));
    }

    {
        let mut running: Vec<&mut Sender> = processes
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| Some(*i) != victim)
            .map(|(_, s)| s)
            .collect();
        wait_until(
            deadline,
            || {
                let pairs = receiver.pairs();
                let mut missing = Vec::new();
                'out: for n in 0..events {
                    for (_, path) in ENDPOINTS {
                        let key = (path.to_owned(), msg(n));
                        if pairs.get(&key).is_none_or(|p| p.acks == 0) {
                            missing.push(format!("{path} {}", msg(n)));
                            if missing.len() == 20 {
                                break 'out;
                            }
                        }
                    }
                }
                format!(
                    "every pair answered 2xx; {} of {total} are, still missing (first 20): \
                     {missing:?}",
                    receiver.tally().acked_pairs
                )
            },
            &mut running,
            || receiver.tally().acked_pairs == total,
        )
        .await;
    }
    let delivered_in = started.elapsed();

    let mut reported = BTreeMap::new();
    for (i, process) in processes.iter_mut().enumerate() {
        if Some(i) == victim {
            continue;
        }
        process.finish();
        let status = process.wait_exit(deadline).await;
        assert!(
            status.success(),
            "{} failed: {status}\n{}",
            process.name,
            process.output()
        );
        let attempts = process.reported("attempts");
        assert_eq!(attempts.len(), 1, "{}\n{}", process.name, process.output());
        reported.insert(process.name.clone(), attempts[0]);
    }

    let store = Opened::open(&backend).await;
    let all = store.deliveries().await;
    let stored_events = store.events().await.len();
    store.close().await;
    drop_schema(url, &schema).await;

    // The store: one delivery per pair, all delivered.
    assert_eq!(stored_events, events as usize, "events stored");
    assert_eq!(all.len() as u64, total, "deliveries stored");
    let mut states: BTreeMap<StateKind, u64> = BTreeMap::new();
    for d in &all {
        *states.entry(d.state().kind()).or_default() += 1;
    }
    assert_eq!(
        states,
        BTreeMap::from([(StateKind::Delivered, total)]),
        "final states"
    );

    // The receiver: every pair acknowledged; more than once only where the
    // delivery lost a claim.
    let tally = receiver.tally();
    assert_eq!(tally.bad_signatures, 0, "a signature failed");
    let pairs = receiver.pairs();
    let mut duplicates = Vec::new();
    let mut lost_claims = 0;
    let mut store_attempts = 0u64;
    for d in &all {
        let path = ENDPOINTS
            .iter()
            .find(|(id, _)| *id == d.endpoint_id().as_str())
            .map(|(_, path)| *path)
            .expect("a known endpoint");
        let pair = pairs
            .get(&(path.to_owned(), d.event_id().to_string()))
            .copied()
            .unwrap_or_default();
        assert!(
            pair.acks >= 1,
            "{path} {}: never answered 2xx",
            d.event_id()
        );
        let lost = d.claims() > u64::from(d.attempts());
        lost_claims += u64::from(lost);
        store_attempts += u64::from(d.attempts());
        if pair.acks > 1 {
            assert!(
                lost,
                "{path} {}: answered 2xx {} times without losing a claim: {d:?}",
                d.event_id(),
                pair.acks
            );
            duplicates.push(format!("{path} {}", d.event_id()));
        }
        assert!(
            pair.requests >= d.attempts(),
            "{path} {}: {} attempts stored, {} requests received",
            d.event_id(),
            d.attempts(),
            pair.requests
        );
    }

    // Each live process's requests were all recorded as its attempts (none
    // lost a claim), and the queue was really shared.
    let survivors_attempts: u64 = reported.values().sum();
    for (name, attempts) in &reported {
        let requests = tally.by_agent.get(name).copied().unwrap_or(0);
        assert!(requests > 0, "{name} sent nothing: {:?}", tally.by_agent);
        if victim.is_none() {
            assert_eq!(
                requests, *attempts,
                "{name}: requests received vs attempts it recorded"
            );
        }
    }
    match (victim, &at_kill) {
        (None, _) => {
            assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
            assert_eq!(lost_claims, 0, "no lease can have expired");
            assert_eq!(
                tally.requests, store_attempts,
                "requests vs stored attempts"
            );
            assert_eq!(
                store_attempts, survivors_attempts,
                "stored vs reported attempts"
            );
        }
        (Some(v), Some((at_kill, swallowed, _))) => {
            let name = format!("sender-{v}");
            let victim_requests = tally.by_agent.get(&name).copied().unwrap_or(0);
            assert_eq!(
                victim_requests,
                at_kill.by_agent.get(&name).copied().unwrap_or(0),
                "{name} sent requests after it was killed"
            );
            let withheld = format!("{} {}", swallowed.path, swallowed.msg_id);
            assert!(
                duplicates.contains(&withheld),
                "{withheld} (answer withheld, {name} killed) was not delivered again: \
                 {duplicates:?}"
            );
            // What the victim stored before it died is the rest.
            assert!(
                store_attempts >= survivors_attempts
                    && store_attempts - survivors_attempts <= victim_requests,
                "stored {store_attempts} attempts, survivors {survivors_attempts}, \
                 {name} sent {victim_requests} requests"
            );
        }
        (Some(_), None) => unreachable!("a victim is killed above"),
    }
    let kill = match (victim, &at_kill) {
        (Some(v), Some((t, _, at))) => format!(
            "sender-{v} killed after {at:.2?} with {} pairs acknowledged; ",
            t.acked_pairs
        ),
        _ => String::new(),
    };
    eprintln!(
        "{senders} processes, {events} events x {} endpoints = {total} deliveries: \
         {} requests {:?}, stored attempts {store_attempts}, reported {reported:?}; \
         {kill}{lost_claims} claims lost, {} pairs acknowledged twice {:?}; \
         all acknowledged after {delivered_in:.2?}, test total {:.2?}",
        ENDPOINTS.len(),
        tally.requests,
        tally.by_agent,
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)],
        started.elapsed()
    );
}
