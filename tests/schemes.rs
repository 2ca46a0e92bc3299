//! Known-answer vectors, interoperability with the `standardwebhooks` and
//! `svix` crates, and the strictness rules of every scheme.

#![allow(clippy::disallowed_methods)] // interop tests sign with the wall clock, as the peers verify with it

use std::time::Duration;

use hmac::{KeyInit, Mac};
use hookway::scheme::{Algorithm, Encoding};
use hookway::{KeyError, Keyring, MessageId, Scheme, Secret, Signer, Verifier, VerifyError};
use http::{HeaderMap, HeaderName, HeaderValue};
use time::{macros::datetime, OffsetDateTime};

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const SW_NOW: OffsetDateTime = datetime!(2021-02-25 15:02:10 UTC); // 1614265330

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn sw_verifier() -> Verifier {
    Verifier::new(Scheme::standard(), Secret::base64(SW_SECRET).unwrap()).unwrap()
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn standard_webhooks_published_vector_signs() {
    let signer = Signer::new(Scheme::standard(), Secret::base64(SW_SECRET).unwrap()).unwrap();
    let h = signer
        .sign(&SW_ID.parse().unwrap(), SW_NOW, SW_BODY)
        .unwrap();
    assert_eq!(h["webhook-id"], SW_ID);
    assert_eq!(h["webhook-timestamp"], "1614265330");
    assert_eq!(h["webhook-signature"], SW_SIG);
    assert!(h["webhook-signature"].is_sensitive());
}

#[test]
fn standard_webhooks_published_vector_verifies() {
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ]);
    let v = sw_verifier().verify_at(&h, SW_BODY, SW_NOW).unwrap();
    assert_eq!(v.id(), Some(SW_ID));
    assert_eq!(v.unix_timestamp(), Some(1614265330));
    assert_eq!(v.timestamp(), Some(SW_NOW));
    assert_eq!(v.body(), SW_BODY);
}

#[test]
fn svix_header_names_verify_and_stray_headers_do_not_break() {
    let svix = headers(&[
        ("svix-id", SW_ID),
        ("svix-timestamp", "1614265330"),
        ("svix-signature", SW_SIG),
    ]);
    assert!(sw_verifier().verify_at(&svix, SW_BODY, SW_NOW).is_ok());

    // A complete webhook-* set beside a stray, wrong svix-* header.
    let mut mixed = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
        ("svix-signature", "v1,AAAA"),
    ]);
    assert!(sw_verifier().verify_at(&mixed, SW_BODY, SW_NOW).is_ok());
    // And the reverse: a stray webhook-id beside a complete svix-* set.
    mixed = headers(&[
        ("webhook-id", "msg_other"),
        ("svix-id", SW_ID),
        ("svix-timestamp", "1614265330"),
        ("svix-signature", SW_SIG),
    ]);
    assert!(sw_verifier().verify_at(&mixed, SW_BODY, SW_NOW).is_ok());
    // Both complete, the webhook-* set wrong: the svix-* set still counts.
    mixed = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        ),
        ("svix-id", SW_ID),
        ("svix-timestamp", "1614265330"),
        ("svix-signature", SW_SIG),
    ]);
    assert!(sw_verifier().verify_at(&mixed, SW_BODY, SW_NOW).is_ok());
}

#[test]
fn svix_scheme_sends_svix_names() {
    let signer = Signer::new(Scheme::svix(), Secret::base64(SW_SECRET).unwrap()).unwrap();
    let h = signer
        .sign(&SW_ID.parse().unwrap(), SW_NOW, SW_BODY)
        .unwrap();
    assert_eq!(h["svix-signature"], SW_SIG);
    assert!(!h.contains_key("webhook-signature"));
}

#[test]
fn missing_headers_are_named() {
    let v = sw_verifier();
    let cases = [
        (vec![], "webhook-id"),
        (vec![("webhook-id", SW_ID)], "webhook-timestamp"),
        (
            vec![("webhook-id", SW_ID), ("webhook-timestamp", "1614265330")],
            "webhook-signature",
        ),
        (vec![("svix-id", SW_ID)], "svix-timestamp"),
    ];
    for (pairs, missing) in cases {
        match v.verify_at(&headers(&pairs), SW_BODY, SW_NOW) {
            Err(VerifyError::MissingHeader(name)) => assert_eq!(name, missing),
            other => panic!("{pairs:?}: {other:?}"),
        }
    }
}

