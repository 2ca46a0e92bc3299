//! The delivery state machine over its public API, on a fixed clock with a
//! seeded RNG: every transition, every refused one, exact retry times.

use std::time::Duration;

use hookway::delivery::{
    Action, AttemptFailure, AttemptOutcome, AttemptReport, Claim, Completed, Delivery, DeliveryId,
    DeliveryState, EndpointId, FailureReason, Next, StateKind, TransitionError, MAX_ERROR_MESSAGE,
    MAX_EXCERPT,
};
use hookway::dispatch::{TransportError, TransportErrorKind};
use hookway::retry::{Classifier, FailureCause, Outcome, RetryPolicy, SplitMix64};
use hookway::{EventType, MessageId};
use http::header::RETRY_AFTER;
use http::StatusCode;
use proptest::prelude::*;
use time::macros::datetime;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2025-01-01 12:00 UTC);
const LEASE: Duration = Duration::from_secs(60);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t + time::Duration::try_from(d).unwrap()
}

fn delivery() -> Delivery {
    Delivery::new(
        DeliveryId::from_static("dlv_test"),
        MessageId::new("msg_test").unwrap(),
        EventType::from_static("ticket.created"),
        EndpointId::from_static("ep_support"),
        T0,
    )
}

/// Completes `claim` with an HTTP response of `status` (and optional
/// `Retry-After`) received at `now`, the attempt having started at the claim.
fn respond(
    d: &mut Delivery,
    claim: &Claim,
    status: u16,
    retry_after: Option<&str>,
    policy: &RetryPolicy,
    now: OffsetDateTime,
) -> Result<Completed, TransitionError> {
    let mut builder = http::Response::builder().status(status);
    if let Some(value) = retry_after {
        builder = builder.header(RETRY_AFTER, value);
    }
    let response = builder.body(b"body".to_vec()).unwrap();
    let duration = Duration::try_from(now - claim.claimed_at()).unwrap_or_default();
    let report =
        AttemptReport::from_response(&response, &Classifier::new(), claim.claimed_at(), duration);
    d.complete(claim, report, policy, now, &mut SplitMix64::from_seed(1))
}

fn fail_with(d: &mut Delivery, claim: &Claim, kind: TransportErrorKind) -> Completed {
    let error = TransportError::new(kind, "it broke");
    let report = AttemptReport::from_transport_error(
        &error,
        &Classifier::new(),
        claim.claimed_at(),
        Duration::from_millis(5),
    );
    d.complete(
        claim,
        report,
        &RetryPolicy::relay_helpdesk(),
        claim.claimed_at(),
        &mut SplitMix64::from_seed(1),
    )
    .unwrap()
}

/// A delivery that has failed for good (one 404).
fn failed() -> Delivery {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(&mut d, &claim, 404, None, &RetryPolicy::default(), T0).unwrap();
    d
}

fn delivered() -> Delivery {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(&mut d, &claim, 200, None, &RetryPolicy::default(), T0).unwrap();
    d
}

fn invalid(action: Action, state: StateKind) -> TransitionError {
    TransitionError::InvalidState { action, state }
}

// --- claim -------------------------------------------------------------------

#[test]
fn new_delivery_is_pending_and_due() {
    let d = delivery();
    assert_eq!(d.state(), &DeliveryState::Pending { due_at: T0 });
    assert_eq!(d.created_at(), T0);
    assert_eq!(d.attempts(), 0);
    assert_eq!(d.claims(), 0);
    assert_eq!(d.first_attempt_at(), None);
    assert_eq!(d.last_attempt(), None);
    assert_eq!(d.next_attempt_at(), Some(T0));
    assert!(d.is_claimable(T0));
    assert!(!d.is_claimable(T0 - time::Duration::SECOND));
}

#[test]
fn claim_a_due_delivery() {
    let mut d = delivery();
    let now = at(T0, secs(3));
    let claim = d.claim(now, LEASE).unwrap();
    assert_eq!(claim.delivery_id(), d.id());
    assert_eq!(claim.attempt(), 1);
    assert_eq!(claim.token(), 1);
    assert_eq!(claim.due_at(), T0);
    assert_eq!(claim.claimed_at(), now);
    assert_eq!(claim.lease_until(), at(now, LEASE));
    assert!(!claim.is_takeover());
    assert_eq!(
        d.state(),
        &DeliveryState::InFlight {
            attempt: 1,
            claimed_at: now,
            lease_until: at(now, LEASE)
        }
    );
    assert_eq!(d.next_attempt_at(), Some(at(now, LEASE)));
    assert_eq!(d.claims(), 1);
    assert_eq!(d.attempts(), 0);
}

