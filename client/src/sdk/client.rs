//! The SDK handle: synchronous, lock-free evaluation against the latest
//! applied ruleset, with overrides first.

use super::builder::ClientBuilder;
use super::overrides::{OverrideKind, OverrideValue, Overrides};
use super::shared::{Health, Shared, Update};
use super::state::{RulesetState, StateSource};
use crate::digest::RulesetDigest;
use crate::entity::Entity;
use crate::eval::{ConfigResult, Reason};
use crate::user::{IdType, User};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Why an evaluation returned what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalSource {
    /// A local override.
    Override,
    /// The rules.
    Rules,
    /// The rules have no such entity (code default).
    Unrecognized,
    /// The rules use something this evaluator does not support.
    Unsupported,
}

/// A gate's evaluation (owned: it outlives the ruleset version it came from).
#[derive(Clone, Debug, PartialEq)]
pub struct GateEvaluation {
    pub name: String,
    pub value: bool,
    pub rule_id: String,
    pub group_name: Option<String>,
    pub id_type: String,
    pub source: EvalSource,
    /// The ruleset version evaluated against.
    pub ruleset_version: u64,
}

/// A dynamic config's, experiment's or layer's evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEvaluation {
    pub name: String,
    pub value: serde_json::Value,
    pub rule_id: String,
    pub group_name: Option<String>,
    pub id_type: String,
    /// For layers: the experiment the user is allocated to.
    pub allocated_experiment: Option<String>,
    pub source: EvalSource,
    pub ruleset_version: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("local rules: {0}")]
    LocalRules(String),
    #[error("version {wanted} not reached within {timeout:?} (at {current})")]
    Timeout {
        wanted: u64,
        current: u64,
        timeout: Duration,
    },
    #[error("not in local mode")]
    NotLocal,
    #[error("the client was shut down")]
    Closed,
}

/// A flagraft SDK client. Cheap to clone; the background connection stops
/// when the last clone is dropped (or on [`Client::shutdown`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    pub shutdown: watch::Sender<bool>,
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub local: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn user_id(user: &User) -> &str {
    user.unit_id_str(&IdType::UserId)
}

fn source_of(reason: Reason) -> EvalSource {
    match reason {
        Reason::Recognized => EvalSource::Rules,
        Reason::Unrecognized => EvalSource::Unrecognized,
        Reason::Unsupported | Reason::DepthLimitExceeded => EvalSource::Unsupported,
    }
}

fn config_eval(name: &str, r: ConfigResult<'_>, version: u64) -> ConfigEvaluation {
    ConfigEvaluation {
        name: name.to_string(),
        value: r.value.clone(),
        rule_id: r.rule_id.to_string(),
        group_name: r.group_name.map(str::to_string),
        id_type: r.id_type.to_string(),
        allocated_experiment: r.allocated_experiment.map(str::to_string),
        source: source_of(r.reason),
        ruleset_version: version,
    }
}

