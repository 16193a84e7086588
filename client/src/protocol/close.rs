//! Stable close codes (4000 range) and what a client does on each.

/// Why a node closed a stream. The numeric values are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    BadMessage,
    Unauthorized,
    KeyRevoked,
    UnsupportedProtocol,
    TooSlow,
    ShuttingDown,
    MaxAge,
    NodeBehind,
    Timeout,
    ProjectDeleted,
    Internal,
    Overloaded,
}

/// What a client should do after a close with a given code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Reconnect right away (small jitter), resuming by version.
    ReconnectNow,
    /// Reconnect right away, preferably to another endpoint.
    ReconnectElsewhere,
    /// Reconnect with exponential backoff.
    Backoff,
    /// Keep retrying, but only at the maximum backoff (needs an operator).
    MaxBackoff,
    /// Stop: retrying cannot help.
    Stop,
}

impl CloseCode {
    pub const ALL: [CloseCode; 12] = [
        CloseCode::BadMessage,
        CloseCode::Unauthorized,
        CloseCode::KeyRevoked,
        CloseCode::UnsupportedProtocol,
        CloseCode::TooSlow,
        CloseCode::ShuttingDown,
        CloseCode::MaxAge,
        CloseCode::NodeBehind,
        CloseCode::Timeout,
        CloseCode::ProjectDeleted,
        CloseCode::Internal,
        CloseCode::Overloaded,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::BadMessage => 4000,
            CloseCode::Unauthorized => 4001,
            CloseCode::KeyRevoked => 4002,
            CloseCode::UnsupportedProtocol => 4003,
            CloseCode::TooSlow => 4004,
            CloseCode::ShuttingDown => 4005,
            CloseCode::MaxAge => 4006,
            CloseCode::NodeBehind => 4007,
            CloseCode::Timeout => 4008,
            CloseCode::ProjectDeleted => 4009,
            CloseCode::Internal => 4010,
            CloseCode::Overloaded => 4011,
        }
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The stable short name (used as the close frame's reason text).
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::BadMessage => "bad_message",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::KeyRevoked => "key_revoked",
            CloseCode::UnsupportedProtocol => "unsupported_protocol",
            CloseCode::TooSlow => "too_slow",
            CloseCode::ShuttingDown => "shutting_down",
            CloseCode::MaxAge => "max_age",
            CloseCode::NodeBehind => "node_behind",
            CloseCode::Timeout => "timeout",
            CloseCode::ProjectDeleted => "project_deleted",
            CloseCode::Internal => "internal",
            CloseCode::Overloaded => "overloaded",
        }
    }

    pub fn reaction(self) -> Reaction {
        match self {
            CloseCode::TooSlow | CloseCode::MaxAge => Reaction::ReconnectNow,
            CloseCode::ShuttingDown | CloseCode::NodeBehind => Reaction::ReconnectElsewhere,
            CloseCode::BadMessage
            | CloseCode::Timeout
            | CloseCode::Internal
            | CloseCode::Overloaded => Reaction::Backoff,
            CloseCode::Unauthorized | CloseCode::KeyRevoked | CloseCode::ProjectDeleted => {
                Reaction::MaxBackoff
            }
            CloseCode::UnsupportedProtocol => Reaction::Stop,
        }
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            assert!((4000..5000).contains(&c.code()));
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(1000), None);
        assert_eq!(CloseCode::TooSlow.code(), 4004);
    }
}
