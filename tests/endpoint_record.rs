//! `EndpointRecord`: an endpoint rebuilt from its record behaves exactly as
//! the original, the format is versioned and pinned by a fixture, bad input
//! is a typed error, and `Debug` shows no secret.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hookway::delivery::DeliveryId;
use hookway::endpoint::{
    Auth, ClientIdentity, Credential, Endpoint, EndpointError, EndpointRecord, EndpointRecordError,
};
use hookway::retry::{Classifier, Jitter, RetryPolicy};
use hookway::scheme::SecretFormat;
use hookway::secret::SecretError;
use hookway::{
    Algorithm, Encoding, EventFilter, EventType, KeyError, Keyring, MessageId, Scheme, Secret,
    Verifier,
};
use http::StatusCode;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2026-03-15 10:30 UTC);
const FIXTURE: &str = include_str!("data/endpoint_record_v1.json");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ids() -> (MessageId, EventType, DeliveryId) {
    (
        "msg_2Lg7tQ9".parse().unwrap(),
        "ticket.created".parse().unwrap(),
        "dlv_7".parse().unwrap(),
    )
}

/// The request `endpoint` sends for one fixed message at `at`.
fn request(
    endpoint: &Endpoint,
    at: OffsetDateTime,
    bearer: Option<&Credential>,
) -> http::Request<Bytes> {
    let (id, ty, dlv) = ids();
    let body = Bytes::from_static(br#"{"type":"ticket.created","data":{"n":1}}"#);
    endpoint
        .request(body, &id, &ty, &dlv, at, bearer)
        .expect("the endpoint signs")
}

/// Same method, URL, headers (signatures included), body and client
/// identity, at each of `times`.
fn assert_same_requests(
    a: &Endpoint,
    b: &Endpoint,
    times: &[OffsetDateTime],
    bearer: Option<&Credential>,
) {
    for &at in times {
        let (x, y) = (request(a, at, bearer), request(b, at, bearer));
        assert_eq!(x.method(), y.method());
        assert_eq!(x.uri(), y.uri());
        assert_eq!(x.headers(), y.headers(), "at {at}");
        assert_eq!(x.body(), y.body());
        assert_eq!(
            x.extensions().get::<ClientIdentity>(),
            y.extensions().get::<ClientIdentity>()
        );
    }
}

/// Every setting read back through the accessors, keys included.
fn assert_same_settings(a: &Endpoint, b: &Endpoint) {
    assert_eq!(a.id(), b.id());
    assert_eq!(a.url(), b.url());
    assert_eq!(a.filter(), b.filter());
    assert_eq!(
        a.channels().collect::<Vec<_>>(),
        b.channels().collect::<Vec<_>>()
    );
    assert_eq!(a.is_enabled(), b.is_enabled());
    assert_eq!(a.timeout(), b.timeout());
    assert_eq!(a.retry_policy(), b.retry_policy());
    assert_eq!(a.classifier(), b.classifier());
    assert_eq!(a.max_in_flight(), b.max_in_flight());
    assert_eq!(a.rate_limit(), b.rate_limit());
    assert_eq!(a.is_ordered(), b.is_ordered());
    assert_eq!(a.batching(), b.batching());
    assert_eq!(a.auth(), b.auth());
    assert_eq!(a.client_identity(), b.client_identity());
    assert_eq!(a.signer().scheme(), b.signer().scheme());
    let (ka, kb) = (a.signer().keys(), b.signer().keys());
    assert_eq!(ka.len(), kb.len());
    for ((x, xe), (y, ye)) in ka.keys().zip(kb.keys()) {
        assert_eq!(xe, ye);
        assert_eq!(x.can_sign(), y.can_sign());
        match (x.as_hmac(), y.as_hmac()) {
            (Some(x), Some(y)) => {
                assert_eq!(x, y);
                assert_eq!(x.kind(), y.kind());
            }
            (None, None) => {}
            _ => panic!("key types differ"),
        }
    }
}

/// Through JSON both ways in (`from_json` and plain serde), back to an
/// endpoint, and the rebuilt endpoint's record equals the first.
fn round_trip(endpoint: &Endpoint) -> Endpoint {
    let record = endpoint.to_record();
    let json = serde_json::to_string(&record).unwrap();
    let parsed = EndpointRecord::from_json(&json).unwrap();
    assert!(parsed == record, "from_json changed the record: {json}");
    let via_serde: EndpointRecord = serde_json::from_str(&json).unwrap();
    assert!(via_serde == record);
    let rebuilt = Endpoint::from_record(parsed).unwrap();
    assert!(
        rebuilt.to_record() == record,
        "record of the rebuilt endpoint differs"
    );
    assert_eq!(
        serde_json::to_string(&rebuilt.to_record()).unwrap(),
        json,
        "serialised form is not stable"
    );
    assert_same_settings(endpoint, &rebuilt);
    rebuilt
}

fn endpoint(scheme: Scheme, keys: Keyring) -> Endpoint {
    Endpoint::builder(
        "ep_1".parse().unwrap(),
        "https://example.com/hooks",
        scheme,
        keys,
    )
    .build()
    .unwrap()
}

/// Three keys: two rotating out at different times, one without expiry, so
/// which keys sign depends on the time.
fn rotating(fresh: impl Fn() -> Secret) -> Keyring {
    Keyring::new(fresh())
        .with_expiring(fresh(), datetime!(2026-03-20 0:00 UTC))
        .with_expiring(fresh(), datetime!(2026-03-16 12:00:00.25 +02:00))
}

/// Before both expiries, between them, and after both.
const TIMES: [OffsetDateTime; 3] = [
    NOW,
    datetime!(2026-03-17 0:00 UTC),
    datetime!(2026-04-01 0:00 UTC),
];

fn hex_literal() -> Secret {
    // A literal secret as the non-base64 schemes' issuers hand them out.
    Scheme::github().generate_secret()
}

#[test]
fn every_preset_round_trips_and_signs_alike() {
    let presets = [
        (Scheme::standard(), "standard"),
        (Scheme::svix(), "svix"),
        (Scheme::github(), "github"),
        (Scheme::shopify(), "shopify"),
        (Scheme::stripe(), "stripe"),
        (Scheme::hook0(), "hook0"),
        (Scheme::slack(), "slack"),
        (
            Scheme::convoy_simple(Algorithm::Sha512, Encoding::Base64),
            "convoy_simple",
        ),
        (
            Scheme::convoy_advanced(Algorithm::Sha512, Encoding::Hex),
            "convoy_advanced",
        ),
        (
            Scheme::convoy_simple(Algorithm::Sha256, Encoding::Hex),
            "convoy_simple",
        ),
    ];
    for (scheme, kind) in presets {
        let base64 = scheme.secret_format() == SecretFormat::Base64;
        let fresh = || {
            if base64 {
                Secret::generate()
            } else {
                hex_literal()
            }
        };
        for keys in [Keyring::new(fresh()), rotating(fresh)] {
            let original = endpoint(scheme.clone(), keys);
            let record = serde_json::to_value(original.to_record()).unwrap();
            assert_eq!(record["scheme"]["kind"], kind);
            let rebuilt = round_trip(&original);
            assert_eq!(rebuilt.signer().scheme().name(), scheme.name());
            assert_same_requests(&original, &rebuilt, &TIMES, None);
        }
    }
}

#[test]
fn builder_schemes_keep_non_default_settings() {
    let schemes = [
        Scheme::hmac_header("X-Relay-Signature")
            .prefix("mac=")
            .algorithm(Algorithm::Sha512)
            .encoding(Encoding::Base64)
            .id_header("X-Relay-Id")
            .secret_format(SecretFormat::Base64)
            .build()
            .unwrap(),
        Scheme::timestamped("X-Stamp")
            .timestamp_key("ts")
            .signature_key("sig")
            .separator(b'|')
            .multiple_signatures(false)
            .algorithm(Algorithm::Sha512)
            .encoding(Encoding::Base64)
            .id_header("X-Stamp-Id")
            .build()
            .unwrap(),
        Scheme::separate_timestamp("X-Sig", "X-Sig-Time")
            .version("v7")
            .separator(b'#')
            .encoding(Encoding::Base64)
            .id_header("X-Sig-Id")
            .build()
            .unwrap(),
    ];
    for scheme in schemes {
        let base64 = scheme.secret_format() == SecretFormat::Base64;
        let fresh = || {
            if base64 {
                Secret::generate()
            } else {
                hex_literal()
            }
        };
        let original = endpoint(scheme.clone(), rotating(fresh));
        let rebuilt = round_trip(&original);
        assert_eq!(rebuilt.signer().scheme(), &scheme);
        assert_same_requests(&original, &rebuilt, &TIMES, None);
    }
    // The stored form spells every setting out.
    let split = endpoint(
        Scheme::separate_timestamp("X-Sig", "X-Sig-Time")
            .version("v7")
            .separator(b'#')
            .build()
            .unwrap(),
        Keyring::new(hex_literal()),
    );
    assert_eq!(
        serde_json::to_value(split.to_record()).unwrap()["scheme"],
        json!({
            "kind": "separate_timestamp",
            "signature_header": "x-sig",
            "timestamp_header": "x-sig-time",
            "version": "v7",
            "separator": "#",
            "algorithm": "sha256",
            "encoding": "hex",
            "id_header": null,
            "secret_format": "literal",
        })
    );
}

#[test]
fn keyrings_keep_order_kinds_and_expiries() {
    // Keys of every HMAC kind, one of them weak (only `literal_weak` makes
    // it), in an order that decides which one signs single-signature
    // schemes.
    let weak = Secret::literal_weak("short").unwrap();
    let raw = Secret::from_bytes(&[7; 20]).unwrap();
    let literal = Secret::literal("a-literal-secret-of-some-length").unwrap();
    for n in 1..=3 {
        let all = [
            (weak.clone(), None),
            (raw.clone(), Some(datetime!(2026-03-17 0:00 UTC))),
            (literal.clone(), Some(datetime!(2026-03-16 0:00 UTC))),
        ];
        let mut keys = Keyring::empty();
        for (secret, expiry) in all.into_iter().take(n) {
            keys.push(secret, expiry);
        }
        for scheme in [Scheme::stripe(), Scheme::github()] {
            let original = endpoint(scheme, keys.clone());
            let record = serde_json::to_value(original.to_record()).unwrap();
            let stored = record["keys"].as_array().unwrap();
            assert_eq!(stored.len(), n);
            assert_eq!(
                stored[0],
                json!({"type": "hmac", "kind": "literal", "secret": b64(b"short"), "expires_at": null})
            );
            if n > 1 {
                assert_eq!(stored[1]["kind"], "bytes");
                assert_eq!(stored[1]["secret"], b64(&[7; 20]));
                assert_eq!(stored[1]["expires_at"], "2026-03-17T00:00:00Z");
            }
            let rebuilt = round_trip(&original);
            assert_same_requests(&original, &rebuilt, &TIMES, None);
        }
    }
    // A base64 (`whsec_`) secret keeps its kind, so it still fits Standard
    // Webhooks and still does not fit Stripe.
    let whsec = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let original = endpoint(Scheme::standard(), Keyring::new(whsec));
    let value = serde_json::to_value(original.to_record()).unwrap();
    assert_eq!(value["keys"][0]["kind"], "base64");
    assert_eq!(
        value["keys"][0]["secret"],
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
    round_trip(&original);
}

#[test]
fn expiry_instants_survive_offsets_and_fractions() {
    let expiry = datetime!(2026-03-16 12:00:00.123456789 +05:30);
    let original = endpoint(
        Scheme::standard(),
        Keyring::new(Secret::generate()).with_expiring(Secret::generate(), expiry),
    );
    let value = serde_json::to_value(original.to_record()).unwrap();
    assert_eq!(
        value["keys"][1]["expires_at"],
        "2026-03-16T06:30:00.123456789Z"
    );
    let rebuilt = round_trip(&original);
    let (_, back) = rebuilt.signer().keys().keys().nth(1).unwrap();
    assert_eq!(back, Some(expiry));
    let just_before = expiry - time::Duration::nanoseconds(1);
    assert_same_requests(&original, &rebuilt, &[just_before, expiry], None);
}

#[test]
fn every_auth_kind_round_trips() {
    let token = Credential::new("oauth-access-token");
    let cases = [
        (
            Auth::Basic {
                username: "relay".into(),
                password: Credential::new("pa55word"),
            },
            json!({"type": "basic", "username": "relay", "password": "pa55word"}),
        ),
        (
            Auth::ApiKey {
                header: http::HeaderName::from_static("x-api-key"),
                key: Credential::new("k-123"),
            },
            json!({"type": "api_key", "header": "x-api-key", "key": "k-123"}),
        ),
        (
            Auth::Bearer(Credential::new("static-token")),
            json!({"type": "bearer", "token": "static-token"}),
        ),
        (
            Auth::OAuth2ClientCredentials {
                token_url: "https://auth.example.com/oauth/token".parse().unwrap(),
                client_id: "client-1".into(),
                client_secret: Credential::new("client-secret-1"),
                scope: Some("webhooks:write events:read".into()),
            },
            json!({
                "type": "oauth2_client_credentials",
                "token_url": "https://auth.example.com/oauth/token",
                "client_id": "client-1",
                "client_secret": "client-secret-1",
                "scope": "webhooks:write events:read",
            }),
        ),
        (
            Auth::OAuth2ClientCredentials {
                token_url: "https://auth.example.com/token".parse().unwrap(),
                client_id: "client-2".into(),
                client_secret: Credential::new("client-secret-2"),
                scope: None,
            },
            json!({
                "type": "oauth2_client_credentials",
                "token_url": "https://auth.example.com/token",
                "client_id": "client-2",
                "client_secret": "client-secret-2",
                "scope": null,
            }),
        ),
    ];
    for (auth, stored) in cases {
        let original = Endpoint::builder(
            "ep_auth".parse().unwrap(),
            "https://example.com/hooks",
            Scheme::github(),
            hex_literal(),
        )
        .auth(auth.clone())
        .build()
        .unwrap();
        assert_eq!(
            serde_json::to_value(original.to_record()).unwrap()["auth"],
            stored
        );
        let rebuilt = round_trip(&original);
        assert_eq!(rebuilt.auth(), Some(&auth));
        assert_same_requests(&original, &rebuilt, &[NOW], Some(&token));
        let sent = request(&rebuilt, NOW, Some(&token));
        let has_auth = sent.headers().contains_key("authorization")
            || sent.headers().contains_key("x-api-key");
        assert!(has_auth, "{auth:?}");
    }
}

#[test]
fn client_identity_round_trips_byte_for_byte() {
    // Not UTF-8, to show the bytes are kept as they are.
    let mut pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
    pem.extend_from_slice(&[0xff, 0x00, 0x80]);
    let identity = ClientIdentity::from_pem(pem.clone());
    let original = Endpoint::builder(
        "ep_mtls".parse().unwrap(),
        "https://example.com/hooks",
        Scheme::standard(),
        Secret::generate(),
    )
    .client_identity(identity.clone())
    .build()
    .unwrap();
    let value = serde_json::to_value(original.to_record()).unwrap();
    assert_eq!(value["client_identity"], b64(&pem));
    let rebuilt = round_trip(&original);
    let back = rebuilt.client_identity().unwrap();
    assert_eq!(back.id(), identity.id());
    assert_eq!(back.expose_pem(), pem.as_slice());
    let sent = request(&rebuilt, NOW, None);
    assert_eq!(sent.extensions().get::<ClientIdentity>(), Some(&identity));
}

/// An endpoint with every option away from its default.
fn everything() -> Endpoint {
    let mut endpoint = Endpoint::builder(
        "ep_full".parse().unwrap(),
        "https://hooks.example.com:8443/in/T0/B0/path-token?sig=query-token",
        Scheme::stripe(),
        Keyring::new(Secret::literal("whsec_stripe-literal-secret-0001").unwrap()).with_expiring(
            Secret::literal("whsec_stripe-literal-secret-0002").unwrap(),
            datetime!(2026-06-01 0:00 UTC),
        ),
    )
    .filter(EventFilter::new(["ticket.*", "customer.created"]).unwrap())
    .channel("tenant_42")
    .channel("tenant_7")
    .header("X-Tenant", "42")
    .header("X-Extra-Token", "header-token-value")
    .header("X-Tenant", "43")
    .timeout(Duration::from_millis(12_500))
    .retry_policy(
        RetryPolicy::exponential()
            .with_initial_delay(Duration::from_secs(2))
            .with_factor(3.0)
            .with_max_delay(Duration::from_secs(900))
            .with_max_attempts(6)
            .with_max_age(Duration::from_secs(7200))
            .with_jitter(Jitter::Full)
            .build()
            .unwrap(),
    )
    .classifier(
        Classifier::new()
            .retry_on(StatusCode::NOT_FOUND)
            .permanent_on(StatusCode::SERVICE_UNAVAILABLE)
            .disable_on(StatusCode::UNAUTHORIZED)
            .with_max_retry_after(Duration::from_secs(600))
            .with_throttle_floor(Duration::from_secs(2)),
    )
    .max_in_flight(3)
    .rate_limit(50, Duration::from_secs(10))
    .ordered(true)
    .batching(20, Duration::from_millis(250))
    .auth(Auth::Basic {
        username: "relay".into(),
        password: Credential::new("pa55word"),
    })
    .client_identity(ClientIdentity::from_pem(
        b"-----BEGIN PRIVATE KEY-----\nprivate-key-bytes\n-----END PRIVATE KEY-----\n".to_vec(),
    ))
    .event_header("X-Relay-Event")
    .delivery_header("X-Relay-Delivery")
    .build()
    .unwrap();
    endpoint.set_enabled(false);
    endpoint
}

#[test]
fn all_options_set_round_trip() {
    let original = everything();
    let rebuilt = round_trip(&original);
    assert!(!rebuilt.is_enabled());
    assert_same_requests(&original, &rebuilt, &TIMES, None);
    let sent = request(&rebuilt, NOW, None);
    let tenants: Vec<_> = sent.headers().get_all("x-tenant").iter().collect();
    assert_eq!(tenants, ["42", "43"]);
    assert_eq!(sent.headers()["x-relay-event"], "ticket.created");
    assert_eq!(sent.headers()["x-relay-delivery"], "dlv_7");
    assert_eq!(
        sent.uri(),
        "https://hooks.example.com:8443/in/T0/B0/path-token?sig=query-token"
    );

    let value = serde_json::to_value(original.to_record()).unwrap();
    assert_eq!(value["v"], 1);
    assert_eq!(value["enabled"], false);
    assert_eq!(value["filter"], json!(["ticket.*", "customer.created"]));
    assert_eq!(value["channels"], json!(["tenant_42", "tenant_7"]));
    assert_eq!(
        value["headers"],
        json!([
            {"name": "x-tenant", "value": "42"},
            {"name": "x-tenant", "value": "43"},
            {"name": "x-extra-token", "value": "header-token-value"},
        ])
    );
    assert_eq!(value["timeout"], 12_500);
    assert_eq!(value["max_in_flight"], 3);
    assert_eq!(value["rate_limit"], json!({"requests": 50, "per": 10_000}));
    assert_eq!(
        value["batching"],
        json!({"max_events": 20, "max_wait": 250})
    );
    assert_eq!(value["ordered"], true);
    assert_eq!(value["event_header"], "x-relay-event");
    assert_eq!(value["delivery_header"], "x-relay-delivery");
}

#[test]
fn all_defaults_round_trip() {
    let original = endpoint(Scheme::standard(), Keyring::new(Secret::generate()));
    let rebuilt = round_trip(&original);
    assert_same_requests(&original, &rebuilt, &[NOW], None);
    let value = serde_json::to_value(original.to_record()).unwrap();
    let defaults = json!({
        "enabled": true,
        "filter": ["*"],
        "channels": [],
        "headers": [],
        "event_header": null,
        "delivery_header": null,
        "timeout": 30_000,
        "retry": serde_json::to_value(RetryPolicy::default()).unwrap(),
        "classifier": serde_json::to_value(Classifier::default()).unwrap(),
        "max_in_flight": null,
        "rate_limit": null,
        "ordered": false,
        "batching": null,
        "auth": null,
        "client_identity": null,
    });
    for (field, expected) in defaults.as_object().unwrap() {
        assert_eq!(&value[field], expected, "{field}");
    }
    // Every field is written, even when null.
    assert_eq!(value.as_object().unwrap().len(), 20);
}

#[test]
fn sub_millisecond_and_huge_durations_are_exact() {
    let original = Endpoint::builder(
        "ep_d".parse().unwrap(),
        "https://example.com/hooks",
        Scheme::standard(),
        Secret::generate(),
    )
    .timeout(Duration::from_micros(1_500))
    .rate_limit(1, Duration::from_secs(1) / 3)
    .batching(2, Duration::MAX)
    .build()
    .unwrap();
    let value = serde_json::to_value(original.to_record()).unwrap();
    assert_eq!(value["timeout"], json!({"secs": 0, "nanos": 1_500_000}));
    assert_eq!(
        value["rate_limit"]["per"],
        json!({"secs": 0, "nanos": 333_333_333})
    );
    assert_eq!(
        value["batching"]["max_wait"],
        json!({"secs": u64::MAX, "nanos": 999_999_999})
    );
    let rebuilt = round_trip(&original);
    assert_eq!(rebuilt.timeout(), Duration::from_micros(1_500));
    assert_eq!(rebuilt.batching().unwrap().max_wait, Duration::MAX);
}

#[test]
fn bad_durations_are_refused() {
    let base = serde_json::to_value(everything().to_record()).unwrap();
    for bad in [
        json!(-1),
        json!(1.5),
        json!("30s"),
        json!({"secs": 1, "nanos": 1_000_000_000u32}),
        json!({"secs": 1}),
        json!({"secs": 1, "nanos": 0, "extra": 0}),
    ] {
        let mut value = base.clone();
        value["timeout"] = bad.clone();
        let err = EndpointRecord::from_json(value.to_string()).unwrap_err();
        assert!(
            matches!(err, EndpointRecordError::Malformed(_)),
            "{bad}: {err}"
        );
    }
}

#[test]
fn unknown_versions_are_refused_with_a_typed_error() {
    let mut value = serde_json::to_value(everything().to_record()).unwrap();
    value["v"] = json!(2);
    let text = value.to_string();
    let err = EndpointRecord::from_json(&text).unwrap_err();
    assert!(
        matches!(err, EndpointRecordError::UnsupportedVersion { found: 2 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "endpoint record format version 2 is not supported; this release reads version 1"
    );
    // Plain serde refuses it too, with the same message.
    let serde_err = serde_json::from_str::<EndpointRecord>(&text).unwrap_err();
    assert!(
        serde_err.to_string().contains("version 2 is not supported"),
        "{serde_err}"
    );
    // A future record need not have v1's fields: the version decides first.
    let err = EndpointRecord::from_json(r#"{"v": 2, "endpoint": {}}"#).unwrap_err();
    assert!(matches!(
        err,
        EndpointRecordError::UnsupportedVersion { found: 2 }
    ));
    let err = EndpointRecord::from_json(r#"{"v": 0}"#).unwrap_err();
    assert!(matches!(
        err,
        EndpointRecordError::UnsupportedVersion { found: 0 }
    ));

    for missing in [
        json!({"id": "ep_1"}),
        json!({"v": "1"}),
        json!({"v": -1}),
        json!({"v": 1.0}),
        json!({"v": null}),
    ] {
        let err = EndpointRecord::from_json(missing.to_string()).unwrap_err();
        assert!(
            matches!(err, EndpointRecordError::MissingVersion),
            "{missing}"
        );
    }
    for malformed in ["", "not json", "[1]", "\"v\"", "{\"v\": 1}"] {
        let err = EndpointRecord::from_json(malformed).unwrap_err();
        assert!(
            matches!(err, EndpointRecordError::Malformed(_)),
            "{malformed:?}: {err:?}"
        );
    }
}

#[test]
fn unknown_fields_are_refused() {
    let base = serde_json::to_value(everything().to_record()).unwrap();
    let paths: [&[&str]; 6] = [
        &[],
        &["keys", "0"],
        &["auth"],
        &["rate_limit"],
        &["batching"],
        &["scheme"],
    ];
    for path in paths {
        let mut value = base.clone();
        let mut target = &mut value;
        for step in path {
            target = match step.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*step],
            };
        }
        target["added_later"] = json!(true);
        let err = EndpointRecord::from_json(value.to_string()).unwrap_err();
        assert!(matches!(err, EndpointRecordError::Malformed(_)), "{path:?}");
    }
    let mut value = base;
    value["headers"][0]["sensitive"] = json!(true);
    assert!(EndpointRecord::from_json(value.to_string()).is_err());
}

/// `value` with one key's field replaced, parsed and rebuilt.
fn rebuild_with(
    value: &Value,
    key: usize,
    field: &str,
    new: Value,
) -> Result<Endpoint, EndpointError> {
    let mut value = value.clone();
    value["keys"][key][field] = new;
    let record = EndpointRecord::from_json(value.to_string()).expect("the shape is valid");
    Endpoint::from_record(record)
}

#[test]
fn malformed_key_material_is_a_typed_error() {
    let value = serde_json::to_value(everything().to_record()).unwrap();
    let invalid_key = |result: Result<Endpoint, EndpointError>| match result {
        Err(EndpointError::InvalidKey { index, source }) => (index, source),
        other => panic!("expected InvalidKey, got {other:?}"),
    };

    for bad in [
        "not base64!",
        "====",
        "c2VjcmV0LWtleS1ieXRlcy0wMQ= =",
        " c2VjcmV0LWtleS1ieXRlcy0wMQ==",
        "c2VjcmV0LWtleS1ieXRlcy0wMQ==\n",
        "AB",
        "whsec_c2VjcmV0LWtleS1ieXRlcy0wMQ==",
    ] {
        let (index, source) = invalid_key(rebuild_with(&value, 1, "secret", json!(bad)));
        assert_eq!(index, 1);
        assert_eq!(source, SecretError::InvalidBase64 { prefix: "" }, "{bad}");
        assert_eq!(source.to_string(), "secret is not valid base64");
    }
    let (_, source) = invalid_key(rebuild_with(&value, 0, "secret", json!("")));
    assert_eq!(source, SecretError::Empty);
    let (_, source) = invalid_key(rebuild_with(&value, 0, "secret", json!(b64(&[0xff; 20]))));
    assert_eq!(source, SecretError::NotText);
    let mut short = value.clone();
    short["keys"][0]["kind"] = json!("bytes");
    let (_, source) = invalid_key(rebuild_with(&short, 0, "secret", json!(b64(b"tooshort"))));
    assert_eq!(source, SecretError::TooShort { len: 8, min: 16 });
    let (_, source) = invalid_key(rebuild_with(&value, 0, "secret", json!(b64(&[1; 5000]))));
    assert!(matches!(source, SecretError::TooLong { len: 5000, .. }));

    // Valid material of the wrong kind for the scheme: the scheme's check.
    let err = rebuild_with(&value, 0, "kind", json!("base64")).unwrap_err();
    assert!(
        matches!(err, EndpointError::Keys(KeyError::WrongSecretKind { .. })),
        "{err:?}"
    );

    // Not a string, or an unknown kind or type: the record's shape.
    for (field, bad) in [
        ("secret", json!(12)),
        ("secret", json!(null)),
        ("kind", json!("hex")),
        ("type", json!("rsa")),
        ("expires_at", json!("next tuesday")),
    ] {
        let mut broken = value.clone();
        broken["keys"][0][field] = bad;
        let err = EndpointRecord::from_json(broken.to_string()).unwrap_err();
        assert!(matches!(err, EndpointRecordError::Malformed(_)), "{field}");
    }

    // An empty keyring.
    let mut empty = value.clone();
    empty["keys"] = json!([]);
    let record = EndpointRecord::from_json(empty.to_string()).unwrap();
    assert_eq!(
        Endpoint::from_record(record).unwrap_err(),
        EndpointError::Keys(KeyError::EmptyKeyring)
    );

    // The client identity's bytes.
    let mut pem = value.clone();
    pem["client_identity"] = json!("%%%");
    let record = EndpointRecord::from_json(pem.to_string()).unwrap();
    assert_eq!(
        Endpoint::from_record(record).unwrap_err(),
        EndpointError::InvalidClientIdentity
    );
}

#[test]
fn invalid_settings_in_a_record_are_the_builders_errors() {
    let value = serde_json::to_value(everything().to_record()).unwrap();
    let rebuild = |field: &str, new: Value| {
        let mut value = value.clone();
        value[field] = new;
        Endpoint::from_record(EndpointRecord::from_json(value.to_string()).unwrap())
    };
    assert!(matches!(
        rebuild("url", json!("ftp://example.com/")),
        Err(EndpointError::InvalidUrl(_))
    ));
    assert!(matches!(
        rebuild(
            "headers",
            json!([{"name": "content-type", "value": "text/plain"}])
        ),
        Err(EndpointError::ReservedHeader(_))
    ));
    assert!(matches!(
        rebuild("headers", json!([{"name": "bad name", "value": "1"}])),
        Err(EndpointError::InvalidHeader(_))
    ));
    assert!(matches!(
        rebuild("event_header", json!("bad name")),
        Err(EndpointError::InvalidHeader(_))
    ));
    assert_eq!(
        rebuild("max_in_flight", json!(0)).unwrap_err(),
        EndpointError::Zero("max_in_flight")
    );
    assert_eq!(
        rebuild("timeout", json!(0)).unwrap_err(),
        EndpointError::Zero("timeout")
    );
    assert!(matches!(
        rebuild(
            "auth",
            json!({"type": "api_key", "header": "bad name", "key": "k"})
        ),
        Err(EndpointError::InvalidHeader(_))
    ));
    assert!(matches!(
        rebuild(
            "auth",
            json!({"type": "oauth2_client_credentials", "token_url": "not a url",
                   "client_id": "c", "client_secret": "s"})
        ),
        Err(EndpointError::InvalidUrl(_))
    ));
    // Invalid ids, filters, schemes and policies fail to parse at all.
    for (field, bad) in [
        ("id", json!("has space")),
        ("filter", json!(["bad*pattern"])),
        (
            "scheme",
            json!({"kind": "timestamped", "header": "x", "timestamp_key": "v1"}),
        ),
        (
            "retry",
            json!({"strategy": {"exponential": {"initial": 0, "factor": 2.0, "max_delay": 1000, "jitter": "none"}}, "max_attempts": 3}),
        ),
    ] {
        let mut broken = value.clone();
        broken[field] = bad;
        let err = EndpointRecord::from_json(broken.to_string()).unwrap_err();
        assert!(matches!(err, EndpointRecordError::Malformed(_)), "{field}");
    }
}

#[test]
fn debug_shows_no_secret() {
    let endpoint = everything();
    let record = endpoint.to_record();
    let json = serde_json::to_string(&record).unwrap();
    let shown = format!("{record:?}\n{record:#?}");
    let pem = endpoint.client_identity().unwrap().expose_pem();
    // As the serialised record holds them, which is the point of it.
    let stored = [
        b64(b"whsec_stripe-literal-secret-0001"),
        b64(b"whsec_stripe-literal-secret-0002"),
        "pa55word".to_owned(),
        "header-token-value".to_owned(),
        "path-token".to_owned(),
        "query-token".to_owned(),
        b64(pem),
    ];
    for secret in &stored {
        assert!(
            json.contains(secret.as_str()),
            "{secret} missing from the record"
        );
        assert!(!shown.contains(secret.as_str()), "{secret} in {shown}");
        // Not even a fragment.
        let fragment = &secret[..secret.len().min(8)];
        assert!(!shown.contains(fragment), "{fragment} in {shown}");
    }
    // Nor in their decoded forms.
    for secret in [
        "stripe-literal-secret",
        "private-key-bytes",
        "BEGIN PRIVATE KEY",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    // What Debug does show.
    assert!(shown.contains("ep_full"));
    assert!(
        shown.contains("\"https://hooks.example.com:8443/…\""),
        "{shown}"
    );
    assert!(shown.contains("x-extra-token"));
    assert!(shown.contains("relay"));
    assert!(shown.contains("2026-06-01"));

    // Every other kind of credential, and the other key types.
    let tokens = ["static-token", "k-123", "client-secret-1", "user:secret"];
    let auths = [
        Auth::Bearer(Credential::new(tokens[0])),
        Auth::ApiKey {
            header: http::HeaderName::from_static("x-api-key"),
            key: Credential::new(tokens[1]),
        },
        Auth::OAuth2ClientCredentials {
            token_url: "https://auth.example.com/token?key=oauth-url-token"
                .parse()
                .unwrap(),
            client_id: "client-1".into(),
            client_secret: Credential::new(tokens[2]),
            scope: None,
        },
    ];
    let fresh = Secret::generate();
    let fresh_b64 = b64(fresh.expose_bytes());
    for auth in auths {
        let record = Endpoint::builder(
            "ep_2".parse().unwrap(),
            "https://user:secret@example.com/hooks",
            Scheme::standard(),
            fresh.clone(),
        )
        .auth(auth)
        .build()
        .unwrap()
        .to_record();
        let shown = format!("{record:?}{record:#?}");
        for secret in tokens
            .iter()
            .copied()
            .chain(["oauth-url-token", fresh_b64.as_str()])
        {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

#[test]
fn the_v1_fixture_keeps_loading() {
    let record = EndpointRecord::from_json(FIXTURE).expect("the v1 fixture loads");
    assert_eq!(record.id().as_str(), "ep_fixture");
    let endpoint = Endpoint::from_record(record.clone()).expect("the v1 fixture builds");

    // Written back, it is the same JSON: a change of format shows up here
    // (and calls for a new version).
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(serde_json::to_value(endpoint.to_record()).unwrap(), fixture);
    assert!(endpoint.to_record() == record);

    // The Standard Webhooks test vector: its key is the first one, the
    // second expired before the vector's time, so the signature is the
    // published one.
    let id: MessageId = "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap();
    let ty: EventType = "ticket.created".parse().unwrap();
    let dlv: DeliveryId = "dlv_1".parse().unwrap();
    let at = datetime!(2021-02-25 15:02:10 UTC);
    let body = Bytes::from_static(br#"{"test": 2432232314}"#);
    let sent = endpoint
        .request(body.clone(), &id, &ty, &dlv, at, None)
        .unwrap();
    let headers = sent.headers();
    assert_eq!(
        headers["webhook-signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(headers["webhook-timestamp"], "1614265330");
    assert_eq!(headers["authorization"], "Basic cmVsYXk6cGE1NXdvcmQ="); // relay:pa55word
    assert_eq!(headers["x-tenant"], "42");
    assert_eq!(headers["x-relay-event"], "ticket.created");
    assert_eq!(headers["x-relay-delivery"], "dlv_1");
    assert_eq!(sent.uri(), "https://example.com/webhooks?tenant=42");
    assert_eq!(
        sent.extensions()
            .get::<ClientIdentity>()
            .unwrap()
            .expose_pem(),
        b"-----BEGIN CERTIFICATE-----\nfixture\n-----END CERTIFICATE-----\n"
    );
    let verifier = Verifier::new(
        Scheme::standard(),
        Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    )
    .unwrap();
    verifier.verify_at(headers, &body, at).unwrap();

    // Before the second key's expiry, both sign.
    let earlier = endpoint
        .request(body, &id, &ty, &dlv, datetime!(2020-06-01 0:00 UTC), None)
        .unwrap();
    let signatures = earlier.headers()["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2);

    // Every other setting.
    assert!(!endpoint.is_enabled());
    assert!(endpoint.is_ordered());
    assert_eq!(endpoint.filter(), &EventFilter::new(["ticket.*"]).unwrap());
    assert_eq!(endpoint.channels().collect::<Vec<_>>(), ["tenant_42"]);
    assert_eq!(endpoint.timeout(), Duration::from_secs(10));
    assert_eq!(endpoint.max_in_flight(), Some(2));
    let limit = endpoint.rate_limit().unwrap();
    assert_eq!((limit.requests, limit.per), (10, Duration::from_secs(1)));
    let batching = endpoint.batching().unwrap();
    assert_eq!(
        (batching.max_events, batching.max_wait),
        (50, Duration::from_millis(500))
    );
    assert_eq!(
        endpoint.retry_policy(),
        &RetryPolicy::fixed([Duration::from_secs(5), Duration::from_secs(300)])
            .with_max_attempts(3)
            .build()
            .unwrap()
    );
    assert_eq!(
        endpoint.classifier(),
        &Classifier::new().retry_on(StatusCode::NOT_FOUND)
    );
}

#[cfg(feature = "ed25519")]
mod ed25519 {
    use super::*;
    use hookway::secret::{Ed25519PublicKey, Ed25519SecretKey};

    #[test]
    fn ed25519_keys_round_trip_beside_hmac_ones() {
        let signing = Ed25519SecretKey::from_seed(&[9; 32]);
        let public = Ed25519SecretKey::from_seed(&[4; 32]).public_key();
        let keys = Keyring::new(signing.clone())
            .with_expiring(Secret::generate(), datetime!(2026-03-17 0:00 UTC))
            .with(public);
        let original = endpoint(Scheme::standard(), keys);
        let value = serde_json::to_value(original.to_record()).unwrap();
        let whsk = signing.expose_whsk();
        assert_eq!(
            value["keys"][0],
            json!({"type": "ed25519_secret", "key": whsk.strip_prefix("whsk_").unwrap(), "expires_at": null})
        );
        assert_eq!(value["keys"][2]["type"], "ed25519_public");
        assert_eq!(
            value["keys"][2]["key"],
            public.to_whpk().strip_prefix("whpk_").unwrap()
        );
        let rebuilt = round_trip(&original);
        assert_same_requests(&original, &rebuilt, &TIMES, None);
        let sent = request(&rebuilt, NOW, None);
        let signature = sent.headers()["webhook-signature"].to_str().unwrap();
        assert!(signature.starts_with("v1a,"), "{signature}");
        let verifier = Verifier::new(Scheme::standard(), signing.public_key()).unwrap();
        verifier
            .verify_at(sent.headers(), sent.body(), NOW)
            .unwrap();
        let shown = format!("{:?}", original.to_record());
        assert!(!shown.contains(&whsk[5..20]), "{shown}");
    }

    #[test]
    fn mismatched_or_short_ed25519_keys_are_typed_errors() {
        let keys = Keyring::new(Ed25519SecretKey::from_seed(&[9; 32])).with(
            Ed25519PublicKey::parse(&Ed25519SecretKey::from_seed(&[4; 32]).public_key().to_whpk())
                .unwrap(),
        );
        let value = serde_json::to_value(endpoint(Scheme::standard(), keys).to_record()).unwrap();
        let mut pair = [9u8; 64];
        pair[40] ^= 1;
        for (index, bad) in [(0, b64(&pair)), (0, b64(&[9; 32])), (1, b64(&[4; 31]))] {
            let err = rebuild_with(&value, index, "key", json!(bad)).unwrap_err();
            assert!(
                matches!(
                    err,
                    EndpointError::InvalidKey { index: i, source: SecretError::InvalidEd25519(_) } if i == index
                ),
                "{err:?}"
            );
        }
    }
}

#[cfg(not(feature = "ed25519"))]
#[test]
fn ed25519_keys_need_the_feature() {
    let mut value: Value = serde_json::from_str(FIXTURE).unwrap();
    value["keys"][0] = json!({"type": "ed25519_secret", "key": b64(&[9; 64]), "expires_at": null});
    let record = EndpointRecord::from_json(value.to_string()).unwrap();
    let err = Endpoint::from_record(record).unwrap_err();
    assert!(
        matches!(
            err,
            EndpointError::InvalidKey {
                index: 0,
                source: SecretError::InvalidEd25519(_)
            }
        ),
        "{err:?}"
    );
}
