//! Splitting a `download_config_specs` document into entities and joining
//! entities back into a document, in either dialect (format doc §1).
//!
//! Representation (stable, the store keeps these bodies):
//! * `feature_gates` → [`EntityKind::Gate`], `dynamic_configs` →
//!   [`EntityKind::Config`], `layer_configs` → [`EntityKind::Layer`]; the
//!   entity name is the spec name and the body is the spec object **without
//!   `name`**, with conditions **inline** (v1 style) so every entity is
//!   self-contained.
//! * v2 condition keys are kept in each inlined condition as the reserved
//!   field `"__key"`, so a v2 document round-trips with the same
//!   `condition_map` keys (conditions without one get a key derived from
//!   their content: decimal of the first 8 bytes of SHA-256 of their
//!   canonical JSON). Unreferenced `condition_map` entries are not kept.
//! * Layer membership (v1 `layers: {layer: [exp...]}`, v2
//!   `experiment_to_layer: {exp: layer}`) is the reserved field `"__layer"`
//!   in the **experiment's** body, so moving an experiment touches one
//!   entity. Membership naming an experiment that does not exist is kept
//!   as a `Setting` named `experiment_to_layer` holding only those entries.
//! * Every other top-level field except `has_updates`, `time` and
//!   `response_format` (which belong to a document, not a ruleset) is a
//!   [`EntityKind::Setting`] keyed by field name, body = the field's value.
//! * ID-list members are [`EntityKind::IdList`] entities with body
//!   `{"ids": ["<8-char key>", ...]}` (sorted, unique), built from a file of
//!   raw IDs by [`id_list_entities`]; they are not part of a DCS.

use crate::digest::canonical_json;
use crate::entity::{Entity, EntityKey, EntityKind};
use crate::limits;
use crate::model::{CONDITION_KEY_FIELD, LAYER_FIELD};
use crate::problem::{RulesetErrors, ValidationError};
use crate::user::json_type_name;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The two JSON dialects of a DCS document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Arrays of specs with `name`, inline conditions, `layers`.
    V1,
    /// Maps keyed by name, `condition_map`, `experiment_to_layer`.
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("document is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the document must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("{}", RulesetErrors(.0.clone()))]
    Invalid(Vec<ValidationError>),
}

impl DcsError {
    /// Every problem as a list of validation errors.
    pub fn into_errors(self) -> RulesetErrors {
        match self {
            DcsError::Invalid(v) => RulesetErrors(v),
            other => RulesetErrors(vec![ValidationError::error(None, "", other.to_string())]),
        }
    }
}

const SPEC_SECTIONS: [(&str, EntityKind); 3] = [
    ("feature_gates", EntityKind::Gate),
    ("dynamic_configs", EntityKind::Config),
    ("layer_configs", EntityKind::Layer),
];

/// Fields that describe a document rather than a ruleset.
const DOCUMENT_FIELDS: [&str; 3] = ["has_updates", "time", "response_format"];

/// Which dialect a parsed document is in.
pub fn detect_dialect(doc: &Map<String, Value>) -> Dialect {
    if doc.contains_key("condition_map") || doc.contains_key("experiment_to_layer") {
        return Dialect::V2;
    }
    for (section, _) in SPEC_SECTIONS {
        match doc.get(section) {
            Some(Value::Object(_)) => return Dialect::V2,
            Some(Value::Array(_)) => return Dialect::V1,
            _ => {}
        }
    }
    Dialect::V1
}

