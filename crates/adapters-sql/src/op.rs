//! The SQL spelling of the domain's filter operators ([`Op`]): the domain
//! declares which operators a field accepts and knows no SQL; this is where
//! they become SQL text.

use memlayer_domain::Op;

/// SQL for a domain filter operator.
pub trait SqlOp {
    /// The SQL comparison operator of `eq` … `gte` (the same in every SQL
    /// dialect the adapters speak); `None` for `in` and `contains`, which each
    /// adapter writes in its own dialect.
    fn sql_comparison(self) -> Option<&'static str>;
}

impl SqlOp for Op {
    fn sql_comparison(self) -> Option<&'static str> {
        Some(match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::In | Self::Contains => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use memlayer_domain::Op;

    use super::SqlOp;

    #[test]
    fn comparisons_are_spelled_once_and_the_rest_left_to_the_dialect() {
        for (op, sql) in [
            (Op::Eq, Some("=")),
            (Op::Ne, Some("<>")),
            (Op::Lt, Some("<")),
            (Op::Lte, Some("<=")),
            (Op::Gt, Some(">")),
            (Op::Gte, Some(">=")),
            (Op::In, None),
            (Op::Contains, None),
        ] {
            assert_eq!(op.sql_comparison(), sql, "{op:?}");
        }
    }
}
