//! Properties of signing, verification, key material and event filters, over
//! the public API: every preset and builder round-trips, every tampering is
//! rejected with the exact error, key rotation and timestamp tolerance behave
//! at their edges, and no input makes anything panic.

use std::ops::Range;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hookway::scheme::{header, SecretFormat};
use hookway::{
    Algorithm, Encoding, EventFilter, EventType, Keyring, MessageId, Scheme, Secret, Signer,
    Verified, Verifier, VerifyError, DEFAULT_TOLERANCE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use time::OffsetDateTime;

/// 9999-12-31T23:59:59Z, the last second `OffsetDateTime` can hold by default.
const MAX_UNIX: i64 = 253_402_300_799;
/// The receiver's clock in the fuzz tests (2025-01-01T00:00:00Z).
const NOW_UNIX: i64 = 1_735_689_600;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Keep failures in the report only; write no regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).expect("in range")
}

fn now() -> OffsetDateTime {
    unix(NOW_UNIX)
}

// ---------------------------------------------------------------------------
// The schemes under test.
// ---------------------------------------------------------------------------

/// Where a scheme puts its parts, so tests can tamper with them precisely.
#[derive(Clone, Debug)]
enum Layout {
    /// `webhook-*` / `svix-*`: id and timestamp headers, `v1,<sig> …`.
    Standard { ts: HeaderName },
    /// A MAC of the body after an optional prefix.
    Body { prefix: &'static str },
    /// `t=<ts>,v1=<sig>[,…]` in one header.
    Stamped {
        ts_key: &'static str,
        sig_key: &'static str,
    },
    /// `v0=<sig>` with the timestamp in its own header.
    Split { ts: HeaderName },
}

#[derive(Clone, Debug)]
struct Case {
    label: String,
    scheme: Scheme,
    layout: Layout,
    enc: Encoding,
    /// Whether the header carries one signature per active key.
    multi: bool,
    /// The header carrying the message id, if any.
    id_header: Option<HeaderName>,
}

impl Case {
    fn new(
        label: impl Into<String>,
        scheme: Scheme,
        layout: Layout,
        enc: Encoding,
        multi: bool,
        id_header: Option<&'static str>,
    ) -> Self {
        Self {
            label: label.into(),
            scheme,
            layout,
            enc,
            multi,
            id_header: id_header.map(HeaderName::from_static),
        }
    }

    fn sig(&self) -> HeaderName {
        self.scheme.signature_header()
    }

    fn has_timestamp(&self) -> bool {
        !matches!(self.layout, Layout::Body { .. })
    }

    fn id_is_signed(&self) -> bool {
        matches!(self.layout, Layout::Standard { .. })
    }

