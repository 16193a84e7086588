//! Statsig's hashes (format doc §4).
//!
//! * Evaluation hash: SHA-256 of the UTF-8 input, the **first 8 bytes** read
//!   as a big-endian `u64` (not 8 hex characters).
//! * Pass percentage: input `specSalt.ruleSalt.unitID`, pass iff
//!   `h % 10000 < pct * 100`; 100 and 0 never hash.
//! * User bucket: input `salt.unitID`, bucket `h % 1000`.
//! * ID-list key: the first 8 characters of standard base64 of SHA-256 of
//!   the unit ID (which are exactly the encoding of the first 6 bytes).
//!
//! Inputs are fed to the hasher in parts so nothing is allocated.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// SHA-256 of the concatenated parts, first 8 bytes as big-endian u64.
pub fn evaluation_hash(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// `prefix` is `specSalt + "." + ruleSalt + "."`, pre-joined at compile time.
pub fn passes_percentage(prefix: &str, unit_id: &str, pass_percentage: f64) -> bool {
    if pass_percentage == 100.0 {
        return true;
    }
    if pass_percentage == 0.0 {
        return false;
    }
    let h = evaluation_hash(&[prefix, unit_id]);
    ((h % 10_000) as f64) < pass_percentage * 100.0
}

/// `prefix` is `salt + "."`.
pub fn user_bucket(prefix: &str, unit_id: &str) -> u64 {
    evaluation_hash(&[prefix, unit_id]) % 1000
}

/// The 8-character ID-list key of a unit ID.
pub fn id_list_key(unit_id: &str) -> [u8; 8] {
    let digest = Sha256::digest(unit_id.as_bytes());
    let mut out = [0u8; 8];
    // 6 bytes encode to exactly 8 base64 characters, no padding.
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(&digest[..6], &mut out)
        .unwrap_or(0);
    debug_assert_eq!(written, 8);
    out
}

/// `id_list_key` as a string (for storing ID lists).
pub fn id_list_key_string(unit_id: &str) -> String {
    String::from_utf8_lossy(&id_list_key(unit_id)).into_owned()
}

/// djb2 as Statsig's core computes it (client response names).
pub fn djb2(s: &str) -> String {
    let mut h: i64 = 0;
    for c in s.chars() {
        h = h.wrapping_shl(5).wrapping_sub(h).wrapping_add(c as i64);
    }
    (h & 0xFFFF_FFFF).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_examples_from_the_format_doc() {
        let h = evaluation_hash(&["salt-rollout_30.7f3c2a9e-rollout30.", "user_0"]);
        assert_eq!(h, 4_707_828_328_050_209_859);
        assert!(!passes_percentage(
            "salt-rollout_30.7f3c2a9e-rollout30.",
            "user_0",
            30.0
        ));
        assert_eq!(user_bucket("bucket-salt-25.", "user_0"), 794);
        assert_eq!(&id_list_key("user_0"), b"TmgID6Nv");
    }

    #[test]
    fn full_base64_prefix_matches() {
        let digest = Sha256::digest(b"company_3");
        let full = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(id_list_key_string("company_3"), full[..8]);
    }

    fn ids() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-]{1,24}"
    }

    proptest! {
        #[test]
        fn hash_is_deterministic(salt in ".{0,20}", id in ids()) {
            let p = format!("{salt}.");
            prop_assert_eq!(user_bucket(&p, &id), user_bucket(&p, &id));
            prop_assert_eq!(
                passes_percentage(&p, &id, 37.5),
                passes_percentage(&p, &id, 37.5)
            );
        }

        /// The bucket is a function of `salt + "." + unitID` alone: how the
        /// input is split between parts does not matter.
        #[test]
        fn bucket_depends_only_on_salt_and_unit(salt in "[a-z0-9-]{0,16}", id in ids()) {
            let whole = format!("{salt}.{id}");
            let split = evaluation_hash(&[&format!("{salt}."), &id]);
            prop_assert_eq!(split, evaluation_hash(&[&whole]));
            prop_assert_eq!(split % 1000, user_bucket(&format!("{salt}."), &id));
        }

        /// Raising a rollout never drops a user who passed.
        #[test]
        fn rollouts_are_monotonic(id in ids(), p in 0.0f64..100.0, extra in 0.0f64..100.0) {
            let q = (p + extra).min(100.0);
            let prefix = "spec-salt.rule-salt.";
            if passes_percentage(prefix, &id, p) {
                prop_assert!(passes_percentage(prefix, &id, q));
            }
        }

        /// A p% rollout passes p% of random IDs, within 6 standard deviations:
        /// over proptest's 256 cases a 4σ bound fails by chance about once in
        /// 60 runs; 6σ about once in a million, and still catches any real bias
        /// (a mis-read hash shifts the fraction by many σ at n = 4000).
        #[test]
        fn rollout_fraction_within_tolerance(seed in any::<u64>(), p in 1u32..100) {
            let n = 4000u32;
            let prefix = format!("salt-{seed}.rule.");
            let passed = (0..n)
                .filter(|i| passes_percentage(&prefix, &format!("u{seed}-{i}"), p as f64))
                .count() as f64;
            let expect = n as f64 * p as f64 / 100.0;
            let sd = (n as f64 * (p as f64 / 100.0) * (1.0 - p as f64 / 100.0)).sqrt();
            prop_assert!((passed - expect).abs() <= 6.0 * sd + 1.0,
                "passed {} expected {} sd {}", passed, expect, sd);
        }
    }

    /// Buckets of random IDs are uniform over 0..1000 (chi-square over 10
    /// groups of 100 buckets, threshold far above the 99.9% quantile).
    #[test]
    fn bucket_distribution_is_uniform() {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 8,
            ..Config::default()
        });
        runner
            .run(&any::<u64>(), |seed| {
                let n = 20_000usize;
                let mut groups = [0usize; 10];
                for i in 0..n {
                    let b = user_bucket("bucket-salt.", &format!("{seed}-{i}"));
                    prop_assert!(b < 1000);
                    groups[(b / 100) as usize] += 1;
                }
                let expect = n as f64 / 10.0;
                let chi2: f64 = groups
                    .iter()
                    .map(|&g| (g as f64 - expect).powi(2) / expect)
                    .sum();
                // 9 degrees of freedom: the 99.99% quantile is about 33.7.
                prop_assert!(chi2 < 40.0, "chi2 {} groups {:?}", chi2, groups);
                Ok(())
            })
            .map_err(|e| e.to_string())
            .unwrap();
    }
}
