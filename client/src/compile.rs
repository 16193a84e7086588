//! Compilation of a ruleset (its entities) into the form the evaluator
//! walks: specs in vectors with name indexes, nested gates and delegates
//! resolved to indexes, operators resolved to [`Check`]s with pre-built
//! targets, salts pre-joined into hash prefixes, ID lists as hashed-key sets.
//!
//! Two entry points: [`CompiledRuleset::from_entities`] is strict (any
//! problem of [`Severity::Error`](crate::Severity::Error) refuses the ruleset, all problems are
//! returned), [`CompiledRuleset::compile_lenient`] keeps going like Statsig's
//! core does (a spec that cannot be read is dropped and evaluates as
//! unrecognised) and returns the problems alongside.
//!
//! A compiled ruleset shares its specs (`Arc`s in chunked tables) and name
//! indexes (sharded maps) with its clones, so [`LiveRuleset`] can apply a
//! delta by recompiling only what it changes (see [`incremental`]).

use crate::entity::{Entity, EntityKey, EntityKind};
use crate::model::{self, Spec};
use crate::ops::{Check, Sets};
use crate::problem::{RulesetErrors, ValidationError};
use crate::ua::UaField;
use crate::user::{FieldKey, IdType};
use crate::value::DynValue;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use table::{NameMap, SpecTable};

pub mod incremental;
mod table;

pub use incremental::{EntityLookup, LiveRuleset};

/// Where a condition's left-hand value comes from.
#[derive(Debug)]
pub(crate) enum Source {
    Public,
    /// `pass_gate` / `fail_gate` (`negate`).
    Gate {
        index: Option<u32>,
        name: Box<str>,
        negate: bool,
        is_segment: bool,
    },
    UserField(FieldKey),
    /// `country_fallback`: the field is exactly `country`, so the IP table
    /// may supply it.
    IpBased {
        key: FieldKey,
        country_fallback: bool,
    },
    UaBased(FieldKey, Option<UaField>),
    Environment(Box<str>),
    CurrentTime,
    /// `salt + "."`.
    UserBucket(Box<str>),
    UnitId,
    TargetApp,
    /// The group name the user gets in experiment `field`.
    ExperimentGroup(Option<u32>),
    Unsupported,
}

#[derive(Debug)]
pub(crate) struct CCondition {
    pub source: Source,
    pub check: Check,
    pub id_type: IdType,
    /// The condition as written, for explanations.
    pub raw: Arc<model::Condition>,
}

#[derive(Debug)]
pub(crate) struct CRule {
    pub id: Box<str>,
    pub group_name: Option<Box<str>>,
    pub pass_percentage: f64,
    /// `specSalt + "." + ruleSalt + "."`.
    pub hash_prefix: Box<str>,
    pub return_bool: bool,
    /// The return value when it is an object, else `{}`.
    pub return_json: Value,
    pub id_type: IdType,
    pub conditions: Box<[CCondition]>,
    /// Index in `configs` of the delegate, when it exists.
    pub delegate: Option<u32>,
    pub is_experiment_group: bool,
}

#[derive(Debug)]
pub(crate) struct CSpec {
    pub name: Box<str>,
    pub entity: Box<str>,
    pub enabled: bool,
    pub default_bool: bool,
    pub default_json: Value,
    pub id_type: Box<str>,
    pub rules: Box<[CRule]>,
    pub is_active: bool,
    pub is_in_layer: bool,
    pub explicit_parameters: Box<[String]>,
    pub version: Option<i64>,
}

/// A ruleset ready for evaluation. Immutable, `Send + Sync`; a clone is
/// shallow (it shares every spec and index shard).
#[derive(Clone, Debug, Default)]
pub struct CompiledRuleset {
    pub(crate) gates: SpecTable,
    pub(crate) configs: SpecTable,
    pub(crate) layers: SpecTable,
    pub(crate) gate_index: NameMap<u32>,
    pub(crate) config_index: NameMap<u32>,
    pub(crate) layer_index: NameMap<u32>,
    pub(crate) id_lists: NameMap<Arc<IdSet>>,
    pub(crate) app_id: Option<DynValue>,
    pub(crate) default_environment: Option<DynValue>,
}

