//! Evaluating every spec a client may see for one user, through the
//! evaluator (nothing is re-implemented here), into an [`InitializeResponse`].

use super::hashing::HashAlgorithm;
use super::meta::{filtered_for_app, ClientMeta, SpecKind};
use super::response::{
    ConfigValue, DynamicConfigValue, ExperimentValue, Exposure, GateValue, InitializeResponse,
    LayerValue,
};
use super::user::ClientUser;
use super::{ClientView, GcirOptions};
use crate::eval::{ConfigResult, SecondaryExposure};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Parameter fields passed through; the `*_name` ones are hashed.
const PARAM_FIELDS: [&str; 6] = [
    "ref_type",
    "param_type",
    "value",
    "pass_value",
    "fail_value",
    "param_name",
];
const PARAM_NAME_FIELDS: [&str; 4] = ["gate_name", "config_name", "experiment_name", "layer_name"];

/// Hashes names, remembering each one (exposures repeat the same gates).
struct Namer {
    algo: HashAlgorithm,
    memo: HashMap<String, String>,
}

impl Namer {
    fn hash(&mut self, name: &str) -> String {
        if self.algo == HashAlgorithm::None {
            return name.to_string();
        }
        if let Some(h) = self.memo.get(name) {
            return h.clone();
        }
        let h = self.algo.hash(name);
        self.memo.insert(name.to_string(), h.clone());
        h
    }