#[test]
fn claim_refusals_change_nothing() {
    // Not due yet.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(
        &mut d,
        &claim,
        503,
        None,
        &RetryPolicy::relay_helpdesk(),
        T0,
    )
    .unwrap();
    let before = d.clone();
    assert_eq!(
        d.claim(at(T0, secs(59)), LEASE),
        Err(TransitionError::NotDue {
            due_at: at(T0, secs(60))
        })
    );
    assert_eq!(d, before);

    // Leased to someone else.
    let mut d = delivery();
    d.claim(T0, LEASE).unwrap();
    let before = d.clone();
    assert_eq!(
        d.claim(at(T0, secs(59)), LEASE),
        Err(TransitionError::Leased {
            lease_until: at(T0, LEASE)
        })
    );
    assert_eq!(d, before);

    // Terminal or held.
    for (mut d, kind) in [
        (delivered(), StateKind::Delivered),
        (failed(), StateKind::Failed),
    ] {
        let before = d.clone();
        assert_eq!(
            d.claim(at(T0, secs(86_400)), LEASE),
            Err(invalid(Action::Claim, kind))
        );
        assert_eq!(d, before);
    }
    let mut d = delivery();
    d.hold(T0).unwrap();
    assert_eq!(
        d.claim(T0, LEASE),
        Err(invalid(Action::Claim, StateKind::Held))
    );
}

// --- complete ----------------------------------------------------------------

#[test]
fn success_delivers() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(
        &mut d,
        &claim,
        204,
        None,
        &RetryPolicy::default(),
        at(T0, secs(1)),
    )
    .unwrap();
    assert_eq!(done.next, Next::Delivered);
    assert!(!done.disable_endpoint());
    assert_eq!(
        d.state(),
        &DeliveryState::Delivered {
            at: at(T0, secs(1))
        }
    );
    assert!(d.state().is_terminal());
    assert_eq!(d.attempts(), 1);
    assert_eq!(d.first_attempt_at(), Some(T0));
    assert_eq!(d.next_attempt_at(), None);

    let attempt = &done.attempt;
    assert_eq!(attempt.number(), 1);
    assert_eq!(attempt.started_at(), T0);
    assert_eq!(attempt.duration(), secs(1));
    assert_eq!(attempt.status(), Some(204));
    assert_eq!(attempt.error_kind(), None);
    assert_eq!(attempt.error_message(), None);
    assert_eq!(attempt.response_excerpt(), Some("body"));
    assert_eq!(attempt.outcome(), AttemptOutcome::Delivered);
    assert_eq!(d.last_attempt(), Some(&attempt.summary()));
}

