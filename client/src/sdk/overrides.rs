//! Local overrides: values for a gate, config, experiment or layer that take
//! precedence over the rules, for one user ID or for everyone. A user-specific
//! override beats an everyone override.

use std::collections::HashMap;

/// What an override applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverrideKind {
    Gate,
    Config,
    Experiment,
    Layer,
}

/// An override's value: a gate's boolean, or a config/experiment/layer's JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum OverrideValue {
    Gate(bool),
    Json(serde_json::Value),
}

#[derive(Clone, Debug, Default)]
struct Entry {
    everyone: Option<OverrideValue>,
    by_user: HashMap<String, OverrideValue>,
}

/// An immutable set of overrides (copied on write; reads are lock-free).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    entries: HashMap<(OverrideKind, String), Entry>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Set an override for `user_id`, or for everyone when None.
    pub fn set(&mut self, kind: OverrideKind, name: &str, user_id: Option<&str>, v: OverrideValue) {
        let entry = self.entries.entry((kind, name.to_string())).or_default();
        match user_id {
            Some(u) => {
                entry.by_user.insert(u.to_string(), v);
            }
            None => entry.everyone = Some(v),
        }
    }

    /// Remove one override; true if there was one.
    pub fn remove(&mut self, kind: OverrideKind, name: &str, user_id: Option<&str>) -> bool {
        let key = (kind, name.to_string());
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        let removed = match user_id {
            Some(u) => entry.by_user.remove(u).is_some(),
            None => entry.everyone.take().is_some(),
        };
        if entry.everyone.is_none() && entry.by_user.is_empty() {
            self.entries.remove(&key);
        }
        removed
    }

    /// The override that applies to this user, if any.
    pub fn lookup(&self, kind: OverrideKind, name: &str, user_id: &str) -> Option<&OverrideValue> {
        if self.entries.is_empty() {
            return None;
        }
        let entry = self.entries.get(&(kind, name.to_string()))?;
        entry
            .by_user
            .get(user_id)
            .filter(|_| !user_id.is_empty())
            .or(entry.everyone.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_overrides_beat_everyone_overrides() {
        let mut o = Overrides::default();
        o.set(OverrideKind::Gate, "g", None, OverrideValue::Gate(true));
        o.set(
            OverrideKind::Gate,
            "g",
            Some("u1"),
            OverrideValue::Gate(false),
        );
        assert_eq!(
            o.lookup(OverrideKind::Gate, "g", "u1"),
            Some(&OverrideValue::Gate(false))
        );
        assert_eq!(
            o.lookup(OverrideKind::Gate, "g", "u2"),
            Some(&OverrideValue::Gate(true))
        );
        // Kinds do not leak into each other.
        assert_eq!(o.lookup(OverrideKind::Config, "g", "u1"), None);
        assert!(o.remove(OverrideKind::Gate, "g", None));
        assert_eq!(o.lookup(OverrideKind::Gate, "g", "u2"), None);
        assert!(o.remove(OverrideKind::Gate, "g", Some("u1")));
        assert!(o.is_empty());
        assert!(!o.remove(OverrideKind::Gate, "g", None));
    }
}
