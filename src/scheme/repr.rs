//! The serialised form of a [`Scheme`]; the layout is documented on the
//! type.
//!
//! Serialising reads the scheme's parameters; deserialising goes through
//! the presets and builders, so a stored scheme passes the same checks as a
//! new one.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Algorithm, Encoding, Kind, Preset, Scheme, SecretFormat};
use crate::error::SchemeError;

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Repr {
    // Empty struct variants rather than unit ones: serde lets unknown fields
    // through on unit variants of an internally tagged enum.
    Standard {},
    Svix {},
    Github {},
    Shopify {},
    Stripe {},
    Hook0 {},
    Slack {},
    ConvoySimple {
        algorithm: Algorithm,
        encoding: Encoding,
    },
    ConvoyAdvanced {
        algorithm: Algorithm,
        encoding: Encoding,
    },
    HmacHeader {
        header: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        algorithm: Algorithm,
        #[serde(default)]
        encoding: Encoding,
        #[serde(default)]
        id_header: Option<String>,
        #[serde(default = "literal")]
        secret_format: SecretFormat,
    },
    Timestamped {
        header: String,
        #[serde(default = "timestamp_key")]
        timestamp_key: String,
        #[serde(default = "signature_key")]
        signature_key: String,
        #[serde(default = "dot")]
        separator: Separator,
        #[serde(default = "yes")]
        multiple_signatures: bool,
        #[serde(default)]
        algorithm: Algorithm,
        #[serde(default)]
        encoding: Encoding,
        #[serde(default)]
        id_header: Option<String>,
        #[serde(default = "literal")]
        secret_format: SecretFormat,
    },
    SeparateTimestamp {
        signature_header: String,
        timestamp_header: String,
        #[serde(default = "version")]
        version: String,
        #[serde(default = "colon")]
        separator: Separator,
        #[serde(default)]
        algorithm: Algorithm,
        #[serde(default)]
        encoding: Encoding,
        #[serde(default)]
        id_header: Option<String>,
        #[serde(default = "literal")]
        secret_format: SecretFormat,
    },
}

// The builders' defaults, spelled out here so that the stored form keeps its
// meaning even if a builder's default changes.
fn literal() -> SecretFormat {
    SecretFormat::Literal
}
fn timestamp_key() -> String {
    "t".into()
}
fn signature_key() -> String {
    "v1".into()
}
fn version() -> String {
    "v0".into()
}
fn dot() -> Separator {
    Separator(b'.')
}
fn colon() -> Separator {
    Separator(b':')
}
fn yes() -> bool {
    true
}

/// A separator byte as a one-character string: U+0000 to U+00FF stand for
/// the bytes 0 to 255, so `"."` is `b'.'` and every byte has one form.
#[derive(Clone, Copy)]
struct Separator(u8);

impl Serialize for Separator {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_char(char::from(self.0))
    }
}

impl<'de> Deserialize<'de> for Separator {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => u8::try_from(c).map(Self).map_err(|_| {
                serde::de::Error::custom("a separator must be a character from U+0000 to U+00FF")
            }),
            _ => Err(serde::de::Error::custom(
                "a separator must be exactly one character",
            )),
        }
    }
}

impl Repr {
    fn of(scheme: &Scheme) -> Self {
        let id_header = scheme.id_header.as_ref().map(|h| h.as_str().to_owned());
        let secret_format = scheme.secrets;
        match (scheme.preset, &scheme.kind) {
            (Some(Preset::Standard), _) => Self::Standard {},
            (Some(Preset::Svix), _) => Self::Svix {},
            (Some(Preset::GitHub), _) => Self::Github {},
            (Some(Preset::Shopify), _) => Self::Shopify {},
            (Some(Preset::Stripe), _) => Self::Stripe {},
            (Some(Preset::Hook0), _) => Self::Hook0 {},
            (Some(Preset::Slack), _) => Self::Slack {},
            (Some(Preset::ConvoySimple), kind) => Self::ConvoySimple {
                algorithm: scheme.algorithm(),
                encoding: encoding(kind),
            },
            (Some(Preset::ConvoyAdvanced), kind) => Self::ConvoyAdvanced {
                algorithm: scheme.algorithm(),
                encoding: encoding(kind),
            },
            // Only presets make this layout.
            (None, Kind::Standard { svix_names: false }) => Self::Standard {},
            (None, Kind::Standard { svix_names: true }) => Self::Svix {},
            (
                None,
                Kind::Body {
                    header,
                    prefix,
                    alg,
                    enc,
                },
            ) => Self::HmacHeader {
                header: header.as_str().to_owned(),
                prefix: prefix.to_string(),
                algorithm: *alg,
                encoding: *enc,
                id_header,
                secret_format,
            },
            (
                None,
                Kind::Stamped {
                    header,
                    ts_key,
                    sig_key,
                    sep,
                    alg,
                    enc,
                    multiple,
                },
            ) => Self::Timestamped {
                header: header.as_str().to_owned(),
                timestamp_key: ts_key.to_string(),
                signature_key: sig_key.to_string(),
                separator: Separator(*sep),
                multiple_signatures: *multiple,
                algorithm: *alg,
                encoding: *enc,
                id_header,
                secret_format,
            },
            (
                None,
                Kind::Split {
                    sig_header,
                    ts_header,
                    version,
                    sep,
                    alg,
                    enc,
                },
            ) => Self::SeparateTimestamp {
                signature_header: sig_header.as_str().to_owned(),
                timestamp_header: ts_header.as_str().to_owned(),
                version: version.to_string(),
                separator: Separator(*sep),
                algorithm: *alg,
                encoding: *enc,
                id_header,
                secret_format,
            },
        }
    }

