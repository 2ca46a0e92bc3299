//! Signature schemes: how a request is signed, as each sender does it.
//!
//! A [`Scheme`] says where the message id and timestamp travel, which bytes
//! are signed, with which MAC, in which encoding, and how the header is laid
//! out. Every scheme both signs and verifies. Presets cover the common
//! senders; three builders express the rest.
//!
//! | preset | headers | signed bytes | MAC, encoding |
//! | --- | --- | --- | --- |
//! | [`standard`](Scheme::standard) (default) | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<sig> …` (verifies `svix-*` too) | `{id}.{ts}.{body}` | HMAC-SHA256, base64 (`v1a`: Ed25519) |
//! | [`svix`](Scheme::svix) | as `standard`, sent with `svix-*` names | same | same |
//! | [`github`](Scheme::github) | `X-Hub-Signature-256: sha256=<sig>` | body | HMAC-SHA256, hex |
//! | [`shopify`](Scheme::shopify) | `X-Shopify-Hmac-Sha256: <sig>` | body | HMAC-SHA256, base64 |
//! | [`convoy_simple`](Scheme::convoy_simple) | `X-Convoy-Signature: <sig>` | body | SHA-256/512, hex/base64 |
//! | [`stripe`](Scheme::stripe) | `Stripe-Signature: t=<ts>,v1=<sig>[,v1=…]` | `{ts}.{body}` | HMAC-SHA256, hex |
//! | [`hook0`](Scheme::hook0) | `X-Hook0-Signature: t=<ts>,v0=<sig>` | `{ts}.{body}` | HMAC-SHA256, hex |
//! | [`convoy_advanced`](Scheme::convoy_advanced) | `X-Convoy-Signature: t=<ts>,v1=<sig>` | `{ts},{body}` | SHA-256/512, hex/base64 |
//! | [`slack`](Scheme::slack) | `X-Slack-Signature: v0=<sig>`, `X-Slack-Request-Timestamp` | `v0:{ts}:{body}` | HMAC-SHA256, hex |
//!
//! Builders: [`Scheme::hmac_header`] (a MAC of the body in one header, with
//! an optional prefix), [`Scheme::timestamped`] (`t=…,v1=…` lists) and
//! [`Scheme::separate_timestamp`] (Slack's layout).
//!
//! Signed content is always fed to the MAC in parts, never assembled into a
//! string, so bodies need not be UTF-8.
//!
//! Schemes without a timestamp (GitHub, Shopify, plain hex HMAC) cannot reject
//! replays by age; de-duplicate on the message id instead.

mod mac;
mod repr;

use std::time::Duration;

use http::header::GetAll;
use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;

use crate::error::{KeyError, SchemeError, SignError, VerifyError};
use crate::secret::{Key, Keyring, Secret, SecretError, SecretKind};
use crate::verify::Verified;

/// The hash function under the HMAC.
///
/// Serialises as `"sha256"` or `"sha512"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA256 (32-byte signatures).
    #[default]
    Sha256,
    /// HMAC-SHA512 (64-byte signatures).
    Sha512,
}

/// How signature bytes are written in a header.
///
/// Serialises as `"hex"` or `"base64"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Encoding {
    /// Lowercase hexadecimal (either case accepted when verifying).
    #[default]
    Hex,
    /// Standard base64 (padding optional when verifying).
    Base64,
}

/// How a scheme's issuer writes its secrets, and so which [`Secret`]
/// constructor [`Scheme::parse_secret`] uses.
///
/// Serialises as `"base64"` or `"literal"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecretFormat {
    /// `whsec_<base64>`, decoded: Standard Webhooks and Svix.
    Base64,
    /// The text's own bytes: GitHub, Stripe, Slack, Shopify, Convoy, Hook0.
    Literal,
}

/// Standard Webhooks header names.
pub mod header {
    use http::HeaderName;

    /// `webhook-id`
    pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    /// `webhook-timestamp`
    pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    /// `webhook-signature`
    pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    /// `svix-id`
    pub const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
    /// `svix-timestamp`
    pub const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
    /// `svix-signature`
    pub const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");
}

/// The most `v1a` (Ed25519) entries checked per key in one header. An Ed25519
/// check costs tens of microseconds, so a header stuffed with entries must not
/// buy an attacker unbounded work; honest senders send one per key.
#[cfg(feature = "ed25519")]
const MAX_ED25519_ENTRIES: usize = 16;

/// A keyring prepared for one scheme: each HMAC secret's keyed MAC state,
/// computed once, beside the keys themselves.
#[derive(Clone)]
pub(crate) struct KeySet {
    keys: Keyring,
    macs: Vec<Option<mac::KeyedMac>>,
}

impl KeySet {
    pub(crate) fn new(scheme: &Scheme, keys: Keyring) -> Self {
        let alg = scheme.algorithm();
        let macs = keys
            .keys()
            .map(|(key, _)| {
                key.as_hmac()
                    .and_then(|s| mac::KeyedMac::new(alg, s.expose_bytes()))
            })
            .collect();
        Self { keys, macs }
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// The key that signs under single-signature schemes: the active HMAC
    /// key that expires soonest (the outgoing one during a rotation, so it
    /// keeps signing through its grace period), the first such key on a tie,
    /// keys without an expiry last.
    fn primary(&self, now: OffsetDateTime) -> Option<&mac::KeyedMac> {
        let mut best: Option<(Option<OffsetDateTime>, &mac::KeyedMac)> = None;
        for ((_, expires), keyed) in self.keys.keys().zip(&self.macs) {
            let Some(keyed) = keyed else { continue };
            if !crate::secret::active_at(expires, now) {
                continue;
            }
            let sooner = match (best, expires) {
                (None, _) => true,
                (Some((Some(b), _)), Some(e)) => e < b,
                (Some((None, _)), Some(_)) => true,
                (Some(_), None) => false,
            };
            if sooner {
                best = Some((expires, keyed));
            }
        }
        best.map(|(_, keyed)| keyed)
    }

    /// The keys active at `now`, each with its prepared MAC if it is an
    /// HMAC secret.
    fn active(
        &self,
        now: OffsetDateTime,
    ) -> impl Iterator<Item = (&Key, Option<&mac::KeyedMac>)> + '_ {
        self.keys
            .keys()
            .zip(&self.macs)
            .filter(move |((_, expires), _)| crate::secret::active_at(*expires, now))
            .map(|((key, _), mac)| (key, mac.as_ref()))
    }
}

