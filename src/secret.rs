//! Key material: [`Secret`] (HMAC), the Ed25519 keys of Standard Webhooks
//! v1a, and the [`Keyring`] that holds several keys at once for rotation.
//!
//! # Which constructor?
//!
//! Providers hand out secrets as strings, and the same-looking string means
//! different key bytes depending on who issued it:
//!
//! | issued by | looks like | key bytes | constructor |
//! | --- | --- | --- | --- |
//! | Standard Webhooks, Svix | `whsec_MfKQ9r8G…` | base64-decoded part after `whsec_` | [`Secret::base64`] |
//! | Stripe | `whsec_7ZbHq…` | the whole string, prefix included | [`Secret::literal`] |
//! | GitHub, Slack, Shopify, hex-HMAC senders | any text | the string's bytes | [`Secret::literal`] |
//!
//! The surest way is to let the scheme decide, with
//! [`Scheme::parse_secret`](crate::Scheme::parse_secret). And if a secret of
//! the wrong kind reaches a scheme (a `whsec_` literal for Standard Webhooks,
//! or a base64-decoded secret for Stripe), building the
//! [`Signer`](crate::Signer) or [`Verifier`](crate::Verifier) fails with
//! [`KeyError::WrongSecretKind`](crate::KeyError::WrongSecretKind) instead of silently using the wrong key.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The shortest secret accepted, in bytes (128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// The longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;
/// The length of secrets made by [`Secret::generate`], in bytes.
pub const GENERATED_SECRET_LEN: usize = 32;

/// Base64 with the standard alphabet, padding optional, otherwise strict
/// (no stray characters, no non-zero trailing bits).
pub(crate) const BASE64_LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why key material was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// No key bytes at all.
    #[error("secret is empty")]
    Empty,
    /// Fewer than [`MIN_SECRET_LEN`] key bytes.
    #[error("secret is {len} bytes long; at least {min} are required")]
    TooShort {
        /// Key length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// More than [`MAX_SECRET_LEN`] key bytes.
    #[error("secret is {len} bytes long; at most {max} are accepted")]
    TooLong {
        /// Key length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The text after the prefix is not valid base64.
    #[error("secret is not valid base64{}", after_prefix(prefix))]
    InvalidBase64 {
        /// The prefix that was expected or stripped (empty where there is
        /// none, as in an [`EndpointRecord`](crate::endpoint::EndpointRecord)).
        prefix: &'static str,
    },
    /// A literal secret (the bytes of a text) whose bytes are not UTF-8
    /// text; found only in stored key material.
    #[error("a literal secret must be UTF-8 text")]
    NotText,
    /// An Ed25519 key has the wrong length or is not a valid key.
    #[error("invalid Ed25519 key: {0}")]
    InvalidEd25519(&'static str),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

fn after_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" (after any {prefix:?} prefix)")
    }
}

/// How a [`Secret`]'s key bytes were obtained; used to catch a secret handed
/// to the wrong scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretKind {
    /// Decoded from base64 (`whsec_…`, Standard Webhooks and Svix).
    Base64,
    /// The bytes of a text secret, as GitHub, Stripe, Slack and Shopify use it.
    Literal,
    /// Raw bytes given by the caller, or generated.
    Bytes,
}

/// A symmetric (HMAC) secret.
///
/// Key bytes are wiped from memory when the secret is dropped, and never
/// appear in `Debug` or `Display` output. A secret has no `Serialize` of its
/// own, so it cannot slip into some other struct's JSON: it is serialised
/// only as part of an [`EndpointRecord`](crate::endpoint::EndpointRecord).
/// See the [module docs](self) for which constructor fits which provider.
///
/// ```
/// use hookway::Secret;
///
/// // Standard Webhooks: base64 after `whsec_`.
/// let s = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// assert_eq!(s.len(), 24);
/// assert_eq!(format!("{s:?}"), "Secret { kind: Base64, len: 24, .. }");
///
/// // GitHub: the string's own bytes.
/// let gh = Secret::literal("It's a Secret to Everybody")?;
/// assert_eq!(gh.len(), 26);
///
/// // A new secret to hand to a customer.
/// let fresh = Secret::generate();
/// let text = fresh.expose_text();
/// assert!(text.starts_with("whsec_"));
/// assert!(Secret::base64(&text)?.expose_bytes() == fresh.expose_bytes());
/// # Ok::<(), hookway::secret::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Box<[u8]>>,
    kind: SecretKind,
}