impl CompiledRuleset {
    /// Strict compilation: refuses the ruleset if any problem is an error.
    pub fn from_entities<'a>(
        entities: impl IntoIterator<Item = &'a Entity>,
    ) -> Result<CompiledRuleset, RulesetErrors> {
        let (rs, problems) = CompiledRuleset::compile_lenient(entities);
        if problems.iter().any(ValidationError::is_error) {
            Err(RulesetErrors(problems))
        } else {
            Ok(rs)
        }
    }

    /// Strict compilation of a DCS document (either dialect) and, optionally,
    /// an ID-lists file (`{"list": ["raw id", ...]}`).
    pub fn from_dcs(dcs: &[u8], id_lists: Option<&[u8]>) -> Result<CompiledRuleset, RulesetErrors> {
        let mut entities = crate::dcs::entities_from_dcs(dcs).map_err(|e| e.into_errors())?;
        if let Some(lists) = id_lists {
            entities.extend(crate::dcs::id_list_entities(lists).map_err(|e| e.into_errors())?);
        }
        CompiledRuleset::from_entities(&entities)
    }

    /// Compile whatever can be compiled, returning every problem found
    /// (errors and warnings). Specs that cannot be read are left out.
    pub fn compile_lenient<'a>(
        entities: impl IntoIterator<Item = &'a Entity>,
    ) -> (CompiledRuleset, Vec<ValidationError>) {
        Self::compile_with(entities, Sets::Build)
    }

    /// The problems [`compile_lenient`](Self::compile_lenient) would report,
    /// without building the condition's lookup sets, which cannot add a
    /// problem: for a node validating a commit, whose ruleset it throws away.
    /// A gate listing 170 user IDs is checked in about half the time.
    pub fn check_lenient<'a>(
        entities: impl IntoIterator<Item = &'a Entity>,
    ) -> Vec<ValidationError> {
        Self::compile_with(entities, Sets::Skip).1
    }

    fn compile_with<'a>(
        entities: impl IntoIterator<Item = &'a Entity>,
        sets: Sets,
    ) -> (CompiledRuleset, Vec<ValidationError>) {
        let entities: Vec<&Entity> = entities.into_iter().collect();
        let mut problems = Vec::new();
        if entities.len() > crate::limits::MAX_ENTITIES {
            problems.push(ValidationError::error(
                None,
                "",
                format!(
                    "{} entities, more than the limit of {}",
                    entities.len(),
                    crate::limits::MAX_ENTITIES
                ),
            ));
            return (CompiledRuleset::default(), problems);
        }
        let mut specs: [Vec<Spec>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut rs = CompiledRuleset::default();
        let mut seen = HashSet::new();
        for e in &entities {
            if !seen.insert(&e.key) {
                problems.push(ValidationError::error(
                    Some(&e.key),
                    "",
                    "duplicate entity (the same kind and name appears twice)",
                ));
                continue;
            }
            let slot = match e.key.kind {
                EntityKind::Gate => 0,
                EntityKind::Config => 1,
                EntityKind::Layer => 2,
                EntityKind::IdList => {
                    match id_list_members(&e.key, &e.body) {
                        Ok(set) => {
                            rs.id_lists
                                .insert(e.key.name.as_str().into(), Arc::new(set));
                        }
                        Err(p) => problems.push(p),
                    }
                    continue;
                }
                EntityKind::Setting => {
                    rs.set_setting(&e.key.name, Some(&e.body));
                    continue;
                }
            };
            if let Some(spec) = Spec::from_body(&e.key, &e.body, &mut problems) {
                specs[slot].push(spec);
            }
        }
        let [gates, configs, layers] = specs;
        for (i, s) in gates.iter().enumerate() {
            rs.gate_index.insert(s.name.as_str().into(), i as u32);
        }
        for (i, s) in configs.iter().enumerate() {
            rs.config_index.insert(s.name.as_str().into(), i as u32);
        }
        for (i, s) in layers.iter().enumerate() {
            rs.layer_index.insert(s.name.as_str().into(), i as u32);
        }
        let mut cx = Compiler {
            rs: &rs,
            problems: &mut problems,
            sets,
        };
        let g = gates.iter().map(|s| cx.spec(EntityKind::Gate, s)).collect();
        let c = configs
            .iter()
            .map(|s| cx.spec(EntityKind::Config, s))
            .collect();
        let l = layers
            .iter()
            .map(|s| cx.spec(EntityKind::Layer, s))
            .collect();
        rs.gates = SpecTable::from_vec(g);
        rs.configs = SpecTable::from_vec(c);
        rs.layers = SpecTable::from_vec(l);
        crate::validate::check_references(&rs, &gates, &configs, &layers, &mut problems);
        (rs, problems)
    }

    /// A top-level setting entity changed (`None`: deleted). Only `app_id`
    /// and `default_environment` matter to evaluation.
    pub(crate) fn set_setting(&mut self, name: &str, body: Option<&Value>) {
        match name {
            "app_id" => self.app_id = body.map(DynValue::from_json),
            "default_environment" => {
                self.default_environment = match body {
                    Some(Value::String(s)) => Some(DynValue::from_str_value(s)),
                    _ => None,
                }
            }
            _ => {}
        }
    }

    pub fn gate_names(&self) -> impl Iterator<Item = &str> {
        self.gates.iter().map(|s| &*s.name)
    }

    /// Names of dynamic configs (entity `dynamic_config`).
    pub fn config_names(&self) -> impl Iterator<Item = &str> {
        self.configs
            .iter()
            .filter(|s| &*s.entity == "dynamic_config")
            .map(|s| &*s.name)
    }

    /// Names of every other `dynamic_configs` entity (experiments, autotunes).
    pub fn experiment_names(&self) -> impl Iterator<Item = &str> {
        self.configs
            .iter()
            .filter(|s| &*s.entity != "dynamic_config")
            .map(|s| &*s.name)
    }

    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|s| &*s.name)
    }

    pub fn has_id_list(&self, name: &str) -> bool {
        self.id_lists.contains_key(name)
    }

    pub(crate) fn in_id_list(&self, list: &str, key: &[u8; 8]) -> bool {
        self.id_lists.get(list).is_some_and(|s| s.contains(key))
    }
}

