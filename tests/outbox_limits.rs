//! Per-endpoint limits, ordering, 429 pauses, observers and endpoint health.
#![cfg(feature = "outbox")]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookway::clock::ManualClock;
use hookway::delivery::{DeliveryState, StateKind};
use hookway::dispatch::{Dispatcher, TransportError};
use hookway::endpoint::{Endpoint, EndpointBuilder};
use hookway::outbox::{DisableReason, Notification, Outbox, OutboxConfig};
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, MemoryStore, Store};
use hookway::testing::{Reply, ScriptedDispatcher};
use hookway::{EventType, MessageId, Scheme, Secret};
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-03-15 12:00 UTC);
const URL: &str = "https://a.example.com/hooks";

fn endpoint() -> EndpointBuilder {
    Endpoint::builder(
        "ep_a".parse().unwrap(),
        URL,
        Scheme::standard(),
        Secret::generate(),
    )
}

fn ty() -> EventType {
    "ticket.created".parse().unwrap()
}

async fn outbox_with<D: Dispatcher>(
    dispatcher: D,
    endpoint: Endpoint,
    config: OutboxConfig,
) -> (Outbox<MemoryStore, D>, ManualClock) {
    let clock = ManualClock::new(T0);
    let outbox = Outbox::with_config(MemoryStore::new(), dispatcher, config, clock.clone());
    outbox.add_endpoint(endpoint).await.unwrap();
    (outbox, clock)
}

async fn publish_n<D: Dispatcher>(outbox: &Outbox<MemoryStore, D>, n: usize) {
    for i in 0..n {
        outbox
            .publish(
                format!("msg_{i}").parse::<MessageId>().unwrap(),
                ty(),
                &json!({ "i": i }),
                &[],
            )
            .await
            .unwrap();
    }
}

