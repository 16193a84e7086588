//! The user being evaluated, prepared once for fast lookups.
//!
//! Built from a Statsig user JSON object (`userID`, `email`, `ip`,
//! `userAgent`, `country`, `locale`, `appVersion`, `custom`,
//! `privateAttributes`, `customIDs`, `statsigEnvironment`). Every value's
//! coercions are computed here (see [`crate::value`]), maps are sorted for
//! binary search, and the parsed user agent is memoised on first use, so
//! evaluating many entities for one user pays those costs once.

use crate::ua::UaInfo;
use crate::value::{DynValue, Lhs};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// Maximum length of a user agent that is parsed (longer ones are ignored,
/// as in Statsig's core).
pub const MAX_USER_AGENT_LEN: usize = 1000;

/// Top-level user fields that `user_field` conditions can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopField {
    UserId,
    Email,
    Ip,
    Country,
    Locale,
    AppVersion,
    UserAgent,
}

impl TopField {
    const ALL: [(TopField, &'static str); 7] = [
        (TopField::UserId, "userID"),
        (TopField::Email, "email"),
        (TopField::Ip, "ip"),
        (TopField::Country, "country"),
        (TopField::Locale, "locale"),
        (TopField::AppVersion, "appVersion"),
        (TopField::UserAgent, "userAgent"),
    ];

    /// The top-level field a condition `field` names, compared lower-cased.
    pub fn from_field_lower(lower: &str) -> Option<TopField> {
        TopField::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(lower))
            .map(|(f, _)| *f)
    }