/// Relay's helpdesk schedule through a run of 503s: attempts at once, then
/// 1 min, 5 min, 30 min, 2 h and 8 h after each failure, then failed.
#[test]
fn relay_helpdesk_schedule_through_503s() {
    let policy = RetryPolicy::relay_helpdesk();

    // Instant attempts: the nominal times, the last 10 h 36 min after the first.
    let mut d = delivery();
    let mut due = Vec::new();
    let mut now = T0;
    loop {
        let claim = d.claim(now, LEASE).unwrap();
        due.push(now);
        let done = respond(&mut d, &claim, 503, None, &policy, now).unwrap();
        assert_eq!(done.attempt.number(), claim.attempt());
        match done.next {
            Next::RetryAt(next) => now = next,
            Next::Failed(reason) => {
                assert_eq!(
                    reason,
                    FailureReason::Exhausted {
                        cause: AttemptFailure::Status(503)
                    }
                );
                assert!(!done.disable_endpoint());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        due,
        [
            datetime!(2025-01-01 12:00 UTC),
            datetime!(2025-01-01 12:01 UTC),
            datetime!(2025-01-01 12:06 UTC),
            datetime!(2025-01-01 12:36 UTC),
            datetime!(2025-01-01 14:36 UTC),
            datetime!(2025-01-01 22:36 UTC),
        ]
    );
    assert_eq!(d.attempts(), 6);
    assert_eq!(d.attempts(), policy.max_attempts());
    assert!(matches!(
        d.state(),
        DeliveryState::Failed { at, .. } if *at == datetime!(2025-01-01 22:36 UTC)
    ));

    // Slow attempts (250 ms each, claimed 10 ms late): each delay counts from
    // when the failure was processed.
    let mut d = delivery();
    let mut now = T0;
    let mut due = Vec::new();
    let mut completed = Vec::new();
    loop {
        now += time::Duration::milliseconds(10);
        let claim = d.claim(now, LEASE).unwrap();
        now += time::Duration::milliseconds(250);
        completed.push(now);
        match respond(&mut d, &claim, 503, None, &policy, now)
            .unwrap()
            .next
        {
            Next::RetryAt(next) => {
                due.push(next);
                now = next;
            }
            Next::Failed(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        due,
        [
            datetime!(2025-01-01 12:01:00.26 UTC),
            datetime!(2025-01-01 12:06:00.52 UTC),
            datetime!(2025-01-01 12:36:00.78 UTC),
            datetime!(2025-01-01 14:36:01.04 UTC),
            datetime!(2025-01-01 22:36:01.30 UTC),
        ]
    );
    assert_eq!(completed.len(), 6);
}

#[test]
fn retry_after_is_honoured() {
    let policy = RetryPolicy::relay_helpdesk();

    // Longer than the schedule's 1 min: the receiver's wish wins.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(&mut d, &claim, 503, Some("600"), &policy, T0).unwrap();
    assert_eq!(done.next, Next::RetryAt(at(T0, secs(600))));
    assert_eq!(
        done.attempt.outcome(),
        AttemptOutcome::Retryable {
            cause: AttemptFailure::Status(503),
            not_before: Some(secs(600))
        }
    );
    assert_eq!(
        d.state(),
        &DeliveryState::Pending {
            due_at: at(T0, secs(600))
        }
    );

    // Shorter: the schedule still backs off.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(&mut d, &claim, 503, Some("10"), &policy, T0).unwrap();
    assert_eq!(done.next, Next::RetryAt(at(T0, secs(60))));

    // An HTTP date, resolved against when the response arrived (T0 + 2 s).
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(
        &mut d,
        &claim,
        429,
        Some("Wed, 01 Jan 2025 12:15:00 GMT"),
        &policy,
        at(T0, secs(2)),
    )
    .unwrap();
    assert_eq!(done.next, Next::RetryAt(datetime!(2025-01-01 12:15 UTC)));

    // A 429 always waits the throttle floor, even on a 1 s schedule.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(&mut d, &claim, 429, None, &RetryPolicy::raven(), T0).unwrap();
    assert_eq!(done.next, Next::RetryAt(at(T0, secs(5))));
}

#[test]
fn gone_fails_and_disables_the_endpoint() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = respond(&mut d, &claim, 410, None, &RetryPolicy::default(), T0).unwrap();
    let reason = FailureReason::Permanent {
        cause: AttemptFailure::Status(410),
        disable_endpoint: true,
    };
    assert_eq!(done.next, Next::Failed(reason));
    assert!(done.disable_endpoint());
    assert!(reason.disable_endpoint());
    assert_eq!(reason.cause(), Some(AttemptFailure::Status(410)));
    assert_eq!(d.state(), &DeliveryState::Failed { at: T0, reason });
    assert_eq!(d.attempts(), 1);
    assert_eq!(reason.to_string(), "permanent failure: HTTP 410 Gone");
}

#[test]
fn other_4xx_fail_at_once() {
    for status in [400, 401, 403, 404, 405, 409, 413, 422] {
        let mut d = delivery();
        let claim = d.claim(T0, LEASE).unwrap();
        let done = respond(
            &mut d,
            &claim,
            status,
            Some("5"),
            &RetryPolicy::default(),
            T0,
        )
        .unwrap();
        assert_eq!(
            done.next,
            Next::Failed(FailureReason::Permanent {
                cause: AttemptFailure::Status(status),
                disable_endpoint: false
            }),
            "{status}"
        );
        assert!(!done.disable_endpoint());
        assert_eq!(d.state().kind(), StateKind::Failed);
        assert_eq!(d.attempts(), 1);
    }
}

#[test]
fn transport_errors() {
    // A timeout is retried, no sooner than the throttle floor.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = fail_with(&mut d, &claim, TransportErrorKind::Timeout);
    assert_eq!(done.next, Next::RetryAt(at(T0, secs(60))));
    assert_eq!(done.attempt.status(), None);
    assert_eq!(done.attempt.error_kind(), Some(TransportErrorKind::Timeout));
    assert_eq!(done.attempt.error_message(), Some("it broke"));
    assert_eq!(done.attempt.response_excerpt(), None);
    assert_eq!(done.attempt.duration(), Duration::from_millis(5));

    // The SSRF guard's refusal is permanent.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let done = fail_with(&mut d, &claim, TransportErrorKind::RefusedByPolicy);
    assert_eq!(
        done.next,
        Next::Failed(FailureReason::Permanent {
            cause: AttemptFailure::Transport(TransportErrorKind::RefusedByPolicy),
            disable_endpoint: false
        })
    );
}

#[test]
fn attempt_records_are_bounded() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    // 'é' straddles the excerpt bound; an invalid byte comes first.
    let mut body = b"\xff".to_vec();
    body.extend("é".repeat(1000).bytes());
    let response = http::Response::builder().status(500).body(body).unwrap();
    let report = AttemptReport::from_response(&response, &Classifier::new(), T0, secs(1));
    let done = d
        .complete(
            &claim,
            report,
            &RetryPolicy::default(),
            T0,
            &mut SplitMix64::from_seed(0),
        )
        .unwrap();
    let excerpt = done.attempt.response_excerpt().unwrap();
    assert!(excerpt.len() <= MAX_EXCERPT);
    // U+FFFD (3 bytes) and 510 'é' (2 bytes each) = 1023 bytes: one more 'é' would not fit.
    assert_eq!(excerpt.len(), 1023);
    assert!(excerpt.starts_with("\u{FFFD}é"));

    let claim = d.claim(at(T0, secs(3600)), LEASE).unwrap();
    let error = TransportError::new(TransportErrorKind::Other, "ß".repeat(1000));
    let report = AttemptReport::from_transport_error(&error, &Classifier::new(), T0, secs(1));
    let done = d
        .complete(
            &claim,
            report,
            &RetryPolicy::default(),
            T0,
            &mut SplitMix64::from_seed(0),
        )
        .unwrap();
    let message = done.attempt.error_message().unwrap();
    assert_eq!(message.len(), MAX_ERROR_MESSAGE);
    assert!(message.chars().all(|c| c == 'ß'));
}

#[test]
fn report_from_an_outcome() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let outcome = Outcome::Retryable {
        cause: FailureCause::Status(StatusCode::BAD_GATEWAY),
        not_before: None,
    };
    // Status and error kind come from the outcome when not given.
    let report = AttemptReport::new(outcome, T0, secs(2)).with_body(b"upstream down");
    assert_eq!(report.outcome(), &outcome);
    let done = d
        .complete(
            &claim,
            report,
            &RetryPolicy::svix(),
            at(T0, secs(2)),
            &mut SplitMix64::from_seed(0),
        )
        .unwrap();
    assert_eq!(done.attempt.status(), Some(502));
    assert_eq!(done.attempt.response_excerpt(), Some("upstream down"));
    assert_eq!(done.next, Next::RetryAt(at(T0, secs(7))));
    assert_eq!(
        d.last_attempt().map(|a| (a.number, a.status)),
        Some((1, Some(502)))
    );
}

#[test]
fn age_cap_counts_from_the_first_attempt() {
    // Svix's schedule, but nothing later than 10 minutes after the first attempt.
    let policy = RetryPolicy::svix().with_max_age(secs(600));
    let mut d = delivery();
    // Created at T0, first attempted an hour later: the age starts then.
    let first = at(T0, secs(3600));
    let claim = d.claim(first, LEASE).unwrap();
    assert_eq!(
        respond(&mut d, &claim, 503, None, &policy, first)
            .unwrap()
            .next,
        Next::RetryAt(at(first, secs(5)))
    );
    assert_eq!(d.first_attempt_at(), Some(first));
    let claim = d.claim(at(first, secs(5)), LEASE).unwrap();
    assert_eq!(
        respond(&mut d, &claim, 503, None, &policy, at(first, secs(5)))
            .unwrap()
            .next,
        Next::RetryAt(at(first, secs(305)))
    );
    // 305 s + 30 min > 10 min: exhausted.
    let claim = d.claim(at(first, secs(305)), LEASE).unwrap();
    assert!(matches!(
        respond(&mut d, &claim, 503, None, &policy, at(first, secs(305)))
            .unwrap()
            .next,
        Next::Failed(FailureReason::Exhausted { .. })
    ));
}

// --- leases and stale claims -------------------------------------------------

#[test]
fn an_expired_lease_returns_the_delivery() {
    let mut d = delivery();
    let lost = d.claim(T0, LEASE).unwrap();
    // The worker dies. At the lease's end another takes over, same attempt number.
    let expiry = at(T0, LEASE);
    assert!(d.is_claimable(expiry));
    let current = d.claim(expiry, LEASE).unwrap();
    assert!(current.is_takeover());
    assert_eq!(current.attempt(), 1);
    assert_eq!(current.token(), 2);
    assert_eq!(current.due_at(), expiry);
    assert_eq!(d.attempts(), 0);
    assert_eq!(d.claims(), 2);

    // The old worker wakes up: its result and its release are refused.
    let before = d.clone();
    assert_eq!(
        respond(&mut d, &lost, 200, None, &RetryPolicy::default(), expiry),
        Err(TransitionError::StaleClaim {
            state: StateKind::InFlight
        })
    );
    assert_eq!(
        d.release(&lost, expiry),
        Err(TransitionError::StaleClaim {
            state: StateKind::InFlight
        })
    );
    assert_eq!(d, before);

    // The new one's result counts, once.
    let done = respond(&mut d, &current, 503, None, &RetryPolicy::default(), expiry).unwrap();
    assert_eq!(done.attempt.number(), 1);
    assert_eq!(d.attempts(), 1);
    // Even after the newer attempt is done, the old claim stays stale.
    let before = d.clone();
    assert_eq!(
        respond(&mut d, &lost, 200, None, &RetryPolicy::default(), expiry),
        Err(TransitionError::StaleClaim {
            state: StateKind::Pending
        })
    );
    assert_eq!(d, before);
}

#[test]
fn a_late_result_is_accepted_until_someone_takes_over() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let late = at(T0, secs(90));
    let done = respond(&mut d, &claim, 200, None, &RetryPolicy::default(), late).unwrap();
    assert_eq!(done.next, Next::Delivered);
}