/// A signature scheme. See the [module docs](self) for the presets.
///
/// ```
/// use hookway::Scheme;
///
/// let relay = Scheme::hmac_header("X-Relay-Signature").prefix("sha256=").build()?;
/// let raven = Scheme::hmac_header("X-Raven-Signature").build()?;
/// assert_eq!(relay.name(), "custom");
/// # let _ = raven;
/// # Ok::<(), hookway::error::SchemeError>(())
/// ```
///
/// # Equality
///
/// Two schemes are equal when they come from the same preset with the same
/// parameters, or from the same builder with the same settings. A
/// builder-made scheme never equals a preset, even one it copies exactly:
/// its [`name`](Self::name) differs.
///
/// # Serialisation
///
/// A scheme holds no key material, so it serialises freely, as an object
/// tagged by `"kind"`: a preset by its name (`{"kind": "github"}`; the two
/// Convoy presets with their `algorithm` and `encoding`), a builder-made
/// scheme with every setting of its builder. Deserialising runs the same
/// checks as the builders, so an invalid stored scheme fails to load rather
/// than misbehaving later. Unknown fields are refused. A preset is stored
/// by name, so it means what the reading release's preset means: the layout
/// its issuer documents.
///
/// | kind | fields (default when absent) |
/// | --- | --- |
/// | `standard`, `svix`, `github`, `shopify`, `stripe`, `hook0`, `slack` | none |
/// | `convoy_simple`, `convoy_advanced` | `algorithm`, `encoding` |
/// | `hmac_header` | `header`; `prefix` (`""`), `algorithm` (`"sha256"`), `encoding` (`"hex"`), `id_header` (none), `secret_format` (`"literal"`) |
/// | `timestamped` | `header`; `timestamp_key` (`"t"`), `signature_key` (`"v1"`), `separator` (`"."`), `multiple_signatures` (`true`), `algorithm`, `encoding`, `id_header`, `secret_format` as above |
/// | `separate_timestamp` | `signature_header`, `timestamp_header`; `version` (`"v0"`), `separator` (`":"`), `algorithm`, `encoding`, `id_header`, `secret_format` as above |
///
/// A separator is a one-character string; characters U+0000 to U+00FF stand
/// for the bytes 0 to 255.
///
/// ```
/// use hookway::{Algorithm, Encoding, Scheme};
///
/// let json = serde_json::to_string(&Scheme::github())?;
/// assert_eq!(json, r#"{"kind":"github"}"#);
///
/// let convoy = Scheme::convoy_advanced(Algorithm::Sha512, Encoding::Base64);
/// let json = serde_json::to_string(&convoy)?;
/// assert_eq!(json, r#"{"kind":"convoy_advanced","algorithm":"sha512","encoding":"base64"}"#);
///
/// let relay: Scheme = serde_json::from_str(
///     r#"{"kind": "hmac_header", "header": "X-Relay-Signature", "prefix": "sha256="}"#,
/// )?;
/// assert_eq!(relay, Scheme::hmac_header("x-relay-signature").prefix("sha256=").build()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// The preset that made it; `None` for a builder-made scheme.
    preset: Option<Preset>,
    kind: Kind,
    secrets: SecretFormat,
    id_header: Option<HeaderName>,
    /// For generated literal secrets (Stripe's `whsec_`).
    secret_prefix: &'static str,
}

/// The presets, each of which is also its own serialised form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preset {
    Standard,
    Svix,
    GitHub,
    Shopify,
    ConvoySimple,
    Stripe,
    Hook0,
    ConvoyAdvanced,
    Slack,
}