    /// Every header name the scheme reads (Standard reads both name sets).
    fn names(&self) -> Vec<HeaderName> {
        let mut names = match &self.layout {
            Layout::Standard { .. } => vec![
                header::WEBHOOK_ID,
                header::WEBHOOK_TIMESTAMP,
                header::WEBHOOK_SIGNATURE,
                header::SVIX_ID,
                header::SVIX_TIMESTAMP,
                header::SVIX_SIGNATURE,
            ],
            Layout::Split { ts } => vec![self.sig(), ts.clone()],
            _ => vec![self.sig()],
        };
        if let Some(id) = &self.id_header {
            if !names.contains(id) {
                names.push(id.clone());
            }
        }
        names
    }
}

/// Every preset, and several instances of each builder.
fn cases() -> Vec<Case> {
    use Algorithm::{Sha256, Sha512};
    use Encoding::{Base64, Hex};
    let t_v1 = Layout::Stamped {
        ts_key: "t",
        sig_key: "v1",
    };
    let mut cases = vec![
        Case::new(
            "standard",
            Scheme::standard(),
            Layout::Standard {
                ts: header::WEBHOOK_TIMESTAMP,
            },
            Base64,
            true,
            Some("webhook-id"),
        ),
        Case::new(
            "svix",
            Scheme::svix(),
            Layout::Standard {
                ts: header::SVIX_TIMESTAMP,
            },
            Base64,
            true,
            Some("svix-id"),
        ),
        Case::new(
            "github",
            Scheme::github(),
            Layout::Body { prefix: "sha256=" },
            Hex,
            false,
            Some("x-github-delivery"),
        ),
        Case::new(
            "shopify",
            Scheme::shopify(),
            Layout::Body { prefix: "" },
            Base64,
            false,
            Some("x-shopify-webhook-id"),
        ),
        Case::new("stripe", Scheme::stripe(), t_v1.clone(), Hex, true, None),
        Case::new(
            "hook0",
            Scheme::hook0(),
            Layout::Stamped {
                ts_key: "t",
                sig_key: "v0",
            },
            Hex,
            false,
            None,
        ),
        Case::new(
            "slack",
            Scheme::slack(),
            Layout::Split {
                ts: HeaderName::from_static("x-slack-request-timestamp"),
            },
            Hex,
            false,
            None,
        ),
        Case::new(
            "hmac_header X-Relay-Signature: sha256=<hex>",
            Scheme::hmac_header("X-Relay-Signature")
                .prefix("sha256=")
                .build()
                .unwrap(),
            Layout::Body { prefix: "sha256=" },
            Hex,
            false,
            None,
        ),
        Case::new(
            "hmac_header X-Raven-Signature: <hex>",
            Scheme::hmac_header("X-Raven-Signature").build().unwrap(),
            Layout::Body { prefix: "" },
            Hex,
            false,
            None,
        ),
        Case::new(
            "hmac_header sha512 base64 with id header",
            Scheme::hmac_header("X-Base-Signature")
                .prefix("hmac-sha512:")
                .algorithm(Sha512)
                .encoding(Base64)
                .id_header("X-Base-Id")
                .build()
                .unwrap(),
            Layout::Body {
                prefix: "hmac-sha512:",
            },
            Base64,
            false,
            Some("x-base-id"),
        ),
        Case::new(
            "timestamped sha512 base64",
            Scheme::timestamped("X-Acme-Signature")
                .algorithm(Sha512)
                .encoding(Base64)
                .build()
                .unwrap(),
            t_v1.clone(),
            Base64,
            true,
            None,
        ),
        Case::new(
            "timestamped custom keys, single signature",
            Scheme::timestamped("X-Webhook-Sig")
                .timestamp_key("ts")
                .signature_key("sig")
                .separator(b'|')
                .multiple_signatures(false)
                .id_header("X-Webhook-Id")
                .build()
                .unwrap(),
            Layout::Stamped {
                ts_key: "ts",
                sig_key: "sig",
            },
            Hex,
            false,
            Some("x-webhook-id"),
        ),
        Case::new(
            "timestamped with base64 secrets",
            Scheme::timestamped("X-B64-Signature")
                .secret_format(SecretFormat::Base64)
                .build()
                .unwrap(),
            t_v1.clone(),
            Hex,
            true,
            None,
        ),
        Case::new(
            "separate_timestamp defaults",
            Scheme::separate_timestamp("X-Signature", "X-Timestamp")
                .build()
                .unwrap(),
            Layout::Split {
                ts: HeaderName::from_static("x-timestamp"),
            },
            Hex,
            false,
            None,
        ),
        Case::new(
            "separate_timestamp v2 sha512 base64",
            Scheme::separate_timestamp("X-Sig", "X-Sig-Time")
                .version("v2")
                .separator(b'.')
                .algorithm(Sha512)
                .encoding(Base64)
                .id_header("X-Request-Id")
                .build()
                .unwrap(),
            Layout::Split {
                ts: HeaderName::from_static("x-sig-time"),
            },
            Base64,
            false,
            Some("x-request-id"),
        ),
    ];
    for alg in [Sha256, Sha512] {
        for enc in [Hex, Base64] {
            cases.push(Case::new(
                format!("convoy_simple {alg:?} {enc:?}"),
                Scheme::convoy_simple(alg, enc),
                Layout::Body { prefix: "" },
                enc,
                false,
                None,
            ));
            cases.push(Case::new(
                format!("convoy_advanced {alg:?} {enc:?}"),
                Scheme::convoy_advanced(alg, enc),
                t_v1.clone(),
                enc,
                true,
                None,
            ));
        }
    }
    cases
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

/// Raw material for a secret; turned into a secret the way the scheme's
/// issuer writes it by [`make_secret`].
#[derive(Clone, Debug)]
struct SecretSeed {
    bytes: Vec<u8>,
    text: String,
    form: u8,
}

fn secret_seed() -> impl Strategy<Value = SecretSeed> {
    (
        vec(any::<u8>(), 16..=64),
        prop_oneof!["[!-~]{16,48}", "\\PC{16,24}"],
        0_u8..3,
    )
        .prop_map(|(bytes, text, form)| SecretSeed { bytes, text, form })
}

fn make_secret(scheme: &Scheme, seed: &SecretSeed) -> Secret {
    let base64 = scheme.secret_format() == SecretFormat::Base64;
    let secret = match (base64, seed.form) {
        (_, 0) => Secret::from_bytes(&seed.bytes),
        (true, 1) => scheme.parse_secret(&format!("whsec_{}", STANDARD.encode(&seed.bytes))),
        (true, _) => scheme.parse_secret(&STANDARD_NO_PAD.encode(&seed.bytes)),
        (false, 1) => scheme.parse_secret(&seed.text),
        // A Stripe-looking literal: the prefix is part of the key.
        (false, _) => scheme.parse_secret(&format!("whsec_{}", hex::encode(&seed.bytes))),
    };
    secret.expect("seeds make valid secrets")
}

/// One secret per seed; rejects the test case if two coincide.
fn make_secrets(scheme: &Scheme, seeds: &[SecretSeed]) -> Result<Vec<Secret>, TestCaseError> {
    let secrets: Vec<Secret> = seeds.iter().map(|s| make_secret(scheme, s)).collect();
    for (i, a) in secrets.iter().enumerate() {
        for b in &secrets[..i] {
            prop_assume!(a != b);
        }
    }
    Ok(secrets)
}

fn ring(secrets: &[Secret]) -> Keyring {
    secrets
        .iter()
        .cloned()
        .fold(Keyring::empty(), |ring, s| ring.with(s))
}

fn message_id() -> impl Strategy<Value = MessageId> {
    // Visible ASCII without '.'.
    prop_oneof!["[!-\\-/-~]{1,24}", "[!-\\-/-~]{1,256}"]
        .prop_map(|s| MessageId::new(s).expect("valid id"))
}

fn instant() -> impl Strategy<Value = OffsetDateTime> {
    prop_oneof![
        (0..=MAX_UNIX, 0..1_000_000_000_i64),
        (1_500_000_000..=2_000_000_000_i64, 0..1_000_000_000_i64),
        Just((0, 0)),
        Just((MAX_UNIX, 999_999_999)),
    ]
    .prop_map(|(secs, nanos)| unix(secs) + time::Duration::nanoseconds(nanos))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..2048),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

#[derive(Clone, Debug)]
enum BodyEdit {
    /// XOR one byte with a non-zero value.
    Replace(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

fn body_edit() -> impl Strategy<Value = BodyEdit> {
    prop_oneof![
        3 => (any::<Index>(), 1_u8..=255).prop_map(|(i, x)| BodyEdit::Replace(i, x)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| BodyEdit::Insert(i, b)),
        1 => any::<Index>().prop_map(BodyEdit::Remove),
    ]
}

/// The body with one byte changed, inserted or removed (never equal to it).
fn edit(body: &[u8], edit: &BodyEdit) -> Vec<u8> {
    let mut out = body.to_vec();
    match *edit {
        BodyEdit::Replace(i, x) if !out.is_empty() => {
            let i = i.index(out.len());
            out[i] ^= x;
        }
        BodyEdit::Remove(i) if !out.is_empty() => {
            out.remove(i.index(out.len()));
        }
        BodyEdit::Insert(i, b) => out.insert(i.index(out.len() + 1), b),
        BodyEdit::Replace(_, b) => out.push(b),
        BodyEdit::Remove(_) => out.push(b'x'),
    }
    out
}

/// Header value bytes `HeaderValue::from_bytes` accepts, mostly junk, some
/// shaped like each scheme's headers, some huge.
fn fuzz_value() -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![
        8 => 0x20_u8..=0x7e,
        2 => 0x80_u8..=0xff,
        1 => Just(b'\t'),
    ];
    prop_oneof![
        vec(byte.clone(), 0..64).boxed(),
        vec(byte, 0..2048).boxed(),
        Just(Vec::new()).boxed(),
        (NOW_UNIX - 400..=NOW_UNIX + 400)
            .prop_map(|t| t.to_string().into_bytes())
            .boxed(),
        "[0-9]{0,25}".prop_map(String::into_bytes).boxed(),
        "[!-\\-/-~]{1,40}".prop_map(String::into_bytes).boxed(),
        "(v1|v1a|v0|v2|sha256|t|ts)[,=:]?[A-Za-z0-9+/=]{0,130}"
            .prop_map(String::into_bytes)
            .boxed(),
        "( ?(v1|v1a|x),[A-Za-z0-9+/]{43,86}={0,2}){1,5}"
            .prop_map(String::into_bytes)
            .boxed(),
        "t=[0-9]{1,12}(, ?(v1|v0|t|sig)=[0-9a-fA-F]{0,130}){0,4}"
            .prop_map(String::into_bytes)
            .boxed(),
        (1_usize..6000)
            .prop_map(|n| "v1,x ".repeat(n).into_bytes())
            .boxed(),
        (1_usize..3000)
            .prop_map(|n| format!("t={NOW_UNIX}{}", ",v1=00".repeat(n)).into_bytes())
            .boxed(),
        (1_usize..3000, vec(0x80_u8..=0xff, 1..4))
            .prop_map(|(n, junk)| junk.repeat(n))
            .boxed(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Header surgery.
// ---------------------------------------------------------------------------

fn sig_value<'h>(case: &Case, headers: &'h HeaderMap) -> &'h [u8] {
    headers
        .get(case.sig())
        .unwrap_or_else(|| panic!("{}: no signature header", case.label))
        .as_bytes()
}

fn split_spans(value: &[u8], sep: u8) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, b) in value.iter().enumerate() {
        if *b == sep {
            spans.push(start..i);
            start = i + 1;
        }
    }
    spans.push(start..value.len());
    spans
}

/// The byte ranges of the encoded signatures in a signature header value, in
/// key order.
fn signature_spans(case: &Case, value: &[u8]) -> Vec<Range<usize>> {
    let after = |r: Range<usize>, sep: u8| {
        let at = value[r.clone()].iter().position(|b| *b == sep)?;
        Some((r.start + at + 1..r.end, r.start..r.start + at))
    };
    match &case.layout {
        Layout::Standard { .. } => split_spans(value, b' ')
            .into_iter()
            .filter_map(|r| after(r, b',').map(|(sig, _)| sig))
            .collect(),
        Layout::Body { prefix } => std::iter::once(prefix.len()..value.len()).collect(),
        Layout::Stamped { sig_key, .. } => split_spans(value, b',')
            .into_iter()
            .filter_map(|r| after(r, b'='))
            .filter(|(_, key)| &value[key.clone()] == sig_key.as_bytes())
            .map(|(sig, _)| sig)
            .collect(),
        Layout::Split { .. } => {
            std::iter::once(after(0..value.len(), b'=').expect("v0=<sig>").0).collect()
        }
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The length of an encoded signature without base64 padding.
fn significant_len(enc: Encoding, text: &[u8]) -> usize {
    if enc == Encoding::Hex {
        text.len()
    } else {
        text.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1)
    }
}

/// `text` with the character at `pos` replaced by another character of the
/// same alphabet that decodes to different bytes and keeps the encoding
/// canonical: a different hex digit value (not just another case), and for
/// the last base64 character one that keeps the unused trailing bits zero.
fn flip_char(enc: Encoding, text: &[u8], pos: usize, delta: usize) -> Vec<u8> {
    let mut out = text.to_vec();
    if enc == Encoding::Hex {
        let value = (text[pos] as char).to_digit(16).expect("hex digit") as usize;
        out[pos] = b"0123456789abcdef"[(value + 1 + delta % 15) % 16];
    } else {
        let len = significant_len(enc, text);
        let index = BASE64_ALPHABET
            .iter()
            .position(|c| *c == text[pos])
            .expect("base64 character");
        let unused_bits = if pos + 1 == len { (len * 6) % 8 } else { 0 };
        let step = 1_usize << unused_bits;
        let choices = 64 / step - 1;
        out[pos] = BASE64_ALPHABET[(index + step * (1 + delta % choices)) % 64];
    }
    out
}

fn with_sig_value(case: &Case, headers: &HeaderMap, value: &[u8]) -> HeaderMap {
    let mut out = headers.clone();
    out.insert(case.sig(), HeaderValue::from_bytes(value).expect("valid"));
    out
}

/// The headers with the signed timestamp text replaced by `ts`.
fn with_timestamp(case: &Case, headers: &HeaderMap, ts: &str) -> HeaderMap {
    let mut out = headers.clone();
    match &case.layout {
        Layout::Standard { ts: name } | Layout::Split { ts: name } => {
            out.insert(name.clone(), HeaderValue::from_str(ts).expect("digits"));
        }
        Layout::Stamped { ts_key, .. } => {
            let value = std::str::from_utf8(sig_value(case, headers)).expect("ASCII");
            let marker = format!("{ts_key}=");
            let rebuilt: Vec<String> = value
                .split(',')
                .map(|item| {
                    if item.starts_with(&marker) {
                        format!("{marker}{ts}")
                    } else {
                        item.to_owned()
                    }
                })
                .collect();
            out = with_sig_value(case, headers, rebuilt.join(",").as_bytes());
        }
        Layout::Body { .. } => unreachable!("no timestamp"),
    }
    out
}

// ---------------------------------------------------------------------------
// Assertions.
// ---------------------------------------------------------------------------

fn expect_ok<'a>(
    what: &str,
    result: Result<Verified<'a>, VerifyError>,
) -> Result<Verified<'a>, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: expected acceptance, got {e:?}")))
}

fn expect_no_match(
    what: &str,
    result: Result<Verified<'_>, VerifyError>,
) -> Result<(), TestCaseError> {
    match result {
        Err(VerifyError::NoMatchingSignature) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "{what}: expected NoMatchingSignature, got {other:?}"
        ))),
    }
}

