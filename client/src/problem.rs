//! Problems found in a ruleset, each naming the entity, the rule and the
//! field, so an operator can find and fix them.

use crate::entity::EntityKey;
use std::fmt;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The ruleset still evaluates exactly as Statsig's core would (e.g. an
    /// unknown operator evaluates as "Unsupported"), but it is probably not
    /// what the author meant.
    Warning,
    /// The ruleset is malformed or inconsistent; strict compilation refuses it.
    Error,
}

/// One problem in a ruleset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValidationError {
    pub severity: Severity,
    /// The entity, when the problem is inside one.
    pub entity: Option<EntityKey>,
    /// The rule id (or `#index` when the rule has no usable id).
    pub rule: Option<String>,
    /// JSON path of the offending field inside the entity body, e.g.
    /// `rules[1].conditions[0].operator`.
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn error(
        entity: Option<&EntityKey>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            severity: Severity::Error,
            entity: entity.cloned(),
            rule: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        entity: Option<&EntityKey>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            severity: Severity::Warning,
            ..ValidationError::error(entity, field, message)
        }
    }

    pub fn in_rule(mut self, rule: Option<&str>) -> Self {
        self.rule = rule.map(str::to_owned);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "error: ",
        })?;
        if let Some(e) = &self.entity {
            write!(f, "{e}: ")?;
        }
        if let Some(r) = &self.rule {
            write!(f, "rule '{r}': ")?;
        }
        if !self.field.is_empty() {
            write!(f, "field {}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

/// All problems of a ruleset that strict compilation refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesetErrors(pub Vec<ValidationError>);

impl fmt::Display for RulesetErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.0.iter().filter(|e| e.is_error()).count();
        write!(f, "invalid ruleset ({errors} error(s))")?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesetErrors {}