#[test]
fn a_claim_completes_once() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(&mut d, &claim, 503, None, &RetryPolicy::default(), T0).unwrap();
    let before = d.clone();
    assert_eq!(
        respond(&mut d, &claim, 200, None, &RetryPolicy::default(), T0),
        Err(TransitionError::StaleClaim {
            state: StateKind::Pending
        })
    );
    assert_eq!(
        d.release(&claim, T0),
        Err(TransitionError::StaleClaim {
            state: StateKind::Pending
        })
    );
    assert_eq!(d, before);

    // A released claim is spent too.
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    d.release(&claim, T0).unwrap();
    assert_eq!(
        respond(&mut d, &claim, 200, None, &RetryPolicy::default(), T0),
        Err(TransitionError::StaleClaim {
            state: StateKind::Pending
        })
    );
}

#[test]
fn a_claim_only_fits_its_own_delivery() {
    let mut a = delivery();
    let mut b = Delivery::new(
        DeliveryId::from_static("dlv_other"),
        MessageId::new("msg_test").unwrap(),
        EventType::from_static("ticket.created"),
        EndpointId::from_static("ep_other"),
        T0,
    );
    let claim_a = a.claim(T0, LEASE).unwrap();
    b.claim(T0, LEASE).unwrap();
    let err = respond(&mut b, &claim_a, 200, None, &RetryPolicy::default(), T0).unwrap_err();
    assert_eq!(
        err,
        TransitionError::WrongDelivery {
            claim: DeliveryId::from_static("dlv_test"),
            delivery: DeliveryId::from_static("dlv_other"),
        }
    );
    assert_eq!(
        err.to_string(),
        "the claim belongs to delivery dlv_test, not dlv_other"
    );
    assert!(b.release(&claim_a, T0).is_err());
}

