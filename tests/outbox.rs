//! The delivery engine driven round by round with a manual clock and a
//! scripted dispatcher: exact attempts, delays and final states.
#![cfg(feature = "outbox")]

use std::time::Duration;

use hookway::clock::{Clock, ManualClock};
use hookway::delivery::{DeliveryState, StateKind};
use hookway::dispatch::TransportErrorKind;
use hookway::endpoint::Endpoint;
use hookway::outbox::{Outbox, OutboxConfig, PublishError};
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, MemoryStore, Store};
use hookway::testing::{Reply, ScriptedDispatcher};
use hookway::{EventFilter, EventType, MessageId, Scheme, Secret, Verifier};
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-03-15 12:00 UTC);
const A: &str = "https://a.example.com/hooks";
const B: &str = "https://b.example.com/hooks";

struct Setup {
    outbox: Outbox<MemoryStore, ScriptedDispatcher>,
    clock: ManualClock,
    secret: Secret,
}

async fn setup(dispatcher: ScriptedDispatcher, policy: RetryPolicy) -> Setup {
    let clock = ManualClock::new(T0);
    let outbox = Outbox::with_config(
        MemoryStore::new(),
        dispatcher,
        OutboxConfig::default(),
        clock.clone(),
    );
    let secret = Secret::generate();
    for (id, url, filter) in [("ep_a", A, "ticket.*"), ("ep_b", B, "customer.*")] {
        outbox
            .add_endpoint(
                Endpoint::builder(id.parse().unwrap(), url, Scheme::standard(), secret.clone())
                    .filter(EventFilter::new([filter]).unwrap())
                    .retry_policy(policy.clone())
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    Setup {
        outbox,
        clock,
        secret,
    }
}

fn ticket() -> (MessageId, EventType) {
    ("msg_1".parse().unwrap(), "ticket.created".parse().unwrap())
}

#[tokio::test]
async fn publish_fans_out_once_and_is_idempotent() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    let (id, ty) = ticket();
    let ids = s
        .outbox
        .publish(id.clone(), ty.clone(), &json!({"n": 1}), &[])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "only ep_a subscribes to ticket.*");
    let again = s
        .outbox
        .publish(id.clone(), ty, &json!({"n": 2}), &[])
        .await
        .unwrap();
    assert_eq!(again, ids);
    let all = s
        .outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    // The first payload is kept.
    let event = s.outbox.store().event(&id).await.unwrap().unwrap();
    assert_eq!(&event.payload[..], br#"{"n":1}"#);
}

#[tokio::test]
async fn oversized_payloads_are_refused_not_truncated() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    let (id, ty) = ticket();
    let big = "x".repeat(2 * 1024 * 1024);
    let err = s
        .outbox
        .publish(id.clone(), ty, &big, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::TooLarge { limit, .. } if limit == 1024 * 1024));
    assert!(s.outbox.store().event(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn delivered_requests_are_signed_at_attempt_time() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    let (id, ty) = ticket();
    let ids = s
        .outbox
        .publish(id, ty, &json!({"n": 1}), &[])
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(7));
    assert_eq!(s.outbox.run_once().await.unwrap(), 1);
    let sent = s.outbox.dispatcher().requests();
    assert_eq!(sent.len(), 1);
    let req = &sent[0].request;
    assert_eq!(req.uri(), A);
    assert_eq!(sent[0].timeout, Duration::from_secs(30));
    let at = T0 + time::Duration::seconds(7);
    let verifier = Verifier::new(Scheme::standard(), s.secret.clone()).unwrap();
    let verified = verifier.verify_at(req.headers(), req.body(), at).unwrap();
    assert_eq!(verified.unix_timestamp(), Some(at.unix_timestamp()));
    let delivery = s.outbox.store().delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(delivery.state(), &DeliveryState::Delivered { at });
    let attempts = s.outbox.store().attempts(&ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status(), Some(200));
    // Nothing left to do.
    assert_eq!(s.outbox.run_once().await.unwrap(), 0);
}

