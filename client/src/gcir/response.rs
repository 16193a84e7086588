//! The client initialize response, serialised with exactly Statsig's field
//! names (format doc §5.2; [core] `InitializeResponse`, `GateEvaluation`,
//! `DynamicConfigEvaluation`, `ExperimentEvaluation`, `LayerEvaluation`).
//!
//! Maps are `BTreeMap`s so the same response always serialises to the same
//! bytes (nodes and SDKs must agree byte for byte).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}

/// `{gate, gateValue, ruleID}` with `gate` hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub gate: String,
    #[serde(rename = "gateValue")]
    pub gate_value: String,
    #[serde(rename = "ruleID")]
    pub rule_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateValue {
    /// The hashed name (the same as the map key).
    pub name: String,
    pub value: bool,
    pub rule_id: String,
    pub id_type: String,
    pub secondary_exposures: Vec<Exposure>,
}

/// A `dynamic_configs` entry: a dynamic config, or an experiment (any other
/// `entity`, e.g. `experiment`, `autotune`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Tried first when reading: only it has (and requires) `passed`.
    DynamicConfig(DynamicConfigValue),
    Experiment(ExperimentValue),
}

impl ConfigValue {
    pub fn value(&self) -> &Map<String, Value> {
        match self {
            ConfigValue::DynamicConfig(c) => &c.value,
            ConfigValue::Experiment(e) => &e.value,
        }
    }

    pub fn rule_id(&self) -> &str {
        match self {
            ConfigValue::DynamicConfig(c) => &c.rule_id,
            ConfigValue::Experiment(e) => &e.rule_id,
        }
    }

    pub fn group_name(&self) -> Option<&str> {
        match self {
            ConfigValue::DynamicConfig(_) => None,
            ConfigValue::Experiment(e) => e.group_name.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfigValue {
    pub name: String,
    pub value: Map<String, Value>,
    pub rule_id: String,
    /// Legacy: equal to `rule_id`.
    pub group: String,
    pub id_type: String,
    pub is_device_based: bool,
    /// A rule matched and its pass percentage passed.
    pub passed: bool,
    pub secondary_exposures: Vec<Exposure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentValue {
    pub name: String,
    pub value: Map<String, Value>,
    pub rule_id: String,
    /// Legacy: equal to `rule_id`.
    pub group: String,
    pub id_type: String,
    pub is_device_based: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_in_layer: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_parameters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// Present for `entity: "experiment"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_experiment_active: Option<bool>,
    /// Present for `entity: "experiment"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_user_in_experiment: Option<bool>,
    pub secondary_exposures: Vec<Exposure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerValue {
    pub name: String,
    pub value: Map<String, Value>,
    pub rule_id: String,
    /// Legacy: equal to `rule_id`.
    pub group: String,
    pub id_type: String,
    pub is_device_based: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// Present when the user is allocated to an experiment of the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_experiment_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_user_in_experiment: Option<bool>,
    /// The allocated experiment's name, hashed like every other name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_experiment_name: Option<String>,
    pub explicit_parameters: Vec<String>,
    pub secondary_exposures: Vec<Exposure>,
    pub undelegated_secondary_exposures: Vec<Exposure>,
}

/// The whole document a client-side SDK initialises from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitializeResponse {
    pub feature_gates: BTreeMap<String, GateValue>,
    pub dynamic_configs: BTreeMap<String, ConfigValue>,
    pub layer_configs: BTreeMap<String, LayerValue>,
    pub param_stores: BTreeMap<String, BTreeMap<String, Value>>,
    /// The ruleset's time: the commit time of its version, in ms.
    pub time: u64,
    pub has_updates: bool,
    pub hash_used: String,
    /// The user without `privateAttributes`.
    pub user: Map<String, Value>,
    /// `{userID, customIDs}` as strings, for bootstrap validation.
    pub evaluated_keys: Map<String, Value>,
    #[serde(rename = "sdkInfo")]
    pub sdk_info: BTreeMap<String, String>,
    #[serde(rename = "sdkParams")]
    pub sdk_params: BTreeMap<String, Value>,
    /// djb2 sum of `key:value` of the private attributes, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pa_hash: Option<String>,
}

impl InitializeResponse {
    /// Compact JSON. Serialising these types cannot fail (string keys, JSON
    /// values); an empty object is returned if it ever did.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Object(Map::new()))
    }
}
