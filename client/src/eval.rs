//! The evaluator (format doc §2): `check_gate`, `get_config`,
//! `get_experiment`, `get_layer` on a [`CompiledRuleset`] for a [`User`].
//!
//! Semantics follow Statsig's Rust core: the first rule whose conditions all
//! pass owns the user (a failed pass percentage still attributes the rule,
//! with the default value); every condition of a rule is evaluated so
//! secondary exposures are complete; nested gates are memoised per
//! evaluation; a layer rule with a `configDelegate` hands evaluation to that
//! experiment before any percentage check.
//!
//! **Unsupported** conditions (unknown type/operator) stop the spec at the
//! end of that rule: reason `Unsupported`, empty rule id, config value `{}`,
//! and, like the core, the gate value is the rule's AND of its other
//! conditions (`[public, unknown]` is `true`).
//!
//! **Depth limit**: nested gates and delegations deeper than
//! [`MAX_NESTING_DEPTH`] (which every dependency cycle reaches) stop the
//! evaluation; the result is `false` / `{}`, an empty rule id and reason
//! `DepthLimitExceeded`. Nothing recurses further and nothing panics.
//!
//! Results borrow names and values from the ruleset: `check_gate` on a gate
//! whose conditions read only user fields does not allocate.

use crate::compile::{CCondition, CRule, CSpec, CompiledRuleset, Source};
use crate::hash;
use crate::ip::IpTable;
use crate::limits::MAX_NESTING_DEPTH;
use crate::user::{TopField, User};
use crate::value::{DynValue, Lhs, NumBuf};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

/// SDK-level evaluation options.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// The SDK's environment tier, used when the user has no
    /// `statsigEnvironment` entry for the field.
    pub environment_tier: Option<DynValue>,
    /// IP → country table; with none, only the user's `country` counts.
    pub ip_table: Option<Arc<IpTable>>,
    /// Fixed "now" in epoch ms (for reproducible runs); else the clock.
    pub now_ms: Option<i64>,
}

impl EvalOptions {
    pub fn with_environment(mut self, tier: &str) -> Self {
        self.environment_tier = Some(DynValue::from_str_value(tier));
        self
    }

    pub fn with_ip_table(mut self, table: Arc<IpTable>) -> Self {
        self.ip_table = Some(table);
        self
    }

    pub fn with_now_ms(mut self, now: i64) -> Self {
        self.now_ms = Some(now);
        self
    }
}

/// Why a result is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Recognized,
    /// No entity of that name.
    Unrecognized,
    /// An unsupported condition type or operator was reached.
    Unsupported,
    /// The nested-gate/delegation depth limit was exceeded.
    DepthLimitExceeded,
}

impl Reason {
    /// Statsig-style `<source>:<reason>` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Recognized => "Local:Recognized",
            Reason::Unrecognized => "Local:Unrecognized",
            Reason::Unsupported => "Local:Unsupported",
            Reason::DepthLimitExceeded => "Local:DepthLimitExceeded",
        }
    }
}

/// `{gate, gateValue, ruleID}` as Statsig logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondaryExposure<'r> {
    pub gate: &'r str,
    pub gate_value: bool,
    pub rule_id: &'r str,
}

impl SecondaryExposure<'_> {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "gate": self.gate,
            "gateValue": if self.gate_value { "true" } else { "false" },
            "ruleID": self.rule_id,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GateResult<'r> {
    pub value: bool,
    pub rule_id: &'r str,
    pub group_name: Option<&'r str>,
    pub id_type: &'r str,
    pub secondary_exposures: Vec<SecondaryExposure<'r>>,
    pub reason: Reason,
    /// The spec's `version`, when it has one.
    pub version: Option<i64>,
}

/// The result of `get_config`, `get_experiment` and `get_layer`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigResult<'r> {
    /// Always a JSON object.
    pub value: &'r Value,
    pub rule_id: &'r str,
    pub group_name: Option<&'r str>,
    pub id_type: &'r str,
    pub secondary_exposures: Vec<SecondaryExposure<'r>>,
    pub reason: Reason,
    /// A rule matched and its pass percentage passed.
    pub passed: bool,
    pub is_experiment_group: bool,
    pub is_experiment_active: bool,
    pub is_in_layer: bool,
    /// Layers (and delegating configs): the experiment evaluation was handed to.
    pub allocated_experiment: Option<&'r str>,
    pub explicit_parameters: &'r [String],
    /// Layers: the exposures of the layer's own rules only.
    pub undelegated_secondary_exposures: Vec<SecondaryExposure<'r>>,
    /// The spec's `version`, when it has one.
    pub version: Option<i64>,
}

