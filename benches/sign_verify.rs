//! Standard Webhooks v1 (HMAC-SHA256) signing and verification: hookway
//! against a raw HMAC baseline and the `standardwebhooks` and `svix` crates,
//! side by side in one run, for bodies of 256 B, 4 KiB, 64 KiB and 1 MiB.
//!
//! Groups `verify/<size>` and `sign/<size>`, each with the functions
//! `raw_hmac_sha256` (hmac + sha2 over `{id}.{ts}.{body}`, key set-up
//! included, nothing else: the floor any implementation has to pay),
//! `hookway`, `standardwebhooks` and `svix`.
//!
//! Before anything is measured, every implementation is checked to produce
//! the same signature and to accept the others' headers, so all four do the
//! same work. See BENCHMARKS.md for results.
//!
//! `cargo bench --bench sign_verify`

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use criterion::{Criterion, Throughput};
use hmac::{KeyInit, Mac};
use hookway::clock::{Clock as _, SystemClock};
use hookway::{MessageId, Scheme, Secret, Signer, Verifier};
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

/// The secret published in the Standard Webhooks specification.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The message id published in the Standard Webhooks specification.
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";

/// Body sizes, with the label used in group names.
const SIZES: [(usize, &str); 4] = [
    (256, "256B"),
    (4 * 1024, "4KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Everything one implementation needs, built once.
struct Fixture {
    key: Vec<u8>,
    keyed: HmacSha256,
    id: MessageId,
    signer: Signer,
    verifier: Verifier,
    sw: standardwebhooks::Webhook,
    svix: svix::webhooks::Webhook,
}

impl Fixture {
    fn new() -> Self {
        let secret = Secret::base64(SECRET).expect("the published secret parses");
        Self {
            key: secret.expose_bytes().to_vec(),
            keyed: HmacSha256::new_from_slice(secret.expose_bytes())
                .expect("HMAC takes any key length"),
            id: MSG_ID.parse().expect("the published id is valid"),
            signer: Signer::new(Scheme::standard(), secret.clone()).expect("signer"),
            verifier: Verifier::new(Scheme::standard(), secret).expect("verifier"),
            sw: standardwebhooks::Webhook::new(SECRET).expect("standardwebhooks secret"),
            svix: svix::webhooks::Webhook::new(SECRET).expect("svix secret"),
        }
    }

    /// The baseline: HMAC-SHA256 over exactly the bytes a Standard Webhooks
    /// signature covers, fed in parts, no encoding or comparison.
    fn raw_mac(&self, ts: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(MSG_ID.as_bytes());
        mac.update(b".");
        mac.update(ts);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The same MAC from a state keyed once in advance (what hookway's
    /// `Signer` and `Verifier` do): no per-message key set-up.
    fn raw_mac_prekeyed(&self, ts: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(MSG_ID.as_bytes());
        mac.update(b".");
        mac.update(ts);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Headers signed by hookway at `now`.
    fn hookway_headers(&self, now: OffsetDateTime, body: &[u8]) -> HeaderMap {
        self.signer
            .sign(&self.id, now, body)
            .expect("hookway signs")
    }
}

/// A JSON-ish ASCII body of exactly `len` bytes (valid UTF-8, as the
/// `standardwebhooks` and `svix` crates require).
fn body(len: usize) -> Vec<u8> {
    let head = br#"{"type":"ticket.created","timestamp":"2026-03-15T10:30:00Z","data":{"pad":""#;
    let tail = br#""}}"#;
    assert!(len >= head.len() + tail.len());
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(head);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pad = len - head.len() - tail.len();
    out.extend((0..pad).map(|i| alphabet[(i * 7 + i / 36) % alphabet.len()]));
    out.extend_from_slice(tail);
    assert_eq!(out.len(), len);
    out
}

/// Headers with the given signature, under `webhook-*` or `svix-*` names.
fn headers_with(svix_names: bool, ts: i64, signature: &str) -> HeaderMap {
    let (id, t, s) = if svix_names {
        ("svix-id", "svix-timestamp", "svix-signature")
    } else {
        ("webhook-id", "webhook-timestamp", "webhook-signature")
    };
    let mut h = HeaderMap::new();
    h.insert(id, HeaderValue::from_static(MSG_ID));
    h.insert(t, HeaderValue::from(ts));
    h.insert(
        s,
        HeaderValue::from_str(signature).expect("ASCII signature"),
    );
    h
}

/// Checks, once, that all four implementations agree: same signature bytes,
/// and each verifier accepts every signer's headers.
fn cross_check(fx: &Fixture) {
    // The specification's own test vector.
    let at = OffsetDateTime::from_unix_timestamp(1_614_265_330).expect("timestamp");
    let h = fx.hookway_headers(at, br#"{"test": 2432232314}"#);
    assert_eq!(
        h["webhook-signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );

    for (len, label) in SIZES {
        let body = body(len);
        let now = SystemClock.now();
        let ts = now.unix_timestamp();
        let ts_text = ts.to_string();

        let hw = fx.hookway_headers(now, &body);
        let hw_sig = hw["webhook-signature"].to_str().expect("ASCII").to_owned();
        let raw = fx.raw_mac(ts_text.as_bytes(), &body);
        assert_eq!(raw, fx.raw_mac_prekeyed(ts_text.as_bytes(), &body));
        let raw_sig = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        let sw_sig = fx
            .sw
            .sign(MSG_ID, ts, &body)
            .expect("standardwebhooks signs");
        let svix_sig = fx.svix.sign(MSG_ID, ts, &body).expect("svix signs");
        assert_eq!(hw_sig, raw_sig, "{label}: hookway vs raw HMAC");
        assert_eq!(hw_sig, sw_sig, "{label}: hookway vs standardwebhooks");
        assert_eq!(hw_sig, svix_sig, "{label}: hookway vs svix");

        // The peers accept hookway's headers ...
        fx.sw
            .verify(&body, &hw)
            .expect("standardwebhooks accepts hookway's headers");
        fx.svix
            .verify(&body, &hw)
            .expect("svix accepts hookway's headers");
        // ... and hookway accepts theirs (svix's under both header names).
        for (svix_names, sig) in [(false, &sw_sig), (false, &svix_sig), (true, &svix_sig)] {
            let theirs = headers_with(svix_names, ts, sig);
            fx.verifier
                .verify_at(&theirs, &body, now)
                .expect("hookway accepts the peers' headers");
        }
        // A wrong body is rejected by all, so nobody wins by skipping work.
        let mut bad = body.clone();
        bad[len / 2] ^= 1;
        assert!(fx.verifier.verify_at(&hw, &bad, now).is_err());
        assert!(fx.sw.verify(&bad, &hw).is_err());
        assert!(fx.svix.verify(&bad, &hw).is_err());
    }
}

/// Criterion settings per size: short runs for a shared 2-core machine, fewer
/// samples for the big bodies (whose iterations take milliseconds).
fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    len: usize,
) {
    group.throughput(Throughput::Bytes(len as u64));
    group.warm_up_time(Duration::from_secs(1));
    match len {
        0..=4096 => group
            .measurement_time(Duration::from_secs(2))
            .sample_size(100),
        4097..=65536 => group
            .measurement_time(Duration::from_secs(2))
            .sample_size(50),
        _ => group
            .measurement_time(Duration::from_secs(3))
            .sample_size(30),
    };
}

fn bench_verify(c: &mut Criterion, fx: &Fixture, len: usize, label: &str) {
    let body = body(len);
    let body = body.as_slice();
    // Signed with the current time, freshly for each group, so the peers'
    // own clock check (five minutes) passes; hookway's `now` is fixed to the
    // signing time and reads no clock.
    let now = SystemClock.now();
    let ts = now.unix_timestamp().to_string();
    let headers = fx.hookway_headers(now, body);

    let mut group = c.benchmark_group(format!("verify/{label}"));
    configure(&mut group, len);
    group.bench_function("raw_hmac_sha256", |b| {
        b.iter(|| fx.raw_mac(black_box(ts.as_bytes()), black_box(body)))
    });
    group.bench_function("raw_hmac_sha256_prekeyed", |b| {
        b.iter(|| fx.raw_mac_prekeyed(black_box(ts.as_bytes()), black_box(body)))
    });
    group.bench_function("hookway", |b| {
        b.iter(|| {
            fx.verifier
                .verify_at(black_box(&headers), black_box(body), now)
                .expect("hookway verifies")
        })
    });
    group.bench_function("standardwebhooks", |b| {
        b.iter(|| {
            fx.sw
                .verify(black_box(body), black_box(&headers))
                .expect("standardwebhooks verifies")
        })
    });
    group.bench_function("svix", |b| {
        b.iter(|| {
            fx.svix
                .verify(black_box(body), black_box(&headers))
                .expect("svix verifies")
        })
    });
    group.finish();
}

fn bench_sign(c: &mut Criterion, fx: &Fixture, len: usize, label: &str) {
    let body = body(len);
    let body = body.as_slice();
    let now = SystemClock.now();
    let unix = now.unix_timestamp();
    let ts = unix.to_string();

    let mut group = c.benchmark_group(format!("sign/{label}"));
    configure(&mut group, len);
    group.bench_function("raw_hmac_sha256", |b| {
        b.iter(|| fx.raw_mac(black_box(ts.as_bytes()), black_box(body)))
    });
    group.bench_function("raw_hmac_sha256_prekeyed", |b| {
        b.iter(|| fx.raw_mac_prekeyed(black_box(ts.as_bytes()), black_box(body)))
    });
    group.bench_function("hookway", |b| {
        b.iter(|| {
            fx.signer
                .sign(black_box(&fx.id), black_box(now), black_box(body))
                .expect("hookway signs")
        })
    });
    group.bench_function("standardwebhooks", |b| {
        b.iter(|| {
            fx.sw
                .sign(black_box(MSG_ID), black_box(unix), black_box(body))
                .expect("standardwebhooks signs")
        })
    });
    group.bench_function("svix", |b| {
        b.iter(|| {
            fx.svix
                .sign(black_box(MSG_ID), black_box(unix), black_box(body))
                .expect("svix signs")
        })
    });
    group.finish();
}

fn main() {
    let fx = Fixture::new();
    cross_check(&fx);

    let mut c = Criterion::default().configure_from_args();
    for (len, label) in SIZES {
        bench_verify(&mut c, &fx, len, label);
    }
    for (len, label) in SIZES {
        bench_sign(&mut c, &fx, len, label);
    }
    c.final_summary();
}
