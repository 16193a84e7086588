//! The ~2.4 KiB gate the store's measuring examples and the apply bench commit.

/// Gate `gate-<i>` with a ~2.4 KiB body (16 rules) marked with `rev`.
pub fn gate(i: u64, rev: u64) -> flagraft_client::entity::Entity {
    let rules: Vec<serde_json::Value> = (0..16)
        .map(|r| {
            serde_json::json!({
                "name": format!("rule-{r}"), "passPercentage": 50, "id": format!("{rev}-{r}"),
                "conditions": [{"type": "user_field", "field": "country", "operator": "any",
                                "targetValue": ["US", "CA", "GB", "DE"]}],
            })
        })
        .collect();
    flagraft_client::entity::Entity {
        key: flagraft_client::entity::EntityKey::new(
            flagraft_client::entity::EntityKind::Gate,
            format!("gate-{i}"),
        ),
        body: serde_json::json!({"name": format!("gate-{rev}"), "enabled": true, "rules": rules, "rev": rev}),
    }
}