/// Split a DCS document (either dialect) into entities.
pub fn entities_from_dcs(json: &[u8]) -> Result<Vec<Entity>, DcsError> {
    if json.len() > limits::MAX_DCS_BYTES {
        return Err(DcsError::TooLarge {
            size: json.len(),
            limit: limits::MAX_DCS_BYTES,
        });
    }
    let doc: Value = serde_json::from_slice(json)?;
    let Value::Object(doc) = doc else {
        return Err(DcsError::NotAnObject(json_type_name(&doc)));
    };
    let dialect = detect_dialect(&doc);
    let mut problems = Vec::new();
    let mut entities: Vec<Entity> = Vec::new();
    let mut seen: HashSet<EntityKey> = HashSet::new();
    let empty = Map::new();
    let condition_map = match doc.get("condition_map") {
        Some(Value::Object(m)) => m,
        Some(v) => {
            problems.push(ValidationError::error(
                None,
                "condition_map",
                format!("expected an object, found {}", json_type_name(v)),
            ));
            &empty
        }
        None => &empty,
    };

    for (section, kind) in SPEC_SECTIONS {
        let specs: Vec<(String, &Value)> = match (dialect, doc.get(section)) {
            (_, None | Some(Value::Null)) => Vec::new(),
            (Dialect::V1, Some(Value::Array(items))) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.get("name").and_then(Value::as_str) {
                        Some(n) => out.push((n.to_string(), item)),
                        None => problems.push(ValidationError::error(
                            None,
                            format!("{section}[{i}].name"),
                            "a v1 spec needs a string `name`",
                        )),
                    }
                }
                out
            }
            (Dialect::V2, Some(Value::Object(m))) => {
                m.iter().map(|(k, v)| (k.clone(), v)).collect()
            }
            (_, Some(v)) => {
                let want = if dialect == Dialect::V1 {
                    "an array"
                } else {
                    "an object"
                };
                problems.push(ValidationError::error(
                    None,
                    section,
                    format!(
                        "expected {want} ({dialect:?} dialect), found {}",
                        json_type_name(v)
                    ),
                ));
                Vec::new()
            }
        };
        for (name, spec) in specs {
            let key = EntityKey::new(kind, name);
            if key.name.len() > limits::MAX_NAME_BYTES {
                problems.push(ValidationError::error(
                    Some(&key),
                    "",
                    format!("name longer than {} bytes", limits::MAX_NAME_BYTES),
                ));
                continue;
            }
            if !seen.insert(key.clone()) {
                problems.push(ValidationError::error(
                    Some(&key),
                    "",
                    format!("appears twice in {section}"),
                ));
                continue;
            }
            let Value::Object(obj) = spec else {
                problems.push(ValidationError::error(
                    Some(&key),
                    "",
                    format!("a spec must be an object, found {}", json_type_name(spec)),
                ));
                continue;
            };
            let mut body = obj.clone();
            body.remove("name");
            if dialect == Dialect::V2 {
                inline_conditions(&key, &mut body, condition_map, &mut problems);
            }
            entities.push(Entity {
                key,
                body: Value::Object(body),
            });
        }
    }

    // Layer membership: experiment -> layer.
    let mut membership: BTreeMap<String, String> = BTreeMap::new();
    match (doc.get("layers"), doc.get("experiment_to_layer")) {
        (Some(Value::Object(layers)), _) => {
            for (layer, exps) in layers {
                match exps {
                    Value::Array(exps) => {
                        for e in exps {
                            if let Some(e) = e.as_str() {
                                membership.insert(e.to_string(), layer.clone());
                            }
                        }
                    }
                    v => problems.push(ValidationError::error(
                        None,
                        format!("layers.{layer}"),
                        format!(
                            "expected an array of experiment names, found {}",
                            json_type_name(v)
                        ),
                    )),
                }
            }
        }
        (Some(v), _) if !v.is_null() => problems.push(ValidationError::error(
            None,
            "layers",
            format!("expected an object, found {}", json_type_name(v)),
        )),
        _ => {}
    }
    if let Some(e2l) = doc.get("experiment_to_layer") {
        match e2l {
            Value::Object(m) => {
                for (e, l) in m {
                    match l.as_str() {
                        Some(l) => {
                            membership.insert(e.clone(), l.to_string());
                        }
                        None => problems.push(ValidationError::error(
                            None,
                            format!("experiment_to_layer.{e}"),
                            "expected a layer name",
                        )),
                    }
                }
            }
            Value::Null => {}
            v => problems.push(ValidationError::error(
                None,
                "experiment_to_layer",
                format!("expected an object, found {}", json_type_name(v)),
            )),
        }
    }
    let mut dangling = Map::new();
    for (exp, layer) in membership {
        let target = entities
            .iter_mut()
            .find(|e| e.key.kind == EntityKind::Config && e.key.name == exp);
        match target.and_then(|e| e.body.as_object_mut()) {
            Some(body) => {
                body.insert(LAYER_FIELD.into(), Value::String(layer));
            }
            None => {
                dangling.insert(exp, Value::String(layer));
            }
        }
    }
    if !dangling.is_empty() {
        entities.push(Entity {
            key: EntityKey::new(EntityKind::Setting, "experiment_to_layer"),
            body: Value::Object(dangling),
        });
    }

    for (field, value) in &doc {
        let is_spec = SPEC_SECTIONS.iter().any(|(s, _)| s == field);
        let reserved = is_spec
            || DOCUMENT_FIELDS.contains(&field.as_str())
            || field == "condition_map"
            || field == "layers"
            || field == "experiment_to_layer";
        if !reserved {
            entities.push(Entity {
                key: EntityKey::new(EntityKind::Setting, field.clone()),
                body: value.clone(),
            });
        }
    }

    if entities.len() > limits::MAX_ENTITIES {
        problems.push(ValidationError::error(
            None,
            "",
            format!(
                "{} entities, more than the limit of {}",
                entities.len(),
                limits::MAX_ENTITIES
            ),
        ));
    }
    if problems.is_empty() {
        Ok(entities)
    } else {
        Err(DcsError::Invalid(problems))
    }
}

