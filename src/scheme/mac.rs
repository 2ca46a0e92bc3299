//! MAC computation over signed content given in parts, and strict decoding of
//! received signatures into fixed buffers (no allocation).

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use super::{Algorithm, Encoding};
use crate::secret::BASE64_LENIENT_PADDING;

/// The largest MAC output (HMAC-SHA512).
pub(crate) const MAX_MAC_LEN: usize = 64;

/// A computed MAC, on the stack.
pub(crate) struct MacOutput {
    buf: [u8; MAX_MAC_LEN],
    len: usize,
}

impl MacOutput {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Constant-time comparison with a received, decoded signature, by
    /// `subtle`. (The length of a MAC is public, so comparing lengths first
    /// leaks nothing.)
    pub(crate) fn matches(&self, received: &[u8]) -> bool {
        received.len() == self.len && bool::from(self.as_bytes().ct_eq(received))
    }
}

impl Drop for MacOutput {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

/// An HMAC already keyed: the inner and outer pad blocks are hashed once,
/// when the [`Signer`](crate::Signer) or [`Verifier`](crate::Verifier) is
/// built, and each message clones this state instead of keying again (two
/// hash compressions saved per message). The state is wiped on drop.
#[derive(Clone)]
pub(crate) enum KeyedMac {
    Sha256(hmac::Hmac<sha2::Sha256>),
    Sha512(hmac::Hmac<sha2::Sha512>),
}

impl KeyedMac {
    pub(crate) fn new(alg: Algorithm, key: &[u8]) -> Option<Self> {
        Some(match alg {
            Algorithm::Sha256 => Self::Sha256(KeyInit::new_from_slice(key).ok()?),
            Algorithm::Sha512 => Self::Sha512(KeyInit::new_from_slice(key).ok()?),
        })
    }

    /// The MAC of the concatenation of `parts`, without concatenating them.
    pub(crate) fn compute(&self, parts: &[&[u8]]) -> MacOutput {
        let mut buf = [0u8; MAX_MAC_LEN];
        let len = match self {
            Self::Sha256(mac) => finish(mac.clone(), parts, &mut buf),
            Self::Sha512(mac) => finish(mac.clone(), parts, &mut buf),
        };
        MacOutput { buf, len }
    }
}

fn finish<M: Mac>(mut mac: M, parts: &[&[u8]], out: &mut [u8; MAX_MAC_LEN]) -> usize {
    for part in parts {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    let len = tag.len().min(MAX_MAC_LEN);
    out[..len].copy_from_slice(&tag[..len]);
    len
}

/// A received signature decoded into a stack buffer.
pub(crate) struct Decoded {
    buf: [u8; 96],
    len: usize,
}

impl Decoded {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Decodes `text` strictly: any character outside the encoding's alphabet,
/// an odd hex length or non-canonical base64 fails. Signatures longer than
/// any MAC (or Ed25519 signature) fail without being decoded.
pub(crate) fn decode(encoding: Encoding, text: &[u8]) -> Option<Decoded> {
    let mut buf = [0u8; 96];
    let len = match encoding {
        Encoding::Hex => {
            if !text.len().is_multiple_of(2) || text.len() / 2 > buf.len() {
                return None;
            }
            let len = text.len() / 2;
            hex::decode_to_slice(text, &mut buf[..len]).ok()?;
            len
        }
        Encoding::Base64 => {
            if text.len() > 128 {
                return None;
            }
            BASE64_LENIENT_PADDING.decode_slice(text, &mut buf).ok()?
        }
    };
    Some(Decoded { buf, len })
}

/// Encodes a signature for a header value.
pub(crate) fn encode(encoding: Encoding, bytes: &[u8], out: &mut String) {
    match encoding {
        Encoding::Hex => {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.reserve(bytes.len() * 2);
            for b in bytes {
                out.push(DIGITS[usize::from(b >> 4)] as char);
                out.push(DIGITS[usize::from(b & 15)] as char);
            }
        }
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode_string(bytes, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_is_strict() {
        assert!(decode(Encoding::Hex, b"abc").is_none());
        assert!(decode(Encoding::Hex, b"zz").is_none());
        assert!(decode(Encoding::Hex, b"ab ").is_none());
        assert_eq!(
            decode(Encoding::Hex, b"ABff").unwrap().as_bytes(),
            [0xab, 0xff]
        );
        assert!(decode(Encoding::Base64, b"AAAA AAAA").is_none());
        assert!(decode(Encoding::Base64, b"AB==").is_none()); // trailing bits
        assert_eq!(decode(Encoding::Base64, b"AA==").unwrap().as_bytes(), [0]);
        assert_eq!(decode(Encoding::Base64, b"AA").unwrap().as_bytes(), [0]);
        assert!(decode(Encoding::Base64, &[b'A'; 400]).is_none());
        assert!(decode(Encoding::Hex, &[b'a'; 400]).is_none());
    }

    #[test]
    fn matches_compares_every_byte() {
        let mac = KeyedMac::new(Algorithm::Sha256, b"key").unwrap();
        for out in [mac.compute(&[b"x"]), {
            let m = KeyedMac::new(Algorithm::Sha512, b"key").unwrap();
            m.compute(&[b"x"])
        }] {
            let good = out.as_bytes().to_vec();
            assert!(out.matches(&good));
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x80;
                assert!(!out.matches(&bad), "byte {i}");
            }
            assert!(!out.matches(&good[..good.len() - 1]));
            assert!(!out.matches(&[]));
        }
    }

    #[test]
    fn parts_equal_whole_and_state_is_reusable() {
        let mac = KeyedMac::new(Algorithm::Sha256, b"key").unwrap();
        let whole = mac.compute(&[b"a.b.c"]);
        let parts = mac.compute(&[b"a", b".", b"b", b".c"]);
        assert_eq!(whole.as_bytes(), parts.as_bytes());
        assert_eq!(whole.as_bytes().len(), 32);
        let sha512 = KeyedMac::new(Algorithm::Sha512, b"key").unwrap();
        assert_eq!(sha512.compute(&[b"x"]).as_bytes().len(), 64);
    }
}