impl Preset {
    fn name(self) -> &'static str {
        match self {
            Self::Standard => "Standard Webhooks",
            Self::Svix => "Svix",
            Self::GitHub => "GitHub",
            Self::Shopify => "Shopify",
            Self::ConvoySimple => "Convoy (simple)",
            Self::Stripe => "Stripe",
            Self::Hook0 => "Hook0",
            Self::ConvoyAdvanced => "Convoy (advanced)",
            Self::Slack => "Slack",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Standard {
        svix_names: bool,
    },
    Body {
        header: HeaderName,
        prefix: Box<str>,
        alg: Algorithm,
        enc: Encoding,
    },
    Stamped {
        header: HeaderName,
        ts_key: Box<str>,
        sig_key: Box<str>,
        sep: u8,
        alg: Algorithm,
        enc: Encoding,
        multiple: bool,
    },
    Split {
        sig_header: HeaderName,
        ts_header: HeaderName,
        version: Box<str>,
        sep: u8,
        alg: Algorithm,
        enc: Encoding,
    },
}

impl Default for Scheme {
    fn default() -> Self {
        Self::standard()
    }
}

impl Scheme {
    /// Standard Webhooks v1 (and v1a with the `ed25519` feature): headers
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature`, signing
    /// `{id}.{timestamp}.{body}` with HMAC-SHA256 in base64 as `v1,<sig>`,
    /// one entry per active key, space-separated. Verification also accepts
    /// the `svix-*` header names, as Svix sends them.
    pub fn standard() -> Self {
        Self {
            preset: Some(Preset::Standard),
            kind: Kind::Standard { svix_names: false },
            secrets: SecretFormat::Base64,
            id_header: None,
            secret_prefix: "",
        }
    }

    /// Standard Webhooks sent with Svix's header names (`svix-id`,
    /// `svix-timestamp`, `svix-signature`), for receivers that only know
    /// those.
    pub fn svix() -> Self {
        Self {
            preset: Some(Preset::Svix),
            kind: Kind::Standard { svix_names: true },
            ..Self::standard()
        }
    }

    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`,
    /// with the delivery id in `X-GitHub-Delivery`.
    pub fn github() -> Self {
        Self::body_preset(
            Preset::GitHub,
            "x-hub-signature-256",
            "sha256=",
            Algorithm::Sha256,
            Encoding::Hex,
            Some("x-github-delivery"),
        )
    }

    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`,
    /// with the webhook id in `X-Shopify-Webhook-Id`.
    pub fn shopify() -> Self {
        Self::body_preset(
            Preset::Shopify,
            "x-shopify-hmac-sha256",
            "",
            Algorithm::Sha256,
            Encoding::Base64,
            Some("x-shopify-webhook-id"),
        )
    }

    /// Convoy's "simple" signatures: `X-Convoy-Signature: <sig of the body>`.
    pub fn convoy_simple(alg: Algorithm, enc: Encoding) -> Self {
        Self::body_preset(
            Preset::ConvoySimple,
            "x-convoy-signature",
            "",
            alg,
            enc,
            None,
        )
    }

    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over
    /// `{t}.{body}`. Unknown keys (`v0=`, …) are ignored and `t` may stand
    /// anywhere in the list. Stripe's secrets (`whsec_…`) are used as literal
    /// bytes, prefix included.
    pub fn stripe() -> Self {
        let mut scheme = Self::stamped_preset(
            Preset::Stripe,
            "stripe-signature",
            "v1",
            b'.',
            Algorithm::Sha256,
            Encoding::Hex,
            true,
        );
        scheme.secret_prefix = "whsec_";
        scheme
    }

    /// Hook0: `X-Hook0-Signature: t=<unix>,v0=<hex>` over `{t}.{body}`.
    pub fn hook0() -> Self {
        Self::stamped_preset(
            Preset::Hook0,
            "x-hook0-signature",
            "v0",
            b'.',
            Algorithm::Sha256,
            Encoding::Hex,
            false,
        )
    }

    /// Convoy's "advanced" signatures: `X-Convoy-Signature: t=<unix>,v1=<sig>`
    /// over `{t},{body}` (a comma, not a dot), one `v1` per active secret.
    pub fn convoy_advanced(alg: Algorithm, enc: Encoding) -> Self {
        Self::stamped_preset(
            Preset::ConvoyAdvanced,
            "x-convoy-signature",
            "v1",
            b',',
            alg,
            enc,
            true,
        )
    }

    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`, with the
    /// timestamp in `X-Slack-Request-Timestamp`.
    pub fn slack() -> Self {
        Self {
            preset: Some(Preset::Slack),
            kind: Kind::Split {
                sig_header: HeaderName::from_static("x-slack-signature"),
                ts_header: HeaderName::from_static("x-slack-request-timestamp"),
                version: "v0".into(),
                sep: b':',
                alg: Algorithm::Sha256,
                enc: Encoding::Hex,
            },
            secrets: SecretFormat::Literal,
            id_header: None,
            secret_prefix: "",
        }
    }

    fn body_preset(
        preset: Preset,
        header: &'static str,
        prefix: &str,
        alg: Algorithm,
        enc: Encoding,
        id_header: Option<&'static str>,
    ) -> Self {
        Self {
            preset: Some(preset),
            kind: Kind::Body {
                header: HeaderName::from_static(header),
                prefix: prefix.into(),
                alg,
                enc,
            },
            secrets: SecretFormat::Literal,
            id_header: id_header.map(HeaderName::from_static),
            secret_prefix: "",
        }
    }

    fn stamped_preset(
        preset: Preset,
        header: &'static str,
        sig_key: &str,
        sep: u8,
        alg: Algorithm,
        enc: Encoding,
        multiple: bool,
    ) -> Self {
        Self {
            preset: Some(preset),
            kind: Kind::Stamped {
                header: HeaderName::from_static(header),
                ts_key: "t".into(),
                sig_key: sig_key.into(),
                sep,
                alg,
                enc,
                multiple,
            },
            secrets: SecretFormat::Literal,
            id_header: None,
            secret_prefix: "",
        }
    }

    /// A builder for a MAC of the raw body in one header, with an optional
    /// prefix: `X-Relay-Signature: sha256=<hex>`, `X-Raven-Signature: <hex>`.
    ///
    /// Defaults: no prefix, HMAC-SHA256, hex, literal secrets, no id header.
    pub fn hmac_header(header: &str) -> HmacHeaderBuilder {
        HmacHeaderBuilder {
            header: parse_header(header),
            prefix: Ok(String::new()),
            alg: Algorithm::Sha256,
            enc: Encoding::Hex,
            common: Common::new(),
        }
    }

    /// A builder for a timestamped list in one header, Stripe-style:
    /// `Name: t=<unix>,v1=<sig>[,v1=<sig>…]` over `{t}{separator}{body}`.
    ///
    /// Defaults: timestamp key `t`, signature key `v1`, separator `.`,
    /// HMAC-SHA256, hex, one signature per active key, literal secrets.
    pub fn timestamped(header: &str) -> TimestampedBuilder {
        TimestampedBuilder {
            header: parse_header(header),
            ts_key: Ok("t".into()),
            sig_key: Ok("v1".into()),
            sep: b'.',
            alg: Algorithm::Sha256,
            enc: Encoding::Hex,
            multiple: true,
            common: Common::new(),
        }
    }