#[test]
fn several_signatures_unknown_versions_and_malformed_entries() {
    let v = sw_verifier();
    for sig in [
        // Valid entry after unknown versions and malformed entries.
        format!("v2,abc v1a,zzz garbage v1,!!! ,, v1, {SW_SIG}"),
        // Extra spaces.
        format!("  {SW_SIG}  "),
        // Valid entry first.
        format!("{SW_SIG} v1,AAAA"),
    ] {
        let h = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", &sig),
        ]);
        assert!(v.verify_at(&h, SW_BODY, SW_NOW).is_ok(), "{sig}");
    }
    // Signatures split over two header lines count too.
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,AAAA"),
        ("webhook-signature", SW_SIG),
    ]);
    assert!(v.verify_at(&h, SW_BODY, SW_NOW).is_ok());

    let only_unknown = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v2,abc v3,def"),
    ]);
    assert!(matches!(
        v.verify_at(&only_unknown, SW_BODY, SW_NOW),
        Err(VerifyError::UnsupportedVersion)
    ));
    let wrong = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        ),
    ]);
    assert!(matches!(
        v.verify_at(&wrong, SW_BODY, SW_NOW),
        Err(VerifyError::NoMatchingSignature)
    ));
}

#[test]
fn timestamps_are_plain_digits() {
    let v = sw_verifier();
    for ts in [
        "+1614265330",
        "-1614265330",
        "1614265330.0",
        "1_614_265_330",
        " 1614265330",
        "1614265330 ",
        "0x60379",
        "",
        "99999999999999999999999",
    ] {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static(SW_ID));
        h.insert(
            "webhook-timestamp",
            HeaderValue::from_bytes(ts.as_bytes()).unwrap(),
        );
        h.insert("webhook-signature", HeaderValue::from_static(SW_SIG));
        assert!(
            matches!(
                v.verify_at(&h, SW_BODY, SW_NOW),
                Err(VerifyError::MalformedHeader { .. })
            ),
            "{ts:?}"
        );
    }
}

#[test]
fn tolerance_edges_both_ways() {
    let v = sw_verifier();
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ]);
    let five = time::Duration::minutes(5);
    let sec = time::Duration::seconds(1);
    assert!(v.verify_at(&h, SW_BODY, SW_NOW + five).is_ok());
    assert!(v.verify_at(&h, SW_BODY, SW_NOW - five).is_ok());
    assert!(matches!(
        v.verify_at(&h, SW_BODY, SW_NOW + five + sec),
        Err(VerifyError::TimestampTooOld {
            age_secs: 301,
            tolerance_secs: 300,
            ..
        })
    ));
    assert!(matches!(
        v.verify_at(&h, SW_BODY, SW_NOW - five - sec),
        Err(VerifyError::TimestampTooNew {
            ahead_secs: 301,
            ..
        })
    ));
    let wide = sw_verifier().with_tolerance(Duration::from_secs(3600));
    assert!(wide
        .verify_at(&h, SW_BODY, SW_NOW + time::Duration::minutes(59))
        .is_ok());
}

#[test]
fn duplicate_id_or_timestamp_is_malformed() {
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-id", "msg_2"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ]);
    assert!(matches!(
        sw_verifier().verify_at(&h, SW_BODY, SW_NOW),
        Err(VerifyError::MalformedHeader { .. })
    ));
}