impl Secret {
    /// The prefix of Standard Webhooks secrets.
    pub const WHSEC_PREFIX: &'static str = "whsec_";

    /// A Standard Webhooks secret: `whsec_` followed by base64 (standard
    /// alphabet, padding optional). The prefix may be left out.
    pub fn base64(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(Self::WHSEC_PREFIX).unwrap_or(text);
        let bytes = Zeroizing::new(BASE64_LENIENT_PADDING.decode(encoded.as_bytes()).map_err(
            |_| SecretError::InvalidBase64 {
                prefix: Self::WHSEC_PREFIX,
            },
        )?);
        Self::build(&bytes, SecretKind::Base64)
    }

    /// A secret whose key is the text's own bytes, as GitHub, Stripe (prefix
    /// included), Slack and Shopify use their secrets.
    pub fn literal(text: &str) -> Result<Self, SecretError> {
        Self::build(text.as_bytes(), SecretKind::Literal)
    }

    /// Like [`literal`](Self::literal) but accepting any non-empty length,
    /// for verifying senders that let their users choose short secrets
    /// (GitHub accepts any; Hook0's documentation uses `secret`). Such keys
    /// are weak: never generate or hand out one.
    pub fn literal_weak(text: &str) -> Result<Self, SecretError> {
        check_len(text.len(), 1)?;
        Ok(Self {
            bytes: Zeroizing::new(text.as_bytes().into()),
            kind: SecretKind::Literal,
        })
    }

    /// A secret from raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        Self::build(bytes, SecretKind::Bytes)
    }

    /// A new random secret of [`GENERATED_SECRET_LEN`] bytes from the
    /// operating system's secure source.
    ///
    /// # Panics
    ///
    /// Panics if the operating system's random source fails; use
    /// [`try_generate`](Self::try_generate) to handle that case.
    pub fn generate() -> Self {
        Self::try_generate().expect("the operating system's random source failed")
    }

    /// Like [`generate`](Self::generate), returning an error if the operating
    /// system's random source fails.
    pub fn try_generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; GENERATED_SECRET_LEN]);
        crate::random::fill_secure(&mut bytes[..]).map_err(|_| SecretError::Random)?;
        Self::build(&bytes[..], SecretKind::Bytes)
    }

    /// A secret from stored key bytes and their kind, with the checks of
    /// the constructor that makes that kind: [`literal_weak`](Self::literal_weak)'s
    /// for literal secrets (UTF-8, at least one byte), the
    /// [`MIN_SECRET_LEN`] floor for the others.
    pub(crate) fn restore(bytes: &[u8], kind: SecretKind) -> Result<Self, SecretError> {
        match kind {
            SecretKind::Literal => {
                let text = std::str::from_utf8(bytes).map_err(|_| SecretError::NotText)?;
                Self::literal_weak(text)
            }
            SecretKind::Base64 | SecretKind::Bytes => Self::build(bytes, kind),
        }
    }

    fn build(bytes: &[u8], kind: SecretKind) -> Result<Self, SecretError> {
        check_len(bytes.len(), MIN_SECRET_LEN)?;
        Ok(Self {
            bytes: Zeroizing::new(bytes.into()),
            kind,
        })
    }

    /// How the key bytes were obtained.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The key length in bytes.
    #[allow(clippy::len_without_is_empty)] // a secret is never empty
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The raw key bytes. Named so that every use stands out in review.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The secret as its issuer writes it, e.g. to show a newly generated
    /// secret to the customer once: a [`Literal`](SecretKind::Literal) secret
    /// as its own text, any other as `whsec_<base64>`. Parsing the text back
    /// with the same kind's constructor gives the same key.
    pub fn expose_text(&self) -> String {
        if self.kind == SecretKind::Literal {
            return String::from_utf8_lossy(&self.bytes).into_owned();
        }
        let mut out = String::from(Self::WHSEC_PREFIX);
        base64::engine::general_purpose::STANDARD.encode_string(&self.bytes[..], &mut out);
        out
    }
}

fn check_len(len: usize, min: usize) -> Result<(), SecretError> {
    match len {
        0 => Err(SecretError::Empty),
        n if n < min => Err(SecretError::TooShort { len: n, min }),
        n if n > MAX_SECRET_LEN => Err(SecretError::TooLong {
            len: n,
            max: MAX_SECRET_LEN,
        }),
        _ => Ok(()),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("kind", &self.kind)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted secret]")
    }
}

