//! The typed ruleset model: a spec (gate, config, experiment, layer), its
//! rules and their conditions, read from an entity body (a DCS spec object
//! with conditions inline, see [`crate::dcs`]).
//!
//! Reading never fails on the first problem: every wrong type or missing
//! required field is reported with its JSON path, and unknown fields are
//! kept in `extra` so nothing is lost.

use crate::entity::EntityKey;
use crate::limits;
use crate::problem::ValidationError;
use crate::user::json_type_name;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Fields of an entity body reserved by flagraft (see [`crate::dcs`]).
pub const LAYER_FIELD: &str = "__layer";
pub const CONDITION_KEY_FIELD: &str = "__key";

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    /// `feature_gate` or `dynamic_config`.
    pub spec_type: String,
    /// `feature_gate`, `segment`, `holdout`, `dynamic_config`, `experiment`,
    /// `autotune`, `layer`.
    pub entity: String,
    pub salt: String,
    pub enabled: bool,
    pub default_value: Value,
    pub id_type: String,
    pub rules: Vec<Rule>,
    pub is_active: Option<bool>,
    pub has_shared_params: Option<bool>,
    pub explicit_parameters: Option<Vec<String>>,
    pub version: Option<i64>,
    /// The layer this experiment belongs to (reserved field `__layer`).
    pub layer: Option<String>,
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    pub id: String,
    /// `None` when absent or null: the rule id is used as the salt.
    pub salt: Option<String>,
    pub pass_percentage: f64,
    /// Shared with the compiled conditions (`CCondition::raw`), which keep them for explain
    /// output: compiling clones no target list.
    pub conditions: Vec<Arc<Condition>>,
    pub return_value: Value,
    pub id_type: String,
    pub group_name: Option<String>,
    pub config_delegate: Option<String>,
    pub is_experiment_group: Option<bool>,
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub condition_type: String,
    pub operator: Option<String>,
    pub target_value: Value,
    pub field: Option<String>,
    pub additional_values: Map<String, Value>,
    pub id_type: String,
    pub extra: Map<String, Value>,
}

/// Reads typed fields out of a JSON object, recording problems.
struct Reader<'a, 'p> {
    entity: &'a EntityKey,
    rule: Option<String>,
    path: String,
    obj: &'a Map<String, Value>,
    used: Vec<&'static str>,
    problems: &'p mut Vec<ValidationError>,
}