#[test]
fn github_documented_vector() {
    let secret = Secret::literal("It's a Secret to Everybody").unwrap();
    let signer = Signer::new(Scheme::github(), secret.clone()).unwrap();
    let h = signer
        .sign(&"d1b5-4e1f".parse().unwrap(), SW_NOW, b"Hello, World!")
        .unwrap();
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(h["x-hub-signature-256"], expected);
    assert_eq!(h["x-github-delivery"], "d1b5-4e1f");

    let verifier = Verifier::new(Scheme::github(), secret).unwrap();
    let req = headers(&[("X-Hub-Signature-256", expected)]);
    let v = verifier.verify_at(&req, b"Hello, World!", SW_NOW).unwrap();
    assert_eq!(v.id(), None);
    assert_eq!(v.unix_timestamp(), None);
    // Uppercase hex is the same bytes.
    let upper = headers(&[(
        "X-Hub-Signature-256",
        &expected.to_uppercase().replace("SHA256=", "sha256="),
    )]);
    assert!(verifier.verify_at(&upper, b"Hello, World!", SW_NOW).is_ok());
    // Missing prefix, or a sha1 header only: malformed / missing.
    let no_prefix = headers(&[("X-Hub-Signature-256", &expected[7..])]);
    assert!(matches!(
        verifier.verify_at(&no_prefix, b"Hello, World!", SW_NOW),
        Err(VerifyError::MalformedHeader { .. })
    ));
    let sha1 = headers(&[("X-Hub-Signature", "sha1=0000")]);
    match verifier.verify_at(&sha1, b"Hello, World!", SW_NOW) {
        Err(VerifyError::MissingHeader(name)) => assert_eq!(name, "x-hub-signature-256"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        verifier.verify_at(&req, b"Hello, World?", SW_NOW),
        Err(VerifyError::NoMatchingSignature)
    ));
}

#[test]
fn relay_and_raven_builders() {
    let secret = "relay-secret-0123456789";
    let body = br#"{"id":"evt_123456","event":"ticket.created"}"#;
    let relay = Scheme::hmac_header("X-Relay-Signature")
        .prefix("sha256=")
        .id_header("X-Relay-Delivery")
        .build()
        .unwrap();
    let signer = Signer::new(relay.clone(), relay.parse_secret(secret).unwrap()).unwrap();
    let h = signer
        .sign(&"webhook_delivery_123".parse().unwrap(), SW_NOW, body)
        .unwrap();
    let expected = format!("sha256={}", hmac_hex(secret.as_bytes(), &[body]));
    assert_eq!(h["x-relay-signature"], expected.as_str());
    assert_eq!(h["x-relay-delivery"], "webhook_delivery_123");
    let v = Verifier::new(relay, Secret::literal(secret).unwrap())
        .unwrap()
        .verify_at(&h, body, SW_NOW)
        .unwrap();
    assert_eq!(v.id(), Some("webhook_delivery_123"));

    let raven = Scheme::hmac_header("X-Raven-Signature").build().unwrap();
    let h = headers(&[("X-Raven-Signature", &hmac_hex(secret.as_bytes(), &[body]))]);
    assert!(Verifier::new(raven, Secret::literal(secret).unwrap())
        .unwrap()
        .verify_at(&h, body, SW_NOW)
        .is_ok());
}

#[test]
fn stripe_layout() {
    let secret = "whsec_test_secret_0123456789abcdef";
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let sig = hmac_hex(secret.as_bytes(), &[b"1614265330", b".", body]);
    let verifier = Verifier::new(Scheme::stripe(), Secret::literal(secret).unwrap()).unwrap();
    for value in [
        format!("t=1614265330,v1={sig}"),
        format!("v0=deadbeef,v1={sig},t=1614265330"),
        format!("t=1614265330,v1=00ff,v1={sig}"),
        format!("t=1614265330, v1={sig}"),
        format!("junk,t=1614265330,=x,v1={sig}"),
    ] {
        let h = headers(&[("Stripe-Signature", &value)]);
        assert!(verifier.verify_at(&h, body, SW_NOW).is_ok(), "{value}");
    }
    let signer = Signer::new(Scheme::stripe(), Secret::literal(secret).unwrap()).unwrap();
    let h = signer
        .sign(&"evt_1".parse().unwrap(), SW_NOW, body)
        .unwrap();
    assert_eq!(
        h["stripe-signature"],
        format!("t=1614265330,v1={sig}").as_str()
    );

    for (value, want) in [
        (format!("v1={sig}"), "malformed"),
        (format!("t=1614265330,t=1614265330,v1={sig}"), "malformed"),
        (format!("t=1614265330,v0={sig}"), "unsupported"),
        ("t=1614265330,v1=0000".to_owned(), "nomatch"),
    ] {
        let h = headers(&[("Stripe-Signature", &value)]);
        let err = verifier.verify_at(&h, body, SW_NOW).unwrap_err();
        let ok = match want {
            "malformed" => matches!(err, VerifyError::MalformedHeader { .. }),
            "unsupported" => matches!(err, VerifyError::UnsupportedVersion),
            _ => matches!(err, VerifyError::NoMatchingSignature),
        };
        assert!(ok, "{value}: {err:?}");
    }
}