#[test]
fn release_does_not_count_an_attempt() {
    let policy = RetryPolicy::relay_helpdesk();
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(&mut d, &claim, 503, None, &policy, T0).unwrap();

    let t1 = at(T0, secs(60));
    let claim = d.claim(t1, LEASE).unwrap();
    assert_eq!(claim.attempt(), 2);
    let t2 = at(t1, secs(1));
    d.release(&claim, t2).unwrap();
    assert_eq!(d.state(), &DeliveryState::Pending { due_at: t2 });
    assert_eq!(d.attempts(), 1);
    assert_eq!(d.first_attempt_at(), Some(T0));

    // The next claim makes attempt 2 again, and the schedule goes on from there.
    let claim = d.claim(t2, LEASE).unwrap();
    assert_eq!(claim.attempt(), 2);
    let done = respond(&mut d, &claim, 503, None, &policy, t2).unwrap();
    assert_eq!(done.attempt.number(), 2);
    assert_eq!(done.next, Next::RetryAt(at(t2, secs(300))));
}

// --- hold, unhold, retry_now -------------------------------------------------

#[test]
fn hold_and_unhold() {
    let mut d = delivery();
    d.hold(T0).unwrap();
    assert_eq!(d.state(), &DeliveryState::Held { since: T0 });
    assert_eq!(d.next_attempt_at(), None);
    assert!(!d.is_claimable(at(T0, secs(86_400))));
    // Idempotent: the original time is kept.
    d.hold(at(T0, secs(5))).unwrap();
    assert_eq!(d.state(), &DeliveryState::Held { since: T0 });

    let t1 = at(T0, secs(7200));
    d.unhold(t1).unwrap();
    assert_eq!(d.state(), &DeliveryState::Pending { due_at: t1 });
    d.unhold(at(t1, secs(1))).unwrap();
    assert_eq!(d.state(), &DeliveryState::Pending { due_at: t1 });
    assert_eq!(d.claim(t1, LEASE).unwrap().attempt(), 1);
}

#[test]
fn hold_and_unhold_refusals() {
    let mut d = delivery();
    d.claim(T0, LEASE).unwrap();
    assert_eq!(d.hold(T0), Err(invalid(Action::Hold, StateKind::InFlight)));
    assert_eq!(
        d.unhold(T0),
        Err(invalid(Action::Unhold, StateKind::InFlight))
    );
    for (mut d, kind) in [
        (delivered(), StateKind::Delivered),
        (failed(), StateKind::Failed),
    ] {
        let before = d.clone();
        assert_eq!(d.hold(T0), Err(invalid(Action::Hold, kind)));
        assert_eq!(d.unhold(T0), Err(invalid(Action::Unhold, kind)));
        assert_eq!(d, before);
    }
}

#[test]
fn held_time_does_not_count_toward_the_age_cap() {
    let policy = RetryPolicy::svix().with_max_age(secs(3600));
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(&mut d, &claim, 503, None, &policy, T0).unwrap();
    // The endpoint is disabled for a day, then re-enabled.
    d.hold(at(T0, secs(1))).unwrap();
    let back = at(T0, secs(1 + 86_400));
    d.unhold(back).unwrap();
    assert_eq!(d.first_attempt_at(), Some(at(T0, secs(86_400))));
    let claim = d.claim(back, LEASE).unwrap();
    // Attempt 2 failed 1 s of budget time after the first: 5 min is allowed.
    assert_eq!(
        respond(&mut d, &claim, 503, None, &policy, back)
            .unwrap()
            .next,
        Next::RetryAt(at(back, secs(300)))
    );
}