    /// Deduplicated by `gate|gateValue|ruleID` (first occurrence kept, in
    /// order), then hashed.
    fn exposures(&mut self, list: &[SecondaryExposure<'_>]) -> Vec<Exposure> {
        let mut seen = HashSet::with_capacity(list.len());
        let mut out = Vec::with_capacity(list.len());
        for e in list {
            if !seen.insert((e.gate, e.gate_value, e.rule_id)) {
                continue;
            }
            out.push(Exposure {
                gate: self.hash(e.gate),
                gate_value: if e.gate_value { "true" } else { "false" }.into(),
                rule_id: e.rule_id.into(),
            });
        }
        out
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn is_device_based(id_type: &str) -> bool {
    id_type == "stableID" || id_type == "stableid"
}

pub(super) fn build(
    view: &ClientView<'_>,
    user: &ClientUser,
    options: &GcirOptions,
) -> InitializeResponse {
    let rs = view.ruleset;
    let meta = view.meta;
    let eval = view.eval;
    let key = options.client_key.as_deref();
    let app = meta.app_for_key(key);
    let shown = |kind, name: &str| !filtered_for_app(meta.target_apps(kind, name), key, app);
    let mut namer = Namer {
        algo: options.hash,
        memo: HashMap::new(),
    };
    let u = user.user();

    let mut feature_gates = BTreeMap::new();
    for spec in &rs.gates {
        let (name, entity) = (&*spec.name, &*spec.entity);
        if entity == "segment" || entity == "holdout" || !shown(SpecKind::Gate, name) {
            continue;
        }
        let r = rs.check_gate(u, name, eval);
        let hashed = namer.hash(name);
        let gate = GateValue {
            name: hashed.clone(),
            value: r.value,
            rule_id: r.rule_id.into(),
            id_type: r.id_type.into(),
            secondary_exposures: namer.exposures(&r.secondary_exposures),
        };
        feature_gates.insert(hashed, gate);
    }

    let mut dynamic_configs = BTreeMap::new();
    for spec in &rs.configs {
        let name = &*spec.name;
        if !shown(SpecKind::Config, name) {
            continue;
        }
        let r = rs.get_config(u, name, eval);
        let hashed = namer.hash(name);
        let value = if &*spec.entity == "dynamic_config" {
            ConfigValue::DynamicConfig(dynamic_config(&mut namer, hashed.clone(), &r))
        } else {
            let is_experiment = &*spec.entity == "experiment";
            ConfigValue::Experiment(experiment(
                &mut namer,
                hashed.clone(),
                &r,
                is_experiment,
                meta.declares_explicit_parameters(name),
            ))
        };
        dynamic_configs.insert(hashed, value);
    }

    let mut layer_configs = BTreeMap::new();
    for spec in &rs.layers {
        let name = &*spec.name;
        if !shown(SpecKind::Layer, name) {
            continue;
        }
        let r = rs.get_layer(u, name, eval);
        let hashed = namer.hash(name);
        let layer = layer(&mut namer, hashed.clone(), &r);
        layer_configs.insert(hashed, layer);
    }

    let param_stores = param_stores(meta, &mut namer, key, app);
    let tier = eval
        .environment_tier
        .as_ref()
        .and_then(|t| t.string.as_deref());
    InitializeResponse {
        feature_gates,
        dynamic_configs,
        layer_configs,
        param_stores,
        time: view.time_ms,
        has_updates: true,
        hash_used: options.hash.as_str().into(),
        user: user.loggable(tier),
        evaluated_keys: user.evaluated_keys(),
        sdk_info: BTreeMap::from([
            ("sdkType".to_string(), super::SDK_TYPE.to_string()),
            (
                "sdkVersion".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]),
        sdk_params: BTreeMap::new(),
        pa_hash: user.pa_hash(),
    }
}

fn dynamic_config(namer: &mut Namer, name: String, r: &ConfigResult<'_>) -> DynamicConfigValue {
    DynamicConfigValue {
        name,
        value: object(r.value),
        rule_id: r.rule_id.into(),
        group: r.rule_id.into(),
        id_type: r.id_type.into(),
        is_device_based: is_device_based(r.id_type),
        passed: r.passed,
        secondary_exposures: namer.exposures(&r.secondary_exposures),
    }
}

fn experiment(
    namer: &mut Namer,
    name: String,
    r: &ConfigResult<'_>,
    is_experiment: bool,
    declares_explicit: bool,
) -> ExperimentValue {
    let explicit = (declares_explicit || !r.explicit_parameters.is_empty())
        .then(|| r.explicit_parameters.to_vec());
    ExperimentValue {
        name,
        value: object(r.value),
        rule_id: r.rule_id.into(),
        group: r.rule_id.into(),
        id_type: r.id_type.into(),
        is_device_based: is_device_based(r.id_type),
        is_in_layer: r.is_in_layer,
        explicit_parameters: explicit,
        group_name: r.group_name.map(str::to_owned),
        is_experiment_active: is_experiment.then_some(r.is_experiment_active),
        is_user_in_experiment: is_experiment.then_some(r.is_experiment_group),
        secondary_exposures: namer.exposures(&r.secondary_exposures),
    }
}

fn layer(namer: &mut Namer, name: String, r: &ConfigResult<'_>) -> LayerValue {
    let allocated = r.allocated_experiment.filter(|e| !e.is_empty());
    LayerValue {
        name,
        value: object(r.value),
        rule_id: r.rule_id.into(),
        group: r.rule_id.into(),
        id_type: r.id_type.into(),
        is_device_based: is_device_based(r.id_type),
        group_name: r.group_name.map(str::to_owned),
        is_experiment_active: allocated.map(|_| r.is_experiment_active),
        is_user_in_experiment: allocated.map(|_| r.is_experiment_group),
        allocated_experiment_name: allocated.map(|e| namer.hash(e)),
        explicit_parameters: r.explicit_parameters.to_vec(),
        secondary_exposures: namer.exposures(&r.secondary_exposures),
        undelegated_secondary_exposures: namer.exposures(&r.undelegated_secondary_exposures),
    }
}

/// Parameter stores the key's app may see, with every referenced entity
/// name hashed ([core] `param_stores_processor`). Only the known parameter
/// fields are passed on.
fn param_stores(
    meta: &ClientMeta,
    namer: &mut Namer,
    key: Option<&str>,
    app: Option<&Value>,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let Some(stores) = meta.param_stores() else {
        return out;
    };
    for (name, store) in stores {
        let targets: Option<Vec<String>> =
            store
                .get("targetAppIDs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                });
        if filtered_for_app(targets.as_deref(), key, app) {
            continue;
        }
        let Some(params) = store.get("parameters").and_then(Value::as_object) else {
            continue;
        };
        let mut kept = BTreeMap::new();
        for (pname, p) in params {
            let Some(p) = p.as_object() else { continue };
            let mut q = Map::new();
            for f in PARAM_FIELDS {
                if let Some(v) = p.get(f) {
                    q.insert(f.into(), v.clone());
                }
            }
            for f in PARAM_NAME_FIELDS {
                if let Some(Value::String(n)) = p.get(f) {
                    q.insert(f.into(), Value::String(namer.hash(n)));
                }
            }
            kept.insert(pname.clone(), Value::Object(q));
        }
        out.insert(namer.hash(name), kept);
    }
    out
}
