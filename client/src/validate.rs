//! Cross-entity checks: references to gates, delegates and layers that do
//! not exist, and dependency cycles.
//!
//! Dangling references evaluate as Statsig documents (an unknown gate is
//! `false`, an unknown delegate makes the rule an ordinary rule) and are
//! reported as warnings. A dependency cycle can only ever end at the
//! nesting depth limit, so it is an error that strict compilation refuses.

use crate::compile::{CSpec, CompiledRuleset, Source};
use crate::entity::{EntityKey, EntityKind};
use crate::model::Spec;
use crate::problem::ValidationError;
use std::ops::ControlFlow;

/// A node of the dependency graph: (0 = gate, 1 = config, 2 = layer, index).
type Node = (u8, u32);

pub(crate) fn check_references(
    rs: &CompiledRuleset,
    gates: &[Spec],
    configs: &[Spec],
    layers: &[Spec],
    problems: &mut Vec<ValidationError>,
) {
    let groups: [(EntityKind, &[Spec]); 3] = [
        (EntityKind::Gate, gates),
        (EntityKind::Config, configs),
        (EntityKind::Layer, layers),
    ];
    for (kind, specs) in groups {
        for spec in specs {
            let key = EntityKey::new(kind, spec.name.clone());
            for (ri, rule) in spec.rules.iter().enumerate() {
                if let Some(d) = &rule.config_delegate {
                    if !rs.config_index.contains_key(d.as_str()) {
                        problems.push(
                            ValidationError::warning(
                                Some(&key),
                                format!("rules[{ri}].configDelegate"),
                                format!("delegates to dynamic config '{d}', which does not exist (the rule acts as an ordinary rule)"),
                            )
                            .in_rule(Some(&rule.id)),
                        );
                    }
                }
                for (ci, c) in rule.conditions.iter().enumerate() {
                    let path = format!("rules[{ri}].conditions[{ci}]");
                    match c.condition_type.as_str() {
                        "pass_gate" | "fail_gate" => {
                            if let Some(g) = c.target_value.as_str() {
                                if !rs.gate_index.contains_key(g) {
                                    problems.push(
                                        ValidationError::warning(
                                            Some(&key),
                                            format!("{path}.targetValue"),
                                            format!(
                                                "{} names gate '{g}', which does not exist (evaluates as false)",
                                                c.condition_type
                                            ),
                                        )
                                        .in_rule(Some(&rule.id)),
                                    );
                                }
                            }
                        }
                        "experiment_group" => {
                            let f = c.field.as_deref().unwrap_or("");
                            if !rs.config_index.contains_key(f) {
                                problems.push(
                                    ValidationError::warning(
                                        Some(&key),
                                        format!("{path}.field"),
                                        format!("names experiment '{f}', which does not exist (no group)"),
                                    )
                                    .in_rule(Some(&rule.id)),
                                );
                            }
                        }
                        _ => {}
                    }
                    if matches!(
                        c.operator.as_deref(),
                        Some("in_segment_list" | "not_in_segment_list")
                    ) {
                        if let Some(list) = c.target_value.as_str() {
                            if !rs.has_id_list(list) {
                                problems.push(
                                    ValidationError::warning(
                                        Some(&key),
                                        format!("{path}.targetValue"),
                                        format!("ID list '{list}' has no members loaded"),
                                    )
                                    .in_rule(Some(&rule.id)),
                                );
                            }
                        }
                    }
                }
            }
            if let Some(layer) = &spec.layer {
                if !rs.layer_index.contains_key(layer.as_str()) {
                    problems.push(ValidationError::warning(
                        Some(&key),
                        crate::model::LAYER_FIELD,
                        format!("belongs to layer '{layer}', which does not exist"),
                    ));
                }
            }
        }
    }
    check_cycles(rs, problems);
}

fn edges(rs: &CompiledRuleset, (kind, i): Node) -> Vec<Node> {
    let spec = match kind {
        0 => &rs.gates[i as usize],
        1 => &rs.configs[i as usize],
        _ => &rs.layers[i as usize],
    };
    spec_edges(spec)
}