#[test]
fn retry_now_gives_a_fresh_budget() {
    let policy = RetryPolicy::relay_helpdesk();
    let mut d = delivery();
    let mut now = T0;
    while d.state().kind() != StateKind::Failed {
        let claim = d.claim(now, LEASE).unwrap();
        if let Next::RetryAt(next) = respond(&mut d, &claim, 503, None, &policy, now)
            .unwrap()
            .next
        {
            now = next;
        }
    }
    assert_eq!(d.attempts(), 6);
    assert_eq!(d.budget_attempts(), 6);

    let t1 = datetime!(2025-01-03 9:00 UTC);
    d.retry_now(t1).unwrap();
    assert_eq!(d.state(), &DeliveryState::Pending { due_at: t1 });
    assert_eq!(d.attempts(), 6);
    assert_eq!(d.budget_attempts(), 0);
    assert_eq!(d.first_attempt_at(), None);
    assert_eq!(d.last_attempt().map(|a| a.number), Some(6));

    // Attempt numbers go on; the schedule starts over.
    let claim = d.claim(t1, LEASE).unwrap();
    assert_eq!(claim.attempt(), 7);
    let done = respond(&mut d, &claim, 503, None, &policy, t1).unwrap();
    assert_eq!(done.attempt.number(), 7);
    assert_eq!(done.next, Next::RetryAt(at(t1, secs(60))));
    assert_eq!(d.budget_attempts(), 1);
    assert_eq!(d.first_attempt_at(), Some(t1));
}

#[test]
fn retry_now_only_from_failed() {
    let mut pending = delivery();
    let mut in_flight = delivery();
    in_flight.claim(T0, LEASE).unwrap();
    let mut held = delivery();
    held.hold(T0).unwrap();
    for (d, kind) in [
        (&mut pending, StateKind::Pending),
        (&mut in_flight, StateKind::InFlight),
        (&mut held, StateKind::Held),
        (&mut delivered(), StateKind::Delivered),
    ] {
        let before = d.clone();
        let err = d.retry_now(T0).unwrap_err();
        assert_eq!(err, invalid(Action::RetryNow, kind));
        assert_eq!(*d, before);
    }
    assert_eq!(
        invalid(Action::RetryNow, StateKind::Delivered).to_string(),
        "cannot retry a delivery that is delivered"
    );
}

// --- ids and serde -----------------------------------------------------------

#[test]
fn ids() {
    let id = DeliveryId::generate_at(T0);
    assert!(id.as_str().starts_with("dlv_"));
    assert_eq!(id.as_str().parse::<DeliveryId>().unwrap(), id);
    assert!(DeliveryId::new("dlv 1").is_err());
    assert!(EndpointId::new("tenant:42.hooks").is_ok());
    assert!(EndpointId::new("x".repeat(129)).is_err());
    let json = serde_json::to_string(&EndpointId::from_static("ep_1")).unwrap();
    assert_eq!(json, r#""ep_1""#);
    assert!(serde_json::from_str::<EndpointId>(r#""ep 1""#).is_err());
}

#[test]
fn delivery_json_shape() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    respond(
        &mut d,
        &claim,
        503,
        Some("120"),
        &RetryPolicy::default(),
        at(T0, Duration::from_millis(1500)),
    )
    .unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "id": "dlv_test",
            "event_id": "msg_test",
            "event_type": "ticket.created",
            "endpoint_id": "ep_support",
            "created_at": "2025-01-01T12:00:00Z",
            "state": "pending",
            "due_at": "2025-01-01T12:02:01.5Z",
            "attempts": 1,
            "budget_start": 0,
            "claims": 1,
            "first_attempt_at": "2025-01-01T12:00:00Z",
            "last_attempt": {
                "number": 1,
                "started_at": "2025-01-01T12:00:00Z",
                "status": 503,
                "outcome": {
                    "result": "retryable",
                    "cause": {"status": 503},
                    "not_before_ms": 120000
                }
            }
        })
    );
}