#[test]
fn hook0_and_convoy_layouts() {
    let secret = "convoy-secret-0123456789";
    let body = b"{\"a\":1}";
    let hook0 = Signer::new(Scheme::hook0(), Secret::literal(secret).unwrap()).unwrap();
    let h = hook0.sign(&"e1".parse().unwrap(), SW_NOW, body).unwrap();
    let sig = hmac_hex(secret.as_bytes(), &[b"1614265330.", body]);
    assert_eq!(
        h["x-hook0-signature"],
        format!("t=1614265330,v0={sig}").as_str()
    );

    // Convoy advanced signs `{t},{body}` — a comma.
    let convoy = Scheme::convoy_advanced(Algorithm::Sha256, Encoding::Hex);
    let h = Signer::new(convoy.clone(), Secret::literal(secret).unwrap())
        .unwrap()
        .sign(&"e1".parse().unwrap(), SW_NOW, body)
        .unwrap();
    let sig = hmac_hex(secret.as_bytes(), &[b"1614265330,", body]);
    assert_eq!(
        h["x-convoy-signature"],
        format!("t=1614265330,v1={sig}").as_str()
    );

    // SHA-512, base64.
    let convoy512 = Scheme::convoy_advanced(Algorithm::Sha512, Encoding::Base64);
    let signer = Signer::new(convoy512.clone(), Secret::literal(secret).unwrap()).unwrap();
    let h = signer.sign(&"e1".parse().unwrap(), SW_NOW, body).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"1614265330,");
    mac.update(body);
    let b64 = hookway_base64(&mac.finalize().into_bytes());
    assert_eq!(
        h["x-convoy-signature"],
        format!("t=1614265330,v1={b64}").as_str()
    );
    let verifier = Verifier::new(convoy512, Secret::literal(secret).unwrap()).unwrap();
    assert!(verifier.verify_at(&h, body, SW_NOW).is_ok());

    let simple = Scheme::convoy_simple(Algorithm::Sha256, Encoding::Hex);
    let h = headers(&[("X-Convoy-Signature", &hmac_hex(secret.as_bytes(), &[body]))]);
    assert!(Verifier::new(simple, Secret::literal(secret).unwrap())
        .unwrap()
        .verify_at(&h, body, SW_NOW)
        .is_ok());
}