fn verifier(case: &Case, secrets: &[Secret]) -> Verifier {
    Verifier::new(case.scheme.clone(), ring(secrets))
        .unwrap_or_else(|e| panic!("{}: verifier: {e}", case.label))
}

fn sign(
    case: &Case,
    secrets: &[Secret],
    id: &MessageId,
    at: OffsetDateTime,
    body: &[u8],
) -> HeaderMap {
    Signer::new(case.scheme.clone(), ring(secrets))
        .unwrap_or_else(|e| panic!("{}: signer: {e}", case.label))
        .sign(id, at, body)
        .unwrap_or_else(|e| panic!("{}: sign: {e}", case.label))
}

/// Verifiers with keys unrelated to any signature, for the fuzz tests.
fn fuzz_verifiers(case: &Case) -> Vec<Verifier> {
    let a = Secret::from_bytes(&[0x5a; 32]).unwrap();
    let b = Secret::from_bytes(b"fuzz-secret-0123456789").unwrap();
    #[allow(unused_mut)]
    let mut verifiers = vec![
        verifier(case, std::slice::from_ref(&a)),
        verifier(case, &[a.clone(), b]),
    ];
    #[cfg(feature = "ed25519")]
    if case.id_is_signed() {
        let key = hookway::secret::Ed25519SecretKey::from_seed(&[9; 32]);
        verifiers.push(
            Verifier::new(case.scheme.clone(), Keyring::new(key.public_key()).with(a)).unwrap(),
        );
        verifiers.push(Verifier::new(case.scheme.clone(), Keyring::new(key)).unwrap());
    }
    verifiers
}