impl PartialEq for Secret {
    /// Constant-time comparison of the key bytes.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.bytes.len() == other.bytes.len() && bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl Eq for Secret {}

#[cfg(feature = "ed25519")]
#[cfg_attr(docsrs, doc(cfg(feature = "ed25519")))]
pub use self::ed25519::{Ed25519PublicKey, Ed25519SecretKey};

#[cfg(feature = "ed25519")]
mod ed25519 {
    use super::*;

    /// A Standard Webhooks v1a signing key (Ed25519), serialised as
    /// `whsk_<base64 of 64 bytes: the 32-byte seed, then the 32-byte public key>`.
    ///
    /// ```
    /// use hookway::secret::Ed25519SecretKey;
    ///
    /// let key = Ed25519SecretKey::generate();
    /// let text = key.expose_whsk();
    /// let back = Ed25519SecretKey::parse(&text)?;
    /// assert_eq!(back.public_key(), key.public_key());
    /// assert!(key.public_key().to_whpk().starts_with("whpk_"));
    /// # Ok::<(), hookway::secret::SecretError>(())
    /// ```
    #[derive(Clone)]
    pub struct Ed25519SecretKey(pub(crate) ed25519_dalek::SigningKey);

    /// A Standard Webhooks v1a public key (Ed25519), serialised as
    /// `whpk_<base64 of 32 bytes>`. Receivers hold only this.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Ed25519PublicKey(pub(crate) ed25519_dalek::VerifyingKey);

    impl Ed25519SecretKey {
        /// The prefix of serialised secret keys.
        pub const PREFIX: &'static str = "whsk_";

        /// Parses `whsk_<base64>` (prefix optional, padding optional). The
        /// public half must match the seed.
        pub fn parse(text: &str) -> Result<Self, SecretError> {
            let encoded = text.strip_prefix(Self::PREFIX).unwrap_or(text);
            let bytes = Zeroizing::new(BASE64_LENIENT_PADDING.decode(encoded.as_bytes()).map_err(
                |_| SecretError::InvalidBase64 {
                    prefix: Self::PREFIX,
                },
            )?);
            Self::from_keypair(&bytes)
        }

        /// A key from its 64 bytes: the seed, then the public key, which
        /// must match the seed.
        pub(crate) fn from_keypair(bytes: &[u8]) -> Result<Self, SecretError> {
            let pair: &[u8; 64] = bytes
                .try_into()
                .map_err(|_| SecretError::InvalidEd25519("a whsk_ key must hold 64 bytes"))?;
            ed25519_dalek::SigningKey::from_keypair_bytes(pair)
                .map(Self)
                .map_err(|_| SecretError::InvalidEd25519("the public half does not match the seed"))
        }

        /// A key from its 32-byte seed.
        pub fn from_seed(seed: &[u8; 32]) -> Self {
            Self(ed25519_dalek::SigningKey::from_bytes(seed))
        }

        /// A new random key.
        ///
        /// # Panics
        ///
        /// Panics if the operating system's random source fails.
        pub fn generate() -> Self {
            let mut seed = Zeroizing::new([0u8; 32]);
            crate::random::fill_secure(&mut seed[..])
                .expect("the operating system's random source failed");
            Self::from_seed(&seed)
        }

        /// The matching public key, for receivers.
        pub fn public_key(&self) -> Ed25519PublicKey {
            Ed25519PublicKey(self.0.verifying_key())
        }

        /// The key in `whsk_` form. Named so that every use stands out in
        /// review.
        pub fn expose_whsk(&self) -> String {
            let bytes = Zeroizing::new(self.0.to_keypair_bytes());
            let mut out = String::from(Self::PREFIX);
            base64::engine::general_purpose::STANDARD.encode_string(&bytes[..], &mut out);
            out
        }
    }

    impl Ed25519PublicKey {
        /// The prefix of serialised public keys.
        pub const PREFIX: &'static str = "whpk_";

        /// Parses `whpk_<base64 of 32 bytes>` (prefix optional, padding
        /// optional).
        pub fn parse(text: &str) -> Result<Self, SecretError> {
            let encoded = text.strip_prefix(Self::PREFIX).unwrap_or(text);
            let bytes = BASE64_LENIENT_PADDING
                .decode(encoded.as_bytes())
                .map_err(|_| SecretError::InvalidBase64 {
                    prefix: Self::PREFIX,
                })?;
            Self::from_slice(&bytes)
        }

