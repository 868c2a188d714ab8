//! Typed list queries over the catalog tables: filters on declared
//! fields with operators checked against the field's kind, a sort on a
//! declared field, and keyset paging on (sort value, id).
//!
//! Nothing a caller writes is kept as text that could reach a query
//! language: a field is resolved to a `&'static FieldSpec` of the entity's
//! declaration, an operator to [`Op`], and a value to a typed
//! [`FieldValue`]. Anything undeclared is refused with a [`DomainError`]
//! naming it. Adapters map declared field names to their own static column
//! names and bind every value as a parameter.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::ids::truncate;
use crate::seal::{fnv1a, seal, unseal};
use crate::{DomainError, PageSize, TenantId, Timestamp, from_micros, to_micros};

/// The type of a declared field, which decides the operators it accepts
/// and how a value is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Text, compared bytewise; `contains` is a case-sensitive substring test.
    Text,
    /// A 64-bit integer.
    Integer,
    /// A finite 64-bit float.
    Float,
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 time (stored at microsecond precision).
    Timestamp,
    /// A UUID naming another configured thing.
    Id,
    /// A list of text; `contains` tests membership of one element.
    TextList,
}

impl FieldKind {
    /// The operators a field of this kind accepts.
    #[must_use]
    pub fn ops(self) -> &'static [Op] {
        use Op::{Contains, Eq, Gt, Gte, In, Lt, Lte, Ne};
        match self {
            Self::Text => &[Eq, Ne, Lt, Lte, Gt, Gte, In, Contains],
            Self::Integer | Self::Float | Self::Timestamp => &[Eq, Ne, Lt, Lte, Gt, Gte, In],
            Self::Bool => &[Eq, Ne],
            Self::Id => &[Eq, Ne, In],
            Self::TextList => &[Contains],
        }
    }

    /// Lowercase name, as in error messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Bool => "bool",
            Self::Timestamp => "timestamp",
            Self::Id => "id",
            Self::TextList => "text list",
        }
    }
}

/// One declared field of a catalog entity.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Its name, as callers write it.
    pub name: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// Whether a listing may sort on it (never for ids and lists; never
    /// for long text, so that cursors stay short).
    pub sortable: bool,
}

const fn field(name: &'static str, kind: FieldKind, sortable: bool) -> FieldSpec {
    FieldSpec { name, kind, sortable }
}

/// Declared fields of models.
pub static MODEL_FIELDS: &[FieldSpec] = &[
    field("name", FieldKind::Text, true),
    field("provider", FieldKind::Text, true),
    field("context_window", FieldKind::Integer, true),
    field("max_output_tokens", FieldKind::Integer, true),
    field("input_price", FieldKind::Float, true),
    field("output_price", FieldKind::Float, true),
    field("is_default", FieldKind::Bool, true),
    field("created_at", FieldKind::Timestamp, true),
    field("updated_at", FieldKind::Timestamp, true),
];

/// Declared fields of agents.
pub static AGENT_FIELDS: &[FieldSpec] = &[
    field("name", FieldKind::Text, true),
    field("model_id", FieldKind::Id, false),
    field("tool_ids", FieldKind::TextList, false),
    field("created_at", FieldKind::Timestamp, true),
    field("updated_at", FieldKind::Timestamp, true),
];

/// Declared fields of tools.
pub static TOOL_FIELDS: &[FieldSpec] = &[
    field("name", FieldKind::Text, true),
    field("description", FieldKind::Text, false),
    field("created_at", FieldKind::Timestamp, true),
    field("updated_at", FieldKind::Timestamp, true),
];

/// What a [`ListQuery`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CatalogEntity {
    /// Models.
    Models,
    /// Agents.
    Agents,
    /// Tools.
    Tools,
}

impl CatalogEntity {
    /// The entity's declared fields.
    #[must_use]
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Self::Models => MODEL_FIELDS,
            Self::Agents => AGENT_FIELDS,
            Self::Tools => TOOL_FIELDS,
        }
    }

    /// Plural lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Models => "models",
            Self::Agents => "agents",
            Self::Tools => "tools",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::Models => 1,
            Self::Agents => 2,
            Self::Tools => 3,
        }
    }

    fn lookup(self, param: &'static str, name: &str) -> Result<&'static FieldSpec, DomainError> {
        self.fields().iter().find(|f| f.name == name).ok_or_else(|| {
            let declared: Vec<_> = self.fields().iter().map(|f| f.name).collect();
            DomainError::new(
                param,
                format!("unknown field `{}` for {}; declared: {}", truncate(name), self.as_str(), declared.join(", ")),
            )
        })
    }
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Equal to one of 1 to [`MAX_IN_VALUES`] values.
    In,
    /// Substring (text) or element (text list).
    Contains,
}

