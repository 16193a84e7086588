//! How names are hashed in a client initialize response (format doc §4.2,
//! §5.2): `djb2` (the default), `sha256` (base64 of the digest, 44
//! characters) or `none` (plain names).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The `hash_used` of a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    #[default]
    Djb2,
    Sha256,
    None,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 3] = [
        HashAlgorithm::Djb2,
        HashAlgorithm::Sha256,
        HashAlgorithm::None,
    ];

    /// The wire name: `djb2`, `sha256`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Djb2 => "djb2",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::None => "none",
        }
    }

    /// A name as it appears in a response hashed with this algorithm.
    pub fn hash(self, name: &str) -> String {
        match self {
            HashAlgorithm::Djb2 => djb2_number(name).to_string(),
            HashAlgorithm::Sha256 => sha256_base64(name),
            HashAlgorithm::None => name.to_string(),
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `hash` option.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown hash algorithm (expected djb2, sha256 or none)")]
pub struct UnknownHashAlgorithm;

impl FromStr for HashAlgorithm {
    type Err = UnknownHashAlgorithm;

    /// Exact, lower-case names, as Statsig accepts them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or(UnknownHashAlgorithm)
    }
}

/// djb2 over Unicode scalar values in wrapping 64-bit arithmetic, masked to
/// 32 bits (format doc §4.2; equal to the 32-bit UTF-16 variant for BMP text).
pub fn djb2_number(s: &str) -> u32 {
    let mut h: u64 = 0;
    for c in s.chars() {
        h = h.wrapping_mul(31).wrapping_add(c as u64);
    }
    (h & 0xFFFF_FFFF) as u32
}

/// Standard base64 (padded) of SHA-256 of the UTF-8 name.
pub fn sha256_base64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Worked by hand from the doc's definition `h = h*31 + c`:
    /// "a" = 97; "ab" = 97*31 + 98 = 3105; "abc" = 3105*31 + 99 = 96354.
    #[test]
    fn djb2_hand_computed() {
        assert_eq!(HashAlgorithm::Djb2.hash(""), "0");
        assert_eq!(HashAlgorithm::Djb2.hash("a"), "97");
        assert_eq!(HashAlgorithm::Djb2.hash("ab"), "3105");
        assert_eq!(HashAlgorithm::Djb2.hash("abc"), "96354");
        // Past 32 bits the value wraps: masked to the low 32 bits.
        assert_eq!(HashAlgorithm::Djb2.hash("test_gate"), "3114454104");
        assert_eq!(HashAlgorithm::Djb2.hash("new_checkout"), "4222855429");
        // A non-ASCII BMP character counts as its code point (é = 233).
        assert_eq!(HashAlgorithm::Djb2.hash("é"), "233");
    }

    #[test]
    fn djb2_matches_the_evaluator_crate_hash() {
        for s in ["", "a", "test_gate", "a_gate_with_a_much_longer_name_123"] {
            assert_eq!(HashAlgorithm::Djb2.hash(s), crate::hash::djb2(s));
        }
    }

    /// base64(SHA-256(name)), full 44 characters.
    #[test]
    fn sha256_examples() {
        assert_eq!(
            HashAlgorithm::Sha256.hash(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            HashAlgorithm::Sha256.hash("a"),
            "ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs="
        );
        assert_eq!(
            HashAlgorithm::Sha256.hash("test_gate"),
            "AoZS0F06Ub+W2ONx+94rPTS7MRxuxa+GnXro5Q1uaGY="
        );
        assert_eq!(HashAlgorithm::None.hash("test_gate"), "test_gate");
    }

    #[test]
    fn names_parse_exactly() {
        for h in HashAlgorithm::ALL {
            assert_eq!(h.as_str().parse::<HashAlgorithm>(), Ok(h));
        }
        assert!("DJB2".parse::<HashAlgorithm>().is_err());
        assert!("md5".parse::<HashAlgorithm>().is_err());
    }

    /// Reference implementation: 32-bit wrapping over UTF-16 code units, as
    /// Statsig's node SDK computes it.
    fn djb2_utf16(s: &str) -> u32 {
        let mut h: i32 = 0;
        for u in s.encode_utf16() {
            h = (h << 5).wrapping_sub(h).wrapping_add(u as i32);
        }
        h as u32
    }

    proptest! {
        /// The two definitions in the doc agree on BMP text.
        #[test]
        fn djb2_core_equals_node_on_bmp(s in "[\\u{0}-\\u{d7ff}]{0,64}") {
            prop_assert_eq!(djb2_number(&s), djb2_utf16(&s));
        }

        #[test]
        fn sha256_names_are_44_chars(s in ".{0,64}") {
            prop_assert_eq!(sha256_base64(&s).len(), 44);
        }
    }
}