    /// A builder for Slack's layout: the timestamp in its own header, and
    /// `{version}={sig}` over `{version}{separator}{ts}{separator}{body}`.
    ///
    /// Defaults: version `v0`, separator `:`, HMAC-SHA256, hex, literal
    /// secrets.
    pub fn separate_timestamp(signature_header: &str, timestamp_header: &str) -> SplitBuilder {
        SplitBuilder {
            sig_header: parse_header(signature_header),
            ts_header: parse_header(timestamp_header),
            version: Ok("v0".into()),
            sep: b':',
            alg: Algorithm::Sha256,
            enc: Encoding::Hex,
            common: Common::new(),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match &self.kind {
            Kind::Standard { .. } => Algorithm::Sha256,
            Kind::Body { alg, .. } | Kind::Stamped { alg, .. } | Kind::Split { alg, .. } => *alg,
        }
    }

    /// The scheme's name, for messages (`"Standard Webhooks"`, `"Stripe"`,
    /// `"custom"`, …).
    pub fn name(&self) -> &'static str {
        self.preset.map_or("custom", Preset::name)
    }

    /// How this scheme's issuer writes secrets.
    pub fn secret_format(&self) -> SecretFormat {
        self.secrets
    }

    /// Parses a secret string the way this scheme's issuer means it:
    /// base64 after `whsec_` for Standard Webhooks, the string's own bytes
    /// for the others (Stripe's `whsec_` prefix included).
    ///
    /// ```
    /// use hookway::Scheme;
    ///
    /// let text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// assert_eq!(Scheme::standard().parse_secret(text)?.len(), 24);
    /// assert_eq!(Scheme::stripe().parse_secret(text)?.len(), 38);
    /// # Ok::<(), hookway::secret::SecretError>(())
    /// ```
    pub fn parse_secret(&self, text: &str) -> Result<Secret, SecretError> {
        match self.secrets {
            SecretFormat::Base64 => Secret::base64(text),
            SecretFormat::Literal => Secret::literal(text),
        }
    }

    /// A new random secret in the form this scheme's issuer uses; hand
    /// [`Secret::expose_text`] to the receiver.
    ///
    /// # Panics
    ///
    /// Panics if the operating system's random source fails.
    pub fn generate_secret(&self) -> Secret {
        match self.secrets {
            SecretFormat::Base64 => Secret::generate(),
            SecretFormat::Literal => {
                let bytes = Secret::generate();
                let mut text = String::from(self.secret_prefix);
                mac::encode(Encoding::Hex, bytes.expose_bytes(), &mut text);
                let secret = Secret::literal(&text);
                zeroize::Zeroize::zeroize(&mut text);
                secret.expect("64 hex digits are a valid literal secret")
            }
        }
    }

    /// The signature header's name (for Slack's layout, the one holding the
    /// signature).
    pub fn signature_header(&self) -> HeaderName {
        match &self.kind {
            Kind::Standard { svix_names: false } => header::WEBHOOK_SIGNATURE,
            Kind::Standard { svix_names: true } => header::SVIX_SIGNATURE,
            Kind::Body { header, .. } | Kind::Stamped { header, .. } => header.clone(),
            Kind::Split { sig_header, .. } => sig_header.clone(),
        }
    }

    /// Checks that `keys` fit this scheme: not empty, every secret of the
    /// kind the scheme's issuer uses, no Ed25519 key outside Standard
    /// Webhooks, and (for signing) at least one key that can sign.
    pub(crate) fn check_keys(&self, keys: &Keyring, signing: bool) -> Result<(), KeyError> {
        if keys.is_empty() {
            return Err(KeyError::EmptyKeyring);
        }
        for (key, _) in keys.keys() {
            match key {
                Key::Hmac(secret) => self.check_secret(secret)?,
                #[cfg(feature = "ed25519")]
                _ if !matches!(self.kind, Kind::Standard { .. }) => {
                    return Err(KeyError::UnsupportedKey {
                        scheme: self.name(),
                        key: "Ed25519",
                    })
                }
                #[cfg(feature = "ed25519")]
                _ => {}
            }
        }
        if signing && !keys.keys().any(|(k, _)| k.can_sign()) {
            return Err(KeyError::NoSigningKey);
        }
        Ok(())
    }

    fn check_secret(&self, secret: &Secret) -> Result<(), KeyError> {
        match (self.secrets, secret.kind()) {
            (SecretFormat::Base64, SecretKind::Literal) => Err(KeyError::WrongSecretKind {
                scheme: self.name(),
                expected: "a base64 secret (whsec_…) decoded with Secret::base64",
                found: "a literal secret; use Secret::base64 or Scheme::parse_secret (or Secret::from_bytes for raw key bytes)",
            }),
            (SecretFormat::Literal, SecretKind::Base64) => Err(KeyError::WrongSecretKind {
                scheme: self.name(),
                expected: "a literal secret (the string's own bytes)",
                found: "a base64-decoded secret; use Secret::literal or Scheme::parse_secret",
            }),
            _ => Ok(()),
        }
    }