fn hookway_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn slack_documented_vector() {
    // Slack's published example request.
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let at = OffsetDateTime::from_unix_timestamp(1531420618).unwrap();
    let signer = Signer::new(Scheme::slack(), Secret::literal(secret).unwrap()).unwrap();
    let h = signer.sign(&"x".parse().unwrap(), at, body).unwrap();
    assert_eq!(h["x-slack-request-timestamp"], "1531420618");
    assert_eq!(
        h["x-slack-signature"],
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    let verifier = Verifier::new(Scheme::slack(), Secret::literal(secret).unwrap()).unwrap();
    assert!(verifier.verify_at(&h, body, at).is_ok());
    let h2 = headers(&[
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ]);
    assert!(matches!(
        verifier.verify_at(&h2, body, at),
        Err(VerifyError::UnsupportedVersion)
    ));
}

#[test]
fn shopify_base64() {
    let secret = "shopify-secret-0123456789";
    let body = b"{\"id\":820982911946154508}";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let b64 = hookway_base64(&mac.finalize().into_bytes());
    let h = headers(&[
        ("X-Shopify-Hmac-Sha256", &b64),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ]);
    let v = Verifier::new(Scheme::shopify(), Secret::literal(secret).unwrap())
        .unwrap()
        .verify_at(&h, body, SW_NOW)
        .unwrap();
    assert_eq!(v.id(), Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"));
}

#[test]
fn non_utf8_bodies_sign_and_verify() {
    let body: &[u8] = &[0xff, 0xfe, 0x00, b'.', 0x80];
    for scheme in [
        Scheme::standard(),
        Scheme::stripe(),
        Scheme::github(),
        Scheme::slack(),
    ] {
        let secret = scheme.generate_secret();
        let signer = Signer::new(scheme.clone(), secret.clone()).unwrap();
        let verifier = Verifier::new(scheme.clone(), secret).unwrap();
        let h = signer
            .sign(&"msg_1".parse().unwrap(), SW_NOW, body)
            .unwrap();
        assert!(
            verifier.verify_at(&h, body, SW_NOW).is_ok(),
            "{}",
            scheme.name()
        );
    }
}

#[test]
fn secret_kind_mistakes_are_refused() {
    // A Stripe secret given to Standard Webhooks as a literal.
    let literal = Secret::literal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(matches!(
        Verifier::new(Scheme::standard(), literal.clone()),
        Err(KeyError::WrongSecretKind { .. })
    ));
    assert!(Verifier::new(Scheme::stripe(), literal).is_ok());
    // A Standard Webhooks secret, decoded, given to Stripe.
    let decoded = Secret::base64(SW_SECRET).unwrap();
    let err = Signer::new(Scheme::stripe(), decoded).unwrap_err();
    assert!(err.to_string().contains("Secret::literal"), "{err}");
    assert!(matches!(
        Verifier::new(Scheme::standard(), Keyring::empty()),
        Err(KeyError::EmptyKeyring)
    ));
    // parse_secret picks the right reading.
    assert_eq!(
        Scheme::standard().parse_secret(SW_SECRET).unwrap(),
        Secret::base64(SW_SECRET).unwrap()
    );
    assert_eq!(
        Scheme::stripe()
            .parse_secret(SW_SECRET)
            .unwrap()
            .expose_bytes(),
        SW_SECRET.as_bytes()
    );
    // Generated secrets come back through their text form.
    for scheme in [Scheme::standard(), Scheme::stripe(), Scheme::github()] {
        let s = scheme.generate_secret();
        assert_eq!(scheme.parse_secret(&s.expose_text()).unwrap(), s);
    }
    assert!(Scheme::stripe()
        .generate_secret()
        .expose_text()
        .starts_with("whsec_"));
}

#[test]
fn rotation_with_expiry() {
    let new = Secret::generate();
    let old = Secret::generate();
    let cutoff = SW_NOW + time::Duration::hours(1);
    let ring = Keyring::new(new.clone()).with_expiring(old.clone(), cutoff);
    let signer = Signer::new(Scheme::standard(), ring).unwrap();
    let id: MessageId = "msg_1".parse().unwrap();

    let h = signer.sign(&id, SW_NOW, b"{}").unwrap();
    let entries = h["webhook-signature"].to_str().unwrap().split(' ').count();
    assert_eq!(entries, 2);
    let old_only = Verifier::new(Scheme::standard(), old.clone()).unwrap();
    assert!(old_only.verify_at(&h, b"{}", SW_NOW).is_ok());

    // After the grace period the old key neither signs nor verifies.
    let later = cutoff + time::Duration::seconds(1);
    let h = signer.sign(&id, later, b"{}").unwrap();
    assert_eq!(
        h["webhook-signature"].to_str().unwrap().split(' ').count(),
        1
    );
    assert!(old_only.verify_at(&h, b"{}", later).is_err());
    let receiver = Verifier::new(
        Scheme::standard(),
        Keyring::new(new).with_expiring(old.clone(), cutoff),
    )
    .unwrap();
    let from_old = Signer::new(Scheme::standard(), old)
        .unwrap()
        .sign(&id, later, b"{}")
        .unwrap();
    assert!(matches!(
        receiver.verify_at(&from_old, b"{}", later),
        Err(VerifyError::NoMatchingSignature)
    ));

    let expired = Verifier::new(
        Scheme::standard(),
        Keyring::empty().with_expiring(Secret::generate(), SW_NOW),
    )
    .unwrap();
    assert!(matches!(
        expired.verify_at(&from_old, b"{}", later),
        Err(VerifyError::NoActiveKey)
    ));
}

#[test]
fn errors_and_debug_never_reveal_keys_or_expected_signatures() {
    let secret_text = "It's a Secret to Everybody";
    let secret = Secret::literal(secret_text).unwrap();
    let verifier = Verifier::new(Scheme::github(), secret.clone()).unwrap();
    let signer = Signer::new(Scheme::github(), secret.clone()).unwrap();
    let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let wrong = headers(&[(
        "X-Hub-Signature-256",
        "sha256=0000000000000000000000000000000000000000000000000000000000000000",
    )]);
    let err = verifier
        .verify_at(&wrong, b"Hello, World!", SW_NOW)
        .unwrap_err();
    for text in [
        format!("{err} {err:?}"),
        format!("{secret} {secret:?} {secret:#?}"),
        format!("{verifier:?} {signer:?}"),
        format!("{:?}", Keyring::new(secret.clone())),
    ] {
        assert!(!text.contains("Secret to"), "{text}");
        assert!(!text.contains(expected), "{text}");
        assert!(!text.contains("4974277320"), "{text}"); // hex of "It's"
    }
}

#[test]
fn status_codes_for_receivers() {
    let v = sw_verifier();
    let err = v.verify_at(&HeaderMap::new(), SW_BODY, SW_NOW).unwrap_err();
    assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ]);
    let err = v
        .verify_at(&h, SW_BODY, SW_NOW)
        .unwrap()
        .json::<hookway::Event>()
        .unwrap_err();
    assert!(matches!(err, VerifyError::InvalidBody(_)));
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
}