fn empty_object() -> &'static Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY.get_or_init(|| Value::Object(Default::default()))
}

/// One line of an explanation (`--explain`).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceLine {
    pub depth: u32,
    pub text: String,
}

/// What evaluating one spec produced.
struct Outcome<'r> {
    bool_value: bool,
    json: &'r Value,
    rule_id: &'r str,
    group_name: Option<&'r str>,
    is_experiment_group: bool,
    passed: bool,
    unsupported: bool,
    /// Delegated experiment and the exposure count before delegation.
    delegate: Option<(&'r CSpec, usize)>,
}

impl<'r> Outcome<'r> {
    fn unrecognized() -> Self {
        Outcome {
            bool_value: false,
            json: empty_object(),
            rule_id: "",
            group_name: None,
            is_experiment_group: false,
            passed: false,
            unsupported: false,
            delegate: None,
        }
    }
}

struct Memo<'r> {
    node: (u8, u32),
    value: bool,
    rule_id: &'r str,
    group_name: Option<&'r str>,
}

struct Ctx<'r, 'u, 't> {
    rs: &'r CompiledRuleset,
    user: &'u User,
    opts: &'u EvalOptions,
    /// Read from the clock only when a `current_time` condition needs it.
    now: Option<i64>,
    exposures: Vec<SecondaryExposure<'r>>,
    memo: Vec<Memo<'r>>,
    depth: u32,
    depth_exceeded: bool,
    trace: Option<&'t mut Vec<TraceLine>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl CompiledRuleset {
    pub fn check_gate<'r>(&'r self, user: &User, name: &str, opts: &EvalOptions) -> GateResult<'r> {
        self.check_gate_traced(user, name, opts, None)
    }

    pub fn get_config<'r>(
        &'r self,
        user: &User,
        name: &str,
        opts: &EvalOptions,
    ) -> ConfigResult<'r> {
        self.eval_config(1, user, name, opts, None)
    }

    /// Experiments live with dynamic configs; same evaluation.
    pub fn get_experiment<'r>(
        &'r self,
        user: &User,
        name: &str,
        opts: &EvalOptions,
    ) -> ConfigResult<'r> {
        self.eval_config(1, user, name, opts, None)
    }

    pub fn get_layer<'r>(
        &'r self,
        user: &User,
        name: &str,
        opts: &EvalOptions,
    ) -> ConfigResult<'r> {
        self.eval_config(2, user, name, opts, None)
    }

    /// `check_gate` recording an explanation into `trace`.
    pub fn check_gate_traced<'r>(
        &'r self,
        user: &User,
        name: &str,
        opts: &EvalOptions,
        trace: Option<&mut Vec<TraceLine>>,
    ) -> GateResult<'r> {
        let mut ctx = Ctx::new(self, user, opts, trace);
        let spec = self.gate_index.get(name).map(|&i| &self.gates[i as usize]);
        let Some(spec) = spec else {
            ctx.note(|| format!("gate '{name}' does not exist: false (Unrecognized)"));
            return GateResult {
                value: false,
                rule_id: "",
                group_name: None,
                id_type: "",
                secondary_exposures: Vec::new(),
                reason: Reason::Unrecognized,
                version: None,
            };
        };
        let out = ctx.eval_spec(spec, "gate");
        let reason = ctx.reason(&out);
        let (value, rule_id, group_name) = match reason {
            Reason::DepthLimitExceeded => (false, "", None),
            Reason::Unsupported => (out.bool_value, "", None),
            _ => (out.bool_value, out.rule_id, out.group_name),
        };
        GateResult {
            value,
            rule_id,
            group_name,
            id_type: &spec.id_type,
            secondary_exposures: ctx.exposures,
            reason,
            version: spec.version,
        }
    }

    /// `get_config` (kind 1) / `get_layer` (kind 2) recording an explanation.
    pub fn eval_config_traced<'r>(
        &'r self,
        layer: bool,
        user: &User,
        name: &str,
        opts: &EvalOptions,
        trace: Option<&mut Vec<TraceLine>>,
    ) -> ConfigResult<'r> {
        self.eval_config(if layer { 2 } else { 1 }, user, name, opts, trace)
    }

    fn eval_config<'r>(
        &'r self,
        kind: u8,
        user: &User,
        name: &str,
        opts: &EvalOptions,
        trace: Option<&mut Vec<TraceLine>>,
    ) -> ConfigResult<'r> {
        let mut ctx = Ctx::new(self, user, opts, trace);
        let (index, specs, label) = if kind == 2 {
            (&self.layer_index, &self.layers, "layer")
        } else {
            (&self.config_index, &self.configs, "config")
        };
        let Some(spec) = index.get(name).map(|&i| &specs[i as usize]) else {
            ctx.note(|| format!("{label} '{name}' does not exist: {{}} (Unrecognized)"));
            return ConfigResult {
                value: empty_object(),
                rule_id: "",
                group_name: None,
                id_type: "",
                secondary_exposures: Vec::new(),
                reason: Reason::Unrecognized,
                passed: false,
                is_experiment_group: false,
                is_experiment_active: false,
                is_in_layer: false,
                allocated_experiment: None,
                explicit_parameters: &[],
                undelegated_secondary_exposures: Vec::new(),
                version: None,
            };
        };
        let out = ctx.eval_spec(spec, label);
        let reason = ctx.reason(&out);
        let ok = reason == Reason::Recognized;
        let (undelegated, allocated, explicit, active, in_layer) = match out.delegate {
            Some((d, n)) => (
                ctx.exposures[..n].to_vec(),
                Some(&*d.name),
                &*d.explicit_parameters,
                d.is_active,
                d.is_in_layer,
            ),
            None => (
                ctx.exposures.clone(),
                None,
                &*spec.explicit_parameters,
                spec.is_active,
                spec.is_in_layer,
            ),
        };
        ConfigResult {
            value: if ok { out.json } else { empty_object() },
            rule_id: if ok { out.rule_id } else { "" },
            group_name: if ok { out.group_name } else { None },
            id_type: &spec.id_type,
            secondary_exposures: ctx.exposures,
            reason,
            passed: ok && out.passed,
            is_experiment_group: ok && out.is_experiment_group,
            is_experiment_active: active,
            is_in_layer: in_layer,
            allocated_experiment: if ok { allocated } else { None },
            explicit_parameters: explicit,
            undelegated_secondary_exposures: undelegated,
            version: spec.version,
        }
    }
}

