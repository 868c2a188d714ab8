//! Identifiers: UUID ids (threads, messages, catalog records) and
//! validated names (tenants, resources, agents).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (from storage).
            #[must_use]
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| DomainError::new($field, format!("`{}` is not a UUID", truncate(s))))
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation thread.
    ThreadId,
    "thread_id"
);
uuid_id!(
    /// Identifies one message.
    MessageId,
    "message_id"
);
uuid_id!(
    /// Identifies a model in the catalog.
    ModelId,
    "model_id"
);
uuid_id!(
    /// Identifies an agent in the catalog (its `name` is the [`AgentName`] threads use).
    AgentId,
    "agent_id"
);
uuid_id!(
    /// Identifies a tool in the catalog.
    ToolId,
    "tool_id"
);
uuid_id!(
    /// Identifies a workflow.
    WorkflowId,
    "workflow_id"
);
uuid_id!(
    /// Identifies a step of a workflow.
    StepId,
    "step_id"
);

uuid_id!(
    /// Identifies a retention policy.
    PolicyId,
    "policy_id"
);
uuid_id!(
    /// Identifies a retention run or an erasure (its receipt).
    RunId,
    "run_id"
);
uuid_id!(
    /// Identifies an evaluation run (observability).
    EvalRunId,
    "id"
);

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `value`: 1 to `MAX_LEN` bytes of ASCII letters, digits,
            /// `-`, `_`, `.`, `:` and `@`.
            ///
            /// # Errors
            /// A [`DomainError`] naming the field when the value is empty, too long,
            /// or holds other characters.
            pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                validate_name($field, &value, $max)?;
                Ok(Self(value))
            }

            /// The id as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// The tenant that owns data; every read and write is scoped by it.
    TenantId,
    "tenant",
    64
);
name_id!(
    /// The name of the agent a thread or a piece of state belongs to (the
    /// wire calls it `agent_id`); a catalog agent with this name is
    /// identified by [`AgentId`].
    AgentName,
    "agent_id",
    128
);
name_id!(
    /// The user or entity that owns a thread (Mastra's "resource").
    ResourceId,
    "resource_id",
    256
);

impl TenantId {
    /// The tenant used when a request names none.
    #[must_use]
    pub fn default_tenant() -> Self {
        Self("default".to_owned())
    }
}

fn validate_name(field: &'static str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(DomainError::new(field, format!("must be at most {max} bytes")));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))) {
        return Err(DomainError::new(
            field,
            format!("character {c:?} is not allowed (use ASCII letters, digits, - _ . : @)"),
        ));
    }
    Ok(())
}

pub(crate) fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(64).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_and_reject() {
        let check = |v: &str, ok: bool| assert_eq!(TenantId::parse(v).is_ok(), ok, "{v:?}");
        check("acme", true);
        check("acme-eu_1.prod:x@y", true);
        check("", false);
        check("has space", false);
        check("semi;colon", false);
        check(&"a".repeat(64), true);
        check(&"a".repeat(65), false);
        check("ünicode", false);
    }

    #[test]
    fn uuid_ids_round_trip_and_are_time_ordered() {
        let a = ThreadId::new();
        let b = ThreadId::new();
        assert!(a < b, "UUIDv7 ids are ordered by creation");
        assert_eq!(a.to_string().parse::<ThreadId>().ok(), Some(a));
        assert!("not-a-uuid".parse::<ThreadId>().is_err());
    }
}