fn overridden(name: &str, value: serde_json::Value, version: u64) -> ConfigEvaluation {
    ConfigEvaluation {
        name: name.to_string(),
        value,
        rule_id: "override".to_string(),
        group_name: None,
        id_type: "userID".to_string(),
        allocated_experiment: None,
        source: EvalSource::Override,
        ruleset_version: version,
    }
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Client {
        Client {
            inner: Arc::new(inner),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub fn check_gate(&self, user: &User, name: &str) -> bool {
        self.get_gate(user, name).value
    }

    pub fn get_gate(&self, user: &User, name: &str) -> GateEvaluation {
        let state = self.shared().state.load();
        if let Some(v) = self.override_for(OverrideKind::Gate, name, user) {
            let value = match v {
                OverrideValue::Gate(b) => b,
                OverrideValue::Json(j) => j.as_bool().unwrap_or(false),
            };
            return GateEvaluation {
                name: name.to_string(),
                value,
                rule_id: "override".to_string(),
                group_name: None,
                id_type: "userID".to_string(),
                source: EvalSource::Override,
                ruleset_version: state.version,
            };
        }
        let r = state.compiled().check_gate(user, name, &self.shared().eval);
        GateEvaluation {
            name: name.to_string(),
            value: r.value,
            rule_id: r.rule_id.to_string(),
            group_name: r.group_name.map(str::to_string),
            id_type: r.id_type.to_string(),
            source: source_of(r.reason),
            ruleset_version: state.version,
        }
    }

    pub fn get_config(&self, user: &User, name: &str) -> ConfigEvaluation {
        self.eval_config(OverrideKind::Config, user, name)
    }

    pub fn get_experiment(&self, user: &User, name: &str) -> ConfigEvaluation {
        self.eval_config(OverrideKind::Experiment, user, name)
    }

    pub fn get_layer(&self, user: &User, name: &str) -> ConfigEvaluation {
        self.eval_config(OverrideKind::Layer, user, name)
    }

    fn eval_config(&self, kind: OverrideKind, user: &User, name: &str) -> ConfigEvaluation {
        let state = self.shared().state.load();
        if let Some(v) = self.override_for(kind, name, user) {
            let value = match v {
                OverrideValue::Json(j) => j,
                OverrideValue::Gate(b) => serde_json::Value::Bool(b),
            };
            return overridden(name, value, state.version);
        }
        let opts = &self.shared().eval;
        let r = match kind {
            OverrideKind::Layer => state.compiled().get_layer(user, name, opts),
            OverrideKind::Experiment => state.compiled().get_experiment(user, name, opts),
            OverrideKind::Config | OverrideKind::Gate => {
                state.compiled().get_config(user, name, opts)
            }
        };
        config_eval(name, r, state.version)
    }

    fn override_for(&self, kind: OverrideKind, name: &str, user: &User) -> Option<OverrideValue> {
        let overrides = self.shared().overrides.load();
        overrides.lookup(kind, name, user_id(user)).cloned()
    }

    fn edit_overrides<R>(&self, edit: impl Fn(&mut Overrides) -> R) -> R {
        let mut result = None;
        self.shared().overrides.rcu(|current| {
            let mut next = Overrides::clone(current);
            result = Some(edit(&mut next));
            next
        });
        match result {
            Some(r) => r,
            // rcu runs the closure at least once.
            None => edit(&mut Overrides::default()),
        }
    }

    /// Override a gate for one user ID, or for everyone when `user_id` is None.
    pub fn override_gate(&self, name: &str, value: bool, user_id: Option<&str>) {
        self.edit_overrides(|o| {
            o.set(
                OverrideKind::Gate,
                name,
                user_id,
                OverrideValue::Gate(value),
            )
        });
    }

    pub fn override_config(&self, name: &str, value: serde_json::Value, user_id: Option<&str>) {
        self.set_json_override(OverrideKind::Config, name, value, user_id);
    }

    pub fn override_experiment(&self, name: &str, value: serde_json::Value, user_id: Option<&str>) {
        self.set_json_override(OverrideKind::Experiment, name, value, user_id);
    }

    pub fn override_layer(&self, name: &str, value: serde_json::Value, user_id: Option<&str>) {
        self.set_json_override(OverrideKind::Layer, name, value, user_id);
    }

    fn set_json_override(
        &self,
        kind: OverrideKind,
        name: &str,
        value: serde_json::Value,
        user_id: Option<&str>,
    ) {
        self.edit_overrides(|o| o.set(kind, name, user_id, OverrideValue::Json(value.clone())));
    }

    pub fn remove_override(&self, kind: OverrideKind, name: &str, user_id: Option<&str>) -> bool {
        self.edit_overrides(|o| o.remove(kind, name, user_id))
    }

    pub fn clear_overrides(&self) {
        self.shared()
            .overrides
            .store(Arc::new(Overrides::default()));
    }

    /// The client initialize response for `user` (a Statsig user JSON object)
    /// from the rules held now: what `POST /v1/initialize` on a node answers
    /// for the same version, user and options, byte for byte (when this
    /// client has no environment option), for bootstrapping client-side SDKs
    /// from a server-rendered page. Local overrides are not applied.
    pub fn client_initialize_response(
        &self,
        user: &serde_json::Value,
        options: &crate::gcir::GcirOptions,
    ) -> Result<crate::gcir::InitializeResponse, crate::gcir::ClientUserError> {
        use crate::gcir::{ClientMeta, ClientUser, ClientView};
        let user = ClientUser::from_json(user)?;
        let state = self.shared().state.load();
        let meta = ClientMeta::new(state.compiled(), state.entities());
        let view = ClientView {
            ruleset: state.compiled(),
            meta: &meta,
            time_ms: state.commit_time_ms,
            eval: &self.shared().eval,
        };
        Ok(crate::gcir::client_initialize_response(
            &view, &user, options,
        ))
    }

    /// The version of the rules evaluations use now.
    pub fn version(&self) -> u64 {
        self.shared().state.load().version
    }

    pub fn digest(&self) -> RulesetDigest {
        self.shared().state.load().digest
    }

    /// The current rules (an immutable version; holding it does not block updates).
    pub fn ruleset(&self) -> Arc<RulesetState> {
        self.shared().state.load_full()
    }

    /// Wait until the client holds at least version `v` (read-your-writes after a commit).
    pub async fn wait_for_version(&self, v: u64, timeout: Duration) -> Result<u64, ClientError> {
        let mut rx = self.shared().version.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|have| *have >= v).await.map(|have| *have)
        })
        .await;
        match reached {
            Ok(Ok(have)) => Ok(have),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout {
                wanted: v,
                current: self.version(),
                timeout,
            }),
        }
    }

    /// Every version applied after this call, in order (a slow receiver gets `Lagged`).
    /// A version that `wait_for_version` already returned is not repeated.
    pub fn updates(&self) -> broadcast::Receiver<Update> {
        self.shared().updates.subscribe()
    }

    /// The held version, as a watch.
    pub fn version_watch(&self) -> watch::Receiver<u64> {
        self.shared().version.subscribe()
    }

    pub fn health(&self) -> Health {
        self.shared().health()
    }

    /// Local mode only: replace the rules (e.g. in tests).
    pub fn set_local_rules(&self, entities: Vec<Entity>) -> Result<(), ClientError> {
        if !self.inner.local {
            return Err(ClientError::NotLocal);
        }
        let next = self.version() + 1;
        let state = RulesetState::from_entities(next, 0, StateSource::Local, entities, None)
            .map_err(|e| ClientError::LocalRules(e.to_string()))?;
        self.shared().install(state, None);
        Ok(())
    }

    /// Stop the background connection and wait for it to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<_> = {
            let mut t = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.drain(..).collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}