    /// Signs one message into `out`, replacing any previous values of the
    /// scheme's headers.
    pub(crate) fn sign(
        &self,
        keys: &KeySet,
        id: &str,
        timestamp: OffsetDateTime,
        body: &[u8],
        out: &mut HeaderMap,
    ) -> Result<(), SignError> {
        let unix = timestamp.unix_timestamp();
        if unix < 0 {
            return Err(SignError::TimestampBeforeEpoch);
        }
        // Formatted once: the header value and the signed bytes are the same
        // digits.
        let ts_value = HeaderValue::from(unix);
        let ts = ts_value.as_bytes();
        let active = || keys.active(timestamp);
        let primary = || keys.primary(timestamp).ok_or(SignError::NoActiveKey);
        let mut value = String::new();
        match &self.kind {
            Kind::Standard { svix_names } => {
                let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts, b".", body];
                for (key, keyed) in active() {
                    let start = value.len();
                    if start > 0 {
                        value.push(' ');
                    }
                    match key {
                        Key::Hmac(_) => {
                            let Some(keyed) = keyed else {
                                value.truncate(start);
                                continue;
                            };
                            let sig = keyed.compute(&parts);
                            value.push_str("v1,");
                            mac::encode(Encoding::Base64, sig.as_bytes(), &mut value);
                        }
                        #[cfg(feature = "ed25519")]
                        Key::Ed25519Secret(k) => {
                            use ed25519_dalek::ed25519::signature::MultipartSigner;
                            let sig = k.0.multipart_sign(&parts);
                            value.push_str("v1a,");
                            mac::encode(Encoding::Base64, &sig.to_bytes(), &mut value);
                        }
                        #[cfg(feature = "ed25519")]
                        Key::Ed25519Public(_) => value.truncate(start),
                    }
                }
                if value.is_empty() {
                    return Err(SignError::NoActiveKey);
                }
                let (id_name, ts_name, sig_name) = if *svix_names {
                    (
                        header::SVIX_ID,
                        header::SVIX_TIMESTAMP,
                        header::SVIX_SIGNATURE,
                    )
                } else {
                    (
                        header::WEBHOOK_ID,
                        header::WEBHOOK_TIMESTAMP,
                        header::WEBHOOK_SIGNATURE,
                    )
                };
                out.insert(id_name, header_value(id.to_owned()));
                out.insert(ts_name, ts_value.clone());
                out.insert(sig_name, sensitive(value));
            }
            Kind::Body {
                header,
                prefix,
                alg: _,
                enc,
            } => {
                let sig = primary()?.compute(&[body]);
                value.push_str(prefix);
                mac::encode(*enc, sig.as_bytes(), &mut value);
                out.insert(header.clone(), sensitive(value));
            }
            Kind::Stamped {
                header,
                ts_key,
                sig_key,
                sep,
                alg: _,
                enc,
                multiple,
            } => {
                let parts: [&[u8]; 3] = [ts, std::slice::from_ref(sep), body];
                value.push_str(ts_key);
                value.push('=');
                value.push_str(ts_value.to_str().unwrap_or_default());
                let mut signed = false;
                for (_, keyed) in active() {
                    let Some(keyed) = keyed else {
                        continue;
                    };
                    let sig = keyed.compute(&parts);
                    value.push(',');
                    value.push_str(sig_key);
                    value.push('=');
                    mac::encode(*enc, sig.as_bytes(), &mut value);
                    signed = true;
                    if !multiple {
                        break;
                    }
                }
                if !signed {
                    return Err(SignError::NoActiveKey);
                }
                out.insert(header.clone(), sensitive(value));
            }
            Kind::Split {
                sig_header,
                ts_header,
                version,
                sep,
                alg: _,
                enc,
            } => {
                let sep = std::slice::from_ref(sep);
                let parts: [&[u8]; 5] = [version.as_bytes(), sep, ts, sep, body];
                let sig = primary()?.compute(&parts);
                value.push_str(version);
                value.push('=');
                mac::encode(*enc, sig.as_bytes(), &mut value);
                out.insert(ts_header.clone(), ts_value.clone());
                out.insert(sig_header.clone(), sensitive(value));
            }
        }
        if let Some(name) = &self.id_header {
            out.insert(name.clone(), header_value(id.to_owned()));
        }
        Ok(())
    }

    /// Verifies `headers` and `body`; `id` and `timestamp` of the result
    /// borrow from the headers.
    pub(crate) fn verify<'a>(
        &self,
        keys: &KeySet,
        tolerance: Duration,
        now: OffsetDateTime,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Result<Verified<'a>, VerifyError> {
        let ctx = Ctx {
            keys,
            tolerance,
            now,
            headers,
        };
        match &self.kind {
            Kind::Standard { .. } => verify_standard(&ctx, body),
            Kind::Body {
                header,
                prefix,
                alg: _,
                enc,
            } => {
                let id = self.optional_id(headers);
                let values = headers.get_all(header);
                if values.iter().next().is_none() {
                    return Err(VerifyError::MissingHeader(header.clone()));
                }
                let candidates = || {
                    values
                        .iter()
                        .filter_map(|v| v.as_bytes().strip_prefix(prefix.as_bytes()))
                };
                if !candidates().any(|c| mac::decode(*enc, c).is_some()) {
                    return Err(VerifyError::MalformedHeader {
                        header: header.clone(),
                        reason: "no signature in the expected format",
                    });
                }
                ctx.match_hmac(&[body], || candidates().map(|c| (true, c)), *enc)?;
                Ok(Verified::new(id, false, None, body))
            }
            Kind::Stamped {
                header,
                ts_key,
                sig_key,
                sep,
                alg: _,
                enc,
                ..
            } => {
                let id = self.optional_id(headers);
                let values = headers.get_all(header);
                if values.iter().next().is_none() {
                    return Err(VerifyError::MissingHeader(header.clone()));
                }
                let items = || {
                    values.iter().flat_map(|v| {
                        v.as_bytes()
                            .split(|b| *b == b',')
                            .map(|item| item.trim_ascii())
                            .filter_map(|item| {
                                let eq = item.iter().position(|b| *b == b'=')?;
                                Some((&item[..eq], &item[eq + 1..]))
                            })
                    })
                };
                let mut ts_raw = None;
                for (k, v) in items() {
                    if k == ts_key.as_bytes() {
                        if ts_raw.is_some() {
                            return Err(VerifyError::MalformedHeader {
                                header: header.clone(),
                                reason: "the timestamp appears more than once",
                            });
                        }
                        ts_raw = Some(v);
                    }
                }
                let ts_raw = ts_raw.ok_or_else(|| VerifyError::MalformedHeader {
                    header: header.clone(),
                    reason: "no timestamp entry",
                })?;
                let ts = parse_timestamp(header, ts_raw)?;
                ctx.check_age(ts)?;
                let parts: [&[u8]; 3] = [ts_raw, std::slice::from_ref(sep), body];
                ctx.match_hmac(
                    &parts,
                    || items().map(|(k, v)| (k == sig_key.as_bytes(), v)),
                    *enc,
                )?;
                Ok(Verified::new(id, false, Some(ts), body))
            }
            Kind::Split {
                sig_header,
                ts_header,
                version,
                sep,
                alg: _,
                enc,
            } => {
                let id = self.optional_id(headers);
                let ts_raw = single(headers, ts_header)?;
                let sig_values = headers.get_all(sig_header);
                if sig_values.iter().next().is_none() {
                    return Err(VerifyError::MissingHeader(sig_header.clone()));
                }
                let ts = parse_timestamp(ts_header, ts_raw)?;
                ctx.check_age(ts)?;
                let sep = std::slice::from_ref(sep);
                let parts: [&[u8]; 5] = [version.as_bytes(), sep, ts_raw, sep, body];
                let entries = || {
                    sig_values.iter().filter_map(|v| {
                        let v = v.as_bytes();
                        let eq = v.iter().position(|b| *b == b'=')?;
                        Some((&v[..eq] == version.as_bytes(), &v[eq + 1..]))
                    })
                };
                ctx.match_hmac(&parts, entries, *enc)?;
                Ok(Verified::new(id, false, Some(ts), body))
            }
        }
    }

    /// The id from an unsigned id header (GitHub's `X-GitHub-Delivery`,
    /// …). It is informational: a missing, repeated or odd value (not 1 to
    /// 256 visible ASCII characters) gives `None` rather than failing a
    /// correctly signed request.
    fn optional_id<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let name = self.id_header.as_ref()?;
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let id = value.to_str().ok()?;
        let visible = (1..=crate::event::MAX_MESSAGE_ID_LEN).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_graphic());
        visible.then_some(id)
    }
}