/// Replace v2 condition keys by the conditions they name.
fn inline_conditions(
    key: &EntityKey,
    body: &mut Map<String, Value>,
    condition_map: &Map<String, Value>,
    problems: &mut Vec<ValidationError>,
) {
    let Some(Value::Array(rules)) = body.get_mut("rules") else {
        return;
    };
    for (ri, rule) in rules.iter_mut().enumerate() {
        let rule_id = rule
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{ri}"));
        let Some(Value::Array(conds)) = rule.get_mut("conditions") else {
            continue;
        };
        for (ci, c) in conds.iter_mut().enumerate() {
            let Value::String(ckey) = c else { continue };
            match condition_map.get(ckey.as_str()) {
                Some(Value::Object(cond)) => {
                    let mut cond = cond.clone();
                    cond.insert(CONDITION_KEY_FIELD.into(), Value::String(ckey.clone()));
                    *c = Value::Object(cond);
                }
                Some(other) => problems.push(
                    ValidationError::error(
                        Some(key),
                        format!("rules[{ri}].conditions[{ci}]"),
                        format!(
                            "condition_map entry '{ckey}' must be an object, found {}",
                            json_type_name(other)
                        ),
                    )
                    .in_rule(Some(&rule_id)),
                ),
                None => problems.push(
                    ValidationError::error(
                        Some(key),
                        format!("rules[{ri}].conditions[{ci}]"),
                        format!("condition key '{ckey}' is not in condition_map"),
                    )
                    .in_rule(Some(&rule_id)),
                ),
            }
        }
    }
}

/// Build ID-list entities from `{"list": ["raw id", ...]}`; each ID is
/// stored as its 8-character key (first 8 base64 chars of SHA-256).
pub fn id_list_entities(json: &[u8]) -> Result<Vec<Entity>, DcsError> {
    if json.len() > limits::MAX_ID_LISTS_BYTES {
        return Err(DcsError::TooLarge {
            size: json.len(),
            limit: limits::MAX_ID_LISTS_BYTES,
        });
    }
    let doc: Value = serde_json::from_slice(json)?;
    let Value::Object(doc) = doc else {
        return Err(DcsError::NotAnObject(json_type_name(&doc)));
    };
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (name, ids) in doc {
        let key = EntityKey::new(EntityKind::IdList, name);
        let Value::Array(ids) = ids else {
            problems.push(ValidationError::error(
                Some(&key),
                "",
                "expected an array of IDs",
            ));
            continue;
        };
        if ids.len() > limits::MAX_ID_LIST_SIZE {
            problems.push(ValidationError::error(
                Some(&key),
                "",
                format!("more than {} IDs", limits::MAX_ID_LIST_SIZE),
            ));
            continue;
        }
        let keys: BTreeSet<String> = ids
            .iter()
            .map(|v| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                crate::hash::id_list_key_string(&text)
            })
            .collect();
        out.push(Entity {
            key,
            body: serde_json::json!({ "ids": keys.into_iter().collect::<Vec<_>>() }),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(DcsError::Invalid(problems))
    }
}

fn derived_condition_key(cond: &Map<String, Value>) -> String {
    let digest = Sha256::digest(canonical_json(&Value::Object(cond.clone())));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).to_string()
}

