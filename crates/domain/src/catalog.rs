//! The catalog's records: models, agents, tools and settings,
//! each owned by a tenant.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ids::truncate;
use crate::query::{CatalogRecord, FieldValue};
use crate::thread::json_kind;
use crate::{AgentId, AgentName, DomainError, ModelId, TenantId, Timestamp, ToolId, WorkingMemoryOptions, parse_model};

/// The thread metadata key under which a thread created for a configured
/// agent carries that agent's [`MemoryOptions`] (unless the caller set the
/// key itself).
pub const MEMORY_METADATA_KEY: &str = "_memory";

/// Largest system prompt, in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Largest tool description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Largest JSON document in the catalog (tool parameters, setting value), in bytes.
pub const MAX_CATALOG_JSON_BYTES: usize = 64 * 1024;
/// Most tools an agent may name.
pub const MAX_AGENT_TOOLS: usize = 64;

fn printable(field: &'static str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > max || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DomainError::new(
            field,
            format!("must be 1 to {max} printable ASCII characters without spaces, got `{}`", truncate(value)),
        ));
    }
    Ok(())
}

fn json_size(field: &'static str, v: &Value) -> Result<(), DomainError> {
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_CATALOG_JSON_BYTES {
        return Err(DomainError::new(field, format!("is {size} bytes, at most {MAX_CATALOG_JSON_BYTES} are accepted")));
    }
    Ok(())
}

/// A model as a caller describes it (create, or replace on update).
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    /// The provider's model name (`gpt-4o`), unique per tenant.
    pub name: String,
    /// `openai`, `anthropic`, … (printable ASCII, at most 64).
    pub provider: String,
    /// Context window, in tokens (at least 1).
    pub context_window: u32,
    /// Most output tokens (1 to `context_window`).
    pub max_output_tokens: u32,
    /// Price per million input tokens (finite, at least 0).
    pub input_price: f64,
    /// Price per million output tokens (finite, at least 0).
    pub output_price: f64,
    /// Whether this is the tenant's default model; at most one is.
    pub is_default: bool,
}

impl NewModel {
    /// Checks every field.
    ///
    /// # Errors
    /// [`DomainError`] naming the first unacceptable field.
    pub fn validate(&self) -> Result<(), DomainError> {
        parse_model(&self.name).map_err(|e| DomainError::new("name", e.reason))?;
        printable("provider", &self.provider, 64)?;
        if self.context_window == 0 {
            return Err(DomainError::new("context_window", "must be at least 1"));
        }
        if self.max_output_tokens == 0 || self.max_output_tokens > self.context_window {
            return Err(DomainError::new("max_output_tokens", "must be between 1 and context_window"));
        }
        for (field, price) in [("input_price", self.input_price), ("output_price", self.output_price)] {
            if !price.is_finite() || price < 0.0 {
                return Err(DomainError::new(field, "must be a finite number, at least 0"));
            }
        }
        Ok(())
    }
}

/// A model in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Time-ordered id.
    pub id: ModelId,
    /// Owner tenant.
    pub tenant: TenantId,
    /// What was configured.
    pub spec: NewModel,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change (including losing the default flag to another model).
    pub updated_at: Timestamp,
}

impl CatalogRecord for ModelConfig {
    fn record_id(&self) -> Uuid {
        self.id.as_uuid()
    }

    fn sort_value(&self, field: &str) -> Option<FieldValue> {
        let s = &self.spec;
        Some(match field {
            "name" => FieldValue::Text(s.name.clone()),
            "provider" => FieldValue::Text(s.provider.clone()),
            "context_window" => FieldValue::Integer(i64::from(s.context_window)),
            "max_output_tokens" => FieldValue::Integer(i64::from(s.max_output_tokens)),
            "input_price" => FieldValue::Float(s.input_price),
            "output_price" => FieldValue::Float(s.output_price),
            "is_default" => FieldValue::Bool(s.is_default),
            "created_at" => FieldValue::Timestamp(self.created_at),
            "updated_at" => FieldValue::Timestamp(self.updated_at),
            _ => return None,
        })
    }
}