struct Ctx<'k, 'h> {
    keys: &'k KeySet,
    tolerance: Duration,
    now: OffsetDateTime,
    headers: &'h HeaderMap,
}

impl Ctx<'_, '_> {
    fn check_age(&self, ts: i64) -> Result<(), VerifyError> {
        let now = self.now.unix_timestamp();
        let tolerance_secs = self.tolerance.as_secs();
        let tol = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
        if ts < now.saturating_sub(tol) {
            Err(VerifyError::TimestampTooOld {
                timestamp: ts,
                age_secs: now.abs_diff(ts),
                tolerance_secs,
            })
        } else if ts > now.saturating_add(tol) {
            Err(VerifyError::TimestampTooNew {
                timestamp: ts,
                ahead_secs: ts.abs_diff(now),
                tolerance_secs,
            })
        } else {
            Ok(())
        }
    }

    /// Tries every active HMAC key against every candidate signature whose
    /// version is supported. Each key's MAC is computed at most once, so the
    /// cost is one MAC per key plus a cheap comparison per entry, however
    /// many entries a header holds.
    fn match_hmac<'v, I>(
        &self,
        parts: &[&[u8]],
        candidates: impl Fn() -> I,
        enc: Encoding,
    ) -> Result<(), VerifyError>
    where
        I: Iterator<Item = (bool, &'v [u8])>,
    {
        let mut any_key = false;
        let mut supported = false;
        for (_, keyed) in self.keys.active(self.now) {
            any_key = true;
            let Some(keyed) = keyed else {
                continue;
            };
            let mut expected = None;
            for (version_ok, text) in candidates() {
                if !version_ok {
                    continue;
                }
                supported = true;
                let Some(received) = mac::decode(enc, text) else {
                    continue;
                };
                let expected = expected.get_or_insert_with(|| keyed.compute(parts));
                if expected.matches(received.as_bytes()) {
                    return Ok(());
                }
            }
        }
        Err(if !any_key {
            VerifyError::NoActiveKey
        } else if supported {
            VerifyError::NoMatchingSignature
        } else {
            VerifyError::UnsupportedVersion
        })
    }
}

struct NameSet {
    id: HeaderName,
    ts: HeaderName,
    sig: HeaderName,
}

const WEBHOOK_NAMES: NameSet = NameSet {
    id: header::WEBHOOK_ID,
    ts: header::WEBHOOK_TIMESTAMP,
    sig: header::WEBHOOK_SIGNATURE,
};
const SVIX_NAMES: NameSet = NameSet {
    id: header::SVIX_ID,
    ts: header::SVIX_TIMESTAMP,
    sig: header::SVIX_SIGNATURE,
};