/// Most values an `in` filter takes.
pub const MAX_IN_VALUES: usize = 100;
/// Most filters a query takes.
pub const MAX_FILTERS: usize = 16;
/// Longest text value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

impl Op {
    /// Lowercase name, as callers write it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::In => "in",
            Self::Contains => "contains",
        }
    }

    fn parse(s: &str) -> Result<Self, DomainError> {
        Ok(match s {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "in" => Self::In,
            "contains" => Self::Contains,
            other => {
                return Err(DomainError::new(
                    "filter",
                    format!("unknown operator `{}`; use eq, ne, lt, lte, gt, gte, in or contains", truncate(other)),
                ));
            }
        })
    }
}

/// A typed value of a declared field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Text (also one element of a text list).
    Text(String),
    /// Integer.
    Integer(i64),
    /// Finite float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Time, microsecond precision.
    Timestamp(Timestamp),
    /// UUID.
    Id(Uuid),
}

impl FieldValue {
    /// Parses `raw` as a value of `kind` (for a text list: one element).
    fn parse(field: &FieldSpec, raw: &str) -> Result<Self, DomainError> {
        let bad = |what: &str| {
            DomainError::new("filter", format!("`{}` is not {what}, as field `{}` needs", truncate(raw), field.name))
        };
        Ok(match field.kind {
            FieldKind::Text | FieldKind::TextList => {
                if raw.len() > MAX_VALUE_BYTES {
                    return Err(DomainError::new(
                        "filter",
                        format!("a value of `{}` is longer than {MAX_VALUE_BYTES} bytes", field.name),
                    ));
                }
                Self::Text(raw.to_owned())
            }
            FieldKind::Integer => Self::Integer(raw.parse().map_err(|_| bad("an integer"))?),
            FieldKind::Float => {
                let f: f64 = raw.parse().map_err(|_| bad("a number"))?;
                if !f.is_finite() {
                    return Err(bad("a finite number"));
                }
                Self::Float(f)
            }
            FieldKind::Bool => match raw {
                "true" => Self::Bool(true),
                "false" => Self::Bool(false),
                _ => return Err(bad("`true` or `false`")),
            },
            FieldKind::Timestamp => {
                let t = time::OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| bad("an RFC 3339 time"))?;
                Self::Timestamp(from_micros(to_micros(t)))
            }
            FieldKind::Id => Self::Id(Uuid::parse_str(raw).map_err(|_| bad("a UUID"))?),
        })
    }

    fn canonical(&self, out: &mut Vec<u8>) {
        match self {
            Self::Text(s) => {
                out.push(1);
                out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Self::Integer(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Float(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Self::Bool(b) => {
                out.push(4);
                out.push(u8::from(*b));
            }
            Self::Timestamp(t) => {
                out.push(5);
                out.extend_from_slice(&to_micros(*t).to_be_bytes());
            }
            Self::Id(u) => {
                out.push(6);
                out.extend_from_slice(u.as_bytes());
            }
        }
    }

    /// Reads back what [`FieldValue::canonical`] wrote; `None` for anything else.
    fn read(b: &[u8]) -> Option<(Self, &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let fixed8 = |rest: &[u8]| -> Option<([u8; 8], usize)> { Some((rest.get(..8)?.try_into().ok()?, 8)) };
        Some(match tag {
            1 => {
                let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let s = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
                (Self::Text(s.to_owned()), &rest[4 + len..])
            }
            2 => {
                let (v, n) = fixed8(rest)?;
                (Self::Integer(i64::from_be_bytes(v)), &rest[n..])
            }
            3 => {
                let (v, n) = fixed8(rest)?;
                (Self::Float(f64::from_bits(u64::from_be_bytes(v))), &rest[n..])
            }
            4 => (Self::Bool(*rest.first()? != 0), &rest[1..]),
            5 => {
                let (v, n) = fixed8(rest)?;
                (Self::Timestamp(from_micros(i64::from_be_bytes(v))), &rest[n..])
            }
            6 => (Self::Id(Uuid::from_bytes(rest.get(..16)?.try_into().ok()?)), &rest[16..]),
            _ => return None,
        })
    }

    fn fits(&self, kind: FieldKind) -> bool {
        matches!(
            (self, kind),
            (Self::Text(_), FieldKind::Text | FieldKind::TextList)
                | (Self::Integer(_), FieldKind::Integer)
                | (Self::Float(_), FieldKind::Float)
                | (Self::Bool(_), FieldKind::Bool)
                | (Self::Timestamp(_), FieldKind::Timestamp)
                | (Self::Id(_), FieldKind::Id)
        )
    }
}

/// One validated condition: `field op value(s)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    field: &'static FieldSpec,
    op: Op,
    values: Vec<FieldValue>,
}

impl Filter {
    /// The declared field.
    #[must_use]
    pub fn field(&self) -> &'static FieldSpec {
        self.field
    }

    /// The operator, valid for the field's kind.
    #[must_use]
    pub fn op(&self) -> Op {
        self.op
    }

    /// One value, or 1 to [`MAX_IN_VALUES`] for `in`; each of the field's kind.
    #[must_use]
    pub fn values(&self) -> &[FieldValue] {
        &self.values
    }
}