/// Join entities into a DCS document of the given dialect, with
/// `has_updates: true` and the given `time`. ID-list entities are not part
/// of a DCS and are skipped.
pub fn dcs_from_entities<'a>(
    entities: impl IntoIterator<Item = &'a Entity>,
    dialect: Dialect,
    time: i64,
) -> Value {
    let mut sections: [Vec<(String, Map<String, Value>)>; 3] = Default::default();
    let mut settings = Map::new();
    let mut membership: Vec<(String, String)> = Vec::new();
    for e in entities {
        let slot = match e.key.kind {
            EntityKind::Gate => 0,
            EntityKind::Config => 1,
            EntityKind::Layer => 2,
            EntityKind::IdList => continue,
            EntityKind::Setting => {
                if e.key.name == "experiment_to_layer" {
                    if let Value::Object(m) = &e.body {
                        for (exp, layer) in m {
                            if let Some(l) = layer.as_str() {
                                membership.push((exp.clone(), l.to_string()));
                            }
                        }
                    }
                } else {
                    settings.insert(e.key.name.clone(), e.body.clone());
                }
                continue;
            }
        };
        let mut body = match &e.body {
            Value::Object(m) => m.clone(),
            _ => continue,
        };
        if let Some(Value::String(layer)) = body.remove(LAYER_FIELD) {
            membership.push((e.key.name.clone(), layer));
        }
        sections[slot].push((e.key.name.clone(), body));
    }

    let mut doc = settings;
    let mut condition_map = Map::new();
    for ((section, _), specs) in SPEC_SECTIONS.iter().zip(sections) {
        match dialect {
            Dialect::V1 => {
                let items: Vec<Value> = specs
                    .into_iter()
                    .map(|(name, mut body)| {
                        strip_condition_keys(&mut body);
                        let mut obj = Map::new();
                        obj.insert("name".into(), Value::String(name));
                        obj.extend(body);
                        Value::Object(obj)
                    })
                    .collect();
                doc.insert((*section).into(), Value::Array(items));
            }
            Dialect::V2 => {
                let mut map = Map::new();
                for (name, mut body) in specs {
                    extract_conditions(&mut body, &mut condition_map);
                    map.insert(name, Value::Object(body));
                }
                doc.insert((*section).into(), Value::Object(map));
            }
        }
    }
    match dialect {
        Dialect::V1 => {
            let mut layers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (exp, layer) in membership {
                layers.entry(layer).or_default().push(Value::String(exp));
            }
            let layers: Map<String, Value> = layers
                .into_iter()
                .map(|(l, e)| (l, Value::Array(e)))
                .collect();
            doc.insert("layers".into(), Value::Object(layers));
        }
        Dialect::V2 => {
            let e2l: Map<String, Value> = membership
                .into_iter()
                .map(|(e, l)| (e, Value::String(l)))
                .collect();
            doc.insert("experiment_to_layer".into(), Value::Object(e2l));
            doc.insert("condition_map".into(), Value::Object(condition_map));
            doc.insert("response_format".into(), Value::String("dcs-v2".into()));
        }
    }
    doc.insert("has_updates".into(), Value::Bool(true));
    doc.insert("time".into(), Value::from(time));
    Value::Object(doc)
}

fn for_each_condition(body: &mut Map<String, Value>, mut f: impl FnMut(&mut Value)) {
    if let Some(Value::Array(rules)) = body.get_mut("rules") {
        for rule in rules {
            if let Some(Value::Array(conds)) = rule.get_mut("conditions") {
                for c in conds {
                    f(c);
                }
            }
        }
    }
}

fn strip_condition_keys(body: &mut Map<String, Value>) {
    for_each_condition(body, |c| {
        if let Value::Object(m) = c {
            m.remove(CONDITION_KEY_FIELD);
        }
    });
}

