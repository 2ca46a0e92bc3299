//! Allocation counts on the hot paths, measured with a counting global
//! allocator (this test binary only).

use hookway::{EventFilter, MessageId, Scheme, Secret, Signer, Verifier};
use time::macros::datetime;

#[test]
fn verify_allocates_nothing_for_every_scheme() {
    let now = datetime!(2026-03-15 10:30 UTC);
    let body = vec![b'x'; 4096];
    let id: MessageId = "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap();
    for scheme in [
        Scheme::standard(),
        Scheme::svix(),
        Scheme::github(),
        Scheme::shopify(),
        Scheme::stripe(),
        Scheme::hook0(),
        Scheme::slack(),
    ] {
        let secret = scheme.generate_secret();
        let headers = Signer::new(scheme.clone(), secret.clone())
            .unwrap()
            .sign(&id, now, &body)
            .unwrap();
        let verifier = Verifier::new(scheme.clone(), secret).unwrap();
        let mut ok = false;
        let info = allocation_counter::measure(|| {
            ok = verifier.verify_at(&headers, &body, now).is_ok();
        });
        assert!(ok, "{}", scheme.name());
        assert_eq!(info.count_total, 0, "{} verify allocated", scheme.name());
    }
}

#[test]
fn rejecting_a_bad_signature_allocates_nothing() {
    let now = datetime!(2026-03-15 10:30 UTC);
    let secret = Secret::generate();
    let verifier = Verifier::new(Scheme::standard(), secret.clone()).unwrap();
    let mut headers = Signer::new(Scheme::standard(), secret)
        .unwrap()
        .sign(&"msg_1".parse().unwrap(), now, b"{}")
        .unwrap();
    headers.insert(
        "webhook-signature",
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            .parse()
            .unwrap(),
    );
    let mut err = None;
    let info = allocation_counter::measure(|| {
        err = verifier.verify_at(&headers, b"{}", now).err();
    });
    assert!(matches!(
        err,
        Some(hookway::VerifyError::NoMatchingSignature)
    ));
    assert_eq!(info.count_total, 0);
}

#[cfg(feature = "ed25519")]
#[test]
fn v1a_verify_allocates_nothing() {
    use hookway::secret::Ed25519SecretKey;
    let now = datetime!(2026-03-15 10:30 UTC);
    let key = Ed25519SecretKey::generate();
    let headers = Signer::new(Scheme::standard(), key.clone())
        .unwrap()
        .sign(&"msg_1".parse().unwrap(), now, b"{}")
        .unwrap();
    let verifier = Verifier::new(Scheme::standard(), key.public_key()).unwrap();
    let mut ok = false;
    let info = allocation_counter::measure(|| {
        ok = verifier.verify_at(&headers, b"{}", now).is_ok();
    });
    assert!(ok);
    assert_eq!(info.count_total, 0);
}

#[test]
fn filter_matching_allocates_nothing() {
    let filter = EventFilter::new([
        "ticket.created",
        "ticket.sla.*",
        "customer.*",
        "message.agent_reply",
        "budget.threshold.reached",
    ])
    .unwrap();
    let all = EventFilter::all();
    let mut hits = 0;
    let info = allocation_counter::measure(|| {
        for t in [
            "ticket.created",
            "ticket.sla.breached",
            "customer.updated",
            "sla.warning",
            "message.created",
        ] {
            hits += usize::from(filter.matches(t));
        }
        hits += usize::from(all.matches("x"));
    });
    assert_eq!(hits, 4);
    assert_eq!(info.count_total, 0);
}