    fn into_scheme(self) -> Result<Scheme, SchemeError> {
        Ok(match self {
            Self::Standard {} => Scheme::standard(),
            Self::Svix {} => Scheme::svix(),
            Self::Github {} => Scheme::github(),
            Self::Shopify {} => Scheme::shopify(),
            Self::Stripe {} => Scheme::stripe(),
            Self::Hook0 {} => Scheme::hook0(),
            Self::Slack {} => Scheme::slack(),
            Self::ConvoySimple {
                algorithm,
                encoding,
            } => Scheme::convoy_simple(algorithm, encoding),
            Self::ConvoyAdvanced {
                algorithm,
                encoding,
            } => Scheme::convoy_advanced(algorithm, encoding),
            Self::HmacHeader {
                header,
                prefix,
                algorithm,
                encoding,
                id_header,
                secret_format,
            } => {
                let mut builder = Scheme::hmac_header(&header)
                    .prefix(&prefix)
                    .algorithm(algorithm)
                    .encoding(encoding)
                    .secret_format(secret_format);
                if let Some(name) = &id_header {
                    builder = builder.id_header(name);
                }
                builder.build()?
            }
            Self::Timestamped {
                header,
                timestamp_key,
                signature_key,
                separator,
                multiple_signatures,
                algorithm,
                encoding,
                id_header,
                secret_format,
            } => {
                let mut builder = Scheme::timestamped(&header)
                    .timestamp_key(&timestamp_key)
                    .signature_key(&signature_key)
                    .separator(separator.0)
                    .multiple_signatures(multiple_signatures)
                    .algorithm(algorithm)
                    .encoding(encoding)
                    .secret_format(secret_format);
                if let Some(name) = &id_header {
                    builder = builder.id_header(name);
                }
                builder.build()?
            }
            Self::SeparateTimestamp {
                signature_header,
                timestamp_header,
                version,
                separator,
                algorithm,
                encoding,
                id_header,
                secret_format,
            } => {
                let mut builder = Scheme::separate_timestamp(&signature_header, &timestamp_header)
                    .version(&version)
                    .separator(separator.0)
                    .algorithm(algorithm)
                    .encoding(encoding)
                    .secret_format(secret_format);
                if let Some(name) = &id_header {
                    builder = builder.id_header(name);
                }
                builder.build()?
            }
        })
    }
}

fn encoding(kind: &Kind) -> Encoding {
    match kind {
        Kind::Standard { .. } => Encoding::Base64,
        Kind::Body { enc, .. } | Kind::Stamped { enc, .. } | Kind::Split { enc, .. } => *enc,
    }
}

impl Serialize for Scheme {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Repr::of(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Repr::deserialize(deserializer)?
            .into_scheme()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip(scheme: &Scheme) -> serde_json::Value {
        let value = serde_json::to_value(scheme).unwrap();
        let back: Scheme = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(&back, scheme, "{value}");
        assert_eq!(back.name(), scheme.name());
        value
    }

    #[test]
    fn presets_serialise_by_name() {
        for (scheme, kind) in [
            (Scheme::standard(), "standard"),
            (Scheme::svix(), "svix"),
            (Scheme::github(), "github"),
            (Scheme::shopify(), "shopify"),
            (Scheme::stripe(), "stripe"),
            (Scheme::hook0(), "hook0"),
            (Scheme::slack(), "slack"),
        ] {
            assert_eq!(round_trip(&scheme), json!({ "kind": kind }));
        }
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for enc in [Encoding::Hex, Encoding::Base64] {
                let simple = round_trip(&Scheme::convoy_simple(alg, enc));
                assert_eq!(simple["kind"], "convoy_simple");
                let advanced = round_trip(&Scheme::convoy_advanced(alg, enc));
                assert_eq!(advanced["kind"], "convoy_advanced");
                assert_eq!(simple["algorithm"], advanced["algorithm"]);
                assert_eq!(simple["encoding"], advanced["encoding"]);
            }
        }
        assert_eq!(
            round_trip(&Scheme::convoy_simple(Algorithm::Sha512, Encoding::Base64)),
            json!({"kind": "convoy_simple", "algorithm": "sha512", "encoding": "base64"})
        );
    }

