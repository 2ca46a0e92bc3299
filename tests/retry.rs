//! Properties of retry policies and classification, over the public API.

use std::time::Duration;

use hookway::retry::{
    Classifier, FailureCause, Jitter, Outcome, RetryPolicy, SplitMix64, TransportErrorKind,
};
use http::{header::RETRY_AFTER, HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2025-01-01 12:00 UTC);

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)]
}

/// A valid exponential policy and its cap on a single delay.
fn exponential() -> impl Strategy<Value = (RetryPolicy, Duration)> {
    (
        1_u64..=3_600_000,
        1.0_f64..16.0,
        0_u64..=86_400_000,
        1_u32..=64,
        jitter(),
    )
        .prop_map(|(initial_ms, factor, extra_ms, attempts, jitter)| {
            let initial = Duration::from_millis(initial_ms);
            let max_delay = initial + Duration::from_millis(extra_ms);
            let policy = RetryPolicy::exponential()
                .with_initial_delay(initial)
                .with_factor(factor)
                .with_max_delay(max_delay)
                .with_max_attempts(attempts)
                .with_jitter(jitter)
                .build()
                .expect("valid settings");
            (policy, max_delay)
        })
}

/// A valid fixed policy and its longest delay.
fn fixed() -> impl Strategy<Value = (RetryPolicy, Duration)> {
    (
        prop::collection::vec(0_u64..=100_000, 1..12),
        any::<bool>(),
        1_u32..=40,
    )
        .prop_map(|(secs, repeat, attempts)| {
            let delays: Vec<_> = secs.iter().copied().map(Duration::from_secs).collect();
            let longest = delays.iter().copied().max().unwrap_or_default();
            let builder = RetryPolicy::fixed(delays).with_max_attempts(attempts);
            let builder = if repeat {
                builder.repeat_last()
            } else {
                builder
            };
            (builder.build().expect("valid settings"), longest)
        })
}

fn policy() -> impl Strategy<Value = (RetryPolicy, Duration)> {
    prop_oneof![
        exponential(),
        fixed(),
        Just((
            RetryPolicy::standard_webhooks(),
            Duration::from_secs(24 * 3600)
        )),
        Just((RetryPolicy::hook0(), Duration::from_secs(10 * 3600))),
    ]
}

fn server_error() -> Outcome {
    Outcome::Retryable {
        cause: FailureCause::Status(StatusCode::INTERNAL_SERVER_ERROR),
        not_before: None,
    }
}

/// An outcome from a response or transport error a flaky endpoint might give.
fn failure() -> impl Strategy<Value = (Option<u16>, Option<String>, u8)> {
    (
        prop::option::of(prop_oneof![Just(429_u16), Just(503), 300_u16..=599]),
        prop::option::of(prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[0-9]{1,30}",
            "[ -~]{0,40}",
        ]),
        0_u8..6,
    )
}

fn classify(
    classifier: &Classifier,
    (status, retry_after, kind): &(Option<u16>, Option<String>, u8),
) -> Outcome {
    let Some(status) = status else {
        let kind = match kind {
            0 => TransportErrorKind::Timeout,
            1 => TransportErrorKind::Connect,
            2 => TransportErrorKind::Tls,
            3 => TransportErrorKind::Dns,
            4 => TransportErrorKind::RefusedByPolicy,
            _ => TransportErrorKind::Other,
        };
        return classifier.classify_transport_error(kind);
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(RETRY_AFTER, value);
    }
    let status = StatusCode::from_u16(*status).expect("valid status");
    classifier.classify_response(status, &headers, NOW)
}

