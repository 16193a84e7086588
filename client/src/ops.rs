//! Operators: compiled once from `operator` + `targetValue`, then applied to
//! a left-hand value without allocating (format doc §3.2, Statsig's core).

use crate::hash;
use crate::value::{parse_target_timestamp, target_text, to_lower, Lhs};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Sets at least this big are hashed; smaller ones are scanned.
const HASH_SET_MIN: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeOp {
    Before,
    After,
    On,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayOp {
    Any,
    None,
    All,
    NotAll,
}

/// Every operator [`Check::compile`] knows (Statsig's names, case-sensitive);
/// any other compiles to `Unsupported`.
pub const OPERATORS: [&str; 30] = [
    "gt",
    "gte",
    "lt",
    "lte",
    "version_gt",
    "version_gte",
    "version_lt",
    "version_lte",
    "version_eq",
    "version_neq",
    "any",
    "none",
    "any_case_sensitive",
    "none_case_sensitive",
    "str_starts_with_any",
    "str_ends_with_any",
    "str_contains_any",
    "str_contains_none",
    "str_matches",
    "eq",
    "neq",
    "before",
    "after",
    "on",
    "in_segment_list",
    "not_in_segment_list",
    "array_contains_any",
    "array_contains_none",
    "array_contains_all",
    "not_array_contains_all",
];

/// Whether compiling builds the lookup sets of list operators (`any`,
/// `str_contains_any`, ...). Skipping them is for validation only: the
/// result then matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sets {
    Build,
    Skip,
}

/// A set of strings, scanned when small and hashed when large.
#[derive(Clone, Debug)]
pub enum StrSet {
    Small(Vec<Box<str>>),
    Large(HashSet<Box<str>>),
}