fn verify_standard<'a>(ctx: &Ctx<'_, 'a>, body: &'a [u8]) -> Result<Verified<'a>, VerifyError> {
    // Use whichever header set is complete, so a stray header of the other
    // set neither breaks nor hides a valid request. Each name is looked up
    // once.
    let mut first_error = None;
    let mut present = [0; 2];
    for (i, set) in [&WEBHOOK_NAMES, &SVIX_NAMES].into_iter().enumerate() {
        let h = ctx.headers;
        let found = [h.get_all(&set.id), h.get_all(&set.ts), h.get_all(&set.sig)];
        present[i] = found.iter().filter(|v| v.iter().next().is_some()).count();
        if present[i] < 3 {
            continue;
        }
        match verify_standard_set(ctx, set, &found, body) {
            Ok(v) => return Ok(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let set = if present[1] > present[0] {
        &SVIX_NAMES
    } else {
        &WEBHOOK_NAMES
    };
    let missing = [&set.id, &set.ts, &set.sig]
        .into_iter()
        .find(|n| !ctx.headers.contains_key(*n))
        .unwrap_or(&set.sig);
    Err(VerifyError::MissingHeader(missing.clone()))
}

fn verify_standard_set<'a>(
    ctx: &Ctx<'_, 'a>,
    set: &NameSet,
    [id, ts, sig]: &[GetAll<'a, HeaderValue>; 3],
    body: &'a [u8],
) -> Result<Verified<'a>, VerifyError> {
    let id = parse_id(&set.id, single_value(&set.id, id)?)?;
    let ts_raw = single_value(&set.ts, ts)?;
    let ts = parse_timestamp(&set.ts, ts_raw)?;
    ctx.check_age(ts)?;
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_raw, b".", body];
    let entries = || {
        sig.iter().flat_map(|v| {
            v.as_bytes().split(|b| *b == b' ').filter_map(|entry| {
                let comma = entry.iter().position(|b| *b == b',')?;
                Some((&entry[..comma], &entry[comma + 1..]))
            })
        })
    };
    let verified = Verified::new(Some(id), true, Some(ts), body);
    let hmac = ctx.match_hmac(
        &parts,
        || entries().map(|(v, sig)| (v == b"v1", sig)),
        Encoding::Base64,
    );
    match hmac {
        Ok(()) => Ok(verified),
        #[cfg(not(feature = "ed25519"))]
        Err(e) => Err(e),
        #[cfg(feature = "ed25519")]
        Err(VerifyError::NoActiveKey) => Err(VerifyError::NoActiveKey),
        #[cfg(feature = "ed25519")]
        Err(hmac_error) => {
            let mut supported = matches!(hmac_error, VerifyError::NoMatchingSignature);
            for (key, _) in ctx.keys.active(ctx.now) {
                let public = match key {
                    Key::Hmac(_) => continue,
                    Key::Ed25519Secret(k) => k.0.verifying_key(),
                    Key::Ed25519Public(k) => k.0,
                };
                // Only well-formed entries count towards the cap, so junk
                // cannot push a valid signature out of reach.
                let v1a = entries()
                    .filter(|(v, _)| *v == b"v1a")
                    .filter_map(|(_, text)| ed25519_signature(text));
                for signature in v1a.take(MAX_ED25519_ENTRIES) {
                    supported = true;
                    if verify_ed25519(&public, &parts, &signature) {
                        return Ok(verified);
                    }
                }
            }
            Err(if supported {
                VerifyError::NoMatchingSignature
            } else {
                VerifyError::UnsupportedVersion
            })
        }
    }
}

#[cfg(feature = "ed25519")]
fn ed25519_signature(text: &[u8]) -> Option<ed25519_dalek::Signature> {
    let decoded = mac::decode(Encoding::Base64, text)?;
    let bytes = <&[u8; 64]>::try_from(decoded.as_bytes()).ok()?;
    Some(ed25519_dalek::Signature::from_bytes(bytes))
}

#[cfg(feature = "ed25519")]
fn verify_ed25519(
    key: &ed25519_dalek::VerifyingKey,
    parts: &[&[u8]],
    signature: &ed25519_dalek::Signature,
) -> bool {
    use ed25519_dalek::ed25519::signature::MultipartVerifier;
    key.multipart_verify(parts, signature).is_ok()
}

/// The one value of a header that must appear exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a [u8], VerifyError> {
    single_value(name, &headers.get_all(name))
}

fn single_value<'a>(
    name: &HeaderName,
    values: &GetAll<'a, HeaderValue>,
) -> Result<&'a [u8], VerifyError> {
    let mut values = values.iter();
    let first = values
        .next()
        .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?;
    if values.next().is_some() {
        return Err(VerifyError::MalformedHeader {
            header: name.clone(),
            reason: "appears more than once",
        });
    }
    Ok(first.as_bytes())
}

fn parse_id<'a>(name: &HeaderName, raw: &'a [u8]) -> Result<&'a str, VerifyError> {
    let malformed = || VerifyError::MalformedHeader {
        header: name.clone(),
        reason: "not a valid message id (1 to 256 visible ASCII characters, no '.')",
    };
    let id = std::str::from_utf8(raw).map_err(|_| malformed())?;
    crate::event::validate_message_id(id).map_err(|_| malformed())?;
    Ok(id)
}

/// A timestamp is plain decimal digits: no sign, fraction, separators or
/// whitespace, at most 18 digits.
fn parse_timestamp(name: &HeaderName, raw: &[u8]) -> Result<i64, VerifyError> {
    if raw.is_empty() || raw.len() > 18 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::MalformedHeader {
            header: name.clone(),
            reason: "the timestamp is not plain decimal digits",
        });
    }
    Ok(raw.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

fn parse_header(name: &str) -> Result<HeaderName, SchemeError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| SchemeError::InvalidHeaderName(name.to_owned()))
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("hookway builds header values only from visible ASCII")
}

fn sensitive(text: String) -> HeaderValue {
    let mut value = header_value(text);
    value.set_sensitive(true);
    value
}

/// Refuses a scheme whose roles share a header (names compare
/// case-insensitively, as `HeaderName` stores them lowercased).
fn distinct(names: &[Option<&HeaderName>]) -> Result<(), SchemeError> {
    let names: Vec<&HeaderName> = names.iter().flatten().copied().collect();
    for (i, a) in names.iter().enumerate() {
        if names[i + 1..].contains(a) {
            return Err(SchemeError::DuplicateHeader(a.as_str().to_owned()));
        }
    }
    Ok(())
}