        /// A key from its 32 bytes.
        pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, SecretError> {
            let bytes: &[u8; 32] = bytes
                .try_into()
                .map_err(|_| SecretError::InvalidEd25519("a whpk_ key must hold 32 bytes"))?;
            ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map(Self)
                .map_err(|_| SecretError::InvalidEd25519("not a valid curve point"))
        }

        /// The key in `whpk_` form.
        pub fn to_whpk(&self) -> String {
            let mut out = String::from(Self::PREFIX);
            base64::engine::general_purpose::STANDARD.encode_string(self.0.as_bytes(), &mut out);
            out
        }
    }

    impl fmt::Debug for Ed25519SecretKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Ed25519SecretKey { .. }")
        }
    }

    impl fmt::Display for Ed25519SecretKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("[redacted Ed25519 secret key]")
        }
    }

    impl fmt::Debug for Ed25519PublicKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Ed25519PublicKey({})", self.to_whpk())
        }
    }

    impl fmt::Display for Ed25519PublicKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.to_whpk())
        }
    }
}

/// One key in a [`Keyring`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Key {
    /// A symmetric secret (every HMAC scheme; Standard Webhooks `v1`).
    Hmac(Secret),
    /// An Ed25519 signing key (Standard Webhooks `v1a`); also verifies.
    #[cfg(feature = "ed25519")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ed25519")))]
    Ed25519Secret(Ed25519SecretKey),
    /// An Ed25519 public key (Standard Webhooks `v1a`); verifies only.
    #[cfg(feature = "ed25519")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ed25519")))]
    Ed25519Public(Ed25519PublicKey),
}

impl From<Secret> for Key {
    fn from(secret: Secret) -> Self {
        Self::Hmac(secret)
    }
}

#[cfg(feature = "ed25519")]
impl From<Ed25519SecretKey> for Key {
    fn from(key: Ed25519SecretKey) -> Self {
        Self::Ed25519Secret(key)
    }
}

#[cfg(feature = "ed25519")]
impl From<Ed25519PublicKey> for Key {
    fn from(key: Ed25519PublicKey) -> Self {
        Self::Ed25519Public(key)
    }
}

impl Key {
    /// The HMAC secret, if this is one.
    pub fn as_hmac(&self) -> Option<&Secret> {
        match self {
            Self::Hmac(secret) => Some(secret),
            #[cfg(feature = "ed25519")]
            _ => None,
        }
    }

    /// Whether this key can produce signatures (public keys cannot).
    pub fn can_sign(&self) -> bool {
        match self {
            Self::Hmac(_) => true,
            #[cfg(feature = "ed25519")]
            Self::Ed25519Secret(_) => true,
            #[cfg(feature = "ed25519")]
            Self::Ed25519Public(_) => false,
        }
    }
}

/// Whether a key with this expiry is active at `now`: the one rule for
/// signing and verifying alike.
pub(crate) fn active_at(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    expires_at.is_none_or(|t| now < t)
}

#[derive(Clone, Debug)]
struct Entry {
    key: Key,
    expires_at: Option<OffsetDateTime>,
}

/// Several keys at once, for rotation without downtime.
///
/// Verification accepts a match with any active key. Schemes whose header
/// carries several signatures (Standard Webhooks, Stripe, Convoy advanced)
/// sign with every active key. Schemes with a single signature (GitHub,
/// Slack, Shopify, Hook0, …) sign with one: the active key that expires
/// soonest, so during a rotation the outgoing secret keeps signing until its
/// grace period ends and the new one takes over after (receivers add the new
/// secret within the grace period); among keys without expiry, the first
/// added. A key with an expiry stops signing and verifying at that instant.
///
/// Like its keys, a keyring serialises only as part of an
/// [`EndpointRecord`](crate::endpoint::EndpointRecord), which keeps the
/// order and each key's expiry.
///
/// ```
/// use hookway::{Keyring, Secret};
/// use time::macros::datetime;
///
/// let new = Secret::generate();
/// let old = Secret::generate();
/// let keys = Keyring::new(new).with_expiring(old, datetime!(2026-12-01 0:00 UTC));
///
/// assert_eq!(keys.active(datetime!(2026-11-30 0:00 UTC)).count(), 2);
/// assert_eq!(keys.active(datetime!(2026-12-01 0:00 UTC)).count(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
}

