//! The line-per-evaluation report of `flagraft eval` and of the shared
//! evaluation cases: for each user (in order) every gate, then dynamic
//! configs, then experiments (every other `dynamic_configs` entity), then
//! layers, each group sorted by name. Fields: `user`, `kind`, `name`,
//! `value`, `rule_id`, `group_name`, `id_type`, and for layers
//! `allocated_experiment`.

use crate::compile::CompiledRuleset;
use crate::eval::EvalOptions;
use crate::user::User;
use serde_json::{json, Value};

/// What to evaluate: kind label and entity name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gate,
    Config,
    Experiment,
    Layer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gate => "gate",
            Kind::Config => "config",
            Kind::Experiment => "experiment",
            Kind::Layer => "layer",
        }
    }
}

/// Every entity of the ruleset in report order.
pub fn targets(rs: &CompiledRuleset) -> Vec<Target> {
    let group = |kind: Kind, names: Vec<&str>| {
        let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        names.sort();
        names.into_iter().map(move |name| Target { kind, name })
    };
    group(Kind::Gate, rs.gate_names().collect())
        .chain(group(Kind::Config, rs.config_names().collect()))
        .chain(group(Kind::Experiment, rs.experiment_names().collect()))
        .chain(group(Kind::Layer, rs.layer_names().collect()))
        .collect()
}

/// Evaluate one target for one user as a report line.
pub fn line(
    rs: &CompiledRuleset,
    user_index: usize,
    user: &User,
    t: &Target,
    opts: &EvalOptions,
) -> Value {
    match t.kind {
        Kind::Gate => {
            let r = rs.check_gate(user, &t.name, opts);
            json!({"user": user_index, "kind": "gate", "name": t.name, "value": r.value,
                   "rule_id": r.rule_id, "group_name": r.group_name, "id_type": r.id_type})
        }
        Kind::Config | Kind::Experiment | Kind::Layer => {
            let r = if t.kind == Kind::Layer {
                rs.get_layer(user, &t.name, opts)
            } else {
                rs.get_config(user, &t.name, opts)
            };
            let mut v = json!({"user": user_index, "kind": t.kind.as_str(), "name": t.name,
                   "value": r.value, "rule_id": r.rule_id, "group_name": r.group_name,
                   "id_type": r.id_type});
            if t.kind == Kind::Layer {
                v["allocated_experiment"] = json!(r.allocated_experiment);
            }
            v
        }
    }
}

/// A report line as compact JSON with the fields in report order.
pub fn line_text(v: &Value) -> String {
    const ORDER: [&str; 8] = [
        "user",
        "kind",
        "name",
        "value",
        "rule_id",
        "group_name",
        "id_type",
        "allocated_experiment",
    ];
    let mut out = String::from("{");
    let mut first = true;
    for k in ORDER {
        if let Some(val) = v.get(k) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&Value::String(k.into()).to_string());
            out.push(':');
            out.push_str(&val.to_string());
        }
    }
    out.push('}');
    out
}