/// A validated sort: a sortable declared field and a direction. Ties are
/// broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sort {
    field: &'static FieldSpec,
    descending: bool,
}

impl Sort {
    /// The declared field.
    #[must_use]
    pub fn field(&self) -> &'static FieldSpec {
        self.field
    }

    /// Largest first.
    #[must_use]
    pub fn descending(&self) -> bool {
        self.descending
    }
}

/// Where a page continues: strictly after `(value, id)` in the sort order.
#[derive(Debug, Clone, PartialEq)]
pub struct After {
    /// The last item's sort value.
    pub value: FieldValue,
    /// The last item's id.
    pub id: Uuid,
}

/// A stored catalog record that a listing pages through.
pub trait CatalogRecord {
    /// Its id.
    fn record_id(&self) -> Uuid;
    /// The value of a declared sortable field (`None` for fields that are
    /// not sortable).
    fn sort_value(&self, field: &str) -> Option<FieldValue>;
}

/// A validated listing of one catalog entity.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    entity: CatalogEntity,
    filters: Vec<Filter>,
    sort: Sort,
    limit: PageSize,
    after: Option<After>,
}

impl ListQuery {
    /// Everything, newest first (`-created_at`), default page size.
    #[must_use]
    pub fn new(entity: CatalogEntity) -> Self {
        let created = entity.fields().iter().find(|f| f.name == "created_at").unwrap_or(&entity.fields()[0]);
        Self {
            entity,
            filters: Vec::new(),
            sort: Sort { field: created, descending: true },
            limit: PageSize::default(),
            after: None,
        }
    }