impl Keyring {
    /// A keyring holding one key.
    pub fn new(key: impl Into<Key>) -> Self {
        Self::empty().with(key)
    }

    /// A keyring with no keys (add some before use).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a key that does not expire.
    pub fn with(mut self, key: impl Into<Key>) -> Self {
        self.push(key, None);
        self
    }

    /// Adds a key that stops signing and verifying at `expires_at`.
    pub fn with_expiring(mut self, key: impl Into<Key>, expires_at: OffsetDateTime) -> Self {
        self.push(key, Some(expires_at));
        self
    }

    /// Adds a key, with an optional expiry.
    pub fn push(&mut self, key: impl Into<Key>, expires_at: Option<OffsetDateTime>) {
        self.entries.push(Entry {
            key: key.into(),
            expires_at,
        });
    }

    /// The keys active at `now`, in order.
    pub fn active(&self, now: OffsetDateTime) -> impl Iterator<Item = &Key> + '_ {
        self.entries
            .iter()
            .filter(move |e| active_at(e.expires_at, now))
            .map(|e| &e.key)
    }

    /// Every key with its expiry, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = (&Key, Option<OffsetDateTime>)> + '_ {
        self.entries.iter().map(|e| (&e.key, e.expires_at))
    }

    /// The number of keys, expired or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the keyring holds no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Secret> for Keyring {
    fn from(secret: Secret) -> Self {
        Self::new(secret)
    }
}

impl From<Key> for Keyring {
    fn from(key: Key) -> Self {
        Self::new(key)
    }
}

#[cfg(feature = "ed25519")]
impl From<Ed25519SecretKey> for Keyring {
    fn from(key: Ed25519SecretKey) -> Self {
        Self::new(key)
    }
}

#[cfg(feature = "ed25519")]
impl From<Ed25519PublicKey> for Keyring {
    fn from(key: Ed25519PublicKey) -> Self {
        Self::new(key)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_prefix_and_padding_variants() {
        let a = Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = Secret::base64("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(a, b);
        // 25 bytes: padded and unpadded forms.
        let raw = [7u8; 25];
        let padded = base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(Secret::base64(&padded).unwrap().expose_bytes(), raw);
        assert_eq!(Secret::base64(unpadded).unwrap().expose_bytes(), raw);
    }

    #[test]
    fn base64_is_strict() {
        for bad in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
            "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
            "whsec_",
        ] {
            assert!(Secret::base64(bad).is_err(), "{bad:?}");
        }
        // Non-zero trailing bits are refused rather than silently dropped.
        assert!(Secret::base64("AAAAAAAAAAAAAAAAAAAAAB").is_err());
    }

    #[test]
    fn length_limits() {
        assert_eq!(Secret::literal(""), Err(SecretError::Empty));
        assert_eq!(
            Secret::literal("short"),
            Err(SecretError::TooShort { len: 5, min: 16 })
        );
        assert!(Secret::from_bytes(&[1; 16]).is_ok());
        assert!(matches!(
            Secret::from_bytes(&vec![1; MAX_SECRET_LEN + 1]),
            Err(SecretError::TooLong { .. })
        ));
    }

    #[test]
    fn weak_literals_only_on_request() {
        assert!(Secret::literal("secret").is_err());
        assert_eq!(Secret::literal_weak("secret").unwrap().len(), 6);
        assert_eq!(Secret::literal_weak(""), Err(SecretError::Empty));
    }

    #[test]
    fn literal_keeps_whsec_prefix_bytes() {
        let stripe = Secret::literal("whsec_abcdefghijklmnopqrstuvwx").unwrap();
        assert_eq!(stripe.expose_bytes(), b"whsec_abcdefghijklmnopqrstuvwx");
        assert_eq!(stripe.kind(), SecretKind::Literal);
    }

    #[test]
    fn redacted() {
        let s = Secret::literal("It's a Secret to Everybody").unwrap();
        let shown = format!("{s:?} {s} {s:#?}");
        assert!(!shown.contains("Secret to"), "{shown}");
        let ring = Keyring::new(s);
        assert!(!format!("{ring:?}").contains("Everybody"));
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(Secret::generate(), Secret::generate());
        assert_eq!(Secret::generate().len(), GENERATED_SECRET_LEN);
    }
}