/// The specs `spec` evaluates: gates it passes through (kind 0) and the
/// configs it delegates to or reads a group of (kind 1), by slot. The edges of
/// the cycle check here and of the incremental compile's.
pub(crate) fn spec_edges(spec: &CSpec) -> Vec<Node> {
    let mut out = Vec::new();
    for r in spec.rules.iter() {
        if let Some(d) = r.delegate {
            out.push((1, d));
        }
        for c in r.conditions.iter() {
            match c.source {
                Source::Gate { index: Some(g), .. } => out.push((0, g)),
                Source::ExperimentGroup(Some(e)) => out.push((1, e)),
                _ => {}
            }
        }
    }
    out
}

fn node_name(rs: &CompiledRuleset, (kind, i): Node) -> EntityKey {
    match kind {
        0 => EntityKey::new(EntityKind::Gate, &*rs.gates[i as usize].name),
        1 => EntityKey::new(EntityKind::Config, &*rs.configs[i as usize].name),
        _ => EntityKey::new(EntityKind::Layer, &*rs.layers[i as usize].name),
    }
}

/// Report every dependency cycle once.
fn check_cycles(rs: &CompiledRuleset, problems: &mut Vec<ValidationError>) {
    let all = (0..rs.gates.len() as u32)
        .map(|i| (0, i))
        .chain((0..rs.configs.len() as u32).map(|i| (1, i)))
        .chain((0..rs.layers.len() as u32).map(|i| (2, i)));
    walk_cycles(
        all,
        |n| edges(rs, n),
        |path, next| {
            let start = path.iter().position(|n| *n == next).unwrap_or(0);
            let names: Vec<String> = path[start..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|n| node_name(rs, *n).to_string())
                .collect();
            let from = path.last().copied().unwrap_or(next);
            problems.push(ValidationError::error(
                Some(&node_name(rs, from)),
                "rules",
                format!(
                    "dependency cycle: {} (evaluation would stop at the nesting limit of {})",
                    names.join(" -> "),
                    crate::limits::MAX_NESTING_DEPTH
                ),
            ));
            ControlFlow::Continue(())
        },
    );
}

/// Depth-first search over `edges` from each of `roots` (iteratively, so deep
/// graphs cannot overflow the stack), visiting every node once. For each edge
/// back into the current path it calls `on_cycle(path, next)`, where `path`
/// runs from the root to the node whose edge leads to `next`; `Break` stops
/// the search. Shared by validation (every cycle) and the incremental compile
/// (is there one?).
pub(crate) fn walk_cycles(
    roots: impl IntoIterator<Item = Node>,
    edges: impl Fn(Node) -> Vec<Node>,
    mut on_cycle: impl FnMut(&[Node], Node) -> ControlFlow<()>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        Grey,
        Black,
    }
    let mut color: std::collections::HashMap<Node, Color> = std::collections::HashMap::new();
    for root in roots {
        if color.contains_key(&root) {
            continue;
        }
        color.insert(root, Color::Grey);
        let mut stack: Vec<(Node, Vec<Node>)> = vec![(root, edges(root))];
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match color.get(&next) {
                    None => {
                        color.insert(next, Color::Grey);
                        let e = edges(next);
                        stack.push((next, e));
                    }
                    Some(Color::Grey) => {
                        let path: Vec<Node> = stack.iter().map(|(n, _)| *n).collect();
                        if on_cycle(&path, next).is_break() {
                            return;
                        }
                    }
                    Some(Color::Black) => {}
                },
                None => {
                    color.insert(node, Color::Black);
                    stack.pop();
                }
            }
        }
    }
}

/// Every problem of a ruleset (errors and warnings), each naming entity,
/// rule and field. Empty when the ruleset is clean.
pub fn validate<'a>(
    entities: impl IntoIterator<Item = &'a crate::entity::Entity>,
) -> Vec<ValidationError> {
    CompiledRuleset::check_lenient(entities)
}