#[tokio::test]
async fn retries_follow_the_policy_then_succeed() {
    let dispatcher = ScriptedDispatcher::new()
        .reply(Reply::status(503).body("down"))
        .reply(Reply::error(TransportErrorKind::Connect))
        .reply(Reply::status(500));
    let s = setup(dispatcher, RetryPolicy::relay_helpdesk()).await;
    let (id, ty) = ticket();
    let ids = s.outbox.publish(id, ty, &json!({}), &[]).await.unwrap();
    let store = s.outbox.store();
    // Immediately, then 1 min, 5 min, 30 min after each failure.
    let mut expected_due = T0;
    for (n, delay) in [(1, 60), (2, 5 * 60), (3, 30 * 60)] {
        s.clock.set(expected_due);
        assert_eq!(s.outbox.run_once().await.unwrap(), 1, "attempt {n}");
        expected_due += time::Duration::seconds(delay);
        let d = store.delivery(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            d.state(),
            &DeliveryState::Pending {
                due_at: expected_due
            }
        );
        // Not due a second early.
        s.clock.set(expected_due - time::Duration::seconds(1));
        assert_eq!(s.outbox.run_once().await.unwrap(), 0);
        assert_eq!(store.next_due().await.unwrap(), Some(expected_due));
    }
    s.clock.set(expected_due);
    assert_eq!(s.outbox.run_once().await.unwrap(), 1);
    let d = store.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Delivered);
    let attempts = store.attempts(&ids[0]).await.unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.number(), a.status(), a.error_kind()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some(503), None),
            (2, None, Some(TransportErrorKind::Connect)),
            (3, Some(500), None),
            (4, Some(200), None),
        ]
    );
    assert_eq!(attempts[0].response_excerpt(), Some("down"));
    // Each attempt was signed with its own timestamp, the id unchanged.
    let stamps: Vec<_> = s
        .outbox
        .dispatcher()
        .requests()
        .iter()
        .map(|r| {
            (
                r.request.headers()["webhook-id"].clone(),
                r.request.headers()["webhook-timestamp"].clone(),
            )
        })
        .collect();
    assert_eq!(stamps.len(), 4);
    assert!(stamps.iter().all(|(id, _)| id == "msg_1"));
    let mut times: Vec<_> = stamps.iter().map(|(_, t)| t.clone()).collect();
    times.dedup();
    assert_eq!(times.len(), 4);
}

