//! Size limits. Anything larger is refused with an error naming the limit,
//! so a hostile or corrupted ruleset cannot exhaust memory or time.

/// Largest `download_config_specs` document accepted, in bytes.
pub const MAX_DCS_BYTES: usize = 64 * 1024 * 1024;
/// Largest ID-list file accepted, in bytes.
pub const MAX_ID_LISTS_BYTES: usize = 256 * 1024 * 1024;
/// Most entities (gates + configs + layers + ID lists + settings) in a ruleset.
pub const MAX_ENTITIES: usize = 100_000;
/// Most rules in one spec.
pub const MAX_RULES_PER_SPEC: usize = 1_000;
/// Most conditions in one rule.
pub const MAX_CONDITIONS_PER_RULE: usize = 1_000;
/// Most elements in one condition target (e.g. a bucket set or an allow list).
pub const MAX_TARGET_VALUES: usize = 100_000;
/// Longest entity name, rule id, field name or salt, in bytes.
pub const MAX_NAME_BYTES: usize = 1_024;
/// Longest regular expression accepted in `str_matches`, in bytes.
pub const MAX_REGEX_BYTES: usize = 4_096;
/// Most IDs in one ID list.
pub const MAX_ID_LIST_SIZE: usize = 10_000_000;
/// Deepest chain of nested gates (`pass_gate`/`fail_gate`) and delegations
/// followed during one evaluation. Deeper chains (including cycles) stop
/// with the documented result (see `eval`).
pub const MAX_NESTING_DEPTH: u32 = 64;
