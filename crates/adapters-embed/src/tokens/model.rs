//! Which tiktoken encoding a model name is counted with.

/// An encoding this crate can count exactly with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Cl100kBase,
    O200kBase,
}

impl Encoding {
    /// The name tiktoken gives the encoding, as stored in `TokenCount::encoding`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Cl100kBase => "cl100k_base",
            Self::O200kBase => "o200k_base",
        }
    }
}

/// Model-name prefixes and the encoding of their family.
///
/// A prefix matches a name equal to it or continuing with `-` (a variant or a
/// release date: `gpt-4o-mini`, `gpt-4o-2024-08-06`); a prefix that itself
/// ends in `.` matches any continuation (`gpt-5.` covers `gpt-5.1`,
/// `gpt-5.2-pro`). So `gpt-4` matches `gpt-4-turbo` but not `gpt-4o` or
/// `gpt-4.1`, and an unlisted `gpt-4.2` is estimated rather than guessed.
const MODELS: &[(&str, Encoding)] = &[
    // o200k_base: GPT-4o and later, and the o-series reasoning models.
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("gpt-5.", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    // cl100k_base: GPT-4 (not 4o), GPT-3.5 Turbo, OpenAI embedding models.
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5-turbo", Encoding::Cl100kBase),
    ("gpt-35-turbo", Encoding::Cl100kBase), // Azure OpenAI's spelling
    ("text-embedding-ada-002", Encoding::Cl100kBase),
    ("text-embedding-3-small", Encoding::Cl100kBase),
    ("text-embedding-3-large", Encoding::Cl100kBase),
];

/// The encoding `model` is counted with, or `None` when it must be estimated.
///
/// Case-insensitive; ignores surrounding whitespace, a provider prefix
/// (`openai/gpt-4o`, anything up to the last `/`) and the fine-tune wrapper
/// (`ft:gpt-4o-mini-2024-07-18:org::id` is a `gpt-4o-mini`).
pub(crate) fn encoding_for(model: &str) -> Option<Encoding> {
    let name = model.trim().to_ascii_lowercase();
    let name = name.rsplit('/').next().unwrap_or_default();
    let name = match name.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or_default(),
        None => name,
    };
    MODELS.iter().find(|(prefix, _)| matches(name, prefix)).map(|&(_, encoding)| encoding)
}

fn matches(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || prefix.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(model: &str, expected: Option<&str>) {
        assert_eq!(encoding_for(model).map(Encoding::name), expected, "model {model:?}");
    }

    const O200K: Option<&str> = Some("o200k_base");
    const CL100K: Option<&str> = Some("cl100k_base");

    #[test]
    fn model_table() {
        let cases: &[(&str, Option<&str>)] = &[
            // o200k_base
            ("gpt-4o", O200K),
            ("gpt-4o-mini", O200K),
            ("gpt-4o-2024-08-06", O200K),
            ("gpt-4o-mini-2024-07-18", O200K),
            ("chatgpt-4o-latest", O200K),
            ("gpt-4.1", O200K),
            ("gpt-4.1-mini", O200K),
            ("gpt-4.1-nano-2025-04-14", O200K),
            ("gpt-4.5-preview", O200K),
            ("gpt-5", O200K),
            ("gpt-5-mini", O200K),
            ("gpt-5-nano-2025-08-07", O200K),
            ("gpt-5.1", O200K),
            ("gpt-5.2-pro", O200K),
            ("o1", O200K),
            ("o1-mini", O200K),
            ("o1-preview", O200K),
            ("o1-2024-12-17", O200K),
            ("o3", O200K),
            ("o3-mini", O200K),
            ("o4-mini", O200K),
            // cl100k_base
            ("gpt-4", CL100K),
            ("gpt-4-0613", CL100K),
            ("gpt-4-32k", CL100K),
            ("gpt-4-turbo", CL100K),
            ("gpt-4-turbo-2024-04-09", CL100K),
            ("gpt-3.5-turbo", CL100K),
            ("gpt-3.5-turbo-0125", CL100K),
            ("gpt-3.5-turbo-16k", CL100K),
            ("gpt-35-turbo", CL100K),
            ("text-embedding-ada-002", CL100K),
            ("text-embedding-3-small", CL100K),
            ("text-embedding-3-large", CL100K),
            // provider prefixes, case, whitespace, fine-tunes
            ("openai/gpt-4o", O200K),
            ("openai/gpt-4", CL100K),
            ("openrouter/openai/o3-mini", O200K),
            ("GPT-4o", O200K),
            (" gpt-4o ", O200K),
            ("ft:gpt-4o-mini-2024-07-18:my-org::abc123", O200K),
            ("ft:gpt-3.5-turbo-0125:my-org:custom:id", CL100K),
            // unknown: estimated
            ("claude-3-5-sonnet-20241022", None),
            ("anthropic/claude-sonnet-4", None),
            ("gemini-2.0-flash", None),
            ("llama-3.1-8b-instruct", None),
            ("meta-llama/Llama-3.1-8B", None),
            ("mistral-large", None),
            ("gpt-4.2", None),
            ("gpt-4x", None),
            ("gpt-50", None),
            ("o1x", None),
            ("o2", None),
            ("text-embedding-3", None),
            ("davinci", None),
            ("gpt", None),
            ("openai/", None),
            ("", None),
        ];
        for &(model, expected) in cases {
            check(model, expected);
        }
    }
}