fn extract_conditions(body: &mut Map<String, Value>, condition_map: &mut Map<String, Value>) {
    let mut by_content: HashMap<Vec<u8>, String> = HashMap::new();
    for (k, v) in condition_map.iter() {
        by_content.insert(canonical_json(v), k.clone());
    }
    for_each_condition(body, |c| {
        let Value::Object(m) = c else { return };
        let mut cond = m.clone();
        let wanted = match cond.remove(CONDITION_KEY_FIELD) {
            Some(Value::String(k)) => Some(k),
            _ => None,
        };
        let content = canonical_json(&Value::Object(cond.clone()));
        let key = match wanted {
            Some(k)
                if condition_map
                    .get(&k)
                    .is_none_or(|v| canonical_json(v) == content) =>
            {
                k
            }
            _ => match by_content.get(&content) {
                Some(k) => k.clone(),
                None => derived_condition_key(&cond),
            },
        };
        by_content.insert(content, key.clone());
        condition_map.insert(key.clone(), Value::Object(cond));
        *c = Value::String(key);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_doc() -> Value {
        json!({
            "has_updates": true, "time": 5,
            "feature_gates": [{"name": "g", "type": "feature_gate", "entity": "feature_gate",
                "salt": "s", "enabled": true, "defaultValue": false, "idType": "userID", "future": 1,
                "rules": [{"id": "r", "salt": "", "passPercentage": 100, "returnValue": true,
                    "idType": "userID", "conditions": [{"type": "public", "idType": "userID"}]}]}],
            "dynamic_configs": [{"name": "exp", "type": "dynamic_config", "entity": "experiment",
                "salt": "s2", "enabled": true, "defaultValue": {}, "idType": "userID", "rules": []}],
            "layer_configs": [{"name": "lay", "type": "dynamic_config", "entity": "layer",
                "salt": "s3", "enabled": true, "defaultValue": {}, "idType": "userID", "rules": []}],
            "layers": {"lay": ["exp"], "other": ["ghost"]},
            "id_lists": {"l": true},
            "app_id": "app"
        })
    }

    #[test]
    fn v1_round_trips() {
        let doc = v1_doc();
        let ents = entities_from_dcs(doc.to_string().as_bytes()).unwrap();
        let exp = ents.iter().find(|e| e.key.name == "exp").unwrap();
        assert_eq!(exp.body[LAYER_FIELD], json!("lay"));
        assert!(ents
            .iter()
            .any(|e| e.key == EntityKey::new(EntityKind::Setting, "id_lists")));
        let back = dcs_from_entities(&ents, Dialect::V1, 5);
        assert_eq!(back, doc);
    }

    #[test]
    fn v1_to_v2_to_v1() {
        let doc = v1_doc();
        let ents = entities_from_dcs(doc.to_string().as_bytes()).unwrap();
        let v2 = dcs_from_entities(&ents, Dialect::V2, 5);
        assert_eq!(
            v2["experiment_to_layer"],
            json!({"exp": "lay", "ghost": "other"})
        );
        assert_eq!(v2["condition_map"].as_object().unwrap().len(), 1);
        let ents2 = entities_from_dcs(v2.to_string().as_bytes()).unwrap();
        let back = dcs_from_entities(&ents2, Dialect::V1, 5);
        assert_eq!(back, doc);
    }

    #[test]
    fn v2_keeps_condition_keys() {
        let doc = json!({
            "has_updates": true, "time": 7, "response_format": "dcs-v2",
            "feature_gates": {"g": {"type": "feature_gate", "entity": "feature_gate", "salt": "s",
                "enabled": true, "defaultValue": false, "idType": "userID",
                "rules": [{"id": "r", "passPercentage": 100, "returnValue": true, "idType": "userID",
                    "conditions": ["123", "456"]}]}},
            "dynamic_configs": {}, "layer_configs": {},
            "condition_map": {"123": {"type": "public", "idType": "userID"},
                              "456": {"type": "user_field", "operator": "any", "field": "country",
                                      "targetValue": ["US"], "idType": "userID"}},
            "experiment_to_layer": {}
        });
        let ents = entities_from_dcs(doc.to_string().as_bytes()).unwrap();
        let g = &ents[0];
        assert_eq!(
            g.body["rules"][0]["conditions"][1]["field"],
            json!("country")
        );
        assert_eq!(dcs_from_entities(&ents, Dialect::V2, 7), doc);
    }

    #[test]
    fn missing_condition_key_names_entity_rule_and_field() {
        let doc = json!({
            "feature_gates": {"g": {"salt": "s", "defaultValue": false, "idType": "userID",
                "rules": [{"id": "r9", "passPercentage": 100, "returnValue": true, "idType": "userID",
                    "conditions": ["nope"]}]}},
            "dynamic_configs": {}, "layer_configs": {}, "condition_map": {}, "experiment_to_layer": {}
        });
        let err = entities_from_dcs(doc.to_string().as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("gate 'g'")
                && text.contains("rule 'r9'")
                && text.contains("rules[0].conditions[0]")
                && text.contains("'nope'"),
            "{text}"
        );
    }

    #[test]
    fn bad_documents() {
        assert!(matches!(
            entities_from_dcs(b"{not json"),
            Err(DcsError::Json(_))
        ));
        assert!(matches!(
            entities_from_dcs(b"[1]"),
            Err(DcsError::NotAnObject(_))
        ));
        let err = entities_from_dcs(br#"{"feature_gates": [{"x": 1}]}"#).unwrap_err();
        assert!(err.to_string().contains("feature_gates[0].name"));
        let err =
            entities_from_dcs(br#"{"feature_gates": [], "dynamic_configs": {}}"#).unwrap_err();
        assert!(err.to_string().contains("dynamic_configs"), "{err}");
        let big = vec![b' '; limits::MAX_DCS_BYTES + 1];
        assert!(matches!(
            entities_from_dcs(&big),
            Err(DcsError::TooLarge { .. })
        ));
    }

    #[test]
    fn id_lists_are_hashed() {
        let ents = id_list_entities(br#"{"l": ["user_0", "user_0"]}"#).unwrap();
        assert_eq!(ents[0].body, json!({"ids": ["TmgID6Nv"]}));
    }
}