impl<'a> Reader<'a, '_> {
    fn problem(&mut self, key: &str, msg: String) {
        let field = if self.path.is_empty() {
            key.to_string()
        } else if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        self.problems.push(
            ValidationError::error(Some(self.entity), field, msg).in_rule(self.rule.as_deref()),
        );
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, key: &'static str, required: bool) -> Option<String> {
        match self.get(key) {
            Some(Value::String(s)) => {
                if s.len() > limits::MAX_NAME_BYTES {
                    self.problem(key, format!("longer than {} bytes", limits::MAX_NAME_BYTES));
                }
                Some(s.clone())
            }
            Some(v) => {
                self.problem(
                    key,
                    format!("expected a string, found {}", json_type_name(v)),
                );
                None
            }
            None => {
                if required {
                    self.problem(key, "missing (a string is required)".into());
                }
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.problem(
                    key,
                    format!("expected a boolean, found {}", json_type_name(v)),
                );
                None
            }
            None => None,
        }
    }

    fn any(&mut self, key: &'static str, required: bool) -> Value {
        match self.get(key) {
            Some(v) => v.clone(),
            None => {
                if required {
                    self.problem(key, "missing".into());
                }
                Value::Null
            }
        }
    }

    fn array(&mut self, key: &'static str, required: bool) -> Option<&'a Vec<Value>> {
        match self.get(key) {
            Some(Value::Array(a)) => Some(a),
            Some(v) => {
                self.problem(
                    key,
                    format!("expected an array, found {}", json_type_name(v)),
                );
                None
            }
            None => {
                if required {
                    self.problem(key, "missing (an array is required)".into());
                }
                None
            }
        }
    }

    fn extra(&self) -> Map<String, Value> {
        self.obj
            .iter()
            .filter(|(k, _)| !self.used.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Spec {
    /// Read a spec from an entity body. Problems are appended to `problems`;
    /// `None` when the body is unusable (not an object, or a required field
    /// is missing or has the wrong type).
    pub fn from_body(
        key: &EntityKey,
        body: &Value,
        problems: &mut Vec<ValidationError>,
    ) -> Option<Spec> {
        let before = problems.len();
        let Some(obj) = body.as_object() else {
            problems.push(ValidationError::error(
                Some(key),
                "",
                format!(
                    "the body must be a JSON object, found {}",
                    json_type_name(body)
                ),
            ));
            return None;
        };
        let mut r = Reader {
            entity: key,
            rule: None,
            path: String::new(),
            obj,
            used: vec!["name"],
            problems,
        };
        let default_type = match key.kind {
            crate::entity::EntityKind::Gate => "feature_gate",
            _ => "dynamic_config",
        };
        let spec_type = r
            .string("type", false)
            .unwrap_or_else(|| default_type.into());
        let entity = r.string("entity", false).unwrap_or_else(|| match key.kind {
            crate::entity::EntityKind::Gate => "feature_gate".into(),
            crate::entity::EntityKind::Layer => "layer".into(),
            _ => "dynamic_config".into(),
        });
        let salt = r.string("salt", true).unwrap_or_default();
        let enabled = r.boolean("enabled").unwrap_or(true);
        let default_value = r.any("defaultValue", true);
        let id_type = r.string("idType", true).unwrap_or_default();
        let is_active = r.boolean("isActive");
        let has_shared_params = r.boolean("hasSharedParams");
        let explicit_parameters = r.array("explicitParameters", false).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
        let version = r.get("version").and_then(Value::as_i64);
        let layer = r.string(LAYER_FIELD, false);
        let rules_json = r.array("rules", true);
        let extra = r.extra();
        let mut rules = Vec::new();
        if let Some(rules_json) = rules_json {
            if rules_json.len() > limits::MAX_RULES_PER_SPEC {
                problems.push(ValidationError::error(
                    Some(key),
                    "rules",
                    format!(
                        "{} rules, more than the limit of {}",
                        rules_json.len(),
                        limits::MAX_RULES_PER_SPEC
                    ),
                ));
            } else {
                for (i, rj) in rules_json.iter().enumerate() {
                    if let Some(rule) = Rule::from_json(key, i, rj, problems) {
                        rules.push(rule);
                    }
                }
            }
        }
        if problems[before..].iter().any(ValidationError::is_error) {
            return None;
        }
        Some(Spec {
            name: key.name.clone(),
            spec_type,
            entity,
            salt,
            enabled,
            default_value,
            id_type,
            rules,
            is_active,
            has_shared_params,
            explicit_parameters,
            version,
            layer,
            extra,
        })
    }
}

impl Rule {
    fn from_json(
        key: &EntityKey,
        index: usize,
        json: &Value,
        problems: &mut Vec<ValidationError>,
    ) -> Option<Rule> {
        let path = format!("rules[{index}]");
        let Some(obj) = json.as_object() else {
            problems.push(ValidationError::error(
                Some(key),
                path,
                format!("a rule must be an object, found {}", json_type_name(json)),
            ));
            return None;
        };
        let rule_label = obj
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{index}"));
        let mut r = Reader {
            entity: key,
            rule: Some(rule_label.clone()),
            path: path.clone(),
            obj,
            used: Vec::new(),
            problems,
        };
        let name = r.string("name", false);
        let id = r.string("id", true).unwrap_or_default();
        let salt = r.string("salt", false);
        let pass_percentage = match r.get("passPercentage") {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(p) if (0.0..=100.0).contains(&p) => p,
                _ => {
                    r.problem("passPercentage", format!("{n} is not within 0..=100"));
                    0.0
                }
            },
            Some(v) => {
                r.problem(
                    "passPercentage",
                    format!("expected a number, found {}", json_type_name(v)),
                );
                0.0
            }
            None => {
                r.problem("passPercentage", "missing (a number is required)".into());
                0.0
            }
        };
        let return_value = r.any("returnValue", true);
        let id_type = r.string("idType", true).unwrap_or_default();
        let group_name = r.string("groupName", false);
        let config_delegate = r.string("configDelegate", false);
        let is_experiment_group = r.boolean("isExperimentGroup");
        let conds = r.array("conditions", true);
        let extra = r.extra();
        let mut conditions = Vec::new();
        if let Some(conds) = conds {
            if conds.len() > limits::MAX_CONDITIONS_PER_RULE {
                problems.push(
                    ValidationError::error(
                        Some(key),
                        format!("{path}.conditions"),
                        format!(
                            "{} conditions, more than the limit of {}",
                            conds.len(),
                            limits::MAX_CONDITIONS_PER_RULE
                        ),
                    )
                    .in_rule(Some(&rule_label)),
                );
            } else {
                for (ci, cj) in conds.iter().enumerate() {
                    let cpath = format!("{path}.conditions[{ci}]");
                    if let Some(c) = Condition::from_json(key, &rule_label, cpath, cj, problems) {
                        conditions.push(Arc::new(c));
                    }
                }
            }
        }
        Some(Rule {
            name,
            id,
            salt,
            pass_percentage,
            conditions,
            return_value,
            id_type,
            group_name,
            config_delegate,
            is_experiment_group,
            extra,
        })
    }
}

impl Condition {
    fn from_json(
        key: &EntityKey,
        rule: &str,
        path: String,
        json: &Value,
        problems: &mut Vec<ValidationError>,
    ) -> Option<Condition> {
        let Some(obj) = json.as_object() else {
            problems.push(
                ValidationError::error(
                    Some(key),
                    path,
                    format!(
                        "a condition must be an object, found {} (v2 condition keys must be resolved through condition_map)",
                        json_type_name(json)
                    ),
                )
                .in_rule(Some(rule)),
            );
            return None;
        };
        let mut r = Reader {
            entity: key,
            rule: Some(rule.to_string()),
            path,
            obj,
            used: vec![CONDITION_KEY_FIELD],
            problems,
        };
        let condition_type = r.string("type", true).unwrap_or_default();
        let operator = r.string("operator", false);
        let target_value = r.any("targetValue", false);
        let field = r.string("field", false);
        let additional_values = match r.get("additionalValues") {
            Some(Value::Object(m)) => m.clone(),
            Some(v) => {
                let msg = format!("expected an object, found {}", json_type_name(v));
                r.problem("additionalValues", msg);
                Map::new()
            }
            None => Map::new(),
        };
        let id_type = r.string("idType", false).unwrap_or_else(|| "userID".into());
        let extra = r.extra();
        Some(Condition {
            condition_type,
            operator,
            target_value,
            field,
            additional_values,
            id_type,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityKind;
    use serde_json::json;

    #[test]
    fn reads_a_spec_and_keeps_unknown_fields() {
        let key = EntityKey::new(EntityKind::Gate, "g");
        let body = json!({
            "type": "feature_gate", "entity": "feature_gate", "salt": "s", "enabled": true,
            "defaultValue": false, "idType": "userID", "futureField": 7,
            "rules": [{"id": "r", "salt": "", "passPercentage": 50, "returnValue": true,
                       "idType": "userID", "ruleExtra": "x",
                       "conditions": [{"type": "public", "idType": "userID", "condExtra": 1}]}]
        });
        let mut problems = Vec::new();
        let spec = Spec::from_body(&key, &body, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(spec.extra.get("futureField"), Some(&json!(7)));
        assert_eq!(spec.rules[0].salt.as_deref(), Some(""));
        assert_eq!(spec.rules[0].extra.get("ruleExtra"), Some(&json!("x")));
        assert_eq!(
            spec.rules[0].conditions[0].extra.get("condExtra"),
            Some(&json!(1))
        );
    }

    #[test]
    fn wrong_types_name_entity_rule_and_field() {
        let key = EntityKey::new(EntityKind::Gate, "g");
        let body = json!({
            "salt": "s", "defaultValue": false, "idType": "userID",
            "rules": [{"id": "r1", "passPercentage": "50", "returnValue": true, "idType": "userID",
                       "conditions": [{"type": 5, "idType": "userID"}]}]
        });
        let mut problems = Vec::new();
        assert!(Spec::from_body(&key, &body, &mut problems).is_none());
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("gate 'g'")
                && t.contains("rule 'r1'")
                && t.contains("rules[0].passPercentage")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("rules[0].conditions[0].type")),
            "{text:?}"
        );
    }
}