#[test]
fn typed_events_and_foreign_envelopes() {
    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Ticket {
        ticket: String,
    }
    let secret = Secret::generate();
    let signer = Signer::new(Scheme::standard(), secret.clone()).unwrap();
    let verifier = Verifier::new(Scheme::standard(), secret).unwrap();
    let event = hookway::Event::new(
        hookway::EventType::from_static("ticket.created"),
        Ticket {
            ticket: "tkt_789".into(),
        },
    );
    let now = OffsetDateTime::now_utc();
    let (body, h) = signer.sign_event(&event, now).unwrap();
    let back: hookway::Event<Ticket> = verifier.verify_event_at(&h, &body, now).unwrap();
    assert_eq!(back, event);
    assert_eq!(h["webhook-id"], event.id.as_str());

    // Another provider's envelope: sign any bytes, parse into your own type.
    #[derive(serde::Deserialize)]
    struct RelayEvent {
        event_id: String,
        event_name: String,
        payload: serde_json::Value,
    }
    let body = br#"{"event_id":"4378439B","event_name":"notification.auth_link_used","event_ts":"2021-04-14T12:00:00.000Z","payload":{"ccid":"1002"}}"#;
    let h = signer
        .sign(&"4378439B".parse().unwrap(), now, body)
        .unwrap();
    let relay: RelayEvent = verifier.verify_json(&h, body).unwrap();
    assert_eq!(relay.event_id, "4378439B");
    assert_eq!(relay.event_name, "notification.auth_link_used");
    assert_eq!(relay.payload["ccid"], "1002");
}

#[test]
fn interop_with_standardwebhooks_crate() {
    let now = OffsetDateTime::now_utc();
    let body = br#"{"type":"ticket.created","data":{"n":1}}"#;
    let theirs = standardwebhooks::Webhook::new(SW_SECRET).unwrap();

    // hookway signs, standardwebhooks verifies.
    let signer = Signer::new(Scheme::standard(), Secret::base64(SW_SECRET).unwrap()).unwrap();
    let h = signer
        .sign(&"msg_interop1".parse().unwrap(), now, body)
        .unwrap();
    theirs.verify(body, &h).unwrap();

    // standardwebhooks signs, hookway verifies.
    let sig = theirs
        .sign("msg_interop2", now.unix_timestamp(), body)
        .unwrap();
    let ts = now.unix_timestamp().to_string();
    let h = headers(&[
        ("webhook-id", "msg_interop2"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &sig),
    ]);
    sw_verifier().verify_at(&h, body, now).unwrap();
}

#[test]
fn interop_with_svix_crate() {
    let now = OffsetDateTime::now_utc();
    let body = br#"{"type":"ticket.created"}"#;
    let theirs = svix::webhooks::Webhook::new(SW_SECRET).unwrap();
    let signer = Signer::new(Scheme::svix(), Secret::base64(SW_SECRET).unwrap()).unwrap();
    let h = signer
        .sign(&"msg_svix1".parse().unwrap(), now, body)
        .unwrap();
    theirs.verify(body, &h).unwrap();
    let h = Signer::new(Scheme::standard(), Secret::base64(SW_SECRET).unwrap())
        .unwrap()
        .sign(&"msg_svix2".parse().unwrap(), now, body)
        .unwrap();
    theirs.verify(body, &h).unwrap();

    let sig = theirs
        .sign("msg_svix3", now.unix_timestamp(), body)
        .unwrap();
    let ts = now.unix_timestamp().to_string();
    let h = headers(&[
        ("svix-id", "msg_svix3"),
        ("svix-timestamp", &ts),
        ("svix-signature", &sig),
    ]);
    sw_verifier().verify_at(&h, body, now).unwrap();
}