/// Memory defaults of an agent, applied to threads created for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryOptions {
    /// How many recent messages to load by default (1 to 1000).
    pub last_n: Option<u32>,
    /// How many hits a search within the thread returns by default (1 to 100).
    pub top_k: Option<u32>,
    /// Token budget for assembled context (1 to 10,000,000).
    pub token_budget: Option<u32>,
    /// How the agent keeps working memory; `None`: the defaults of
    /// [`WorkingMemoryOptions`] apply. Read from the agent when working
    /// memory is used, never copied into threads.
    pub working_memory: Option<WorkingMemoryOptions>,
    /// How context is assembled: section priority and shares, recall,
    /// processors.
    pub context: Option<crate::ContextOptions>,
}

impl MemoryOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`DomainError`] on `memory.last_n`, `memory.top_k`, `memory.token_budget`
    /// or a `memory.working_memory.*` field.
    pub fn validate(&self) -> Result<(), DomainError> {
        for (field, value, max) in [
            ("memory.last_n", self.last_n, crate::MAX_PAGE_SIZE),
            ("memory.top_k", self.top_k, crate::MAX_TOP_K),
            ("memory.token_budget", self.token_budget, 10_000_000),
        ] {
            if let Some(v) = value
                && (v == 0 || v > max)
            {
                return Err(DomainError::new(field, format!("must be between 1 and {max}, got {v}")));
            }
        }
        if let Some(c) = &self.context {
            c.validate().map_err(|e| DomainError::new("memory.context", format!("{}: {}", e.field, e.reason)))?;
        }
        self.working_memory.as_ref().map_or(Ok(()), WorkingMemoryOptions::validate)
    }

    /// Whether none of the options a thread carries (under
    /// [`MEMORY_METADATA_KEY`]) is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.last_n.is_none() && self.top_k.is_none() && self.token_budget.is_none() && self.context.is_none()
    }

    /// The JSON object stored under [`MEMORY_METADATA_KEY`]: only the set options.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [("last_n", self.last_n), ("top_k", self.top_k), ("token_budget", self.token_budget)] {
            if let Some(v) = v {
                m.insert(k.to_owned(), Value::from(v));
            }
        }
        if let Some(c) = &self.context {
            m.insert("context".to_owned(), c.to_value());
        }
        Value::Object(m)
    }

    /// Reads the options a thread carries under [`MEMORY_METADATA_KEY`];
    /// entries that are absent, of the wrong type or out of range are ignored
    /// (callers may write that key themselves).
    #[must_use]
    pub fn from_metadata(metadata: &crate::Metadata) -> Self {
        let Some(Value::Object(m)) = metadata.as_map().get(MEMORY_METADATA_KEY) else {
            return Self::default();
        };
        let get = |k: &str, max: u32| {
            m.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).filter(|v| *v >= 1 && *v <= max)
        };
        Self {
            last_n: get("last_n", crate::MAX_PAGE_SIZE),
            top_k: get("top_k", crate::MAX_TOP_K),
            token_budget: get("token_budget", 10_000_000),
            working_memory: None,
            context: m.get("context").and_then(|c| crate::ContextOptions::from_value(c).ok()),
        }
    }
}

/// An agent as a caller describes it (create, or replace on update).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    /// Unique per tenant; threads name the agent by it (`agent_id`).
    pub name: AgentName,
    /// The model it uses; must be configured for the tenant.
    pub model_id: ModelId,
    /// System prompt (at most [`MAX_PROMPT_BYTES`]).
    pub system_prompt: String,
    /// Its tools, in order; each configured for the tenant, no repeats.
    pub tool_ids: Vec<ToolId>,
    /// Memory defaults for its threads.
    pub memory: MemoryOptions,
    /// How its workflow steps run when a step names no runner of its own
    /// (else `workflows.default_runner`).
    pub runner: Option<crate::RunnerSpec>,
}