proptest! {
    #[test]
    fn exponential_delays_never_exceed_the_cap(
        (policy, max_delay) in exponential(),
        attempt in any::<u32>(),
        age_ms in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let mut rng = SplitMix64::from_seed(seed);
        let age = Duration::from_millis(age_ms);
        if let Some(delay) = policy.next_delay(attempt, age, &server_error(), &mut rng) {
            prop_assert!(delay <= max_delay, "{delay:?} > {max_delay:?}");
        }
        for nominal in policy.schedule() {
            prop_assert!(nominal <= max_delay);
        }
    }

    #[test]
    fn retry_after_never_stretches_past_its_maximum(
        (policy, longest) in policy(),
        failure in failure(),
        max_retry_after_s in 0_u64..=7200,
        floor_s in 0_u64..=60,
        attempt in 1_u32..30,
        seed in any::<u64>(),
    ) {
        let classifier = Classifier::new()
            .with_max_retry_after(Duration::from_secs(max_retry_after_s))
            .with_throttle_floor(Duration::from_secs(floor_s));
        let outcome = classify(&classifier, &failure);
        if let Outcome::Retryable { not_before: Some(not_before), .. } = outcome {
            prop_assert!(not_before <= classifier.max_retry_after().max(classifier.throttle_floor()));
        }
        let mut rng = SplitMix64::from_seed(seed);
        if let Some(delay) = policy.next_delay(attempt, Duration::ZERO, &outcome, &mut rng) {
            let bound = longest.max(classifier.max_retry_after()).max(classifier.throttle_floor());
            prop_assert!(delay <= bound, "{delay:?} > {bound:?}");
        }
    }

    #[test]
    fn attempts_never_exceed_the_caps(
        (policy, _) in policy(),
        failures in prop::collection::vec(failure(), 1..80),
        attempt_ms in prop::collection::vec(0_u64..60_000, 80),
        max_age_s in prop::option::of(0_u64..1_000_000),
        seed in any::<u64>(),
    ) {
        let policy = match max_age_s {
            Some(s) => policy.with_max_age(Duration::from_secs(s)),
            None => policy,
        };
        let classifier = Classifier::new();
        let mut rng = SplitMix64::from_seed(seed);
        let mut age = Duration::ZERO;
        let mut attempts = 1_u32;
        for (failure, ms) in failures.iter().cycle().zip(attempt_ms.iter().cycle()) {
            // The attempt itself takes time before it fails.
            age += Duration::from_millis(*ms);
            let outcome = classify(&classifier, failure);
            let Some(delay) = policy.next_delay(attempts, age, &outcome, &mut rng) else {
                break;
            };
            age += delay;
            attempts += 1;
            prop_assert!(attempts <= policy.max_attempts());
            if let Some(max_age) = policy.max_age() {
                prop_assert!(age <= max_age);
            }
        }
        prop_assert!(attempts <= policy.max_attempts());
    }

    #[test]
    fn any_retry_after_bytes_are_safe(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            headers.insert(RETRY_AFTER, value);
        }
        let outcome = Classifier::new().classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers, NOW);
        prop_assert!(matches!(outcome, Outcome::Retryable { .. }), "{:?}", outcome);
    }
}

/// The whole loop for one delivery: an endpoint that is down, then throttles,
/// then accepts.
#[test]
fn a_delivery_end_to_end() {
    let classifier = Classifier::default();
    let policy = RetryPolicy::default();
    let mut rng = SplitMix64::from_seed(7);
    let mut headers = HeaderMap::new();

    let down = classifier.classify_transport_error(TransportErrorKind::Connect);
    assert_eq!(
        policy.next_delay(1, Duration::ZERO, &down, &mut rng),
        Some(Duration::from_secs(5))
    );

    headers.insert(RETRY_AFTER, HeaderValue::from_static("900"));
    let throttled = classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, NOW);
    assert_eq!(
        policy.next_delay(2, Duration::from_secs(5), &throttled, &mut rng),
        Some(Duration::from_secs(900))
    );

    let ok = classifier.classify_response(StatusCode::NO_CONTENT, &HeaderMap::new(), NOW);
    assert!(ok.is_delivered());
    assert_eq!(
        policy.next_delay(3, Duration::from_secs(905), &ok, &mut rng),
        None
    );

    let gone = classifier.classify_response(StatusCode::GONE, &HeaderMap::new(), NOW);
    assert!(matches!(
        gone,
        Outcome::Permanent {
            disable_endpoint: true,
            ..
        }
    ));
}