// ---------------------------------------------------------------------------
// 1–4: round trips, tampering, rotation, tolerance.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// 1. Every scheme verifies what it signs, for any body, id, time and
    /// keyring of one to three secrets.
    #[test]
    fn sign_then_verify_round_trips(
        seeds in vec(secret_seed(), 1..=3),
        id in message_id(),
        at in instant(),
        body in body(),
    ) {
        for case in cases() {
            let secrets = make_secrets(&case.scheme, &seeds)?;
            let headers = sign(&case, &secrets, &id, at, &body);
            let verified = expect_ok(
                &case.label,
                verifier(&case, &secrets).verify_at(&headers, &body, at),
            )?;
            prop_assert_eq!(verified.body(), &body[..]);
            let expected_id = case.id_header.as_ref().map(|_| id.as_str());
            prop_assert_eq!(verified.id(), expected_id, "{}", case.label);
            let expected_ts = case.has_timestamp().then(|| at.unix_timestamp());
            prop_assert_eq!(verified.unix_timestamp(), expected_ts, "{}", case.label);
            let signatures = signature_spans(&case, sig_value(&case, &headers)).len();
            let expected = if case.multi { secrets.len() } else { 1 };
            prop_assert_eq!(signatures, expected, "{}", case.label);
        }
    }

    /// 2. Any one-byte change of the body is rejected.
    #[test]
    fn changed_body_is_rejected(
        seeds in vec(secret_seed(), 1..=3),
        id in message_id(),
        at in instant(),
        body in body(),
        change in body_edit(),
    ) {
        let tampered = edit(&body, &change);
        prop_assert_ne!(&tampered, &body);
        for case in cases() {
            let secrets = make_secrets(&case.scheme, &seeds)?;
            let headers = sign(&case, &secrets, &id, at, &body);
            expect_no_match(
                &case.label,
                verifier(&case, &secrets).verify_at(&headers, &tampered, at),
            )?;
        }
    }

    /// 2. A different message id is rejected where the id is signed, and
    /// merely reported where it is not.
    #[test]
    fn changed_id_is_rejected_where_signed(
        seed in secret_seed(),
        id in message_id(),
        other in message_id(),
        at in instant(),
        body in body(),
    ) {
        prop_assume!(id != other);
        for case in cases() {
            let Some(id_header) = &case.id_header else { continue };
            let secrets = make_secrets(&case.scheme, std::slice::from_ref(&seed))?;
            let mut headers = sign(&case, &secrets, &id, at, &body);
            headers.insert(id_header.clone(), HeaderValue::from_str(other.as_str()).unwrap());
            let result = verifier(&case, &secrets).verify_at(&headers, &body, at);
            if case.id_is_signed() {
                expect_no_match(&case.label, result)?;
            } else {
                let verified = expect_ok(&case.label, result)?;
                prop_assert_eq!(verified.id(), Some(other.as_str()));
            }
        }
    }

    /// 2. Other digits for the signed timestamp, still within tolerance
    /// (including the same value with leading zeros), are rejected.
    #[test]
    fn changed_timestamp_is_rejected(
        seeds in vec(secret_seed(), 1..=3),
        id in message_id(),
        at in instant(),
        body in body(),
        leading_zeros in 0_usize..=5,
        delta in 1_i64..=300,
        later in any::<bool>(),
    ) {
        let ts = at.unix_timestamp();
        let text = if leading_zeros > 0 {
            format!("{}{ts}", "0".repeat(leading_zeros))
        } else if later || ts < delta {
            (ts + delta).to_string()
        } else {
            (ts - delta).to_string()
        };
        for case in cases() {
            if !case.has_timestamp() {
                continue;
            }
            let secrets = make_secrets(&case.scheme, &seeds)?;
            let headers = sign(&case, &secrets, &id, at, &body);
            let tampered = with_timestamp(&case, &headers, &text);
            expect_no_match(
                &case.label,
                verifier(&case, &secrets).verify_at(&tampered, &body, at),
            )?;
        }
    }

    /// 2. Changing one character of a signature to another of its alphabet
    /// is rejected by the holder of the key that made it.
    #[test]
    fn changed_signature_character_is_rejected(
        seeds in vec(secret_seed(), 1..=3),
        id in message_id(),
        at in instant(),
        body in body(),
        entry in any::<Index>(),
        position in any::<Index>(),
        delta in any::<usize>(),
    ) {
        for case in cases() {
            let secrets = make_secrets(&case.scheme, &seeds)?;
            let headers = sign(&case, &secrets, &id, at, &body);
            let value = sig_value(&case, &headers).to_vec();
            let spans = signature_spans(&case, &value);
            let k = entry.index(spans.len());
            let span = spans[k].clone();
            let text = &value[span.clone()];
            let pos = position.index(significant_len(case.enc, text));
            let mut new_value = value[..span.start].to_vec();
            new_value.extend(flip_char(case.enc, text, pos, delta));
            new_value.extend(&value[span.end..]);
            let tampered = with_sig_value(&case, &headers, &new_value);
            // Entry k is key k's signature (the primary's, for single ones).
            let what = format!("{} ({:?})", case.label, String::from_utf8_lossy(&new_value));
            expect_no_match(
                &what,
                verifier(&case, &secrets[k..=k]).verify_at(&tampered, &body, at),
            )?;
            if !case.multi {
                expect_no_match(
                    &what,
                    verifier(&case, &secrets).verify_at(&tampered, &body, at),
                )?;
            }
        }
    }

    /// 3. Rotation: `[new, old]` signs; schemes with several signatures
    /// satisfy holders of either key, single-signature schemes only the
    /// holder of the primary key.
    #[test]
    fn rotation(
        new in secret_seed(),
        old in secret_seed(),
        id in message_id(),
        at in instant(),
        body in body(),
    ) {
        for case in cases() {
            let secrets = make_secrets(&case.scheme, &[new.clone(), old.clone()])?;
            let headers = sign(&case, &secrets, &id, at, &body);
            let what = |who: &str| format!("{}: {who}", case.label);
            expect_ok(&what("both"), verifier(&case, &secrets).verify_at(&headers, &body, at))?;
            expect_ok(
                &what("only new"),
                verifier(&case, &secrets[..1]).verify_at(&headers, &body, at),
            )?;
            let only_old = verifier(&case, &secrets[1..]).verify_at(&headers, &body, at);
            if case.multi {
                expect_ok(&what("only old"), only_old)?;
            } else {
                expect_no_match(&what("only old"), only_old)?;
            }
            // The receiver's order of keys does not matter.
            expect_ok(
                &what("reversed"),
                verifier(&case, &[secrets[1].clone(), secrets[0].clone()])
                    .verify_at(&headers, &body, at),
            )?;
        }
    }

    /// 4. A timestamp exactly `tolerance` away either way is accepted; one
    /// second more is rejected with the matching error.
    #[test]
    fn tolerance_edges(
        seed in secret_seed(),
        id in message_id(),
        t in prop_oneof![0..=MAX_UNIX - 20_000_000, Just(0), Just(NOW_UNIX)],
        tol in prop_oneof![Just(0_u64), Just(300), 0..=10_000_000_u64],
        body in body(),
    ) {
        let tol_i = tol as i64;
        for case in cases() {
            let secrets = make_secrets(&case.scheme, std::slice::from_ref(&seed))?;
            let headers = sign(&case, &secrets, &id, unix(t), &body);
            let v = verifier(&case, &secrets).with_tolerance(Duration::from_secs(tol));
            let at = |secs: i64| v.verify_at(&headers, &body, unix(secs));
            let what = |edge: &str| format!("{}: {edge}", case.label);
            if !case.has_timestamp() {
                expect_ok(&what("no timestamp, far past"), at(t - tol_i - 1_000_000))?;
                expect_ok(&what("no timestamp, far future"), at(t + tol_i + 1_000_000))?;
                continue;
            }
            expect_ok(&what("now = t + tolerance"), at(t + tol_i))?;
            expect_ok(&what("now = t - tolerance"), at(t - tol_i))?;
            match at(t + tol_i + 1) {
                Err(VerifyError::TimestampTooOld { timestamp, age_secs, tolerance_secs }) => {
                    prop_assert_eq!((timestamp, age_secs, tolerance_secs), (t, tol + 1, tol));
                }
                other => prop_assert!(false, "{}: expected TimestampTooOld, got {:?}", case.label, other),
            }
            match at(t - tol_i - 1) {
                Err(VerifyError::TimestampTooNew { timestamp, ahead_secs, tolerance_secs }) => {
                    prop_assert_eq!((timestamp, ahead_secs, tolerance_secs), (t, tol + 1, tol));
                }
                other => prop_assert!(false, "{}: expected TimestampTooNew, got {:?}", case.label, other),
            }
            // The default tolerance is symmetric too.
            let d = DEFAULT_TOLERANCE.as_secs() as i64;
            let default = verifier(&case, &secrets);
            expect_ok(&what("default +"), default.verify_at(&headers, &body, unix(t + d)))?;
            expect_ok(&what("default -"), default.verify_at(&headers, &body, unix(t - d)))?;
            // A tolerance too large for any clock neither overflows nor rejects.
            let unbounded = verifier(&case, &secrets).with_tolerance(Duration::MAX);
            expect_ok(&what("Duration::MAX, epoch"), unbounded.verify_at(&headers, &body, unix(0)))?;
            expect_ok(
                &what("Duration::MAX, year 9999"),
                unbounded.verify_at(&headers, &body, unix(MAX_UNIX)),
            )?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..config() })]

    /// 1. Beyond the fixed instances above: any scheme a builder accepts
    /// verifies what it signs. Header names are drawn from a small pool (in
    /// both cases) so that settings collide.
    #[test]
    fn every_scheme_a_builder_accepts_round_trips(
        kind in 0_u8..3,
        sig_name in 0_usize..4,
        ts_name in 0_usize..4,
        id_name in proptest::option::of(0_usize..4),
        prefix in "[!-~]{0,6}",
        ts_key in "[!-~]{1,3}",
        sig_key in "[!-~]{1,3}",
        sep in any::<u8>(),
        multiple in any::<bool>(),
        sha512 in any::<bool>(),
        base64 in any::<bool>(),
        base64_secrets in any::<bool>(),
        seeds in vec(secret_seed(), 1..=3),
        id in message_id(),
        at in instant(),
        body in body(),
    ) {
        const NAMES: [&str; 4] = ["X-Sig", "x-sig", "X-Time", "X-Id"];
        let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
        let enc = if base64 { Encoding::Base64 } else { Encoding::Hex };
        let format = if base64_secrets { SecretFormat::Base64 } else { SecretFormat::Literal };
        let built = match kind {
            0 => {
                let b = Scheme::hmac_header(NAMES[sig_name])
                    .prefix(&prefix)
                    .algorithm(alg)
                    .encoding(enc)
                    .secret_format(format);
                match id_name {
                    Some(i) => b.id_header(NAMES[i]),
                    None => b,
                }
                .build()
            }
            1 => {
                let b = Scheme::timestamped(NAMES[sig_name])
                    .timestamp_key(&ts_key)
                    .signature_key(&sig_key)
                    .separator(sep)
                    .multiple_signatures(multiple)
                    .algorithm(alg)
                    .encoding(enc)
                    .secret_format(format);
                match id_name {
                    Some(i) => b.id_header(NAMES[i]),
                    None => b,
                }
                .build()
            }
            _ => {
                let b = Scheme::separate_timestamp(NAMES[sig_name], NAMES[ts_name])
                    .version(&sig_key)
                    .separator(sep)
                    .algorithm(alg)
                    .encoding(enc)
                    .secret_format(format);
                match id_name {
                    Some(i) => b.id_header(NAMES[i]),
                    None => b,
                }
                .build()
            }
        };
        let Ok(scheme) = built else {
            return Ok(());
        };
        let secrets = make_secrets(&scheme, &seeds)?;
        let headers = Signer::new(scheme.clone(), ring(&secrets))
            .unwrap()
            .sign(&id, at, &body)
            .unwrap();
        let result = Verifier::new(scheme.clone(), ring(&secrets))
            .unwrap()
            .verify_at(&headers, &body, at);
        prop_assert!(
            result.is_ok(),
            "{:?} signed {:?} and then rejected it: {:?}",
            scheme,
            headers,
            result
        );
    }
}

