//! Entity files for `flagraft commit`: JSON or YAML, holding
//!
//! * one entity: `{kind, name, body}`;
//! * a list of entities: `[{kind, name, body}, ...]`, or `{entities: [...]}`;
//! * a whole `download_config_specs` document (v1 or v2; recognised by its
//!   `feature_gates` / `dynamic_configs` / `layer_configs` sections).
//!
//! `kind` is one of the store's kinds (`gate`, `config`, `layer`, `id_list`,
//! `setting`) or a friendlier alias: `feature_gate`, `segment`, `holdout`
//! (gates), `dynamic_config`, `experiment`, `autotune` (configs). `body` is
//! the DCS spec object without its `name` (a `name` equal to the entity's
//! is dropped; a different one is an error). An experiment joins a layer
//! with the body field `"__layer": "<layer name>"`.

use anyhow::{anyhow, bail, Context, Result};
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest entity file read.
const MAX_FILE_BYTES: u64 = 64 << 20;

pub fn parse_kind(kind: &str) -> Option<EntityKind> {
    EntityKind::parse(kind).or(match kind {
        "feature_gate" | "segment" | "holdout" => Some(EntityKind::Gate),
        "dynamic_config" | "experiment" | "autotune" => Some(EntityKind::Config),
        "layer_config" => Some(EntityKind::Layer),
        _ => None,
    })
}

/// `KIND/NAME` as on the command line.
pub fn parse_key(s: &str) -> Result<EntityKey> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("'{s}': expected KIND/NAME, e.g. gate/new_checkout"))?;
    let kind = parse_kind(kind).ok_or_else(|| {
        anyhow!("'{s}': unknown kind '{kind}' (gate, config, layer, id_list, setting)")
    })?;
    if name.is_empty() {
        bail!("'{s}': the name is empty");
    }
    Ok(EntityKey::new(kind, name))
}

fn read_document(path: &Path) -> Result<Value> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("{}: larger than {MAX_FILE_BYTES} bytes", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))
    } else {
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))
    }
}

fn is_dcs(doc: &serde_json::Map<String, Value>) -> bool {
    ["feature_gates", "dynamic_configs", "layer_configs"]
        .iter()
        .any(|k| doc.contains_key(*k))
}

fn entity(v: &Value, where_: &str) -> Result<Entity> {
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow!("{where_}: expected an object {{kind, name, body}}"))?;
    let kind_s = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{where_}: 'kind' (a string) is required"))?;
    let kind = parse_kind(kind_s).ok_or_else(|| {
        anyhow!("{where_}: unknown kind '{kind_s}' (gate, config, layer, id_list, setting)")
    })?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("{where_}: 'name' (a non-empty string) is required"))?;
    let mut body = obj
        .get("body")
        .cloned()
        .ok_or_else(|| anyhow!("{where_}: 'body' is required"))?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "kind" | "name" | "body"))
    {
        bail!("{where_}: unknown field '{extra}' (an entity has kind, name and body)");
    }
    if matches!(
        kind,
        EntityKind::Gate | EntityKind::Config | EntityKind::Layer
    ) {
        if let Some(b) = body.as_object_mut() {
            match b.get("name") {
                Some(Value::String(n)) if n == name => {
                    b.remove("name");
                }
                Some(other) => {
                    bail!("{where_}: body name {other} differs from the entity name '{name}'")
                }
                None => {}
            }
        }
    }
    Ok(Entity {
        key: EntityKey::new(kind, name),
        body,
    })
}

/// The entities of one file.
pub fn entities_of(path: &Path) -> Result<Vec<Entity>> {
    let doc = read_document(path)?;
    let shown = path.display().to_string();
    match &doc {
        Value::Object(o) if is_dcs(o) => {
            let bytes = serde_json::to_vec(&doc)?;
            flagraft_client::entities_from_dcs(&bytes)
                .map_err(|e| anyhow!("{shown}: {}", e.to_string().replace('\n', "; ")))
        }
        Value::Object(o) if o.contains_key("entities") => match o.get("entities") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| entity(v, &format!("{shown}: entities[{i}]")))
                .collect(),
            _ => bail!("{shown}: 'entities' must be a list"),
        },
        Value::Object(_) => Ok(vec![entity(&doc, &shown)?]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| entity(v, &format!("{shown}: [{i}]")))
            .collect(),
        _ => bail!("{shown}: expected an entity, a list of entities or a DCS document"),
    }
}