    #[test]
    fn builder_schemes_keep_every_setting() {
        let split = Scheme::separate_timestamp("X-Sig", "X-Ts")
            .version("v9")
            .separator(0xff)
            .algorithm(Algorithm::Sha512)
            .encoding(Encoding::Base64)
            .id_header("X-Id")
            .secret_format(SecretFormat::Base64)
            .build()
            .unwrap();
        assert_eq!(
            round_trip(&split),
            json!({
                "kind": "separate_timestamp",
                "signature_header": "x-sig",
                "timestamp_header": "x-ts",
                "version": "v9",
                "separator": "\u{ff}",
                "algorithm": "sha512",
                "encoding": "base64",
                "id_header": "x-id",
                "secret_format": "base64",
            })
        );
        let stamped = Scheme::timestamped("X-Stamp")
            .timestamp_key("ts")
            .signature_key("s2")
            .separator(0)
            .multiple_signatures(false)
            .build()
            .unwrap();
        assert_eq!(round_trip(&stamped)["separator"], "\u{0}");
        let body = Scheme::hmac_header("X-Body")
            .prefix("mac=")
            .build()
            .unwrap();
        assert_eq!(round_trip(&body)["prefix"], "mac=");
    }

    #[test]
    fn absent_settings_take_the_builders_defaults() {
        let cases = [
            (
                json!({"kind": "hmac_header", "header": "X-A"}),
                Scheme::hmac_header("X-A").build(),
            ),
            (
                json!({"kind": "timestamped", "header": "X-A"}),
                Scheme::timestamped("X-A").build(),
            ),
            (
                json!({"kind": "separate_timestamp", "signature_header": "X-A", "timestamp_header": "X-B"}),
                Scheme::separate_timestamp("X-A", "X-B").build(),
            ),
        ];
        for (value, expected) in cases {
            let scheme: Scheme = serde_json::from_value(value).unwrap();
            assert_eq!(scheme, expected.unwrap());
        }
    }

    #[test]
    fn invalid_forms_are_refused() {
        for bad in [
            json!({}),
            json!({"kind": "nope"}),
            json!({"kind": "github", "extra": 1}),
            json!({"kind": "hmac_header"}),
            json!({"kind": "hmac_header", "header": "bad header"}),
            json!({"kind": "hmac_header", "header": "X-A", "prefix": "a b"}),
            json!({"kind": "hmac_header", "header": "X-A", "id_header": "x-a"}),
            json!({"kind": "hmac_header", "header": "X-A", "algorithm": "md5"}),
            json!({"kind": "timestamped", "header": "X-A", "timestamp_key": "v1"}),
            json!({"kind": "timestamped", "header": "X-A", "separator": ".."}),
            json!({"kind": "timestamped", "header": "X-A", "separator": ""}),
            json!({"kind": "timestamped", "header": "X-A", "separator": "\u{100}"}),
            json!({"kind": "separate_timestamp", "signature_header": "X-A", "timestamp_header": "x-a"}),
            json!({"kind": "convoy_simple"}),
        ] {
            assert!(
                serde_json::from_value::<Scheme>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn equality_tells_presets_from_lookalikes() {
        assert_eq!(Scheme::github(), Scheme::github());
        assert_ne!(Scheme::standard(), Scheme::svix());
        assert_ne!(
            Scheme::convoy_simple(Algorithm::Sha256, Encoding::Hex),
            Scheme::convoy_simple(Algorithm::Sha256, Encoding::Base64)
        );
        let copy = Scheme::hmac_header("X-Hub-Signature-256")
            .prefix("sha256=")
            .id_header("X-GitHub-Delivery")
            .build()
            .unwrap();
        assert_ne!(copy, Scheme::github());
        assert_eq!(
            copy,
            Scheme::hmac_header("x-hub-signature-256")
                .prefix("sha256=")
                .id_header("x-github-delivery")
                .build()
                .unwrap()
        );
    }
}