#[tokio::test]
async fn exhausted_policy_fails_and_manual_retry_resends() {
    let dispatcher = ScriptedDispatcher::new().otherwise(Reply::status(503));
    let s = setup(dispatcher, RetryPolicy::raven()).await;
    let (id, ty) = ticket();
    let ids = s.outbox.publish(id, ty, &json!({}), &[]).await.unwrap();
    let store = s.outbox.store();
    for _ in 0..10 {
        s.outbox.run_once().await.unwrap();
        s.clock.advance(Duration::from_secs(10));
    }
    let d = store.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Failed);
    assert_eq!(store.attempts(&ids[0]).await.unwrap().len(), 4);

    s.outbox.retry(&ids[0]).await.unwrap();
    assert_eq!(s.outbox.run_once().await.unwrap(), 1);
    assert_eq!(store.attempts(&ids[0]).await.unwrap().len(), 5);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let dispatcher =
        ScriptedDispatcher::new().reply(Reply::status(429).header("Retry-After", "120"));
    let s = setup(dispatcher, RetryPolicy::relay_helpdesk()).await;
    let (id, ty) = ticket();
    let ids = s.outbox.publish(id, ty, &json!({}), &[]).await.unwrap();
    s.outbox.run_once().await.unwrap();
    let d = s.outbox.store().delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        d.state(),
        &DeliveryState::Pending {
            due_at: T0 + time::Duration::seconds(120)
        }
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_holds_new_events_until_enabled() {
    let dispatcher = ScriptedDispatcher::new().reply_for(A, Reply::status(410));
    let s = setup(dispatcher, RetryPolicy::default()).await;
    let store = s.outbox.store();
    let (id, ty) = ticket();
    let first = s
        .outbox
        .publish(id, ty.clone(), &json!({}), &[])
        .await
        .unwrap();
    s.outbox.run_once().await.unwrap();
    let d = store.delivery(&first[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Failed);
    let ep_a = "ep_a".parse().unwrap();
    assert!(!store.endpoint(&ep_a).await.unwrap().unwrap().is_enabled());

    // Later events for the disabled endpoint are held, not attempted.
    let held = s
        .outbox
        .publish("msg_2".parse().unwrap(), ty.clone(), &json!({}), &[])
        .await
        .unwrap();
    s.outbox.run_once().await.unwrap();
    let d = store.delivery(&held[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Held);
    assert_eq!(s.outbox.dispatcher().requests().len(), 1);

    s.outbox.enable_endpoint(&ep_a).await.unwrap();
    assert_eq!(s.outbox.run_once().await.unwrap(), 1);
    let d = store.delivery(&held[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Delivered);
}

#[tokio::test]
async fn channels_route_events_to_tenants() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    s.outbox
        .add_endpoint(
            Endpoint::builder(
                "ep_tenant".parse().unwrap(),
                "https://tenant.example.com/hooks",
                Scheme::standard(),
                s.secret.clone(),
            )
            .channel("tenant_42")
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let (_, ty) = ticket();
    let to_42 = s
        .outbox
        .publish(
            "m42".parse().unwrap(),
            ty.clone(),
            &json!({}),
            &["tenant_42"],
        )
        .await
        .unwrap();
    assert_eq!(to_42.len(), 2, "ep_a (no channels) and ep_tenant");
    let to_7 = s
        .outbox
        .publish("m7".parse().unwrap(), ty, &json!({}), &["tenant_7"])
        .await
        .unwrap();
    assert_eq!(to_7.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn workers_deliver_and_shut_down() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    let workers = s.outbox.start(2);
    let (id, ty) = ticket();
    let ids = s.outbox.publish(id, ty, &json!({}), &[]).await.unwrap();
    let store = s.outbox.store();
    for _ in 0..100 {
        if store
            .delivery(&ids[0])
            .await
            .unwrap()
            .is_some_and(|d| d.state().kind() == StateKind::Delivered)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = store.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Delivered);
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn replay_resends_events_since_a_time_as_new_deliveries() {
    let s = setup(ScriptedDispatcher::new(), RetryPolicy::default()).await;
    let (_, ty) = ticket();
    let first = s
        .outbox
        .publish("m_old".parse().unwrap(), ty.clone(), &json!({}), &[])
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(3600));
    let cutoff = T0 + time::Duration::minutes(30);
    let second = s
        .outbox
        .publish("m_new".parse().unwrap(), ty, &json!({}), &[])
        .await
        .unwrap();
    s.outbox.run_once().await.unwrap();
    let ep_a = "ep_a".parse().unwrap();
    let replayed = s.outbox.replay(&ep_a, cutoff).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert!(!first.contains(&replayed[0]) && !second.contains(&replayed[0]));
    let d = s
        .outbox
        .store()
        .delivery(&replayed[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.event_id().as_str(), "m_new");
    s.outbox.run_once().await.unwrap();
    let ids: Vec<String> = s
        .outbox
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
    assert_eq!(ids, ["m_old", "m_new", "m_new"]);
}

#[tokio::test]
async fn send_test_returns_the_attempt_synchronously() {
    let dispatcher = ScriptedDispatcher::new().reply_for(B, Reply::status(500).body("boom"));
    let s = setup(dispatcher, RetryPolicy::default()).await;
    let attempt = s.outbox.send_test(&"ep_b".parse().unwrap()).await.unwrap();
    assert_eq!(attempt.status(), Some(500));
    assert_eq!(attempt.response_excerpt(), Some("boom"));
    let sent = s.outbox.dispatcher().requests();
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(sent[0].request.body()).unwrap();
    assert_eq!(body["type"], "test.webhook");
    // Nothing was queued.
    assert!(s
        .outbox
        .store()
        .deliveries(&DeliveryQuery::default())
        .await
        .unwrap()
        .is_empty());
    assert!(s.outbox.send_test(&"nope".parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_cached_and_refreshed_once_on_401() {
    use hookway::endpoint::{Auth, Credential};
    const TOKEN_URL: &str = "https://auth.example.com/token";
    const HOOK: &str = "https://oauth.example.com/hooks";
    let token = |t: &str| {
        Reply::status(200).body(format!(
            r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":3600}}"#
        ))
    };
    let dispatcher = ScriptedDispatcher::new()
        .reply_for(TOKEN_URL, token("t1"))
        .reply_for(TOKEN_URL, token("t2"))
        .reply_for(HOOK, Reply::status(401));
    let clock = ManualClock::new(T0);
    let outbox = Outbox::with_config(
        MemoryStore::new(),
        dispatcher,
        OutboxConfig::default(),
        clock.clone(),
    );
    outbox
        .add_endpoint(
            Endpoint::builder(
                "ep_oauth".parse().unwrap(),
                HOOK,
                Scheme::standard(),
                Secret::generate(),
            )
            .auth(Auth::OAuth2ClientCredentials {
                token_url: TOKEN_URL.parse().unwrap(),
                client_id: "client".into(),
                client_secret: Credential::new("s3cret"),
                scope: None,
            })
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let (id, ty) = ticket();
    let ids = outbox
        .publish(id, ty.clone(), &json!({}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    let seen: Vec<(String, Option<String>)> = outbox
        .dispatcher()
        .requests()
        .iter()
        .map(|r| {
            (
                r.request.uri().to_string(),
                r.request
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        })
        .collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0].0, TOKEN_URL);
    assert_eq!(seen[1], (HOOK.to_owned(), Some("Bearer t1".to_owned())));
    assert_eq!(seen[2].0, TOKEN_URL);
    assert_eq!(seen[3], (HOOK.to_owned(), Some("Bearer t2".to_owned())));
    let d = outbox.store().delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state().kind(), StateKind::Delivered);
    assert_eq!(outbox.store().attempts(&ids[0]).await.unwrap().len(), 1);

    // The cached token serves the next event: no token request.
    outbox
        .publish("msg_2".parse().unwrap(), ty, &json!({}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    let sent = outbox.dispatcher().requests();
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[4].request.headers()["authorization"], "Bearer t2");
}

#[tokio::test(start_paused = true)]
async fn workers_prune_delivered_deliveries_after_the_retention_and_keep_failed_ones() {
    // The first event is delivered; the second is refused for good (400).
    let dispatcher = ScriptedDispatcher::new()
        .reply(Reply::status(200))
        .reply(Reply::status(400));
    let clock = ManualClock::new(T0);
    let mut config = OutboxConfig::default();
    config.retention = Some(Duration::from_secs(3600));
    let outbox = Outbox::with_config(MemoryStore::new(), dispatcher, config, clock.clone());
    outbox
        .add_endpoint(
            Endpoint::builder(
                "ep_a".parse().unwrap(),
                A,
                Scheme::standard(),
                Secret::generate(),
            )
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let ty: EventType = "ticket.created".parse().unwrap();
    let delivered = outbox
        .publish("msg_1".parse().unwrap(), ty.clone(), &json!({"n": 1}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    let failed = outbox
        .publish("msg_2".parse().unwrap(), ty.clone(), &json!({"n": 2}), &[])
        .await
        .unwrap();
    outbox.run_once().await.unwrap();
    let store = outbox.store();
    assert_eq!(store.delivery_count(), 2);
    assert!(matches!(
        store.delivery(&failed[0]).await.unwrap().unwrap().state(),
        DeliveryState::Failed { .. }
    ));

    // Younger than the retention: kept by a worker pass.
    clock.advance(Duration::from_secs(3599));
    let workers = outbox.start(1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    workers.shutdown(Duration::from_secs(1)).await;
    assert_eq!(store.delivery_count(), 2);

    // Older: the delivered one, its attempts and its event are gone, so the
    // same id publishes anew; the failed one stays until asked.
    clock.advance(Duration::from_secs(120));
    let workers = outbox.start(1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    workers.shutdown(Duration::from_secs(1)).await;
    assert!(store.delivery(&delivered[0]).await.unwrap().is_none());
    assert!(store.attempts(&delivered[0]).await.unwrap().is_empty());
    assert!(store
        .event(&"msg_1".parse().unwrap())
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.attempts(&failed[0]).await.unwrap().len(), 1);
    assert_eq!((store.delivery_count(), store.event_count()), (1, 1));
    let again = outbox
        .publish("msg_1".parse().unwrap(), ty, &json!({"n": 1}), &[])
        .await
        .unwrap();
    assert_ne!(again, delivered);

    let pruned = outbox
        .prune(hookway::store::Prune::delivered_before(clock.now()).and_failed_before(clock.now()))
        .await
        .unwrap();
    assert_eq!(pruned, 1, "the failed delivery; the new one is pending");
    assert!(store.delivery(&failed[0]).await.unwrap().is_none());
    assert_eq!((store.delivery_count(), store.event_count()), (1, 1));
}