/// The members of one ID list: hashed IDs.
pub(crate) type IdSet = HashSet<[u8; 8]>;

pub(crate) fn id_list_members(key: &EntityKey, body: &Value) -> Result<IdSet, ValidationError> {
    let ids = body.get("ids").and_then(Value::as_array).ok_or_else(|| {
        ValidationError::error(
            Some(key),
            "ids",
            "expected an array of 8-character hashed IDs",
        )
    })?;
    if ids.len() > crate::limits::MAX_ID_LIST_SIZE {
        return Err(ValidationError::error(
            Some(key),
            "ids",
            format!("more than {} IDs", crate::limits::MAX_ID_LIST_SIZE),
        ));
    }
    let mut set = HashSet::with_capacity(ids.len());
    for (i, v) in ids.iter().enumerate() {
        let k: [u8; 8] = v
            .as_str()
            .and_then(|s| s.as_bytes().try_into().ok())
            .ok_or_else(|| {
                ValidationError::error(
                    Some(key),
                    format!("ids[{i}]"),
                    "expected an 8-character hashed ID (first 8 base64 characters of SHA-256)",
                )
            })?;
        set.insert(k);
    }
    Ok(set)
}

/// Compiles specs against the name indexes of `rs` (which must already
/// hold every spec that will be in the ruleset).
pub(crate) struct Compiler<'a> {
    pub rs: &'a CompiledRuleset,
    pub problems: &'a mut Vec<ValidationError>,
    pub sets: Sets,
}

