//! The user a client initialize response is computed for: the JSON as the
//! client sent it (echoed back without `privateAttributes`) and the
//! evaluator's prepared [`User`].

use super::hashing::djb2_number;
use crate::digest::canonical_json;
use crate::user::{json_type_name, User};
use crate::value::DynValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Top-level fields that must be strings (or numbers for IDs) when present.
const STRING_FIELDS: [&str; 6] = [
    "email",
    "ip",
    "userAgent",
    "country",
    "locale",
    "appVersion",
];
/// Top-level fields that must be objects when present.
const OBJECT_FIELDS: [&str; 4] = [
    "customIDs",
    "custom",
    "privateAttributes",
    "statsigEnvironment",
];

/// Why a user was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientUserError {
    #[error("a user must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
}

/// A validated user, prepared for evaluation.
#[derive(Debug)]
pub struct ClientUser {
    json: Map<String, Value>,
    user: User,
}

fn is_id(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
}

fn wrong(field: impl Into<String>, expected: &'static str, v: &Value) -> ClientUserError {
    ClientUserError::WrongType {
        field: field.into(),
        expected,
        found: json_type_name(v),
    }
}

impl ClientUser {
    /// Checks the types Statsig's user object defines: `userID` and every
    /// `customIDs` value a string or number; `email`, `ip`, `userAgent`,
    /// `country`, `locale`, `appVersion` strings; `customIDs`, `custom`,
    /// `privateAttributes`, `statsigEnvironment` objects (null = absent).
    /// Unknown fields are kept, as Statsig does.
    pub fn from_json(json: &Value) -> Result<ClientUser, ClientUserError> {
        let obj = json
            .as_object()
            .ok_or(ClientUserError::NotAnObject(json_type_name(json)))?;
        if let Some(v) = obj.get("userID") {
            if !is_id(v) {
                return Err(wrong("userID", "a string or a number", v));
            }
        }
        for f in STRING_FIELDS {
            if let Some(v) = obj.get(f) {
                if !matches!(v, Value::String(_) | Value::Null) {
                    return Err(wrong(f, "a string", v));
                }
            }
        }
        for f in OBJECT_FIELDS {
            if let Some(v) = obj.get(f) {
                if !matches!(v, Value::Object(_) | Value::Null) {
                    return Err(wrong(f, "an object", v));
                }
            }
        }
        if let Some(Value::Object(ids)) = obj.get("customIDs") {
            for (k, v) in ids {
                if !is_id(v) {
                    return Err(wrong(format!("customIDs.{k}"), "a string or a number", v));
                }
            }
        }
        Ok(ClientUser {
            user: User::from_map(obj),
            json: obj.clone(),
        })
    }

    /// The evaluator's view of the user.
    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn json(&self) -> &Map<String, Value> {
        &self.json
    }

    /// The user as echoed in the response: without `privateAttributes`;
    /// with `statsigEnvironment: {tier}` from the SDK's environment when the
    /// user has none (as Statsig's core does).
    pub fn loggable(&self, environment_tier: Option<&str>) -> Map<String, Value> {
        let mut out = self.json.clone();
        out.remove("privateAttributes");
        let has_env = matches!(out.get("statsigEnvironment"), Some(Value::Object(_)));
        if let (false, Some(tier)) = (has_env, environment_tier) {
            let mut env = Map::new();
            env.insert("tier".into(), Value::String(tier.into()));
            out.insert("statsigEnvironment".into(), Value::Object(env));
        }
        out
    }

    /// `{userID, customIDs}` with every ID as a string (bootstrap validation
    /// in client SDKs compares these with the user they hold).
    pub fn evaluated_keys(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(id) = self.json.get("userID").and_then(id_string) {
            out.insert("userID".into(), Value::String(id));
        }
        if let Some(Value::Object(ids)) = self.json.get("customIDs") {
            let ids: Map<String, Value> = ids
                .iter()
                .filter_map(|(k, v)| id_string(v).map(|s| (k.clone(), Value::String(s))))
                .collect();
            out.insert("customIDs".into(), Value::Object(ids));
        }
        out
    }

    /// djb2 of each `key:value` of the private attributes, summed modulo
    /// 2^32 ([core] `get_hashed_private_attributes`); None when there are none.
    pub fn pa_hash(&self) -> Option<String> {
        let Some(Value::Object(pa)) = self.json.get("privateAttributes") else {
            return None;
        };
        if pa.is_empty() {
            return None;
        }
        let sum = pa.iter().fold(0u32, |acc, (k, v)| {
            let s = DynValue::from_json(v).string.unwrap_or_default();
            acc.wrapping_add(djb2_number(&format!("{k}:{s}")))
        });
        Some(sum.to_string())
    }

    /// SHA-256 of the user's canonical JSON (keys sorted): the same user
    /// written in any key order has the same fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        let bytes = canonical_json(&Value::Object(self.json.clone()));
        Sha256::digest(&bytes).into()
    }
}

/// An ID as Statsig stringifies it; None for null.
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        v => DynValue::from_json(v).string.map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_malformed_users() {
        assert!(matches!(
            ClientUser::from_json(&json!([1])),
            Err(ClientUserError::NotAnObject(_))
        ));
        for bad in [
            json!({"userID": {"a": 1}}),
            json!({"email": 3}),
            json!({"custom": [1]}),
            json!({"customIDs": {"stableID": [1]}}),
            json!({"privateAttributes": "x"}),
        ] {
            assert!(ClientUser::from_json(&bad).is_err(), "{bad}");
        }
        assert!(ClientUser::from_json(&json!({"userID": 12, "custom": null, "x": 1})).is_ok());
    }

    #[test]
    fn echo_drops_private_attributes_and_keys_are_strings() {
        let u = ClientUser::from_json(&json!({
            "userID": 42, "customIDs": {"stableID": "s1", "n": 1.5},
            "privateAttributes": {"email": "a@b.c", "n": 3}
        }))
        .unwrap();
        let echo = u.loggable(Some("staging"));
        assert!(echo.get("privateAttributes").is_none());
        assert_eq!(echo["statsigEnvironment"], json!({"tier": "staging"}));
        assert_eq!(
            Value::Object(u.evaluated_keys()),
            json!({"userID": "42", "customIDs": {"stableID": "s1", "n": "1.5"}})
        );
        // Sum of djb2("email:a@b.c") and djb2("n:3"), modulo 2^32.
        let want = djb2_number("email:a@b.c").wrapping_add(djb2_number("n:3"));
        assert_eq!(u.pa_hash(), Some(want.to_string()));
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"userID":"u","custom":{"a":1,"b":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"custom":{"b":2,"a":1},"userID":"u"}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"custom":{"b":2,"a":1},"userID":"v"}"#).unwrap();
        let f = |v: &Value| ClientUser::from_json(v).unwrap().fingerprint();
        assert_eq!(f(&a), f(&b));
        assert_ne!(f(&a), f(&c));
    }
}