impl StrSet {
    /// Only membership counts, so duplicates are dropped and order is not kept. Each item is
    /// moved in, not copied: the leader compiles every committed gate to validate it.
    fn new(items: Vec<String>) -> StrSet {
        if items.len() < HASH_SET_MIN {
            let mut unique: Vec<Box<str>> = Vec::with_capacity(items.len());
            for s in items {
                if !unique.iter().any(|t| **t == *s) {
                    unique.push(s.into_boxed_str());
                }
            }
            return StrSet::Small(unique);
        }
        let set: HashSet<Box<str>> = items.into_iter().map(String::into_boxed_str).collect();
        if set.len() >= HASH_SET_MIN {
            StrSet::Large(set)
        } else {
            StrSet::Small(set.into_iter().collect())
        }
    }

    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Small(v) => v.iter().any(|t| **t == *s),
            StrSet::Large(h) => h.contains(s),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            StrSet::Small(v) => v.len(),
            StrSet::Large(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The target of an `eq`/`neq`, typed by the JSON type of `targetValue`.
#[derive(Clone, Debug)]
pub enum EqTarget {
    Null,
    Bool(bool),
    Number(f64),
    String(Box<str>),
    /// Element strings keyed by lower case (last duplicate wins, as in
    /// Statsig's core), with their index in the array.
    Array(Vec<(usize, Box<str>)>),
    Object(Vec<(Box<str>, Box<str>)>),
}

/// A compiled operator with its pre-processed target.
#[derive(Debug)]
pub enum Check {
    Numeric(NumOp, Option<f64>),
    /// `None` target: unparsable, every comparison is false.
    Version(VersionOp, Option<Box<[i128]>>),
    /// `any` / `none`: lower(string(V)) ∈ set.
    AnyIgnoreCase {
        set: StrSet,
        negate: bool,
    },
    /// `any_case_sensitive` / `none_case_sensitive`: the set is keyed by the
    /// lower-cased target and keeps the last original for each key.
    AnyCaseSensitive {
        map: HashMap<Box<str>, Box<str>>,
        negate: bool,
    },
    /// `str_starts_with_any` etc., case-insensitive, lower-cased targets.
    Str {
        op: StrOp,
        targets: Box<[Box<str>]>,
        negate: bool,
    },
    Regex(Option<Box<fancy_regex::Regex>>),
    Eq {
        target: EqTarget,
        negate: bool,
    },
    Time(TimeOp, Option<i64>),
    /// `in_segment_list` / `not_in_segment_list`; the list name.
    Segment {
        list: Box<str>,
        negate: bool,
    },
    Array(ArrayOp, Option<HashSet<Box<str>>>),
    /// The target makes the operator always false (e.g. an object target
    /// for a string operator other than `any`/`none`).
    Never,
    Unsupported,
}

/// Why an operator could not be compiled in the intended way; reported as
/// warnings by validation.
pub type CompileNote = Option<String>;

impl Check {
    /// Compile `operator` with `target`. Unknown or missing operators are
    /// `Unsupported`, exactly as in Statsig's core (case-sensitive names).
    pub fn compile(operator: Option<&str>, target: &Value) -> (Check, CompileNote) {
        Self::compile_sets(operator, target, Sets::Build)
    }

    /// [`compile`](Self::compile), leaving the lookup sets of the list
    /// operators empty with [`Sets::Skip`] (same notes: no set content adds one).
    pub fn compile_sets(
        operator: Option<&str>,
        target: &Value,
        sets: Sets,
    ) -> (Check, CompileNote) {
        let build = sets == Sets::Build;
        let Some(op) = operator else {
            return (Check::Unsupported, Some("missing operator".into()));
        };
        let check = match op {
            "gt" => Check::Numeric(NumOp::Gt, target_float(target)),
            "gte" => Check::Numeric(NumOp::Gte, target_float(target)),
            "lt" => Check::Numeric(NumOp::Lt, target_float(target)),
            "lte" => Check::Numeric(NumOp::Lte, target_float(target)),
            "version_gt" => Check::Version(VersionOp::Gt, target_version(target)),
            "version_gte" => Check::Version(VersionOp::Gte, target_version(target)),
            "version_lt" => Check::Version(VersionOp::Lt, target_version(target)),
            "version_lte" => Check::Version(VersionOp::Lte, target_version(target)),
            "version_eq" => Check::Version(VersionOp::Eq, target_version(target)),
            "version_neq" => Check::Version(VersionOp::Neq, target_version(target)),
            "any" | "none" => {
                let negate = op == "none";
                let set = match target {
                    _ if !build => None,
                    // Object sets are compared by key, as-is.
                    Value::Object(m) => Some(StrSet::new(m.keys().cloned().collect())),
                    Value::Array(a) => Some(StrSet::new(
                        a.iter()
                            .map(|v| match v {
                                Value::String(s) => to_lower(s),
                                other => to_lower(&target_text(other)),
                            })
                            .collect(),
                    )),
                    _ => None,
                };
                match set {
                    Some(set) => Check::AnyIgnoreCase { set, negate },
                    None => Check::AnyIgnoreCase {
                        set: StrSet::Small(Vec::new()),
                        negate,
                    },
                }
            }
            "any_case_sensitive" | "none_case_sensitive" => {
                let negate = op == "none_case_sensitive";
                let mut map = HashMap::new();
                if let (true, Value::Array(a)) = (build, target) {
                    for v in a {
                        let t = target_text(v);
                        map.insert(to_lower(&t).into_boxed_str(), t.into_boxed_str());
                    }
                }
                Check::AnyCaseSensitive { map, negate }
            }
            "str_starts_with_any"
            | "str_ends_with_any"
            | "str_contains_any"
            | "str_contains_none" => {
                let op_kind = match op {
                    "str_starts_with_any" => StrOp::StartsWith,
                    "str_ends_with_any" => StrOp::EndsWith,
                    _ => StrOp::Contains,
                };
                let mut seen = HashSet::new();
                let targets: Vec<Box<str>> = match target {
                    Value::Array(a) if build => a
                        .iter()
                        .map(|v| to_lower(&target_text(v)))
                        .filter(|s| seen.insert(s.clone()))
                        .map(String::into_boxed_str)
                        .collect(),
                    _ => Vec::new(),
                };
                Check::Str {
                    op: op_kind,
                    targets: targets.into_boxed_slice(),
                    negate: op == "str_contains_none",
                }
            }
            "str_matches" => {
                let re = match target {
                    Value::String(s) if s.len() <= crate::limits::MAX_REGEX_BYTES => {
                        fancy_regex::Regex::new(s).ok().map(Box::new)
                    }
                    _ => None,
                };
                if re.is_none() {
                    return (
                        Check::Regex(None),
                        Some("targetValue is not a valid regular expression: never matches".into()),
                    );
                }
                Check::Regex(re)
            }
            "eq" | "neq" => Check::Eq {
                target: eq_target(target),
                negate: op == "neq",
            },
            "before" | "after" | "on" => {
                let t = match target {
                    Value::String(s) => parse_target_timestamp(s)
                        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64)),
                    Value::Number(n) => n.as_f64().map(|f| f as i64),
                    _ => None,
                };
                let op = match op {
                    "before" => TimeOp::Before,
                    "after" => TimeOp::After,
                    _ => TimeOp::On,
                };
                Check::Time(op, t)
            }
            "in_segment_list" | "not_in_segment_list" => Check::Segment {
                list: match target {
                    Value::String(s) => s.as_str().into(),
                    _ => "".into(),
                },
                negate: op == "not_in_segment_list",
            },
            "array_contains_any"
            | "array_contains_none"
            | "array_contains_all"
            | "not_array_contains_all" => {
                let aop = match op {
                    "array_contains_any" => ArrayOp::Any,
                    "array_contains_none" => ArrayOp::None,
                    "array_contains_all" => ArrayOp::All,
                    _ => ArrayOp::NotAll,
                };
                let set = match target {
                    Value::Array(a) => Some(
                        a.iter()
                            .map(|v| target_text(v).into_boxed_str())
                            .collect::<HashSet<_>>(),
                    ),
                    _ => None,
                };
                Check::Array(aop, set)
            }
            _ => {
                return (
                    Check::Unsupported,
                    Some(format!("unknown operator \"{op}\"")),
                )
            }
        };
        (check, None)
    }