#[test]
fn delivery_serde_round_trip_in_every_state() {
    let policy = RetryPolicy::default();
    let mut states = Vec::new();
    let mut d = delivery();
    states.push(d.clone());
    let claim = d.claim(T0, LEASE).unwrap();
    states.push(d.clone());
    respond(&mut d, &claim, 503, None, &policy, T0).unwrap();
    states.push(d.clone());
    let mut held = d.clone();
    held.hold(at(T0, secs(1))).unwrap();
    states.push(held);
    let claim = d.claim(at(T0, secs(5)), LEASE).unwrap();
    let mut gone = d.clone();
    respond(&mut gone, &claim, 410, None, &policy, at(T0, secs(5))).unwrap();
    states.push(gone.clone());
    gone.retry_now(at(T0, secs(100))).unwrap();
    states.push(gone);
    fail_with(&mut d, &claim, TransportErrorKind::RefusedByPolicy);
    states.push(d);
    states.push(delivered());

    for d in states {
        let json = serde_json::to_string(&d).unwrap();
        let back: Delivery = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d, "{json}");
        // The state alone round-trips too.
        let state = serde_json::to_string(d.state()).unwrap();
        assert_eq!(
            serde_json::from_str::<DeliveryState>(&state).unwrap(),
            *d.state()
        );
    }
}

#[test]
fn delivery_deserialize_checks_consistency() {
    let mut d = delivery();
    d.claim(T0, LEASE).unwrap();
    let mut json = serde_json::to_value(&d).unwrap();
    assert!(serde_json::from_value::<Delivery>(json.clone()).is_ok());
    json["attempt"] = 5.into();
    let err = serde_json::from_value::<Delivery>(json).unwrap_err();
    assert!(err.to_string().contains("attempts + 1"), "{err}");

    let mut json = serde_json::to_value(delivery()).unwrap();
    json["budget_start"] = 1.into();
    assert!(serde_json::from_value::<Delivery>(json).is_err());

    // Timestamps with an offset are read and kept as the same instant.
    let mut json = serde_json::to_value(delivery()).unwrap();
    json["due_at"] = "2025-01-01T14:00:00+02:00".into();
    let back: Delivery = serde_json::from_value(json).unwrap();
    assert_eq!(back.next_attempt_at(), Some(T0));
    assert_eq!(
        serde_json::to_value(&back).unwrap()["due_at"],
        "2025-01-01T12:00:00Z"
    );
}

#[test]
fn attempt_serde_round_trip() {
    let mut d = delivery();
    let claim = d.claim(T0, LEASE).unwrap();
    let error = TransportError::new(TransportErrorKind::Timeout, "no answer in 30 s");
    let report = AttemptReport::from_transport_error(
        &error,
        &Classifier::new(),
        T0,
        Duration::from_micros(30_000_123),
    );
    let done = d
        .complete(
            &claim,
            report,
            &RetryPolicy::default(),
            T0,
            &mut SplitMix64::from_seed(0),
        )
        .unwrap();
    let json = serde_json::to_value(&done.attempt).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "number": 1,
            "started_at": "2025-01-01T12:00:00Z",
            "duration_us": 30000123,
            "status": null,
            "error_kind": "timeout",
            "error_message": "no answer in 30 s",
            "response_excerpt": null,
            "outcome": {
                "result": "retryable",
                "cause": {"transport": "timeout"},
                "not_before_ms": 5000
            }
        })
    );
    let back: hookway::delivery::Attempt = serde_json::from_value(json).unwrap();
    assert_eq!(back, done.attempt);
}

// --- property ----------------------------------------------------------------

/// What happens to one claim.
#[derive(Clone, Debug)]
enum Step {
    /// The attempt finishes with this answer.
    Answer(Answer),
    /// The worker dies; the lease runs out and the next claim takes over.
    LeaseExpiry,
    /// The worker shuts down gracefully.
    Release,
}

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16, Option<u32>),
    Transport(TransportErrorKind),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        prop::sample::select(vec![
            200_u16, 204, 301, 400, 404, 408, 410, 429, 500, 502, 503
        ])
        .prop_flat_map(|s| (Just(s), prop::option::of(0_u32..7200)))
        .prop_map(|(s, ra)| Answer::Status(s, ra)),
        prop::sample::select(vec![
            TransportErrorKind::Timeout,
            TransportErrorKind::Connect,
            TransportErrorKind::Tls,
            TransportErrorKind::Dns,
            TransportErrorKind::RefusedByPolicy,
            TransportErrorKind::Other,
        ])
        .prop_map(Answer::Transport),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => answer().prop_map(Step::Answer),
        1 => Just(Step::LeaseExpiry),
        1 => Just(Step::Release),
    ]
}

fn policy() -> impl Strategy<Value = RetryPolicy> {
    prop_oneof![
        Just(RetryPolicy::relay_helpdesk()),
        Just(RetryPolicy::raven()),
        Just(RetryPolicy::svix()),
        Just(RetryPolicy::hook0()),
        Just(RetryPolicy::svix().with_max_age(Duration::from_secs(3600))),
        (prop::collection::vec(0_u64..600, 0..5), 1_u32..8).prop_map(|(delays, max)| {
            RetryPolicy::fixed(delays.into_iter().map(Duration::from_secs))
                .with_max_attempts(max)
                .build()
                .unwrap()
        }),
        (1_u64..120, 1_u32..10).prop_map(|(initial, max)| {
            RetryPolicy::exponential()
                .with_initial_delay(Duration::from_secs(initial))
                .with_max_delay(Duration::from_secs(initial * 100))
                .with_max_attempts(max)
                .build()
                .unwrap()
        }),
    ]
}