    /// Adds a condition. For `in`, `value` is a comma-separated list.
    ///
    /// # Errors
    /// [`DomainError`] on `filter` naming an undeclared field, an operator
    /// the field's kind does not take, or a value that is not of its kind.
    pub fn filter(mut self, field: &str, op: &str, value: &str) -> Result<Self, DomainError> {
        if self.after.is_some() {
            return Err(DomainError::new("cursor", "must be applied after every filter and the sort"));
        }
        if self.filters.len() >= MAX_FILTERS {
            return Err(DomainError::new("filter", format!("at most {MAX_FILTERS} filters are accepted")));
        }
        let spec = self.entity.lookup("filter", field)?;
        let op = Op::parse(op)?;
        if !spec.kind.ops().contains(&op) {
            let allowed: Vec<_> = spec.kind.ops().iter().map(|o| o.as_str()).collect();
            return Err(DomainError::new(
                "filter",
                format!(
                    "operator `{}` does not apply to field `{}` ({}); use {}",
                    op.as_str(),
                    spec.name,
                    spec.kind.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
        let values = if op == Op::In {
            let parts: Vec<&str> = value.split(',').collect();
            if parts.len() > MAX_IN_VALUES {
                return Err(DomainError::new("filter", format!("`in` takes at most {MAX_IN_VALUES} values")));
            }
            parts.into_iter().map(|p| FieldValue::parse(spec, p)).collect::<Result<_, _>>()?
        } else {
            vec![FieldValue::parse(spec, value)?]
        };
        self.filters.push(Filter { field: spec, op, values });
        Ok(self)
    }

    /// Adds a condition written `field:op:value` (the value may hold `:`).
    ///
    /// # Errors
    /// As [`ListQuery::filter`], and for an expression without three parts.
    pub fn filter_expr(self, expr: &str) -> Result<Self, DomainError> {
        let mut parts = expr.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(field), Some(op), Some(value)) => self.filter(field, op, value),
            _ => Err(DomainError::new(
                "filter",
                format!("`{}` is not FIELD:OP:VALUE (for example provider:eq:openai)", truncate(expr)),
            )),
        }
    }

    /// Sorts on `field` ascending, or descending when written `-field`.
    ///
    /// # Errors
    /// [`DomainError`] on `sort` for an undeclared or unsortable field.
    pub fn sort_by(mut self, expr: &str) -> Result<Self, DomainError> {
        if self.after.is_some() {
            return Err(DomainError::new("cursor", "must be applied after every filter and the sort"));
        }
        let (name, descending) = match expr.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (expr, false),
        };
        let spec = self.entity.lookup("sort", name)?;
        if !spec.sortable {
            let sortable: Vec<_> = self.entity.fields().iter().filter(|f| f.sortable).map(|f| f.name).collect();
            return Err(DomainError::new(
                "sort",
                format!("field `{}` is not sortable; sort on {}", spec.name, sortable.join(", ")),
            ));
        }
        self.sort = Sort { field: spec, descending };
        Ok(self)
    }

    /// Sets the page size.
    #[must_use]
    pub fn limit(mut self, limit: PageSize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues from `cursor`, which must have been issued for this tenant,
    /// entity, filters and sort.
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` when it belongs to another listing.
    pub fn resume(mut self, tenant: &TenantId, cursor: &ListCursor) -> Result<Self, DomainError> {
        if cursor.entity != self.entity.tag() || cursor.listing != self.listing(tenant) {
            return Err(DomainError::new("cursor", "was issued for another listing, filter or sort"));
        }
        if !cursor.after.value.fits(self.sort.field.kind) {
            return Err(DomainError::new("cursor", "is malformed or was modified"));
        }
        self.after = Some(cursor.after.clone());
        Ok(self)
    }

    /// The entity listed.
    #[must_use]
    pub fn entity(&self) -> CatalogEntity {
        self.entity
    }

    /// Conditions, all of which must hold.
    #[must_use]
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The sort.
    #[must_use]
    pub fn sort(&self) -> Sort {
        self.sort
    }

    /// The page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        self.limit
    }

    /// Where this page starts (exclusive), if it continues a listing.
    #[must_use]
    pub fn after(&self) -> Option<&After> {
        self.after.as_ref()
    }

    /// The cursor continuing after `last`, the last item of a full page.
    ///
    /// # Errors
    /// [`DomainError`] on `sort` when `last` has no value for the sort field
    /// (an adapter bug, never caller input).
    pub fn cursor_after(&self, tenant: &TenantId, last: &impl CatalogRecord) -> Result<ListCursor, DomainError> {
        let value = last
            .sort_value(self.sort.field.name)
            .filter(|v| v.fits(self.sort.field.kind))
            .ok_or_else(|| DomainError::new("sort", format!("record has no value for `{}`", self.sort.field.name)))?;
        Ok(ListCursor {
            entity: self.entity.tag(),
            listing: self.listing(tenant),
            after: After { value, id: last.record_id() },
        })
    }

    /// The listing's fingerprint (tenant, entity, filters and sort), bound
    /// into cursors.
    fn listing(&self, tenant: &TenantId) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(tenant.as_str().as_bytes());
        b.push(0);
        b.push(self.entity.tag());
        for f in &self.filters {
            b.extend_from_slice(f.field.name.as_bytes());
            b.push(0);
            b.extend_from_slice(f.op.as_str().as_bytes());
            b.push(0);
            for v in &f.values {
                v.canonical(&mut b);
            }
            b.push(0xff);
        }
        b.extend_from_slice(self.sort.field.name.as_bytes());
        b.push(u8::from(self.sort.descending));
        fnv1a(&b)
    }
}

/// An opaque keyset cursor of a catalog listing: the last item's sort
/// value and id, bound to the tenant, entity, filters and sort that issued
/// it, with a checksum so that an edited cursor is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ListCursor {
    entity: u8,
    /// Fingerprint of the listing that issued it (see `ListQuery::listing`).
    listing: u64,
    after: After,
}

const LIST_CURSOR_VERSION: u8 = 1;

impl ListCursor {
    /// Where the next page starts (exclusive).
    #[must_use]
    pub fn after(&self) -> &After {
        &self.after
    }

    /// The text form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut b = vec![LIST_CURSOR_VERSION, self.entity];
        b.extend_from_slice(&self.listing.to_be_bytes());
        self.after.value.canonical(&mut b);
        b.extend_from_slice(self.after.id.as_bytes());
        seal(b)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` for anything [`ListCursor::encode`] did not produce.
    pub fn decode(s: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::new("cursor", "is malformed or was modified");
        let body = unseal(s).ok_or_else(bad)?;
        if body.len() < 2 + 8 + 1 + 16 || body[0] != LIST_CURSOR_VERSION {
            return Err(bad());
        }
        let entity = body[1];
        let listing = u64::from_be_bytes(body[2..10].try_into().map_err(|_| bad())?);
        let (value, rest) = FieldValue::read(&body[10..]).ok_or_else(bad)?;
        let id: [u8; 16] = rest.try_into().map_err(|_| bad())?;
        Ok(Self { entity, listing, after: After { value, id: Uuid::from_bytes(id) } })
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn models() -> ListQuery {
        ListQuery::new(CatalogEntity::Models)
    }

    fn check(expr: &str, ok: bool) {
        let r = models().filter_expr(expr);
        assert_eq!(r.is_ok(), ok, "{expr}: {r:?}");
    }

    #[test]
    fn filters_are_checked_against_declared_kinds() {
        check("provider:eq:openai", true);
        check("provider:contains:open", true);
        check("provider:in:openai,anthropic", true);
        check("context_window:gte:100000", true);
        check("context_window:contains:1", false);
        check("context_window:gte:lots", false);
        check("input_price:lt:2.5", true);
        check("input_price:lt:NaN", false);
        check("is_default:eq:true", true);
        check("is_default:lt:true", false);
        check("is_default:eq:yes", false);
        check("created_at:gt:2026-01-01T00:00:00Z", true);
        check("created_at:gt:yesterday", false);
        check("name;DROP TABLE models--:eq:x", false);
        check("name:eq;DROP:x", false);
        check("name:eq:x';DROP TABLE models--", true);
        check("nope", false);
        let agents = ListQuery::new(CatalogEntity::Agents);
        assert!(agents.clone().filter_expr("tool_ids:contains:abc").is_ok());
        assert!(agents.clone().filter_expr("tool_ids:eq:abc").is_err());
        assert!(agents.clone().filter_expr("model_id:eq:not-a-uuid").is_err());
        assert!(agents.filter_expr(&format!("model_id:in:{},{}", Uuid::nil(), Uuid::max())).is_ok());
    }

    #[test]
    fn errors_name_the_offending_field() {
        let e = models().filter_expr("name;DROP TABLE models--:eq:x").unwrap_err();
        assert_eq!(e.field, "filter");
        assert!(e.reason.contains("name;DROP TABLE models--"), "{e}");
        let e = models().sort_by("-secret").unwrap_err();
        assert_eq!(e.field, "sort");
        assert!(e.reason.contains("secret"), "{e}");
        assert!(ListQuery::new(CatalogEntity::Agents).sort_by("tool_ids").is_err());
        assert!(ListQuery::new(CatalogEntity::Tools).sort_by("description").is_err());
    }

    struct Rec(Uuid, FieldValue);
    impl CatalogRecord for Rec {
        fn record_id(&self) -> Uuid {
            self.0
        }
        fn sort_value(&self, _: &str) -> Option<FieldValue> {
            Some(self.1.clone())
        }
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_listing() {
        let tenant = TenantId::parse("acme").unwrap();
        let q = models().filter_expr("provider:eq:openai").unwrap().sort_by("-name").unwrap();
        let c = q.cursor_after(&tenant, &Rec(Uuid::now_v7(), FieldValue::Text("gpt:4o".into()))).unwrap();
        let back = ListCursor::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert!(q.clone().resume(&tenant, &back).is_ok());
        assert!(q.clone().resume(&TenantId::parse("other").unwrap(), &back).is_err());
        assert!(models().sort_by("-name").unwrap().resume(&tenant, &back).is_err(), "other filter");
        assert!(
            models()
                .filter_expr("provider:eq:openai")
                .unwrap()
                .sort_by("name")
                .unwrap()
                .resume(&tenant, &back)
                .is_err(),
            "other direction"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(c.encode()).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x01;
            assert!(ListCursor::decode(&URL_SAFE_NO_PAD.encode(&raw)).is_err(), "edit at {i} accepted");
            raw[i] ^= 0x01;
        }
        assert!(ListCursor::decode("garbage").is_err());
        assert!(ListCursor::decode("").is_err());
    }
}