    /// Apply to a left-hand value. `in_list` answers ID-list membership for
    /// a list name and a hashed key.
    pub fn apply(&self, v: &Lhs<'_>, in_list: &dyn Fn(&str, &[u8; 8]) -> bool) -> bool {
        match self {
            Check::Numeric(op, t) => match (v.float, t) {
                (Some(l), Some(r)) => match op {
                    NumOp::Gt => l > *r,
                    NumOp::Gte => l >= *r,
                    NumOp::Lt => l < *r,
                    NumOp::Lte => l <= *r,
                },
                _ => false,
            },
            Check::Version(op, t) => {
                let (Some(l), Some(r)) = (v.string, t) else {
                    return false;
                };
                let Some(ord) = compare_version(l, r) else {
                    return false;
                };
                use std::cmp::Ordering::*;
                match op {
                    VersionOp::Gt => ord == Greater,
                    VersionOp::Gte => ord != Less,
                    VersionOp::Lt => ord == Less,
                    VersionOp::Lte => ord != Greater,
                    VersionOp::Eq => ord == Equal,
                    VersionOp::Neq => ord != Equal,
                }
            }
            Check::AnyIgnoreCase { set, negate } => set.contains(v.lower.unwrap_or("")) != *negate,
            Check::AnyCaseSensitive { map, negate } => {
                let s = v.string.unwrap_or("");
                let lower = v.lower.unwrap_or("");
                let found = map.get(lower).is_some_and(|orig| **orig == *s);
                found != *negate
            }
            Check::Str {
                op,
                targets,
                negate,
            } => {
                let l = v.lower.unwrap_or("");
                let found = targets.iter().any(|t| match op {
                    StrOp::StartsWith => l.starts_with(&**t),
                    StrOp::EndsWith => l.ends_with(&**t),
                    StrOp::Contains => l.contains(&**t),
                });
                found != *negate
            }
            Check::Regex(re) => match (re, v.string) {
                (Some(re), Some(s)) => re.is_match(s).unwrap_or(false),
                _ => false,
            },
            Check::Eq { target, negate } => eq(target, v) != *negate,
            Check::Time(op, t) => {
                let Some(r) = *t else { return false };
                let Some(mut l) = v.timestamp.or(v.int) else {
                    return false;
                };
                if l.unsigned_abs() < 10_000_000_000 {
                    l = l.saturating_mul(1000);
                }
                match op {
                    TimeOp::Before => l < r,
                    TimeOp::After => l > r,
                    TimeOp::On => l / 86_400_000 == r / 86_400_000,
                }
            }
            Check::Segment { list, negate } => {
                let found = match v.string {
                    Some(s) => in_list(list, &hash::id_list_key(s)),
                    None => false,
                };
                found != *negate
            }
            Check::Array(op, t) => {
                let (Some(targets), Some(items)) = (t, v.array) else {
                    return false;
                };
                let has = |t: &str| items.iter().any(|i| i.string.as_deref() == Some(t));
                match op {
                    ArrayOp::Any => targets.iter().any(|t| has(t)),
                    ArrayOp::None => !targets.iter().any(|t| has(t)),
                    ArrayOp::All => targets.iter().all(|t| has(t)),
                    ArrayOp::NotAll => !targets.iter().all(|t| has(t)),
                }
            }
            Check::Never => false,
            Check::Unsupported => false,
        }
    }
}