#[test]
fn review_regressions() {
    // Any literal secret is refused by Standard Webhooks, prefix or not.
    let literal = Secret::literal("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(matches!(
        Verifier::new(Scheme::standard(), literal),
        Err(KeyError::WrongSecretKind { .. })
    ));

    // An odd unsigned id header never fails a correctly signed request.
    let secret = Secret::literal("It's a Secret to Everybody").unwrap();
    let verifier = Verifier::new(Scheme::github(), secret).unwrap();
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let h = headers(&[
        ("X-Hub-Signature-256", expected),
        ("X-GitHub-Delivery", "a.b"),
    ]);
    let v = verifier.verify_at(&h, b"Hello, World!", SW_NOW).unwrap();
    assert_eq!(v.id(), Some("a.b"));
    assert_eq!(v.signed_id(), None);
    let h = headers(&[
        ("X-Hub-Signature-256", expected),
        ("X-GitHub-Delivery", "1"),
        ("X-GitHub-Delivery", "2"),
    ]);
    assert_eq!(
        verifier
            .verify_at(&h, b"Hello, World!", SW_NOW)
            .unwrap()
            .id(),
        None
    );
}

#[test]
fn single_signature_schemes_sign_with_the_outgoing_key_during_its_grace() {
    let new = Secret::literal("new-secret-0123456789").unwrap();
    let old = Secret::literal("old-secret-0123456789").unwrap();
    let cutoff = SW_NOW + time::Duration::hours(1);
    let signer = Signer::new(
        Scheme::github(),
        Keyring::new(new.clone()).with_expiring(old.clone(), cutoff),
    )
    .unwrap();
    let id: MessageId = "d1".parse().unwrap();
    let old_only = Verifier::new(Scheme::github(), old).unwrap();
    let new_only = Verifier::new(Scheme::github(), new).unwrap();
    let h = signer.sign(&id, SW_NOW, b"{}").unwrap();
    assert!(old_only.verify_at(&h, b"{}", SW_NOW).is_ok());
    let later = cutoff + time::Duration::seconds(1);
    let h = signer.sign(&id, later, b"{}").unwrap();
    assert!(new_only.verify_at(&h, b"{}", later).is_ok());
}

#[test]
fn event_id_must_match_the_signed_id() {
    let secret = Secret::generate();
    let signer = Signer::new(Scheme::standard(), secret.clone()).unwrap();
    let verifier = Verifier::new(Scheme::standard(), secret).unwrap();
    let event = hookway::Event::new_at(
        hookway::EventType::from_static("ticket.created"),
        serde_json::json!({}),
        SW_NOW,
    );
    // Signed as another message id than the envelope's.
    let (body, h) = signer
        .sign_json(&"msg_other".parse().unwrap(), SW_NOW, &event)
        .unwrap();
    let err = verifier
        .verify_event_at::<serde_json::Value>(&h, &body, SW_NOW)
        .unwrap_err();
    assert!(matches!(err, VerifyError::IdMismatch));
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    // The untyped path still gives the body.
    let any: serde_json::Value = verifier.verify_json_at(&h, &body, SW_NOW).unwrap();
    assert_eq!(any["type"], "ticket.created");
}

#[cfg(feature = "ed25519")]
mod v1a {
    use super::*;
    use hookway::secret::{Ed25519PublicKey, Ed25519SecretKey};