/// Checks a prefix, key or version text for use inside a header value.
fn check_text(
    what: &'static str,
    value: &str,
    allow_empty: bool,
    forbidden: &[u8],
) -> Result<Box<str>, SchemeError> {
    let bad = |reason| SchemeError::InvalidText {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() && !allow_empty {
        return Err(bad("must not be empty"));
    }
    if value.len() > 64 {
        return Err(bad("longer than 64 bytes"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("only visible ASCII is allowed"));
    }
    if value.bytes().any(|b| forbidden.contains(&b)) {
        return Err(bad("holds a separator of the header's layout"));
    }
    Ok(value.into())
}

#[derive(Debug)]
struct Common {
    id_header: Result<Option<HeaderName>, SchemeError>,
    secrets: SecretFormat,
}

impl Common {
    fn new() -> Self {
        Self {
            id_header: Ok(None),
            secrets: SecretFormat::Literal,
        }
    }
}

macro_rules! common_setters {
    () => {
        /// The HMAC's hash function.
        pub fn algorithm(mut self, alg: Algorithm) -> Self {
            self.alg = alg;
            self
        }

        /// How signature bytes are written.
        pub fn encoding(mut self, enc: Encoding) -> Self {
            self.enc = enc;
            self
        }

        /// A header that carries the message id (sent when signing, read
        /// when verifying if present). Not covered by the signature.
        pub fn id_header(mut self, name: &str) -> Self {
            self.common.id_header = parse_header(name).map(Some);
            self
        }

        /// How secrets are written (default: [`SecretFormat::Literal`]).
        pub fn secret_format(mut self, format: SecretFormat) -> Self {
            self.common.secrets = format;
            self
        }
    };
}

/// Builds a body-MAC scheme; see [`Scheme::hmac_header`].
#[derive(Debug)]
#[must_use]
pub struct HmacHeaderBuilder {
    header: Result<HeaderName, SchemeError>,
    prefix: Result<String, SchemeError>,
    alg: Algorithm,
    enc: Encoding,
    common: Common,
}

impl HmacHeaderBuilder {
    /// Text before the signature, such as `sha256=`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = check_text("prefix", prefix, true, b"").map(String::from);
        self
    }

    common_setters!();

    /// The scheme, or the first invalid setting.
    pub fn build(self) -> Result<Scheme, SchemeError> {
        let header = self.header?;
        let id_header = self.common.id_header?;
        distinct(&[Some(&header), id_header.as_ref()])?;
        Ok(Scheme {
            preset: None,
            kind: Kind::Body {
                header,
                prefix: self.prefix?.into(),
                alg: self.alg,
                enc: self.enc,
            },
            secrets: self.common.secrets,
            id_header,
            secret_prefix: "",
        })
    }
}

/// Builds a timestamped-list scheme; see [`Scheme::timestamped`].
#[derive(Debug)]
#[must_use]
pub struct TimestampedBuilder {
    header: Result<HeaderName, SchemeError>,
    ts_key: Result<Box<str>, SchemeError>,
    sig_key: Result<Box<str>, SchemeError>,
    sep: u8,
    alg: Algorithm,
    enc: Encoding,
    multiple: bool,
    common: Common,
}

impl TimestampedBuilder {
    /// The key of the timestamp entry (default `t`).
    pub fn timestamp_key(mut self, key: &str) -> Self {
        self.ts_key = check_text("timestamp key", key, false, b",=");
        self
    }

    /// The key of signature entries (default `v1`).
    pub fn signature_key(mut self, key: &str) -> Self {
        self.sig_key = check_text("signature key", key, false, b",=");
        self
    }

    /// The byte between timestamp and body in the signed content (default
    /// `.`; Convoy uses `,`).
    pub fn separator(mut self, sep: u8) -> Self {
        self.sep = sep;
        self
    }

    /// Whether to send one signature per active key (default) or only the
    /// primary key's.
    pub fn multiple_signatures(mut self, multiple: bool) -> Self {
        self.multiple = multiple;
        self
    }

    common_setters!();

    /// The scheme, or the first invalid setting.
    pub fn build(self) -> Result<Scheme, SchemeError> {
        let ts_key = self.ts_key?;
        let sig_key = self.sig_key?;
        if ts_key == sig_key {
            return Err(SchemeError::InvalidText {
                what: "signature key",
                value: sig_key.into(),
                reason: "must differ from the timestamp key",
            });
        }
        let header = self.header?;
        let id_header = self.common.id_header?;
        distinct(&[Some(&header), id_header.as_ref()])?;
        Ok(Scheme {
            preset: None,
            kind: Kind::Stamped {
                header,
                ts_key,
                sig_key,
                sep: self.sep,
                alg: self.alg,
                enc: self.enc,
                multiple: self.multiple,
            },
            secrets: self.common.secrets,
            id_header,
            secret_prefix: "",
        })
    }
}

/// Builds a Slack-layout scheme; see [`Scheme::separate_timestamp`].
#[derive(Debug)]
#[must_use]
pub struct SplitBuilder {
    sig_header: Result<HeaderName, SchemeError>,
    ts_header: Result<HeaderName, SchemeError>,
    version: Result<Box<str>, SchemeError>,
    sep: u8,
    alg: Algorithm,
    enc: Encoding,
    common: Common,
}

impl SplitBuilder {
    /// The version label, signed first and written before `=` (default
    /// `v0`).
    pub fn version(mut self, version: &str) -> Self {
        self.version = check_text("version", version, false, b"=");
        self
    }

    /// The byte between the signed parts (default `:`).
    pub fn separator(mut self, sep: u8) -> Self {
        self.sep = sep;
        self
    }

    common_setters!();

    /// The scheme, or the first invalid setting.
    pub fn build(self) -> Result<Scheme, SchemeError> {
        let sig_header = self.sig_header?;
        let ts_header = self.ts_header?;
        let id_header = self.common.id_header?;
        distinct(&[Some(&sig_header), Some(&ts_header), id_header.as_ref()])?;
        Ok(Scheme {
            preset: None,
            kind: Kind::Split {
                sig_header,
                ts_header,
                version: self.version?,
                sep: self.sep,
                alg: self.alg,
                enc: self.enc,
            },
            secrets: self.common.secrets,
            id_header,
            secret_prefix: "",
        })
    }
}
