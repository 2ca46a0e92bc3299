//! Endpoint settings and the signed request each attempt sends.

use std::time::Duration;

use bytes::Bytes;
use hookway::delivery::DeliveryId;
use hookway::endpoint::{
    Auth, ClientIdentity, Credential, Endpoint, EndpointError, DEFAULT_TIMEOUT,
};
use hookway::{EventFilter, EventType, KeyError, MessageId, Scheme, Secret, Verifier};
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2026-03-15 10:30 UTC);

fn ids() -> (MessageId, EventType, DeliveryId) {
    (
        "msg_1".parse().unwrap(),
        "ticket.created".parse().unwrap(),
        "dlv_1".parse().unwrap(),
    )
}

#[test]
fn each_attempt_is_signed_afresh_with_its_own_time() {
    let secret = Secret::generate();
    let endpoint = Endpoint::builder(
        "ep_1".parse().unwrap(),
        "https://example.com/hooks",
        Scheme::standard(),
        secret.clone(),
    )
    .build()
    .unwrap();
    assert_eq!(endpoint.timeout(), DEFAULT_TIMEOUT);
    let (id, ty, dlv) = ids();
    let payload = Bytes::from_static(br#"{"a":1}"#);
    let verifier = Verifier::new(Scheme::standard(), secret).unwrap();

    let first = endpoint
        .request(payload.clone(), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert_eq!(first.method(), http::Method::POST);
    assert_eq!(first.uri(), "https://example.com/hooks");
    assert_eq!(first.headers()["content-type"], "application/json");
    assert!(first.headers()["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("hookway/"));
    assert!(verifier
        .verify_at(first.headers(), first.body(), NOW)
        .is_ok());

    // Five hours later: same id, new timestamp, still within tolerance.
    let later = NOW + time::Duration::hours(5);
    let retry = endpoint
        .request(payload, &id, &ty, &dlv, later, None)
        .unwrap();
    assert_eq!(retry.headers()["webhook-id"], "msg_1");
    assert_ne!(
        retry.headers()["webhook-timestamp"],
        first.headers()["webhook-timestamp"]
    );
    assert!(verifier
        .verify_at(retry.headers(), retry.body(), later)
        .is_ok());
    assert!(verifier
        .verify_at(first.headers(), first.body(), later)
        .is_err());
}

#[test]
fn relay_style_headers_and_extra_headers() {
    let endpoint = Endpoint::builder(
        "ep_relay".parse().unwrap(),
        "https://example.com/relay",
        Scheme::hmac_header("X-Relay-Signature")
            .prefix("sha256=")
            .build()
            .unwrap(),
        Secret::literal("relay-secret-0123456789").unwrap(),
    )
    .event_header("X-Relay-Event")
    .delivery_header("X-Relay-Delivery")
    .header("X-Tenant", "42")
    .header("User-Agent", "acme-webhooks/2")
    .build()
    .unwrap();
    let (id, ty, dlv) = ids();
    let req = endpoint
        .request(Bytes::from_static(b"{}"), &id, &ty, &dlv, NOW, None)
        .unwrap();
    let h = req.headers();
    assert_eq!(h["x-relay-event"], "ticket.created");
    assert_eq!(h["x-relay-delivery"], "dlv_1");
    assert_eq!(h["x-tenant"], "42");
    assert_eq!(h["user-agent"], "acme-webhooks/2");
    assert!(h["x-relay-signature"]
        .to_str()
        .unwrap()
        .starts_with("sha256="));
    // Extra header values are kept out of Debug output.
    assert!(!format!("{endpoint:?}").contains("\"42\""));
}

#[test]
fn reserved_headers_are_refused() {
    for name in [
        "Content-Type",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Host",
        "webhook-signature",
        "webhook-id",
        "svix-signature",
        "X-Hub-Signature-256",
        "Stripe-Signature",
    ] {
        let err = Endpoint::builder(
            "ep".parse().unwrap(),
            "https://example.com",
            Scheme::standard(),
            Secret::generate(),
        )
        .header(name, "x")
        .build()
        .unwrap_err();
        assert!(
            matches!(err, EndpointError::ReservedHeader(_)),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn invalid_settings_are_typed_errors() {
    let build = |url: &str| {
        Endpoint::builder(
            "ep".parse().unwrap(),
            url,
            Scheme::standard(),
            Secret::generate(),
        )
        .build()
    };
    for url in ["ftp://example.com", "/relative", "not a url", "https://"] {
        assert!(
            matches!(build(url), Err(EndpointError::InvalidUrl(_))),
            "{url}"
        );
    }
    assert!(build("http://127.0.0.1:8080/hook").is_ok());
    let wrong_kind = Endpoint::builder(
        "ep".parse().unwrap(),
        "https://example.com",
        Scheme::stripe(),
        Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    )
    .build();
    assert!(matches!(
        wrong_kind,
        Err(EndpointError::Keys(KeyError::WrongSecretKind { .. }))
    ));
    let base = || {
        Endpoint::builder(
            "ep".parse().unwrap(),
            "https://example.com",
            Scheme::standard(),
            Secret::generate(),
        )
    };
    assert!(matches!(
        base().max_in_flight(0).build(),
        Err(EndpointError::Zero(_))
    ));
    assert!(matches!(
        base().rate_limit(0, Duration::from_secs(1)).build(),
        Err(EndpointError::Zero(_))
    ));
    assert!(matches!(
        base().timeout(Duration::ZERO).build(),
        Err(EndpointError::Zero(_))
    ));
    assert!(matches!(
        base().header("bad header", "x").build(),
        Err(EndpointError::InvalidHeader(_))
    ));
}

#[test]
fn authentication_headers() {
    let (id, ty, dlv) = ids();
    let with = |auth: Auth| {
        Endpoint::builder(
            "ep".parse().unwrap(),
            "https://example.com",
            Scheme::standard(),
            Secret::generate(),
        )
        .auth(auth)
        .build()
        .unwrap()
    };
    let basic = with(Auth::Basic {
        username: "user".into(),
        password: Credential::new("pa:ss"),
    });
    let req = basic
        .request(Bytes::new(), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert_eq!(req.headers()["authorization"], "Basic dXNlcjpwYTpzcw==");
    assert!(req.headers()["authorization"].is_sensitive());
    assert!(!format!("{basic:?}").contains("pa:ss"));

    let api_key = with(Auth::ApiKey {
        header: http::HeaderName::from_static("apikey"),
        key: Credential::new("k-123"),
    });
    let req = api_key
        .request(Bytes::new(), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert_eq!(req.headers()["apikey"], "k-123");

    let bearer = with(Auth::Bearer(Credential::new("tok")));
    let req = bearer
        .request(Bytes::new(), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer tok");

    let oauth = with(Auth::OAuth2ClientCredentials {
        token_url: "https://auth.example.com/token".parse().unwrap(),
        client_id: "client".into(),
        client_secret: Credential::new("shh"),
        scope: None,
    });
    let req = oauth
        .request(Bytes::new(), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert!(!req.headers().contains_key("authorization"));
    let token = Credential::new("fetched");
    let req = oauth
        .request(Bytes::new(), &id, &ty, &dlv, NOW, Some(&token))
        .unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer fetched");
    assert!(!format!("{oauth:?} {token:?} {token}").contains("shh"));
    assert!(!format!("{token:?} {token}").contains("fetched"));
}

#[test]
fn filters_and_channels() {
    let endpoint = Endpoint::builder(
        "ep".parse().unwrap(),
        "https://example.com",
        Scheme::standard(),
        Secret::generate(),
    )
    .filter(EventFilter::new(["ticket.*", "sla.breached"]).unwrap())
    .channel("tenant_1")
    .channel("tenant_2")
    .build()
    .unwrap();
    let t = |s: &str| s.parse::<EventType>().unwrap();
    assert!(endpoint.wants(&t("ticket.created"), &["tenant_2"]));
    assert!(endpoint.wants(&t("sla.breached"), &["x", "tenant_1"]));
    assert!(!endpoint.wants(&t("sla.warning"), &["tenant_1"]));
    assert!(!endpoint.wants(&t("ticket.created"), &[]));
    let open = Endpoint::builder(
        "ep".parse().unwrap(),
        "https://example.com",
        Scheme::standard(),
        Secret::generate(),
    )
    .build()
    .unwrap();
    assert!(open.wants(&t("anything"), &[]));
    assert!(open.wants(&t("anything"), &["tenant_9"]));
}

/// Stands in for a certificate chain and key: the core never parses it.
const FAKE_PEM: &str = "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n\
-----BEGIN PRIVATE KEY-----\nS3CR3T-K3Y\n-----END PRIVATE KEY-----\n";

#[test]
fn client_identity_is_redacted_with_a_stable_id() {
    // The id is the SHA-256 of the PEM bytes, in lowercase hex.
    assert_eq!(
        ClientIdentity::from_pem("abc").id(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let identity = ClientIdentity::from_pem(FAKE_PEM);
    assert_eq!(identity.id().len(), 64);
    assert!(identity
        .id()
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(identity.expose_pem(), FAKE_PEM.as_bytes());

    // Same bytes, however given: same id, equal.
    for same in [
        ClientIdentity::from_pem(FAKE_PEM.to_owned()),
        ClientIdentity::from_pem(FAKE_PEM.as_bytes()),
        ClientIdentity::from_pem(FAKE_PEM.as_bytes().to_vec()),
    ] {
        assert_eq!(same.id(), identity.id());
        assert_eq!(same, identity);
    }
    let other = ClientIdentity::from_pem(format!("{FAKE_PEM}\n"));
    assert_ne!(other.id(), identity.id());
    assert_ne!(other, identity);
    let set: std::collections::HashSet<_> = [identity.clone(), identity.clone(), other].into();
    assert_eq!(set.len(), 2);

    // Clones share one buffer.
    let clone = identity.clone();
    assert_eq!(clone.expose_pem().as_ptr(), identity.expose_pem().as_ptr());

    // Debug shows the id only.
    let debug = format!("{identity:?}");
    assert!(debug.contains(identity.id()), "{debug}");
    for secret in ["S3CR3T", "PRIVATE", "BEGIN", "Q0VSVA"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn the_client_identity_rides_in_every_request() {
    let (id, ty, dlv) = ids();
    let identity = ClientIdentity::from_pem(FAKE_PEM);
    let endpoint = Endpoint::builder(
        "ep_mtls".parse().unwrap(),
        "https://example.com/hooks",
        Scheme::standard(),
        Secret::generate(),
    )
    .client_identity(identity.clone())
    .build()
    .unwrap();
    assert_eq!(endpoint.client_identity(), Some(&identity));
    assert!(!format!("{endpoint:?}").contains("S3CR3T"));

    for now in [NOW, NOW + time::Duration::hours(1)] {
        let request = endpoint
            .request(Bytes::from_static(b"{}"), &id, &ty, &dlv, now, None)
            .unwrap();
        let carried = request.extensions().get::<ClientIdentity>().unwrap();
        assert_eq!(carried, &identity);
        assert_eq!(
            carried.expose_pem().as_ptr(),
            identity.expose_pem().as_ptr()
        );
        // Nothing of it in the headers.
        for value in request.headers().values() {
            assert!(!value.as_bytes().windows(6).any(|w| w == b"S3CR3T"));
        }
    }
    assert_eq!(endpoint.clone().client_identity(), Some(&identity));

    let plain = Endpoint::builder(
        "ep_plain".parse().unwrap(),
        "https://example.com/hooks",
        Scheme::standard(),
        Secret::generate(),
    )
    .build()
    .unwrap();
    assert_eq!(plain.client_identity(), None);
    let request = plain
        .request(Bytes::from_static(b"{}"), &id, &ty, &dlv, NOW, None)
        .unwrap();
    assert!(request.extensions().get::<ClientIdentity>().is_none());
}