    /// The snake_case aliases `user_id`, `app_version`, `user_agent`.
    pub fn from_alias_lower(lower: &str) -> Option<TopField> {
        match lower {
            "user_id" => Some(TopField::UserId),
            "app_version" => Some(TopField::AppVersion),
            "user_agent" => Some(TopField::UserAgent),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A sorted map from key to value, searched by binary search.
#[derive(Clone, Debug, Default)]
pub struct FieldMap(Vec<(Box<str>, DynValue)>);

impl FieldMap {
    fn from_json(v: Option<&Value>) -> FieldMap {
        let mut entries: Vec<(Box<str>, DynValue)> = match v {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.as_str().into(), DynValue::from_json(v)))
                .collect(),
            _ => Vec::new(),
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        FieldMap(entries)
    }

    pub fn get(&self, key: &str) -> Option<&DynValue> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Exact key, then the lower-cased key.
    pub fn get_exact_or_lower(&self, exact: &str, lower: &str) -> Option<&DynValue> {
        self.get(exact).or_else(|| {
            if lower != exact {
                self.get(lower)
            } else {
                None
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A user prepared for evaluation.
#[derive(Debug, Default)]
pub struct User {
    top: [Option<DynValue>; 7],
    custom: FieldMap,
    private_attributes: FieldMap,
    custom_ids: FieldMap,
    environment: Option<FieldMap>,
    ua: OnceLock<UaInfo>,
}

/// The user JSON was not an object.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a user must be a JSON object, found {found}")]
pub struct UserError {
    pub found: &'static str,
}

impl User {
    pub fn from_json(json: &Value) -> Result<User, UserError> {
        let obj = json.as_object().ok_or(UserError {
            found: json_type_name(json),
        })?;
        Ok(User::from_map(obj))
    }

    pub fn from_map(obj: &Map<String, Value>) -> User {
        let top = TopField::ALL.map(|(_, name)| match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(DynValue::from_json(v)),
        });
        User {
            top,
            custom: FieldMap::from_json(obj.get("custom")),
            private_attributes: FieldMap::from_json(obj.get("privateAttributes")),
            custom_ids: FieldMap::from_json(obj.get("customIDs")),
            environment: match obj.get("statsigEnvironment") {
                Some(v @ Value::Object(_)) => Some(FieldMap::from_json(Some(v))),
                _ => None,
            },
            ua: OnceLock::new(),
        }
    }

    /// A user with just a `userID` (convenience for tests and examples).
    pub fn with_user_id(id: &str) -> User {
        let mut map = Map::new();
        map.insert("userID".into(), Value::String(id.into()));
        User::from_map(&map)
    }

    pub fn top_field(&self, f: TopField) -> Option<&DynValue> {
        self.top[f.index()].as_ref()
    }

    /// `user_field` lookup (format doc §4.3): a non-empty top-level field,
    /// then `custom` (exact, lower-cased key), then `privateAttributes`,
    /// then the snake_case aliases.
    pub fn field(&self, key: &FieldKey) -> Option<&DynValue> {
        if let Some(f) = key.top {
            if let Some(v) = self.top_field(f) {
                if v.string.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Some(v);
                }
            }
        }
        if let Some(v) = self.custom.get_exact_or_lower(&key.exact, &key.lower) {
            return Some(v);
        }
        if let Some(v) = self
            .private_attributes
            .get_exact_or_lower(&key.exact, &key.lower)
        {
            return Some(v);
        }
        key.alias.and_then(|f| self.top_field(f))
    }

    /// The unit ID for an ID type (format doc §2.8); `None` when missing.
    pub fn unit_id(&self, id_type: &IdType) -> Option<&DynValue> {
        match id_type {
            IdType::UserId => self.top_field(TopField::UserId),
            IdType::Custom { exact, lower } => self.custom_ids.get_exact_or_lower(exact, lower),
        }
    }

    /// The unit ID as text for hashing (`""` when missing).
    pub fn unit_id_str(&self, id_type: &IdType) -> &str {
        self.unit_id(id_type)
            .and_then(|v| v.string.as_deref())
            .unwrap_or("")
    }

    /// `statsigEnvironment[key]`, exact key only.
    pub fn environment(&self, key: &str) -> Option<&DynValue> {
        self.environment.as_ref().and_then(|m| m.get(key))
    }

    /// The parsed user agent (memoised).
    pub fn user_agent(&self) -> &UaInfo {
        self.ua.get_or_init(|| {
            match self
                .top_field(TopField::UserAgent)
                .and_then(|v| v.string.as_deref())
            {
                Some(s) if !s.is_empty() && s.len() <= MAX_USER_AGENT_LEN => crate::ua::parse(s),
                _ => UaInfo::default(),
            }
        })
    }

    pub fn lhs_of(v: Option<&DynValue>) -> Lhs<'_> {
        v.map(DynValue::lhs).unwrap_or(Lhs::MISSING)
    }
}

impl<'de> serde::Deserialize<'de> for User {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        User::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// A pre-resolved `field` of a `user_field` / `ua_based` / `ip_based`
/// condition.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldKey {
    pub exact: Box<str>,
    pub lower: Box<str>,
    pub top: Option<TopField>,
    pub alias: Option<TopField>,
}

impl FieldKey {
    pub fn new(field: &str) -> FieldKey {
        let lower = crate::value::to_lower(field);
        FieldKey {
            exact: field.into(),
            top: TopField::from_field_lower(&lower),
            alias: TopField::from_alias_lower(&lower),
            lower: lower.into_boxed_str(),
        }
    }
}

/// A pre-resolved ID type.
#[derive(Clone, Debug, PartialEq)]
pub enum IdType {
    UserId,
    Custom { exact: Box<str>, lower: Box<str> },
}

impl IdType {
    pub fn new(id_type: &str) -> IdType {
        let lower = crate::value::to_lower(id_type);
        if lower == "userid" {
            IdType::UserId
        } else {
            IdType::Custom {
                exact: id_type.into(),
                lower: lower.into_boxed_str(),
            }
        }
    }
}

pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(v: Value) -> User {
        User::from_json(&v).unwrap()
    }

    #[test]
    fn field_lookup_order() {
        let u = user(json!({
            "userID": "u1", "email": "", "custom": {"tier": "gold", "Plan": "x", "email": "c@x"},
            "privateAttributes": {"secret": 3}
        }));
        let get = |f: &str| u.field(&FieldKey::new(f)).and_then(|v| v.string.as_deref());
        assert_eq!(get("USERID"), Some("u1"));
        // Empty top-level email falls through to custom.
        assert_eq!(get("email"), Some("c@x"));
        assert_eq!(get("Tier"), Some("gold"));
        assert_eq!(get("plan"), None, "custom.Plan is not found by 'plan'");
        assert_eq!(get("secret"), Some("3"));
        assert_eq!(get("user_id"), Some("u1"));
        assert_eq!(get("nothing"), None);
    }

    #[test]
    fn unit_ids() {
        let u = user(json!({"userID": 123, "customIDs": {"companyID": "c1", "num": 1.5}}));
        assert_eq!(u.unit_id_str(&IdType::new("userID")), "123");
        assert_eq!(u.unit_id_str(&IdType::new("companyID")), "c1");
        assert_eq!(u.unit_id_str(&IdType::new("COMPANYID")), "");
        assert_eq!(u.unit_id_str(&IdType::new("num")), "1.5");
        assert_eq!(u.unit_id_str(&IdType::new("stableID")), "");
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(User::from_json(&json!([1])).is_err());
        let u: Result<User, _> = serde_json::from_str("\"x\"");
        assert!(u.is_err());
    }
}