impl NewAgent {
    /// Checks the fields that need no store.
    ///
    /// # Errors
    /// [`DomainError`] naming the first unacceptable field.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.system_prompt.len() > MAX_PROMPT_BYTES {
            return Err(DomainError::new("system_prompt", format!("must be at most {MAX_PROMPT_BYTES} bytes")));
        }
        crate::no_nul("system_prompt", &self.system_prompt)?;
        if self.tool_ids.len() > MAX_AGENT_TOOLS {
            return Err(DomainError::new("tool_ids", format!("at most {MAX_AGENT_TOOLS} tools")));
        }
        for (i, t) in self.tool_ids.iter().enumerate() {
            if self.tool_ids[..i].contains(t) {
                return Err(DomainError::new("tool_ids", format!("{t} is listed twice")));
            }
        }
        if let Some(r) = &self.runner {
            r.validate("runner")?;
        }
        self.memory.validate()
    }
}

/// An agent in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Time-ordered id.
    pub id: AgentId,
    /// Owner tenant.
    pub tenant: TenantId,
    /// What was configured.
    pub spec: NewAgent,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl CatalogRecord for AgentConfig {
    fn record_id(&self) -> Uuid {
        self.id.as_uuid()
    }

    fn sort_value(&self, field: &str) -> Option<FieldValue> {
        Some(match field {
            "name" => FieldValue::Text(self.spec.name.as_str().to_owned()),
            "created_at" => FieldValue::Timestamp(self.created_at),
            "updated_at" => FieldValue::Timestamp(self.updated_at),
            _ => return None,
        })
    }
}

/// A tool as a caller describes it (create, or replace on update).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTool {
    /// Function name: 1 to 64 ASCII letters, digits, `_` or `-`; unique per tenant.
    pub name: String,
    /// What it does (at most [`MAX_DESCRIPTION_BYTES`]).
    pub description: String,
    /// JSON Schema of its parameters: an object schema.
    pub parameters: Value,
}

impl NewTool {
    /// Checks the name, description and that `parameters` is a JSON object
    /// schema: `"type": "object"`, `properties` (if present) an object of
    /// schema objects, `required` (if present) an array of property names.
    ///
    /// # Errors
    /// [`DomainError`] naming the first unacceptable field.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(DomainError::new("name", "must be 1 to 64 ASCII letters, digits, _ or -"));
        }
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(DomainError::new("description", format!("must be at most {MAX_DESCRIPTION_BYTES} bytes")));
        }
        crate::no_nul("description", &self.description)?;
        validate_object_schema(&self.parameters)?;
        crate::no_nul_json("parameters", &self.parameters)
    }
}