fn target_float(t: &Value) -> Option<f64> {
    match t {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
}

/// Parse a version: text before the first `-`, split on `.`, each part
/// trimmed and parsed as an integer. Any non-integer part → `None`.
pub fn parse_version(s: &str) -> Option<Vec<i128>> {
    let main = s.split('-').next().unwrap_or("");
    main.split('.')
        .map(|p| p.trim().parse::<i128>().ok())
        .collect()
}

fn target_version(t: &Value) -> Option<Box<[i128]>> {
    // Only a string target has a version (a number target has no string
    // form in Statsig's core, so every version operator is false).
    match t {
        Value::String(s) => parse_version(s).map(Vec::into_boxed_slice),
        _ => None,
    }
}

/// Compare a version string to a parsed target without allocating; missing
/// parts count as 0. `None` if the left side has a non-integer part.
pub fn compare_version(left: &str, right: &[i128]) -> Option<std::cmp::Ordering> {
    let main = left.split('-').next().unwrap_or("");
    // Validate every part first: any non-integer part makes it unparsable.
    let mut n_left = 0;
    for p in main.split('.') {
        p.trim().parse::<i128>().ok()?;
        n_left += 1;
    }
    let mut parts = main.split('.');
    for i in 0..n_left.max(right.len()) {
        let l = match parts.next() {
            Some(p) => p.trim().parse::<i128>().ok()?,
            None => 0,
        };
        let r = right.get(i).copied().unwrap_or(0);
        match l.cmp(&r) {
            std::cmp::Ordering::Equal => {}
            other => return Some(other),
        }
    }
    Some(std::cmp::Ordering::Equal)
}

fn eq_target(t: &Value) -> EqTarget {
    match t {
        Value::Null => EqTarget::Null,
        Value::Bool(b) => EqTarget::Bool(*b),
        Value::Number(n) => EqTarget::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => EqTarget::String(s.as_str().into()),
        Value::Array(a) => {
            let mut keyed: Vec<(Box<str>, usize, Box<str>)> = Vec::new();
            for (i, v) in a.iter().enumerate() {
                let s = target_text(v);
                let lower: Box<str> = to_lower(&s).into();
                match keyed.iter_mut().find(|k| k.0 == lower) {
                    Some(k) => {
                        k.1 = i;
                        k.2 = s.into();
                    }
                    None => keyed.push((lower, i, s.into())),
                }
            }
            EqTarget::Array(keyed.into_iter().map(|(_, i, s)| (i, s)).collect())
        }
        Value::Object(m) => EqTarget::Object(
            m.iter()
                .map(|(k, v)| {
                    let s = crate::value::DynValue::from_json(v)
                        .string
                        .map(String::from)
                        .unwrap_or_default();
                    (k.as_str().into(), s.into_boxed_str())
                })
                .collect(),
        ),
    }
}

fn eq(t: &EqTarget, v: &Lhs<'_>) -> bool {
    match t {
        EqTarget::Null => v.is_null,
        EqTarget::Bool(b) => v.boolean == Some(*b),
        EqTarget::Number(n) => v.float == Some(*n),
        EqTarget::String(s) => v.string == Some(&**s),
        EqTarget::Array(keyed) => {
            let Some(items) = v.array else { return false };
            if keyed.len() != items.len() {
                return false;
            }
            keyed.iter().all(|(i, s)| {
                items
                    .get(*i)
                    .and_then(|it| it.string.as_deref())
                    .is_some_and(|x| x == &**s)
            })
        }
        EqTarget::Object(pairs) => {
            let Some(obj) = v.object else { return false };
            if obj.len() != pairs.len() {
                return false;
            }
            pairs.iter().all(|(k, s)| {
                obj.get(&**k).is_some_and(|ov| {
                    crate::value::DynValue::from_json(ov).string.as_deref() == Some(&**s)
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::DynValue;
    use serde_json::json;

    fn check(op: &str, target: Value, user: Option<Value>) -> bool {
        let (c, _) = Check::compile(Some(op), &target);
        let dv = user.as_ref().map(DynValue::from_json);
        let lhs = dv.as_ref().map(DynValue::lhs).unwrap_or(Lhs::MISSING);
        c.apply(&lhs, &|list, key| list == "L" && key == b"TmgID6Nv")
    }

    #[test]
    fn string_sets_keep_each_member_once_at_every_size() {
        for n in [
            0usize,
            1,
            HASH_SET_MIN - 1,
            HASH_SET_MIN,
            HASH_SET_MIN + 1,
            100,
        ] {
            // Every item twice: duplicates never count.
            let items: Vec<String> = (0..n).chain(0..n).map(|i| format!("u{i}")).collect();
            let set = StrSet::new(items);
            assert_eq!(set.len(), n);
            assert!(
                matches!(set, StrSet::Large(_)) == (n >= HASH_SET_MIN),
                "{n}"
            );
            assert!((0..n).all(|i| set.contains(&format!("u{i}"))));
            assert!(!set.contains("absent"));
        }
    }

    #[test]
    fn numeric() {
        assert!(check("gte", json!(18), Some(json!("19"))));
        assert!(check("gte", json!("18"), Some(json!(19))));
        assert!(!check("gt", json!(18), Some(json!("abc"))));
        assert!(!check("gt", json!(18), None));
        assert!(!check("lt", json!(18), None));
        assert!(
            !check("gt", json!(0), Some(json!(true))),
            "bools have no float"
        );
        assert!(check("lte", json!(1.5), Some(json!("1.5"))));
    }

    #[test]
    fn versions() {
        assert!(check("version_eq", json!("2.1"), Some(json!("2.1.0"))));
        assert!(check(
            "version_eq",
            json!("1.2.3"),
            Some(json!("1.2.3-rc1"))
        ));
        assert!(check("version_gte", json!("2.5.0"), Some(json!(" 2.5.0"))));
        assert!(check("version_gt", json!("1.9.9"), Some(json!("1.10"))));
        for op in OPERATORS.into_iter().filter(|o| o.starts_with("version_")) {
            assert!(
                !check(op, json!("2.0"), Some(json!("v2.1"))),
                "{op} on unparsable"
            );
            assert!(!check(op, json!("2.0"), None), "{op} on missing");
            assert!(
                !check(op, json!("x"), Some(json!("2.0"))),
                "{op} on bad target"
            );
        }
        assert!(check("version_neq", json!("2.0"), Some(json!("2.1"))));
    }

    #[test]
    fn any_and_none() {
        assert!(check("any", json!(["US", "ca"]), Some(json!("us"))));
        assert!(check("any", json!(["US"]), Some(json!("Us"))));
        assert!(!check("any", json!(["US"]), None));
        assert!(
            check("none", json!(["US"]), None),
            "none is true on missing"
        );
        assert!(check("any", json!([""]), None), "missing is \"\"");
        assert!(check("any", json!([1, 2]), Some(json!(2))));
        assert!(
            check("any", json!([1.0]), Some(json!("1.0"))),
            "target 1.0 is text \"1.0\""
        );
        assert!(check("any", json!({"123": true}), Some(json!(123))));
        assert!(
            !check("any", json!("US"), Some(json!("US"))),
            "scalar target is no set"
        );
        assert!(check("none", json!("US"), Some(json!("US"))));
    }

    #[test]
    fn case_sensitive_quirk() {
        assert!(check(
            "any_case_sensitive",
            json!(["US"]),
            Some(json!("US"))
        ));
        assert!(!check(
            "any_case_sensitive",
            json!(["US"]),
            Some(json!("us"))
        ));
        // ["A","a"] keeps only "a".
        assert!(!check(
            "any_case_sensitive",
            json!(["A", "a"]),
            Some(json!("A"))
        ));
        assert!(check(
            "any_case_sensitive",
            json!(["A", "a"]),
            Some(json!("a"))
        ));
        assert!(check("none_case_sensitive", json!(["US"]), None));
        assert!(!check(
            "any_case_sensitive",
            json!({"US": true}),
            Some(json!("US"))
        ));
    }

    #[test]
    fn string_matching() {
        assert!(check(
            "str_starts_with_any",
            json!(["ADMIN"]),
            Some(json!("admin@x"))
        ));
        assert!(check(
            "str_ends_with_any",
            json!(["@Corp.com"]),
            Some(json!("a@CORP.COM"))
        ));
        assert!(check(
            "str_contains_any",
            json!(["bot"]),
            Some(json!("Bot 9"))
        ));
        assert!(!check("str_contains_any", json!(["bot"]), None));
        assert!(
            check("str_contains_any", json!([""]), None),
            "missing is \"\""
        );
        assert!(
            check("str_contains_none", json!(["bot"]), None),
            "negated: true on missing"
        );
        assert!(!check(
            "str_contains_none",
            json!(["bot"]),
            Some(json!("robot"))
        ));
        assert!(!check(
            "str_starts_with_any",
            json!({"a": true}),
            Some(json!("abc"))
        ));
    }

    #[test]
    fn regex() {
        assert!(check(
            "str_matches",
            json!("^a.*@corp\\.com$"),
            Some(json!("admin@corp.com"))
        ));
        assert!(
            check("str_matches", json!("corp"), Some(json!("x@corp.com"))),
            "unanchored"
        );
        assert!(
            check(
                "str_matches",
                json!("(?<=@)corp"),
                Some(json!("x@corp.com"))
            ),
            "look-behind"
        );
        assert!(
            !check("str_matches", json!("("), Some(json!("("))),
            "invalid regex"
        );
        assert!(!check("str_matches", json!("x"), None));
        assert!(check("str_matches", json!("^5$"), Some(json!(5))));
    }

    #[test]
    fn equality() {
        assert!(check("eq", json!(5), Some(json!("5"))));
        assert!(check("eq", json!("5"), Some(json!(5))));
        assert!(
            !check("eq", json!("Pro"), Some(json!("pro"))),
            "case-sensitive"
        );
        assert!(check("eq", json!(true), Some(json!(true))));
        assert!(!check("eq", json!(true), Some(json!("true"))));
        assert!(check("eq", json!(null), None), "eq null matches missing");
        assert!(check("eq", json!(null), Some(json!(null))));
        assert!(!check("eq", json!(null), Some(json!(0))));
        assert!(!check("eq", json!("x"), None));
        assert!(check("neq", json!("x"), None), "neq true on missing");
        assert!(!check("neq", json!(null), None));
        assert!(check("eq", json!(["a", 1]), Some(json!(["a", "1"]))));
        assert!(!check("eq", json!(["a"]), Some(json!(["a", "b"]))));
        assert!(check("eq", json!({"k": 1}), Some(json!({"k": "1"}))));
        assert!(!check("eq", json!({"k": 1}), Some(json!({"k": 1, "j": 2}))));
    }

    #[test]
    fn times() {
        let t = 1_704_067_200_000i64; // 2024-01-01T00:00:00Z
        assert!(check(
            "after",
            json!(t),
            Some(json!("2024-01-02T00:00:00Z"))
        ));
        assert!(check(
            "before",
            json!(t),
            Some(json!("2023-12-31 23:59:59"))
        ));
        assert!(check("on", json!(t), Some(json!(1_704_100_000_000i64))));
        assert!(
            check("on", json!(t), Some(json!(1_704_100_000i64))),
            "seconds on the user side"
        );
        assert!(check(
            "on",
            json!("2024-01-01T05:00:00Z"),
            Some(json!("1704067200000"))
        ));
        // 24-character timestamps are not recognised on the user side...
        assert!(!check(
            "on",
            json!(t),
            Some(json!("2024-01-01T12:00:00.000Z"))
        ));
        assert!(!check(
            "before",
            json!(t + 1),
            Some(json!("2024-01-01T00:00:00.000Z"))
        ));
        // ...but are on the target side.
        assert!(check(
            "on",
            json!("2024-01-01T12:00:00.000Z"),
            Some(json!("2024-01-01T00:00:00Z"))
        ));
        assert!(!check("after", json!(t), None));
        assert!(!check("after", json!(t), Some(json!("soon"))));
        assert!(!check("after", json!("garbage"), Some(json!(t))));
    }

    #[test]
    fn segments() {
        assert!(check("in_segment_list", json!("L"), Some(json!("user_0"))));
        assert!(!check("in_segment_list", json!("L"), Some(json!("user_1"))));
        assert!(!check("in_segment_list", json!("L"), None));
        assert!(
            check("not_in_segment_list", json!("L"), None),
            "not_in true on missing"
        );
        assert!(check(
            "not_in_segment_list",
            json!("Other"),
            Some(json!("user_0"))
        ));
    }

    #[test]
    fn arrays() {
        let tags = Some(json!(["alpha", "beta", 1]));
        assert!(check(
            "array_contains_any",
            json!(["beta", "x"]),
            tags.clone()
        ));
        assert!(check(
            "array_contains_all",
            json!(["beta", "alpha", "1"]),
            tags.clone()
        ));
        assert!(!check(
            "array_contains_all",
            json!(["beta", "x"]),
            tags.clone()
        ));
        assert!(check("array_contains_none", json!(["x"]), tags.clone()));
        assert!(check(
            "not_array_contains_all",
            json!(["beta", "x"]),
            tags.clone()
        ));
        assert!(
            !check("array_contains_any", json!(["Beta"]), tags.clone()),
            "case-sensitive"
        );
        for op in [
            "array_contains_any",
            "array_contains_none",
            "array_contains_all",
            "not_array_contains_all",
        ] {
            assert!(!check(op, json!(["x"]), None), "{op} false on missing");
            assert!(
                !check(op, json!(["x"]), Some(json!("x"))),
                "{op} false on non-array"
            );
        }
        assert!(check("array_contains_all", json!([]), Some(json!([]))));
    }

    #[test]
    fn unknown_operators_are_unsupported() {
        assert!(matches!(
            Check::compile(Some("made_up"), &json!(1)).0,
            Check::Unsupported
        ));
        assert!(matches!(
            Check::compile(Some("ANY"), &json!([])).0,
            Check::Unsupported
        ));
        assert!(matches!(
            Check::compile(None, &json!([])).0,
            Check::Unsupported
        ));
    }

    /// Every listed operator is known, and skipping the sets changes no note, for every
    /// operator and target shape.
    #[test]
    fn skipping_sets_gives_the_same_notes() {
        for op in OPERATORS {
            let (check, _) = Check::compile(Some(op), &json!(["x"]));
            assert!(!matches!(check, Check::Unsupported), "{op} is known");
        }
        let ops = OPERATORS.iter().copied().chain(["made_up"]);
        let targets = [
            json!(null),
            json!(3),
            json!("a(b"),
            json!("^x$"),
            json!(["A", 1, null]),
            json!({"k": 1}),
            json!([]),
        ];
        for op in ops {
            for t in &targets {
                let built = Check::compile_sets(Some(op), t, Sets::Build);
                let skipped = Check::compile_sets(Some(op), t, Sets::Skip);
                assert_eq!(built.1, skipped.1, "{op} {t}");
                assert_eq!(
                    std::mem::discriminant(&built.0),
                    std::mem::discriminant(&skipped.0),
                    "{op} {t}"
                );
            }
        }
    }
}