impl<'r, 'u, 't> Ctx<'r, 'u, 't> {
    fn new(
        rs: &'r CompiledRuleset,
        user: &'u User,
        opts: &'u EvalOptions,
        trace: Option<&'t mut Vec<TraceLine>>,
    ) -> Self {
        Ctx {
            rs,
            user,
            opts,
            now: opts.now_ms,
            exposures: Vec::new(),
            memo: Vec::new(),
            depth: 0,
            depth_exceeded: false,
            trace,
        }
    }

    fn reason(&self, out: &Outcome<'_>) -> Reason {
        if self.depth_exceeded {
            Reason::DepthLimitExceeded
        } else if out.unsupported {
            Reason::Unsupported
        } else {
            Reason::Recognized
        }
    }

    /// Record an explanation line; `text` is only built when tracing.
    fn note(&mut self, text: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(TraceLine {
                depth: self.depth,
                text: text(),
            });
        }
    }

    fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    fn eval_spec(&mut self, spec: &'r CSpec, label: &str) -> Outcome<'r> {
        if self.tracing() {
            let state = if spec.enabled {
                ""
            } else {
                " (disabled: rules ignored)"
            };
            self.note(|| format!("{label} '{}'{state}", spec.name));
        }
        // Statsig's core carries one boolean across conditions and rules; it
        // starts false for every (nested) evaluation.
        let mut last = false;
        for (ri, rule) in spec.rules.iter().enumerate() {
            let unsupported = self.eval_rule(rule, ri, &mut last);
            if unsupported || self.depth_exceeded {
                let why = if self.depth_exceeded {
                    "nesting depth limit exceeded"
                } else {
                    "unsupported condition"
                };
                self.note(|| format!("  -> stops at rule '{}': {why}", rule.id));
                return Outcome {
                    bool_value: last,
                    unsupported: true,
                    ..Outcome::unrecognized()
                };
            }
            if !last {
                continue;
            }
            if let Some(d) = rule.delegate {
                let target = &self.rs.configs[d as usize];
                self.note(|| format!("  -> delegates to experiment '{}'", target.name));
                let before = self.exposures.len();
                if !self.enter() {
                    return Outcome {
                        unsupported: true,
                        ..Outcome::unrecognized()
                    };
                }
                let inner = self.eval_spec(target, "experiment");
                self.depth -= 1;
                return Outcome {
                    delegate: Some((target, before)),
                    ..inner
                };
            }
            let passed = hash::passes_percentage(
                &rule.hash_prefix,
                self.user.unit_id_str(&rule.id_type),
                rule.pass_percentage,
            );
            let (bool_value, json) = if passed {
                (rule.return_bool, &rule.return_json)
            } else {
                (spec.default_bool, &spec.default_json)
            };
            if self.tracing() {
                let pct = if rule.pass_percentage == 100.0 {
                    String::new()
                } else {
                    format!(
                        ", pass percentage {}%: {}",
                        rule.pass_percentage,
                        if passed { "in" } else { "out (default value)" }
                    )
                };
                self.note(|| format!("  -> decided by rule '{}'{pct}", rule.id));
            }
            return Outcome {
                bool_value,
                json,
                rule_id: &rule.id,
                group_name: rule.group_name.as_deref(),
                is_experiment_group: rule.is_experiment_group,
                passed,
                unsupported: false,
                delegate: None,
            };
        }
        let rule_id = if spec.enabled { "default" } else { "disabled" };
        self.note(|| format!("  -> no rule matched: default value, rule '{rule_id}'"));
        Outcome {
            bool_value: spec.default_bool,
            json: &spec.default_json,
            rule_id,
            group_name: None,
            is_experiment_group: false,
            passed: false,
            unsupported: false,
            delegate: None,
        }
    }

    /// Evaluate every condition of a rule; `last` ends as "all passed".
    /// Returns whether an unsupported condition was met.
    fn eval_rule(&mut self, rule: &'r CRule, index: usize, last: &mut bool) -> bool {
        if self.tracing() {
            self.note(|| format!("  rule #{index} '{}'", rule.id));
        }
        let mut all = true;
        let mut unsupported = false;
        for c in rule.conditions.iter() {
            match self.eval_condition(c) {
                Some(b) => *last = b,
                None => unsupported = true,
            }
            if self.depth_exceeded {
                return true;
            }
            if !*last {
                all = false;
            }
        }
        *last = all;
        unsupported
    }

    fn enter(&mut self) -> bool {
        if self.depth >= MAX_NESTING_DEPTH {
            self.depth_exceeded = true;
            return false;
        }
        self.depth += 1;
        true
    }

    /// `None`: unsupported (the caller's boolean is left as it was).
    fn eval_condition(&mut self, c: &'r CCondition) -> Option<bool> {
        let user = self.user;
        let lhs: Lhs<'_>;
        let bucket_text;
        match &c.source {
            Source::Public => {
                self.note(|| "    public: true".into());
                return Some(true);
            }
            Source::Gate {
                index,
                name,
                negate,
                is_segment,
            } => return self.eval_nested_gate(*index, name, *negate, *is_segment),
            Source::Unsupported => {
                if self.tracing() {
                    let text = format!(
                        "    {} {}: unsupported",
                        c.raw.condition_type,
                        c.raw.operator.as_deref().unwrap_or("(no operator)")
                    );
                    self.note(|| text);
                }
                return None;
            }
            Source::UserField(key) => lhs = User::lhs_of(user.field(key)),
            Source::IpBased {
                key,
                country_fallback,
            } => {
                let v = user.field(key).or_else(|| {
                    if !*country_fallback {
                        return None;
                    }
                    let table = self.opts.ip_table.as_deref()?;
                    let ip = user.top_field(TopField::Ip)?.string.as_deref()?;
                    table.country(ip)
                });
                lhs = User::lhs_of(v);
            }
            Source::UaBased(key, field) => {
                let v = user
                    .field(key)
                    .or_else(|| field.and_then(|f| user.user_agent().get(f)));
                lhs = User::lhs_of(v);
            }
            Source::Environment(key) => {
                let is_tier = &**key == "tier" || key.eq_ignore_ascii_case("tier");
                let fallback = if is_tier {
                    self.opts
                        .environment_tier
                        .as_ref()
                        .or(self.rs.default_environment.as_ref())
                } else {
                    None
                };
                lhs = User::lhs_of(user.environment(key).or(fallback));
            }
            Source::CurrentTime => {
                let now = *self.now.get_or_insert_with(now_ms);
                lhs = Lhs::now(now);
            }
            Source::UserBucket(prefix) => {
                let b = hash::user_bucket(prefix, user.unit_id_str(&c.id_type));
                bucket_text = NumBuf::new(b);
                lhs = Lhs::integer(b, bucket_text.as_str());
            }
            Source::UnitId => lhs = User::lhs_of(user.unit_id(&c.id_type)),
            Source::TargetApp => lhs = User::lhs_of(self.rs.app_id.as_ref()),
            Source::ExperimentGroup(index) => {
                let group = match index {
                    Some(i) => self.eval_nested_group(*i),
                    None => None,
                };
                let dv = group.map(DynValue::from_str_value);
                let l = User::lhs_of(dv.as_ref());
                let rs = self.rs;
                let result = c.check.apply(&l, &|list, key| rs.in_id_list(list, key));
                if self.tracing() {
                    self.trace_condition(c, &l, result);
                }
                return Some(result);
            }
        }
        let rs = self.rs;
        let result = c.check.apply(&lhs, &|list, key| rs.in_id_list(list, key));
        if self.tracing() {
            self.trace_condition(c, &lhs, result);
        }
        Some(result)
    }

    fn eval_nested_gate(
        &mut self,
        index: Option<u32>,
        name: &'r str,
        negate: bool,
        is_segment: bool,
    ) -> Option<bool> {
        let label = if negate { "fail_gate" } else { "pass_gate" };
        let (value, rule_id) = match index {
            None => {
                self.note(|| format!("    {label} '{name}': gate does not exist, so false"));
                (false, "")
            }
            Some(i) => {
                let node = (0u8, i);
                if let Some(m) = self.memo.iter().find(|m| m.node == node) {
                    // As in Statsig's core: a memoised gate adds only its own
                    // exposure, not its nested ones again (this also keeps
                    // exposure lists linear in the ruleset size).
                    (m.value, m.rule_id)
                } else {
                    if !self.enter() {
                        return None;
                    }
                    let out = self.eval_spec(&self.rs.gates[i as usize], "gate");
                    self.depth -= 1;
                    if out.unsupported {
                        return None;
                    }
                    self.memo.push(Memo {
                        node,
                        value: out.bool_value,
                        rule_id: out.rule_id,
                        group_name: out.group_name,
                    });
                    (out.bool_value, out.rule_id)
                }
            }
        };
        if !is_segment && !rule_id.is_empty() {
            self.exposures.push(SecondaryExposure {
                gate: name,
                gate_value: value,
                rule_id,
            });
        }
        let result = value != negate;
        if self.tracing() && index.is_some() {
            self.note(|| {
                format!("    {label} '{name}': gate is {value} (rule '{rule_id}'), so {result}")
            });
        }
        Some(result)
    }

    /// The group name the user gets in experiment `i` (memoised).
    fn eval_nested_group(&mut self, i: u32) -> Option<&'r str> {
        let node = (1u8, i);
        if let Some(m) = self.memo.iter().find(|m| m.node == node) {
            return m.group_name;
        }
        if !self.enter() {
            return None;
        }
        let out = self.eval_spec(&self.rs.configs[i as usize], "experiment");
        self.depth -= 1;
        self.memo.push(Memo {
            node,
            value: out.bool_value,
            rule_id: out.rule_id,
            group_name: out.group_name,
        });
        out.group_name
    }

    fn trace_condition(&mut self, c: &CCondition, lhs: &Lhs<'_>, result: bool) {
        let raw = &c.raw;
        let mut s = format!("    {}", raw.condition_type);
        if let Some(f) = &raw.field {
            let _ = write!(s, " '{f}'");
        }
        if matches!(c.source, Source::UnitId | Source::UserBucket(_)) {
            let _ = write!(s, " ({})", raw.id_type);
        }
        let _ = write!(
            s,
            " = {} {} {}: {}",
            describe(lhs),
            raw.operator.as_deref().unwrap_or("?"),
            short_json(&raw.target_value),
            result
        );
        self.note(|| s);
    }
}

fn describe(l: &Lhs<'_>) -> String {
    if let Some(j) = l.json {
        return short_json(j);
    }
    match (l.string, l.int, l.is_null) {
        (Some(s), _, _) => format!("{s:?}"),
        (None, Some(i), _) => i.to_string(),
        (None, None, true) => "(missing)".into(),
        _ => "(no value)".into(),
    }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