impl Compiler<'_> {
    pub fn spec(&mut self, kind: EntityKind, s: &Spec) -> CSpec {
        let key = EntityKey::new(kind, s.name.clone());
        // Disabled specs: Statsig's servers strip their rules (format doc
        // §2.4); v1 documents still carry them, so strip them here.
        let rules: Box<[CRule]> = if s.enabled {
            s.rules
                .iter()
                .enumerate()
                .map(|(i, r)| self.rule(&key, s, i, r))
                .collect()
        } else {
            Box::default()
        };
        CSpec {
            name: s.name.as_str().into(),
            entity: s.entity.as_str().into(),
            enabled: s.enabled,
            default_bool: s.default_value == Value::Bool(true),
            default_json: object_or_empty(&s.default_value),
            id_type: s.id_type.as_str().into(),
            rules,
            is_active: s.is_active.unwrap_or(false),
            is_in_layer: s.has_shared_params.unwrap_or(false),
            explicit_parameters: s.explicit_parameters.clone().unwrap_or_default().into(),
            version: s.version,
        }
    }

    fn rule(&mut self, key: &EntityKey, s: &Spec, index: usize, r: &model::Rule) -> CRule {
        let rule_salt = r.salt.as_deref().unwrap_or(&r.id);
        let conditions = r
            .conditions
            .iter()
            .enumerate()
            .map(|(ci, c)| self.condition(key, &r.id, index, ci, c))
            .collect();
        CRule {
            id: r.id.as_str().into(),
            group_name: r.group_name.as_deref().map(Into::into),
            pass_percentage: r.pass_percentage,
            hash_prefix: format!("{}.{}.", s.salt, rule_salt).into(),
            return_bool: r.return_value != Value::Bool(false),
            return_json: object_or_empty(&r.return_value),
            id_type: IdType::new(&r.id_type),
            conditions,
            delegate: r
                .config_delegate
                .as_deref()
                .and_then(|d| self.rs.config_index.get(d).copied()),
            is_experiment_group: r.is_experiment_group.unwrap_or(false),
        }
    }

    fn condition(
        &mut self,
        key: &EntityKey,
        rule_id: &str,
        rule_index: usize,
        ci: usize,
        c: &Arc<model::Condition>,
    ) -> CCondition {
        let path = format!("rules[{rule_index}].conditions[{ci}]");
        let mut warn = |field: &str, msg: String| {
            self.problems.push(
                ValidationError::warning(Some(key), format!("{path}.{field}"), msg)
                    .in_rule(Some(rule_id)),
            );
        };
        let field = c.field.as_deref().unwrap_or("");
        let mut needs_operator = true;
        let source = match c.condition_type.as_str() {
            "public" => {
                needs_operator = false;
                Source::Public
            }
            t @ ("pass_gate" | "fail_gate") => {
                needs_operator = false;
                match &c.target_value {
                    Value::String(name) => Source::Gate {
                        index: self.rs.gate_index.get(name.as_str()).copied(),
                        name: name.as_str().into(),
                        negate: t == "fail_gate",
                        is_segment: name.starts_with("segment:"),
                    },
                    _ => {
                        warn(
                            "targetValue",
                            format!("{t} needs a gate name: evaluates as Unsupported"),
                        );
                        Source::Unsupported
                    }
                }
            }
            "user_field" => Source::UserField(FieldKey::new(field)),
            "ip_based" => Source::IpBased {
                key: FieldKey::new(field),
                country_fallback: field == "country",
            },
            "ua_based" => {
                let fk = FieldKey::new(field);
                let ua = UaField::from_field_lower(&fk.lower);
                Source::UaBased(fk, ua)
            }
            "environment_field" => Source::Environment(field.into()),
            "current_time" => Source::CurrentTime,
            "user_bucket" => {
                let salt = c
                    .additional_values
                    .get("salt")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Source::UserBucket(format!("{salt}.").into())
            }
            "unit_id" => Source::UnitId,
            "target_app" => Source::TargetApp,
            "experiment_group" => Source::ExperimentGroup(self.rs.config_index.get(field).copied()),
            other => {
                warn(
                    "type",
                    format!("unknown condition type \"{other}\": evaluates as Unsupported"),
                );
                Source::Unsupported
            }
        };
        let check = if needs_operator && !matches!(source, Source::Unsupported) {
            let (check, note) =
                Check::compile_sets(c.operator.as_deref(), &c.target_value, self.sets);
            if let Some(note) = note {
                let unsupported = matches!(check, Check::Unsupported);
                warn(
                    if unsupported {
                        "operator"
                    } else {
                        "targetValue"
                    },
                    if unsupported {
                        format!("{note}: evaluates as Unsupported")
                    } else {
                        note
                    },
                );
            }
            if let Value::Array(a) = &c.target_value {
                if a.len() > crate::limits::MAX_TARGET_VALUES {
                    self.problems.push(
                        ValidationError::error(
                            Some(key),
                            format!("{path}.targetValue"),
                            format!("more than {} values", crate::limits::MAX_TARGET_VALUES),
                        )
                        .in_rule(Some(rule_id)),
                    );
                }
            }
            check
        } else {
            Check::Never
        };
        let source = if matches!(check, Check::Unsupported) {
            Source::Unsupported
        } else {
            source
        };
        CCondition {
            source,
            check,
            id_type: IdType::new(&c.id_type),
            raw: Arc::clone(c),
        }
    }
}

fn object_or_empty(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        _ => Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn compiled_ruleset_is_send_and_sync() {
        assert_send_sync::<CompiledRuleset>();
        assert_send_sync::<crate::user::User>();
    }
}
