//! Values as the evaluator sees them: every coercion Statsig's core applies
//! (string, lower-case string, float, integer, timestamp, bool, array) is
//! computed once when a user is prepared, so evaluating a condition only
//! reads fields and never allocates.
//!
//! Coercion rules (format doc §3.2): a string also has a float (Rust `f64`
//! syntax), an integer and a timestamp; a number has float, integer and its
//! shortest display as a string; a bool has the strings `"true"`/`"false"`;
//! an array has its compact JSON as a string; an object has no string form.

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// A user-side value with its coercions pre-computed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DynValue {
    pub json: Value,
    pub string: Option<Box<str>>,
    /// Lower-cased `string`, only when it differs from `string`.
    pub lower: Option<Box<str>>,
    pub float: Option<f64>,
    pub int: Option<i64>,
    /// Milliseconds since the epoch (user-side parsing rules).
    pub timestamp: Option<i64>,
    pub boolean: Option<bool>,
    pub array: Option<Box<[DynValue]>>,
}

impl DynValue {
    pub fn from_json(json: &Value) -> DynValue {
        let mut v = DynValue {
            json: json.clone(),
            ..DynValue::default()
        };
        match json {
            Value::Null => {}
            Value::Bool(b) => {
                v.boolean = Some(*b);
                v.set_string(if *b { "true" } else { "false" }.into());
            }
            Value::Number(n) => {
                let (float, int) = number_forms(n);
                v.float = float;
                v.int = int;
                let s = match (float, int) {
                    (Some(f), _) => format_f64(f),
                    (None, Some(i)) => i.to_string(),
                    (None, None) => n.to_string(),
                };
                v.set_string(s);
            }
            Value::String(s) => {
                v.float = s.parse::<f64>().ok();
                v.int = s.parse::<i64>().ok();
                v.timestamp = parse_user_timestamp(s);
                v.set_string(s.clone());
            }
            Value::Array(items) => {
                v.array = Some(items.iter().map(DynValue::from_json).collect());
                v.set_string(json.to_string());
            }
            Value::Object(_) => {}
        }
        v
    }

    /// A string value (used for values derived at evaluation time, e.g. a
    /// parsed user agent or a country from the IP table).
    pub fn from_str_value(s: &str) -> DynValue {
        DynValue::from_json(&Value::String(s.to_owned()))
    }

    fn set_string(&mut self, s: String) {
        let lower = to_lower(&s);
        if lower != s {
            self.lower = Some(lower.into_boxed_str());
        }
        self.string = Some(s.into_boxed_str());
    }

    pub fn lhs(&self) -> Lhs<'_> {
        Lhs {
            is_null: self.json.is_null(),
            string: self.string.as_deref(),
            lower: self.lower.as_deref().or(self.string.as_deref()),
            float: self.float,
            int: self.int,
            timestamp: self.timestamp,
            boolean: self.boolean,
            array: self.array.as_deref(),
            object: self.json.as_object(),
            json: Some(&self.json),
        }
    }
}

/// The left-hand side of a condition: a borrowed view with all coercions.
/// `Lhs::MISSING` is a field that is absent (Statsig's empty value).
#[derive(Clone, Copy, Debug)]
pub struct Lhs<'a> {
    /// JSON null or missing.
    pub is_null: bool,
    pub string: Option<&'a str>,
    /// Lower-cased string (same as `string` when already lower-case).
    pub lower: Option<&'a str>,
    pub float: Option<f64>,
    pub int: Option<i64>,
    pub timestamp: Option<i64>,
    pub boolean: Option<bool>,
    pub array: Option<&'a [DynValue]>,
    pub object: Option<&'a serde_json::Map<String, Value>>,
    /// The JSON value, when the left side came from JSON (for explanations).
    pub json: Option<&'a Value>,
}

impl<'a> Lhs<'a> {
    pub const MISSING: Lhs<'static> = Lhs {
        is_null: true,
        string: None,
        lower: None,
        float: None,
        int: None,
        timestamp: None,
        boolean: None,
        array: None,
        object: None,
        json: None,
    };

    /// An integer computed during evaluation (`user_bucket`): number forms and
    /// its decimal text, which the caller formats into `text`.
    pub fn integer(value: u64, text: &'a str) -> Lhs<'a> {
        Lhs {
            is_null: false,
            string: Some(text),
            lower: Some(text),
            float: Some(value as f64),
            int: i64::try_from(value).ok(),
            ..Lhs::MISSING
        }
    }

    /// The current time: Statsig's core gives it only an integer form, so
    /// only the time operators can match it.
    pub fn now(ms: i64) -> Lhs<'static> {
        Lhs {
            is_null: false,
            int: Some(ms),
            ..Lhs::MISSING
        }
    }
}