    #[test]
    fn sign_with_secret_key_verify_with_public_key_only() {
        let sk = Ed25519SecretKey::generate();
        let pk = Ed25519PublicKey::parse(&sk.public_key().to_whpk()).unwrap();
        let signer = Signer::new(Scheme::standard(), Keyring::new(sk)).unwrap();
        let h = signer
            .sign(&"msg_a".parse().unwrap(), SW_NOW, b"\xff{}")
            .unwrap();
        assert!(h["webhook-signature"].to_str().unwrap().starts_with("v1a,"));
        let verifier = Verifier::new(Scheme::standard(), Keyring::new(pk)).unwrap();
        assert!(verifier.verify_at(&h, b"\xff{}", SW_NOW).is_ok());
        assert!(matches!(
            verifier.verify_at(&h, b"\xff{ }", SW_NOW),
            Err(VerifyError::NoMatchingSignature)
        ));
        // A public key cannot sign.
        assert!(matches!(
            Signer::new(Scheme::standard(), Keyring::new(pk)),
            Err(KeyError::NoSigningKey)
        ));
        // Ed25519 keys only fit Standard Webhooks.
        assert!(matches!(
            Verifier::new(Scheme::stripe(), Keyring::new(pk)),
            Err(KeyError::UnsupportedKey { .. })
        ));
    }

    #[test]
    fn mixed_v1_and_v1a_header() {
        let sk = Ed25519SecretKey::generate();
        let hmac = Secret::generate();
        let signer = Signer::new(
            Scheme::standard(),
            Keyring::new(hmac.clone()).with(sk.clone()),
        )
        .unwrap();
        let h = signer
            .sign(&"msg_mixed".parse().unwrap(), SW_NOW, b"{}")
            .unwrap();
        let sig = h["webhook-signature"].to_str().unwrap();
        assert!(sig.starts_with("v1,") && sig.contains(" v1a,"), "{sig}");
        for keys in [Keyring::new(hmac), Keyring::new(sk.public_key())] {
            let v = Verifier::new(Scheme::standard(), keys).unwrap();
            assert!(v.verify_at(&h, b"{}", SW_NOW).is_ok());
        }
        // A receiver with an unrelated public key sees a supported version
        // that does not match; one with only an HMAC secret and a v1a-only
        // header sees no version it can check.
        let other = Verifier::new(
            Scheme::standard(),
            Ed25519SecretKey::generate().public_key(),
        )
        .unwrap();
        assert!(matches!(
            other.verify_at(&h, b"{}", SW_NOW),
            Err(VerifyError::NoMatchingSignature)
        ));
        let v1a_only = Signer::new(Scheme::standard(), Keyring::new(sk))
            .unwrap()
            .sign(&"msg_x".parse().unwrap(), SW_NOW, b"{}")
            .unwrap();
        let hmac_receiver = Verifier::new(Scheme::standard(), Secret::generate()).unwrap();
        assert!(matches!(
            hmac_receiver.verify_at(&v1a_only, b"{}", SW_NOW),
            Err(VerifyError::UnsupportedVersion)
        ));
    }

    #[test]
    fn junk_v1a_entries_do_not_hide_a_valid_one() {
        let sk = Ed25519SecretKey::generate();
        let h = Signer::new(Scheme::standard(), Keyring::new(sk.clone()))
            .unwrap()
            .sign(&"msg_j".parse().unwrap(), SW_NOW, b"{}")
            .unwrap();
        let valid = h["webhook-signature"].to_str().unwrap().to_owned();
        let mut junk = "v1a,!!! ".repeat(40);
        junk.push_str(&valid);
        let mut stuffed = h.clone();
        stuffed.insert("webhook-signature", HeaderValue::from_str(&junk).unwrap());
        let verifier = Verifier::new(Scheme::standard(), sk.public_key()).unwrap();
        assert!(verifier.verify_at(&stuffed, b"{}", SW_NOW).is_ok());
    }

    #[test]
    fn whsk_layout_is_seed_then_public_key() {
        use base64::Engine as _;
        let sk = Ed25519SecretKey::from_seed(&[7; 32]);
        let text = sk.expose_whsk();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.strip_prefix("whsk_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(&raw[..32], &[7; 32]);
        let pk = base64::engine::general_purpose::STANDARD
            .decode(sk.public_key().to_whpk().strip_prefix("whpk_").unwrap())
            .unwrap();
        assert_eq!(&raw[32..], &pk[..]);
        // A mismatched public half is refused.
        let mut bad = raw.clone();
        bad[40] ^= 1;
        let bad = format!(
            "whsk_{}",
            base64::engine::general_purpose::STANDARD.encode(&bad)
        );
        assert!(Ed25519SecretKey::parse(&bad).is_err());
        assert!(!format!("{sk:?} {sk}").contains(&text[5..15]));
    }
}