/// A secret from `generate_secret` signs and verifies, and its text form
/// parses back to the same key under the same scheme.
#[test]
fn generated_secrets_round_trip() {
    let id = MessageId::generate_at(now());
    for case in cases() {
        let secret = case.scheme.generate_secret();
        let text = secret.expose_text();
        assert!(
            case.scheme.parse_secret(&text).unwrap() == secret,
            "{}",
            case.label
        );
        let secrets = [secret, case.scheme.generate_secret()];
        let headers = sign(&case, &secrets, &id, now(), b"{\"a\":1}");
        verifier(&case, &secrets)
            .verify_at(&headers, b"{\"a\":1}", now())
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.label));
    }
}

/// The builders accept settings that make one header hold two things: the
/// signer then overwrites its own signature (or timestamp) with the next
/// header, and the scheme can never verify what it signs. Each of these must
/// either be refused by `build()` or round-trip.
#[test]
fn builders_refuse_colliding_header_names_or_round_trip() {
    let configs: Vec<(&str, Result<Scheme, _>)> = vec![
        (
            "hmac_header(\"X-Sig\").id_header(\"X-Sig\")",
            Scheme::hmac_header("X-Sig").id_header("X-Sig").build(),
        ),
        (
            "timestamped(\"X-Sig\").id_header(\"x-sig\")",
            Scheme::timestamped("X-Sig").id_header("x-sig").build(),
        ),
        (
            "separate_timestamp(\"X-Sig\", \"X-Sig\")",
            Scheme::separate_timestamp("X-Sig", "X-Sig").build(),
        ),
        (
            "separate_timestamp(\"X-Sig\", \"X-Ts\").id_header(\"X-Ts\")",
            Scheme::separate_timestamp("X-Sig", "X-Ts")
                .id_header("X-Ts")
                .build(),
        ),
        (
            "separate_timestamp(\"X-Sig\", \"X-Ts\").id_header(\"X-Sig\")",
            Scheme::separate_timestamp("X-Sig", "X-Ts")
                .id_header("X-Sig")
                .build(),
        ),
    ];
    let secret = Secret::literal("a literal secret of some length").unwrap();
    let id = MessageId::new("msg_1").unwrap();
    let mut broken = Vec::new();
    for (what, built) in configs {
        let Ok(scheme) = built else { continue };
        let headers = Signer::new(scheme.clone(), secret.clone())
            .unwrap()
            .sign(&id, now(), b"{}")
            .unwrap();
        let result =
            Verifier::new(scheme, secret.clone())
                .unwrap()
                .verify_at(&headers, b"{}", now());
        if let Err(e) = result {
            broken.push(format!(
                "{what}: built, signed {headers:?}, then rejected: {e:?}"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

// ---------------------------------------------------------------------------
// 5: fuzz-style inputs never panic.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary values (junk, obs-text, empty, huge, thousands of entries,
    /// repeated headers) under every header a scheme reads are rejected.
    #[test]
    fn arbitrary_headers_are_rejected(
        pool in vec(fuzz_value(), 1..6),
        counts in vec(0_usize..8, 6),
        extra in vec(fuzz_value(), 0..3),
        body in body(),
    ) {
        let values: Vec<HeaderValue> = pool
            .iter()
            .map(|v| HeaderValue::from_bytes(v).expect("fuzz values are valid header values"))
            .collect();
        for case in cases() {
            let mut headers = HeaderMap::new();
            for (i, name) in case.names().into_iter().enumerate() {
                // Mostly one value, sometimes none, two or three.
                let n = [0, 1, 1, 1, 1, 1, 2, 3][counts[i]];
                for k in 0..n {
                    headers.append(name.clone(), values[(i + k) % values.len()].clone());
                }
            }
            for v in &extra {
                headers.append("x-unrelated", HeaderValue::from_bytes(v).unwrap());
            }
            for verifier in fuzz_verifiers(&case) {
                match verifier.verify_at(&headers, &body, now()) {
                    Ok(v) => prop_assert!(false, "{}: accepted {:?}", case.label, v),
                    Err(e) => {
                        prop_assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
            }
        }
    }

    /// Replacing any signed header of a valid request with a fuzz value is
    /// rejected; appending one never panics.
    #[test]
    fn fuzzed_signed_headers_are_rejected(
        seed in secret_seed(),
        id in message_id(),
        body in body(),
        which in any::<Index>(),
        value in fuzz_value(),
        append in any::<bool>(),
    ) {
        let value = HeaderValue::from_bytes(&value).unwrap();
        for case in cases() {
            let secrets = make_secrets(&case.scheme, std::slice::from_ref(&seed))?;
            let mut headers = sign(&case, &secrets, &id, now(), &body);
            let names: Vec<HeaderName> = headers
                .keys()
                .filter(|n| case.id_is_signed() || Some(*n) != case.id_header.as_ref())
                .cloned()
                .collect();
            let name = names[which.index(names.len())].clone();
            let v = verifier(&case, &secrets);
            if append {
                headers.append(name, value.clone());
                let _ = v.verify_at(&headers, &body, now());
            } else {
                if headers.get(&name) == Some(&value) {
                    continue;
                }
                headers.insert(name.clone(), value.clone());
                let result = v.verify_at(&headers, &body, now());
                prop_assert!(result.is_err(), "{}: {} = {:?} accepted", case.label, name, value);
            }
        }
    }

    /// Any body under valid-looking headers: accepted exactly when it is the
    /// body that was signed.
    #[test]
    fn arbitrary_bodies_under_valid_headers(
        seed in secret_seed(),
        id in message_id(),
        signed in body(),
        received in body(),
    ) {
        for case in cases() {
            let secrets = make_secrets(&case.scheme, std::slice::from_ref(&seed))?;
            let headers = sign(&case, &secrets, &id, now(), &signed);
            let result = verifier(&case, &secrets).verify_at(&headers, &received, now());
            if received == signed {
                expect_ok(&case.label, result)?;
            } else {
                expect_no_match(&case.label, result)?;
            }
        }
    }

    /// Arbitrary text into every parser and builder: no panic, and the
    /// validating constructors agree with simple reference rules.
    #[test]
    fn arbitrary_text_never_panics(
        texts in vec(
            prop_oneof![
                any::<String>(),
                "\\PC{0,40}",
                "whsec_[A-Za-z0-9+/=]{0,90}",
                "(whsk_|whpk_)?[A-Za-z0-9+/=]{0,100}",
                "[a-zA-Z0-9_.*,\\- ]{0,24}",
                "[!-~]{0,300}",
            ],
            2,
        ),
    ) {
        let (a, b) = (&texts[0], &texts[1]);
        for text in [a, b] {
            // Secrets.
            match Secret::literal(text) {
                Ok(s) => {
                    prop_assert_eq!(s.expose_bytes(), text.as_bytes());
                    prop_assert_eq!(s.expose_text(), text.clone());
                }
                Err(_) => prop_assert!(text.len() < 16 || text.len() > 4096),
            }
            if let Ok(s) = Secret::base64(text) {
                prop_assert!((16..=4096).contains(&s.len()));
                prop_assert!(Secret::base64(&s.expose_text()).unwrap() == s);
            }
            for case in cases() {
                let _ = case.scheme.parse_secret(text);
            }
            // Names.
            prop_assert_eq!(MessageId::new(text.as_str()).is_ok(), reference_message_id(text));
            prop_assert_eq!(EventType::new(text.as_str()).is_ok(), reference_event_type(text));
            prop_assert_eq!(EventFilter::new([text]).is_ok(), reference_pattern(text));
            let _ = EventFilter::new(text.split(','));
            if let Ok(filter) = text.parse::<EventFilter>() {
                prop_assert_eq!(filter.to_string().parse::<EventFilter>().unwrap(), filter);
            }
            if let Ok(filter) = EventFilter::new([text]) {
                let _ = filter.matches(a);
                let _ = filter.matches(b);
            }
            #[cfg(feature = "ed25519")]
            {
                let _ = hookway::secret::Ed25519SecretKey::parse(text);
                let _ = hookway::secret::Ed25519PublicKey::parse(text);
            }
        }
        // Builders.
        let _ = Scheme::hmac_header(a).prefix(b).id_header(b).build();
        let _ = Scheme::timestamped(a)
            .timestamp_key(a)
            .signature_key(b)
            .id_header(b)
            .build();
        let _ = Scheme::timestamped("x-sig").timestamp_key(a).signature_key(b).build();
        let _ = Scheme::separate_timestamp(a, b).version(a).build();
        let _ = Scheme::separate_timestamp("x-sig", "x-ts").version(b).build();
    }
}

fn reference_message_id(text: &str) -> bool {
    (1..=256).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
}

fn reference_event_type(text: &str) -> bool {
    (1..=256).contains(&text.len())
        && text.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn reference_pattern(text: &str) -> bool {
    text == "*" || reference_event_type(text.strip_suffix(".*").unwrap_or(text))
}

/// Deterministic extremes: thousands of entries, very long values, many
/// repeated headers, with and without otherwise valid headers.
#[test]
fn huge_and_repeated_headers_are_rejected() {
    let b64_32 = STANDARD.encode([0_u8; 32]);
    let b64_64 = STANDARD.encode([1_u8; 64]);
    let hex_32 = "00".repeat(32);
    let values: Vec<Vec<u8>> = vec![
        Vec::new(),
        "v1,x ".repeat(5000).into_bytes(),
        format!("v1,{b64_32} ").repeat(5000).into_bytes(),
        format!("v1a,{b64_64} ").repeat(5000).into_bytes(),
        format!("t={NOW_UNIX}{}", format!(",v1={hex_32}").repeat(5000)).into_bytes(),
        format!("t={NOW_UNIX}{}", ",v1=x".repeat(5000)).into_bytes(),
        format!("t={NOW_UNIX},").repeat(3000).into_bytes(),
        format!("sha256={hex_32}").into_bytes(),
        format!("v0={hex_32}").into_bytes(),
        (0x80_u8..=0xff).cycle().take(100_000).collect(),
        vec![b'\t'; 1000],
        vec![b' '; 10_000],
        vec![b'='; 10_000],
        vec![b','; 10_000],
        vec![b'0'; 100_000],
        vec![b'A'; 100_000],
        NOW_UNIX.to_string().into_bytes(),
    ];
    let seed = SecretSeed {
        bytes: vec![3; 32],
        text: "a literal secret of some length".into(),
        form: 1,
    };
    let id = MessageId::new("msg_huge").unwrap();
    for case in cases() {
        let secrets = vec![make_secret(&case.scheme, &seed)];
        let signed = sign(&case, &secrets, &id, now(), b"{}");
        // The fuzz verifiers minus the first (whose key the second also
        // holds), and the genuine one.
        let mut verifiers = fuzz_verifiers(&case);
        verifiers.remove(0);
        verifiers.push(verifier(&case, &secrets));
        for value in &values {
            let value = HeaderValue::from_bytes(value).unwrap();
            // Every header the scheme reads set to the value.
            let mut all = HeaderMap::new();
            for name in case.names() {
                all.insert(name, value.clone());
            }
            // A valid request whose signature header is replaced.
            let mut replaced = signed.clone();
            replaced.insert(case.sig(), value.clone());
            let mut maps = vec![all, replaced.clone()];
            // Short values also repeated as 2000 signature headers alongside
            // valid id and timestamp headers (long ones only once, so the
            // whole stays within what a server would accept at all).
            let short = value.len() <= 100;
            if short {
                let mut repeated = replaced;
                for _ in 0..2000 {
                    repeated.append(case.sig(), value.clone());
                }
                maps.push(repeated);
            }
            for headers in &maps {
                for v in &verifiers {
                    let result = v.verify_at(headers, b"{}", now());
                    assert!(
                        result.is_err(),
                        "{}: accepted {:?}",
                        case.label,
                        value.as_bytes().get(..40)
                    );
                }
            }
            // Every header of a genuine request followed by 500 copies of the
            // value: the genuine values are still there, so this may or may
            // not verify; it must only not panic.
            if short {
                let mut every = signed.clone();
                for name in case.names() {
                    for _ in 0..500 {
                        every.append(name.clone(), value.clone());
                    }
                }
                for v in &verifiers {
                    let _ = v.verify_at(&every, b"{}", now());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 6: Ed25519 (Standard Webhooks v1a).
// ---------------------------------------------------------------------------

#[cfg(feature = "ed25519")]
mod ed25519 {
    use super::*;
    use hookway::secret::{Ed25519PublicKey, Ed25519SecretKey};

    fn standard_case(svix: bool) -> Case {
        cases()
            .into_iter()
            .find(|c| c.label == if svix { "svix" } else { "standard" })
            .unwrap()
    }

    /// The encoded signatures of one version (`v1` or `v1a`) in a header.
    fn entries_of(case: &Case, value: &[u8], version: &[u8]) -> Vec<Range<usize>> {
        signature_spans(case, value)
            .into_iter()
            .filter(|r| {
                let start = value[..r.start - 1]
                    .iter()
                    .rposition(|b| *b == b' ')
                    .map_or(0, |i| i + 1);
                &value[start..r.start - 1] == version
            })
            .collect()
    }

    fn flip_at(value: &[u8], span: Range<usize>, pos: Index, delta: usize) -> Vec<u8> {
        let text = &value[span.clone()];
        let p = pos.index(significant_len(Encoding::Base64, text));
        let mut out = value[..span.start].to_vec();
        out.extend(flip_char(Encoding::Base64, text, p, delta));
        out.extend(&value[span.end..]);
        out
    }

    proptest! {
        // Ed25519 is slow in unoptimised builds; fewer cases keep the file fast.
        #![proptest_config(ProptestConfig { cases: 32, ..config() })]

        /// v1a signs; a receiver holding only the public key (parsed from its
        /// `whpk_` text) verifies, and rejects any tampering.
        #[test]
        fn v1a_round_trips_with_only_the_public_key(
            seed in any::<[u8; 32]>(),
            other in any::<[u8; 32]>(),
            svix in any::<bool>(),
            id in message_id(),
            at in instant(),
            body in body(),
            change in body_edit(),
            pos in any::<Index>(),
            delta in any::<usize>(),
        ) {
            prop_assume!(seed != other);
            let case = standard_case(svix);
            let key = Ed25519SecretKey::from_seed(&seed);
            let public = Ed25519PublicKey::parse(&key.public_key().to_whpk()).unwrap();
            prop_assert_eq!(public, key.public_key());
            let headers = Signer::new(case.scheme.clone(), Keyring::new(key.clone()))
                .unwrap()
                .sign(&id, at, &body)
                .unwrap();
            let value = sig_value(&case, &headers).to_vec();
            prop_assert!(value.starts_with(b"v1a,"));

            let receiver = Verifier::new(case.scheme.clone(), Keyring::new(public)).unwrap();
            let verified = expect_ok("public key", receiver.verify_at(&headers, &body, at))?;
            prop_assert_eq!(verified.id(), Some(id.as_str()));
            prop_assert_eq!(verified.unix_timestamp(), Some(at.unix_timestamp()));
            // The holder of the secret key (parsed back from `whsk_`) verifies too.
            let back = Ed25519SecretKey::parse(&key.expose_whsk()).unwrap();
            let holder = Verifier::new(case.scheme.clone(), Keyring::new(back)).unwrap();
            expect_ok("secret key", holder.verify_at(&headers, &body, at))?;

            let stranger = Ed25519SecretKey::from_seed(&other).public_key();
            let wrong = Verifier::new(case.scheme.clone(), Keyring::new(stranger)).unwrap();
            expect_no_match("other public key", wrong.verify_at(&headers, &body, at))?;
            expect_no_match("changed body", receiver.verify_at(&headers, &edit(&body, &change), at))?;
            let span = signature_spans(&case, &value)[0].clone();
            let flipped = with_sig_value(&case, &headers, &flip_at(&value, span, pos, delta));
            expect_no_match("changed signature", receiver.verify_at(&flipped, &body, at))?;
            // An HMAC-only receiver cannot check v1a.
            let hmac_only = Verifier::new(
                case.scheme.clone(),
                Secret::from_bytes(&[1; 32]).unwrap(),
            )
            .unwrap();
            match hmac_only.verify_at(&headers, &body, at) {
                Err(VerifyError::UnsupportedVersion) => {}
                other => prop_assert!(false, "expected UnsupportedVersion, got {:?}", other),
            }
        }

        /// A header with both `v1` and `v1a` entries satisfies a receiver
        /// holding only the HMAC secret and one holding only the public key.
        #[test]
        fn mixed_v1_and_v1a_entries(
            seed in any::<[u8; 32]>(),
            hmac_seed in secret_seed(),
            ed_first in any::<bool>(),
            with_public_only in any::<bool>(),
            svix in any::<bool>(),
            id in message_id(),
            at in instant(),
            body in body(),
            pos in any::<Index>(),
            delta in any::<usize>(),
        ) {
            let case = standard_case(svix);
            let key = Ed25519SecretKey::from_seed(&seed);
            let secret = make_secret(&case.scheme, &hmac_seed);
            let mut ring = if ed_first {
                Keyring::new(key.clone()).with(secret.clone())
            } else {
                Keyring::new(secret.clone()).with(key.clone())
            };
            if with_public_only {
                // A verify-only key in the sender's ring adds no entry.
                ring = ring.with(Ed25519SecretKey::from_seed(&[7; 32]).public_key());
            }
            let headers = Signer::new(case.scheme.clone(), ring).unwrap().sign(&id, at, &body).unwrap();
            let value = sig_value(&case, &headers).to_vec();
            let v1 = entries_of(&case, &value, b"v1");
            let v1a = entries_of(&case, &value, b"v1a");
            prop_assert_eq!((v1.len(), v1a.len()), (1, 1), "{:?}", String::from_utf8_lossy(&value));

            let hmac_only = Verifier::new(case.scheme.clone(), secret.clone()).unwrap();
            let public_only = Verifier::new(case.scheme.clone(), Keyring::new(key.public_key())).unwrap();
            expect_ok("HMAC only", hmac_only.verify_at(&headers, &body, at))?;
            expect_ok("public key only", public_only.verify_at(&headers, &body, at))?;

            // A broken v1a entry leaves the v1 entry good, and vice versa.
            let bad_v1a = with_sig_value(&case, &headers, &flip_at(&value, v1a[0].clone(), pos, delta));
            expect_ok("HMAC only, bad v1a", hmac_only.verify_at(&bad_v1a, &body, at))?;
            expect_no_match("public key only, bad v1a", public_only.verify_at(&bad_v1a, &body, at))?;
            let bad_v1 = with_sig_value(&case, &headers, &flip_at(&value, v1[0].clone(), pos, delta));
            expect_no_match("HMAC only, bad v1", hmac_only.verify_at(&bad_v1, &body, at))?;
            expect_ok("public key only, bad v1", public_only.verify_at(&bad_v1, &body, at))?;
        }
    }

    /// Thousands of well-formed but wrong `v1a` entries are rejected, and
    /// quickly (the check is capped per key).
    #[test]
    fn many_v1a_entries_are_rejected() {
        let case = standard_case(false);
        let key = Ed25519SecretKey::from_seed(&[5; 32]);
        let id = MessageId::new("msg_many").unwrap();
        let signed = Signer::new(case.scheme.clone(), Keyring::new(key.clone()))
            .unwrap()
            .sign(&id, now(), b"{}")
            .unwrap();
        let junk = format!("v1a,{} ", STANDARD.encode([1_u8; 64])).repeat(5000);
        let mut headers = signed.clone();
        headers.insert(case.sig(), HeaderValue::from_str(&junk).unwrap());
        let receiver = Verifier::new(case.scheme.clone(), Keyring::new(key.public_key())).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            receiver.verify_at(&headers, b"{}", now()),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The genuine entry first, then junk: accepted.
        let genuine = signed[case.sig()].to_str().unwrap().to_owned();
        headers.insert(
            case.sig(),
            HeaderValue::from_str(&format!("{genuine} {junk}")).unwrap(),
        );
        assert!(receiver.verify_at(&headers, b"{}", now()).is_ok());
    }
}

// ---------------------------------------------------------------------------
// 7: event filters.
// ---------------------------------------------------------------------------

/// Dotted names over a tiny alphabet, so that patterns and names collide.
fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![vec("[ab]{1,2}", 1..=4), vec("[abA_\\-0]{1,3}", 1..=3),]
        .prop_map(|segments| segments.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        3 => event_name(),
        3 => event_name().prop_map(|n| format!("{n}.*")),
    ]
}

/// `*` matches all; `p.*` matches names with more segments whose leading
/// segments are those of `p`; anything else matches itself only.
fn reference_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let name: Vec<&str> = name.split('.').collect();
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            let prefix: Vec<&str> = prefix.split('.').collect();
            name.len() > prefix.len() && name[..prefix.len()] == prefix[..]
        }
        None => pattern.split('.').eq(name.iter().copied()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..config() })]

    #[test]
    fn event_filter_agrees_with_reference(
        patterns in vec(pattern(), 0..4),
        names in vec(event_name(), 1..8),
    ) {
        let filter = EventFilter::new(&patterns).unwrap();
        prop_assert_eq!(filter.len(), patterns.len());
        for name in &names {
            prop_assert!(EventType::new(name.as_str()).is_ok());
            let expected = patterns.iter().any(|p| reference_matches(p, name));
            prop_assert_eq!(filter.matches(name), expected, "{:?} vs {}", patterns, name);
            // Every name matches its own exact pattern and not its own `.*`.
            prop_assert!(EventFilter::new([name]).unwrap().matches(name));
            let below = EventFilter::new([format!("{name}.*")]).unwrap();
            prop_assert!(!below.matches(name));
        }
        // Text and JSON forms round-trip.
        let text = filter.to_string();
        prop_assert_eq!(text.parse::<EventFilter>().unwrap(), filter.clone());
        let json = serde_json::to_string(&filter).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventFilter>(&json).unwrap(), filter);
        prop_assert!(!EventFilter::none().matches(&names[0]));
        prop_assert!(EventFilter::all().matches(&names[0]));
    }
}