fn validate_object_schema(schema: &Value) -> Result<(), DomainError> {
    let field = "parameters";
    let Value::Object(obj) = schema else {
        return Err(DomainError::new(field, format!("must be a JSON Schema object, got {}", json_kind(schema))));
    };
    json_size(field, schema)?;
    if obj.get("type") != Some(&Value::String("object".into())) {
        return Err(DomainError::new(field, "must be an object schema: `\"type\": \"object\"`"));
    }
    let props = match obj.get("properties") {
        None => None,
        Some(Value::Object(p)) => {
            if let Some((name, _)) = p.iter().find(|(_, v)| !v.is_object()) {
                return Err(DomainError::new(field, format!("properties.{}: must be a schema object", truncate(name))));
            }
            Some(p)
        }
        Some(other) => {
            return Err(DomainError::new(field, format!("properties: must be an object, got {}", json_kind(other))));
        }
    };
    match obj.get("required") {
        None => {}
        Some(Value::Array(names)) => {
            for n in names {
                let Some(name) = n.as_str() else {
                    return Err(DomainError::new(field, "required: must list property names"));
                };
                if !props.is_some_and(|p| p.contains_key(name)) {
                    return Err(DomainError::new(
                        field,
                        format!("required: `{}` is not in properties", truncate(name)),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(DomainError::new(field, format!("required: must be an array, got {}", json_kind(other))));
        }
    }
    Ok(())
}

/// A tool in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConfig {
    /// Time-ordered id.
    pub id: ToolId,
    /// Owner tenant.
    pub tenant: TenantId,
    /// What was configured.
    pub spec: NewTool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl CatalogRecord for ToolConfig {
    fn record_id(&self) -> Uuid {
        self.id.as_uuid()
    }

    fn sort_value(&self, field: &str) -> Option<FieldValue> {
        Some(match field {
            "name" => FieldValue::Text(self.spec.name.clone()),
            "created_at" => FieldValue::Timestamp(self.created_at),
            "updated_at" => FieldValue::Timestamp(self.updated_at),
            _ => return None,
        })
    }
}

/// A setting's category or key: 1 to 128 ASCII letters, digits, `-`, `_`,
/// `.`, `:` or `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettingName(String);

impl SettingName {
    /// Validates a category.
    ///
    /// # Errors
    /// [`DomainError`] on `category`.
    pub fn category(value: impl Into<String>) -> Result<Self, DomainError> {
        Self::parse("category", value.into())
    }

    /// Validates a key.
    ///
    /// # Errors
    /// [`DomainError`] on `key`.
    pub fn key(value: impl Into<String>) -> Result<Self, DomainError> {
        Self::parse("key", value.into())
    }

    fn parse(field: &'static str, value: String) -> Result<Self, DomainError> {
        if value.is_empty()
            || value.len() > 128
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
        {
            return Err(DomainError::new(field, "must be 1 to 128 ASCII letters, digits, - _ . : @"));
        }
        Ok(Self(value))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a setting value: any JSON of at most [`MAX_CATALOG_JSON_BYTES`],
/// without NUL ([`crate::no_nul_json`]).
///
/// # Errors
/// [`DomainError`] on `value`.
pub fn validate_setting_value(value: &Value) -> Result<(), DomainError> {
    json_size("value", value)?;
    crate::no_nul_json("value", value)
}

/// A stored setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Owner tenant.
    pub tenant: TenantId,
    /// Its category.
    pub category: SettingName,
    /// Its key within the category.
    pub key: SettingName,
    /// Any JSON.
    pub value: Value,
    /// Last write.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(parameters: Value) -> NewTool {
        NewTool { name: "lookup_order".into(), description: "finds an order".into(), parameters }
    }

    #[test]
    fn tool_parameters_must_be_an_object_schema() {
        let ok = |v: Value| assert!(tool(v.clone()).validate().is_ok(), "{v}");
        let bad = |v: Value| assert_eq!(tool(v.clone()).validate().map_err(|e| e.field), Err("parameters"), "{v}");
        ok(json!({"type": "object"}));
        ok(json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}));
        bad(json!("object"));
        bad(json!({"type": "string"}));
        bad(json!({"properties": {}}));
        bad(json!({"type": "object", "properties": []}));
        bad(json!({"type": "object", "properties": {"id": 3}}));
        bad(json!({"type": "object", "required": ["id"]}));
        bad(json!({"type": "object", "properties": {"id": {}}, "required": "id"}));
        assert!(NewTool { name: "a b".into(), ..tool(json!({"type": "object"})) }.validate().is_err());
    }

    #[test]
    fn models_and_memory_options_are_bounded() {
        let m = NewModel {
            name: "gpt-4o".into(),
            provider: "openai".into(),
            context_window: 128_000,
            max_output_tokens: 16_384,
            input_price: 2.5,
            output_price: 10.0,
            is_default: false,
        };
        assert!(m.validate().is_ok());
        assert!(NewModel { max_output_tokens: 200_000, ..m.clone() }.validate().is_err());
        assert!(NewModel { input_price: -1.0, ..m.clone() }.validate().is_err());
        assert!(NewModel { name: "has space".into(), ..m }.validate().is_err());
        assert!(MemoryOptions { top_k: Some(0), ..Default::default() }.validate().is_err());
        assert!(MemoryOptions { last_n: Some(1001), ..Default::default() }.validate().is_err());
        let opts = MemoryOptions {
            last_n: Some(20),
            top_k: Some(5),
            token_budget: None,
            working_memory: None,
            context: Some(crate::ContextOptions::default()),
        };
        let mut meta = Map::new();
        meta.insert(MEMORY_METADATA_KEY.into(), opts.to_value());
        let meta = crate::Metadata::from_value(Value::Object(meta)).unwrap();
        assert_eq!(MemoryOptions::from_metadata(&meta), opts);
        assert!(MemoryOptions::from_metadata(&crate::Metadata::default()).is_empty());
    }
}