fn complete_with(
    d: &mut Delivery,
    claim: &Claim,
    answer: Answer,
    policy: &RetryPolicy,
    now: OffsetDateTime,
    rng: &mut SplitMix64,
) -> Result<Completed, TransitionError> {
    let started = claim.claimed_at();
    let duration = Duration::try_from(now - started).unwrap_or_default();
    let classifier = Classifier::new();
    match answer {
        Answer::Status(status, retry_after) => {
            let mut builder = http::Response::builder().status(status);
            if let Some(secs) = retry_after {
                builder = builder.header(RETRY_AFTER, secs.to_string());
            }
            let response = builder.body(Vec::<u8>::new()).unwrap();
            let report = AttemptReport::from_response(&response, &classifier, started, duration);
            d.complete(claim, report, policy, now, rng)
        }
        Answer::Transport(kind) => {
            let error = TransportError::new(kind, "");
            let report =
                AttemptReport::from_transport_error(&error, &classifier, started, duration);
            d.complete(claim, report, policy, now, rng)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens to its claims, a delivery reaches at most one
    /// terminal state and stays there, its attempts only grow and never
    /// exceed the policy's cap, and superseded claims never take effect.
    #[test]
    fn delivery_invariants(
        policy in policy(),
        steps in prop::collection::vec(step(), 0..40),
        seed in any::<u64>(),
        lease_secs in 1_u64..600,
        work_ms in 0_u64..5000,
    ) {
        let lease = Duration::from_secs(lease_secs);
        let mut rng = SplitMix64::from_seed(seed);
        let mut d = delivery();
        let mut now = T0;
        let mut terminal: Option<DeliveryState> = None;
        let mut attempts = 0;
        let mut expired: Option<Claim> = None;
        let mut spent: Vec<Claim> = Vec::new();

        for step in steps {
            // Wait until the delivery can be claimed.
            if let Some(next) = d.next_attempt_at() {
                now = now.max(next);
            }
            let claim = d.claim(now, lease);
            if let Some(done) = terminal {
                prop_assert_eq!(claim, Err(TransitionError::InvalidState {
                    action: Action::Claim,
                    state: done.kind(),
                }));
                prop_assert_eq!(*d.state(), done);
                continue;
            }
            let claim = claim.expect("a live delivery is claimable once due");
            prop_assert_eq!(claim.attempt(), d.attempts() + 1);
            prop_assert_eq!(claim.is_takeover(), expired.is_some());
            spent.extend(expired.take());

            match step {
                Step::Answer(answer) => {
                    now += time::Duration::milliseconds(i64::try_from(work_ms).unwrap());
                    let done = complete_with(&mut d, &claim, answer, &policy, now, &mut rng)
                        .expect("the current claim completes");
                    prop_assert_eq!(done.attempt.number(), claim.attempt());
                    let expected = match done.next {
                        Next::Delivered => DeliveryState::Delivered { at: now },
                        Next::RetryAt(due_at) => {
                            prop_assert!(due_at >= now);
                            DeliveryState::Pending { due_at }
                        }
                        Next::Failed(reason) => DeliveryState::Failed { at: now, reason },
                        other => panic!("unexpected {other:?}"),
                    };
                    prop_assert_eq!(*d.state(), expected);
                    if expected.is_terminal() {
                        terminal = Some(expected);
                    }
                    spent.push(claim);
                }
                Step::LeaseExpiry => {
                    // The worker vanishes; its claim stays current until taken over.
                    now = claim.lease_until();
                    expired = Some(claim);
                }
                Step::Release => {
                    d.release(&claim, now).expect("the current claim releases");
                    prop_assert_eq!(*d.state(), DeliveryState::Pending { due_at: now });
                    spent.push(claim);
                }
            }

            // Spent and superseded claims are refused and change nothing.
            for old in &spent {
                let before = d.clone();
                let answer = Answer::Status(200, None);
                let completed = complete_with(&mut d, old, answer, &policy, now, &mut rng);
                let stale = matches!(completed, Err(TransitionError::StaleClaim { .. }));
                prop_assert!(stale, "completed with a spent claim: {:?}", completed);
                let released = d.release(old, now);
                let stale = matches!(released, Err(TransitionError::StaleClaim { .. }));
                prop_assert!(stale, "released with a spent claim: {:?}", released);
                prop_assert_eq!(&d, &before);
            }

            prop_assert!(d.attempts() >= attempts);
            attempts = d.attempts();
            prop_assert!(d.attempts() <= policy.max_attempts());
            prop_assert_eq!(d.budget_attempts(), d.attempts());
            prop_assert!(u64::from(d.attempts()) <= d.claims());
            if let Some(done) = terminal {
                prop_assert_eq!(*d.state(), done);
            }
        }
    }
}