/// The entities of every file; an entity defined twice is an error.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<Entity>> {
    let mut all: BTreeMap<EntityKey, (String, Entity)> = BTreeMap::new();
    for p in paths {
        let p = p.as_ref();
        for e in entities_of(p)? {
            let shown = p.display().to_string();
            if let Some((first, _)) = all.get(&e.key) {
                bail!("{} is defined twice ({first} and {shown})", e.key);
            }
            all.insert(e.key.clone(), (shown, e));
        }
    }
    Ok(all.into_values().map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn every_file_form_is_read() {
        let d = tempfile::tempdir().unwrap();
        let one = write(
            d.path(),
            "one.json",
            r#"{"kind": "feature_gate", "name": "g", "body": {"name": "g", "type": "feature_gate"}}"#,
        );
        let list = write(
            d.path(),
            "list.yaml",
            "- kind: experiment\n  name: e\n  body: {type: dynamic_config, __layer: l}\n- kind: layer\n  name: l\n  body: {type: dynamic_config}\n",
        );
        let wrapped = write(
            d.path(),
            "w.yml",
            "entities:\n  - {kind: segment, name: 'segment:beta', body: {type: feature_gate}}\n",
        );
        let dcs = write(
            d.path(),
            "dcs.json",
            r#"{"feature_gates": [{"name": "d", "type": "feature_gate", "salt": "s", "enabled": true, "defaultValue": false, "rules": [], "idType": "userID", "entity": "feature_gate"}], "dynamic_configs": [], "layer_configs": []}"#,
        );
        let got = load(&[one, list, wrapped, dcs]).unwrap();
        let keys: Vec<String> = got.iter().map(|e| e.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "gate 'd'",
                "gate 'g'",
                "gate 'segment:beta'",
                "config 'e'",
                "layer 'l'"
            ]
        );
        let g = got.iter().find(|e| e.key.name == "g").unwrap();
        assert_eq!(
            g.body,
            json!({"type": "feature_gate"}),
            "the name is dropped"
        );
        let e = got.iter().find(|e| e.key.name == "e").unwrap();
        assert_eq!(e.body["__layer"], json!("l"));
    }

    #[test]
    fn mistakes_are_named() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#"{"kind": "flag", "name": "g", "body": {}}"#,
                "unknown kind 'flag'",
            ),
            (r#"{"kind": "gate", "body": {}}"#, "'name'"),
            (r#"{"kind": "gate", "name": "g"}"#, "'body' is required"),
            (
                r#"{"kind": "gate", "name": "g", "body": {}, "x": 1}"#,
                "unknown field 'x'",
            ),
            (
                r#"{"kind": "gate", "name": "g", "body": {"name": "h"}}"#,
                "differs",
            ),
            (r#"[1]"#, "[0]: expected an object"),
            (r#"{"entities": 3}"#, "must be a list"),
            (r#"nope"#, "not valid JSON"),
            (r#"3"#, "expected an entity"),
        ];
        for (text, want) in cases {
            let p = write(d.path(), "f.json", text);
            let err = load(&[p]).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let a = write(
            d.path(),
            "a.json",
            r#"{"kind": "gate", "name": "g", "body": {}}"#,
        );
        let b = write(
            d.path(),
            "b.json",
            r#"{"kind": "gate", "name": "g", "body": {}}"#,
        );
        assert!(load(&[a, b])
            .unwrap_err()
            .to_string()
            .contains("defined twice"));
        assert!(load(&[d.path().join("missing.json")]).is_err());
    }

    #[test]
    fn keys_on_the_command_line() {
        assert_eq!(
            parse_key("experiment/checkout").unwrap(),
            EntityKey::new(EntityKind::Config, "checkout")
        );
        assert_eq!(
            parse_key("gate/segment:beta").unwrap(),
            EntityKey::new(EntityKind::Gate, "segment:beta")
        );
        assert!(parse_key("gate").is_err());
        assert!(parse_key("nope/x").is_err());
        assert!(parse_key("gate/").is_err());
    }
}