async fn count<D: Dispatcher>(outbox: &Outbox<MemoryStore, D>, state: StateKind) -> usize {
    outbox
        .store()
        .deliveries(&DeliveryQuery {
            state: Some(state),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap()
        .len()
}

/// Answers 200 after a short real delay, recording the peak concurrency.
#[derive(Default)]
struct SlowDispatcher {
    current: AtomicU32,
    peak: AtomicU32,
}

impl Dispatcher for SlowDispatcher {
    fn send(
        &self,
        _request: http::Request<Bytes>,
        _timeout: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.current.fetch_sub(1, Ordering::SeqCst);
            Ok(http::Response::new(Bytes::new()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_concurrency_cap() {
    let (outbox, _clock) = outbox_with(
        SlowDispatcher::default(),
        endpoint().max_in_flight(2).build().unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 6).await;
    assert_eq!(outbox.run_once().await.unwrap(), 6);
    assert_eq!(outbox.dispatcher().peak.load(Ordering::SeqCst), 2);
    assert_eq!(count(&outbox, StateKind::Delivered).await, 2);
    // The rest wait a moment and are not charged an attempt.
    let pending = outbox
        .store()
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::Pending),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 4);
    assert!(pending.iter().all(|d| d.attempts() == 0));
}

#[tokio::test]
async fn per_endpoint_rate_limit() {
    let (outbox, clock) = outbox_with(
        ScriptedDispatcher::new(),
        endpoint()
            .rate_limit(2, Duration::from_secs(1))
            .build()
            .unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 5).await;
    outbox.run_once().await.unwrap();
    assert_eq!(outbox.dispatcher().requests().len(), 2, "a burst of 2");
    let pending = outbox
        .store()
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::Pending),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    let half = T0 + time::Duration::milliseconds(500);
    assert!(pending
        .iter()
        .all(|d| d.state() == &DeliveryState::Pending { due_at: half }));
    clock.set(half);
    outbox.run_once().await.unwrap();
    assert_eq!(
        outbox.dispatcher().requests().len(),
        3,
        "then one per 500 ms"
    );
    for _ in 0..4 {
        clock.advance(Duration::from_millis(500));
        outbox.run_once().await.unwrap();
    }
    assert_eq!(outbox.dispatcher().requests().len(), 5);
    assert_eq!(count(&outbox, StateKind::Delivered).await, 5);
}

#[tokio::test]
async fn a_429_pauses_the_whole_endpoint() {
    let dispatcher =
        ScriptedDispatcher::new().reply(Reply::status(429).header("Retry-After", "60"));
    let (outbox, clock) = outbox_with(
        dispatcher,
        endpoint().build().unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 1).await;
    outbox.run_once().await.unwrap();
    clock.advance(Duration::from_secs(10));
    outbox
        .publish("msg_later".parse().unwrap(), ty(), &json!({}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    // No second request while the endpoint asked for a minute's rest.
    assert_eq!(outbox.dispatcher().requests().len(), 1);
    let resume = T0 + time::Duration::seconds(60);
    let all = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    assert!(all
        .iter()
        .all(|d| d.state() == &DeliveryState::Pending { due_at: resume }));
    assert!(all.iter().all(|d| d.attempts() <= 1));
    clock.set(resume);
    outbox.run_once().await.unwrap();
    assert_eq!(count(&outbox, StateKind::Delivered).await, 2);
}

#[tokio::test]
async fn ordered_endpoints_deliver_fifo_and_a_failing_head_holds_back_the_rest() {
    let dispatcher = ScriptedDispatcher::new().reply(Reply::status(503));
    let (outbox, clock) = outbox_with(
        dispatcher,
        endpoint().ordered(true).build().unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 3).await;
    for _ in 0..200 {
        outbox.run_once().await.unwrap();
        if count(&outbox, StateKind::Delivered).await == 3 {
            break;
        }
        clock.advance(Duration::from_millis(100));
    }
    assert_eq!(count(&outbox, StateKind::Delivered).await, 3);
    let order: Vec<String> = outbox
        .dispatcher()
        .requests()
        .iter()
        .map(|r| {
            r.request.headers()["webhook-id"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // msg_0 failed once (503) and was retried 5 s later; nothing overtook it.
    assert_eq!(order, ["msg_0", "msg_0", "msg_1", "msg_2"]);
}

fn collect(outbox: &Outbox<MemoryStore, ScriptedDispatcher>) -> Arc<Mutex<Vec<Notification>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    outbox.subscribe(move |n: &Notification| sink.lock().unwrap().push(n.clone()));
    seen
}

#[tokio::test]
async fn observers_hear_attempts_failures_recoveries_and_endpoint_changes() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(Reply::status(500))
        .reply(Reply::status(500))
        .reply(Reply::status(500))
        .reply(Reply::status(200))
        .reply(Reply::status(410));
    let (outbox, clock) = outbox_with(
        dispatcher,
        endpoint()
            .retry_policy(
                RetryPolicy::fixed([Duration::from_secs(1); 5])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
        OutboxConfig::default(),
    )
    .await;
    let seen = collect(&outbox);
    publish_n(&outbox, 1).await;
    for _ in 0..4 {
        outbox.run_once().await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    outbox
        .publish("msg_gone".parse().unwrap(), ty(), &json!({}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    let ep = "ep_a".parse().unwrap();
    outbox.enable_endpoint(&ep).await.unwrap();
    let kinds: Vec<&'static str> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|n| match n {
            Notification::AttemptFinished { .. } => "attempt",
            Notification::DeliveryFailing { attempts: 3, .. } => "failing",
            Notification::DeliveryRecovered { attempts: 4, .. } => "recovered",
            Notification::DeliveryFailed { .. } => "failed",
            Notification::EndpointDisabled {
                reason: DisableReason::Gone,
                ..
            } => "disabled",
            Notification::EndpointEnabled { .. } => "enabled",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "attempt",
            "attempt",
            "attempt",
            "failing",
            "attempt",
            "recovered",
            "attempt",
            "failed",
            "disabled",
            "enabled"
        ]
    );
}

#[tokio::test]
async fn endpoints_failing_for_too_long_are_disabled_and_any_success_resets() {
    let mut config = OutboxConfig::default();
    config.disable_after_failing_for = Some(Duration::from_secs(3600));
    let dispatcher = ScriptedDispatcher::new().otherwise(Reply::status(503));
    let (outbox, clock) = outbox_with(
        dispatcher,
        endpoint()
            .retry_policy(
                RetryPolicy::fixed([Duration::from_secs(1800); 3])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
        config,
    )
    .await;
    let seen = collect(&outbox);
    publish_n(&outbox, 1).await;
    for _ in 0..4 {
        outbox.run_once().await.unwrap();
        clock.advance(Duration::from_secs(1800));
    }
    let ep = "ep_a".parse().unwrap();
    assert!(!outbox
        .store()
        .endpoint(&ep)
        .await
        .unwrap()
        .unwrap()
        .is_enabled());
    assert!(seen.lock().unwrap().iter().any(|n| matches!(
        n,
        Notification::EndpointDisabled {
            reason: DisableReason::FailingTooLong,
            ..
        }
    )));
}

#[tokio::test]
async fn consecutive_failures_disable_when_configured() {
    let mut config = OutboxConfig::default();
    config.disable_after_consecutive_failures = Some(3);
    let dispatcher = ScriptedDispatcher::new().otherwise(Reply::status(503));
    let (outbox, clock) = outbox_with(dispatcher, endpoint().build().unwrap(), config).await;
    publish_n(&outbox, 3).await;
    outbox.run_once().await.unwrap();
    let ep = "ep_a".parse().unwrap();
    assert!(!outbox
        .store()
        .endpoint(&ep)
        .await
        .unwrap()
        .unwrap()
        .is_enabled());
    // Its deliveries are held from the next attempt on, not lost.
    clock.advance(Duration::from_secs(3600));
    outbox.run_once().await.unwrap();
    assert_eq!(count(&outbox, StateKind::Held).await, 3);
    assert_eq!(outbox.dispatcher().requests().len(), 3);
}

#[tokio::test]
async fn batches_go_as_one_json_array_and_retry_together() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(Reply::status(200))
        .reply(Reply::status(503));
    let (outbox, clock) = outbox_with(
        dispatcher,
        endpoint()
            .batching(3, Duration::from_secs(10))
            .build()
            .unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 3).await;
    outbox.run_once().await.unwrap();
    let sent = outbox.dispatcher().requests();
    assert_eq!(sent.len(), 1, "a full batch goes at once");
    let body: serde_json::Value = serde_json::from_slice(sent[0].request.body()).unwrap();
    assert_eq!(body, json!([{ "i": 0 }, { "i": 1 }, { "i": 2 }]));
    assert_eq!(count(&outbox, StateKind::Delivered).await, 3);

    // A partial batch waits for up to max_wait, then goes as it is.
    for i in 3..5 {
        outbox
            .publish(
                format!("msg_{i}").parse().unwrap(),
                ty(),
                &json!({ "i": i }),
                &[],
            )
            .await
            .unwrap();
    }
    outbox.run_once().await.unwrap();
    assert_eq!(outbox.dispatcher().requests().len(), 1);
    clock.advance(Duration::from_secs(10));
    outbox.run_once().await.unwrap();
    let sent = outbox.dispatcher().requests();
    assert_eq!(sent.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(sent[1].request.body()).unwrap();
    assert_eq!(body, json!([{ "i": 3 }, { "i": 4 }]));
    // That batch failed (503): both are retried together, in one request.
    let pending = outbox
        .store()
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::Pending),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].state(), pending[1].state());
    clock.advance(Duration::from_secs(5));
    outbox.run_once().await.unwrap();
    assert_eq!(outbox.dispatcher().requests().len(), 3);
    assert_eq!(count(&outbox, StateKind::Delivered).await, 5);
    let ids: Vec<_> = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    let attempts = outbox.store().attempts(ids[3].id()).await.unwrap();
    assert_eq!(attempts.len(), 2);
}

/// Never answers: an attempt that only a shutdown ends.
struct Hang;

impl Dispatcher for Hang {
    fn send(
        &self,
        _request: http::Request<Bytes>,
        _timeout: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_abandoned_deliveries_back_at_once() {
    let (outbox, _clock) =
        outbox_with(Hang, endpoint().build().unwrap(), OutboxConfig::default()).await;
    publish_n(&outbox, 2).await;
    let workers = outbox.start(1);
    // Let the worker claim and start sending.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(count(&outbox, StateKind::InFlight).await, 2);
    workers.shutdown(Duration::from_secs(1)).await;
    let all = outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    for d in all {
        assert_eq!(d.state(), &DeliveryState::Pending { due_at: T0 });
        assert_eq!(d.attempts(), 0, "an abandoned attempt is not charged");
    }
}

#[tokio::test]
async fn held_deliveries_are_bounded_and_the_overflow_is_recorded_not_lost() {
    let mut config = OutboxConfig::default();
    config.max_held_per_endpoint = Some(2);
    let (outbox, _clock) = outbox_with(
        ScriptedDispatcher::new(),
        endpoint().enabled(false).build().unwrap(),
        config,
    )
    .await;
    publish_n(&outbox, 3).await;
    assert_eq!(count(&outbox, StateKind::Held).await, 2);
    let failed = outbox
        .store()
        .deliveries(&DeliveryQuery {
            state: Some(StateKind::Failed),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(matches!(
        failed[0].state(),
        DeliveryState::Failed {
            reason: hookway::delivery::FailureReason::HoldLimit { limit: 2 },
            ..
        }
    ));
    let ep = "ep_a".parse().unwrap();
    outbox.enable_endpoint(&ep).await.unwrap();
    outbox.retry(failed[0].id()).await.unwrap();
    outbox.run_once().await.unwrap();
    assert_eq!(count(&outbox, StateKind::Delivered).await, 3);
    // Sent in publication order.
    let order: Vec<String> = outbox
        .dispatcher()
        .requests()
        .iter()
        .map(|r| {
            r.request.headers()["webhook-id"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order.len(), 3);
}

/// Hangs on its first request; answers 200 to every later one.
struct HangFirst(AtomicU32);

impl Dispatcher for HangFirst {
    async fn send(
        &self,
        _request: http::Request<Bytes>,
        _timeout: Duration,
    ) -> Result<http::Response<Bytes>, TransportError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        Ok(http::Response::new(Bytes::new()))
    }
}

#[tokio::test(start_paused = true)]
async fn an_aborted_attempt_gives_back_its_endpoints_slot() {
    // Ordered: one request in flight at a time. If the attempt aborted by
    // the shutdown kept its slot, the endpoint would stay "busy" for good.
    let (outbox, _clock) = outbox_with(
        HangFirst(AtomicU32::new(0)),
        endpoint().ordered(true).build().unwrap(),
        OutboxConfig::default(),
    )
    .await;
    publish_n(&outbox, 1).await;
    let workers = outbox.start(1);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(outbox.dispatcher().0.load(Ordering::SeqCst), 1);
    workers.shutdown(Duration::from_millis(10)).await;
    assert_eq!(count(&outbox, StateKind::Pending).await, 1);
    // Workers again, on the same engine: the delivery goes at once.
    let workers = outbox.start(1);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    workers.shutdown(Duration::from_secs(1)).await;
    assert_eq!(outbox.dispatcher().0.load(Ordering::SeqCst), 2);
    assert_eq!(count(&outbox, StateKind::Delivered).await, 1);
}