/// Float and integer forms of a JSON number (an integral float also has an
/// integer form, as in Statsig's core).
pub fn number_forms(n: &serde_json::Number) -> (Option<f64>, Option<i64>) {
    let float = n.as_f64();
    let mut int = n.as_i64();
    if int.is_none() {
        if let Some(f) = float {
            let i = f as i64;
            if i as f64 == f {
                int = Some(i);
            }
        }
    }
    (float, int)
}

/// Rust's shortest display of an f64 (`1.0` → `"1"`, `2.50` → `"2.5"`).
pub fn format_f64(f: f64) -> String {
    f.to_string()
}

/// Unicode lower-casing, with an allocation-free check for the common case.
pub fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Timestamp of a user-side string: integer text, or (only for strings of 8
/// to 20 characters that contain `-`, `T` or `:`) RFC 3339 or
/// `YYYY-MM-DD HH:MM:SS` UTC. The length limit is Statsig's quirk: a string
/// with milliseconds (`…00.000Z`, 24 chars) is not a timestamp.
pub fn parse_user_timestamp(s: &str) -> Option<i64> {
    if let Ok(ts) = s.parse::<i64>() {
        return Some(ts);
    }
    if s.len() < 8 || s.len() > 20 || !(s.contains('-') || s.contains('T') || s.contains(':')) {
        return None;
    }
    parse_date_text(s)
}

/// Timestamp of a target-side string: same formats, no length limit.
pub fn parse_target_timestamp(s: &str) -> Option<i64> {
    if let Ok(ts) = s.parse::<i64>() {
        return Some(ts);
    }
    parse_date_text(s)
}

fn parse_date_text(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(ndt) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(ndt.and_utc().timestamp_millis());
    }
    None
}

/// The string form of a target-side JSON value: strings as themselves,
/// anything else as its JSON text (`1` → `"1"`, `1.0` → `"1.0"`).
pub fn target_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A fixed buffer to format a `u64` without allocating.
pub struct NumBuf {
    buf: [u8; 20],
    start: usize,
}

impl NumBuf {
    pub fn new(mut n: u64) -> NumBuf {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        NumBuf { buf, start: i }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_coercions() {
        let v = DynValue::from_json(&json!("19"));
        assert_eq!(v.float, Some(19.0));
        assert_eq!(v.int, Some(19));
        assert_eq!(v.string.as_deref(), Some("19"));
        let v = DynValue::from_json(&json!(" 1"));
        assert_eq!(v.float, None, "Rust float syntax rejects leading spaces");
        let v = DynValue::from_json(&json!("1e3"));
        assert_eq!(v.float, Some(1000.0));
        let v = DynValue::from_json(&json!("Hello"));
        assert_eq!(v.lhs().lower, Some("hello"));
    }

    #[test]
    fn number_coercions() {
        let v = DynValue::from_json(&json!(1.0));
        assert_eq!(v.string.as_deref(), Some("1"));
        assert_eq!(v.int, Some(1));
        let v = DynValue::from_json(&json!(2.5));
        assert_eq!(v.string.as_deref(), Some("2.5"));
        assert_eq!(v.int, None);
        let v = DynValue::from_json(&json!(true));
        assert_eq!(v.string.as_deref(), Some("true"));
        assert_eq!(v.float, None);
        let v = DynValue::from_json(&json!(["a", 1]));
        assert_eq!(v.string.as_deref(), Some(r#"["a",1]"#));
        let v = DynValue::from_json(&json!({"a": 1}));
        assert_eq!(v.string, None);
    }

    #[test]
    fn user_timestamps_have_a_length_quirk() {
        assert_eq!(
            parse_user_timestamp("2023-01-01T00:00:00Z"),
            Some(1_672_531_200_000)
        );
        assert_eq!(
            parse_user_timestamp("2023-01-01 00:00:00"),
            Some(1_672_531_200_000)
        );
        assert_eq!(
            parse_user_timestamp("1704067200000"),
            Some(1_704_067_200_000)
        );
        assert_eq!(parse_user_timestamp("2024-01-01T12:00:00.000Z"), None);
        assert_eq!(
            parse_target_timestamp("2024-01-01T12:00:00.000Z"),
            Some(1_704_110_400_000)
        );
        assert_eq!(parse_user_timestamp("not a date"), None);
    }

    #[test]
    fn numbuf_formats() {
        assert_eq!(NumBuf::new(0).as_str(), "0");
        assert_eq!(NumBuf::new(794).as_str(), "794");
        assert_eq!(NumBuf::new(u64::MAX).as_str(), "18446744073709551615");
    }
}
