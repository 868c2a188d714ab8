//! Architecture invariants as tests, after rust-analyzer's `tidy`: what
//! docs/ARCHITECTURE.md promises about the shape of the workspace is read
//! from the tree itself (Cargo manifests, sources, the document), so the
//! prose cannot drift from the code without a test failing.
//!
//! - Dependencies point inwards: `domain ← ports ← adapters-* ← app ← api`.
//!   Only `app` names adapter crates; an adapter names no other adapter
//!   except the shared SQL core `adapters-sql`, which depends on the domain
//!   and the ports only and on no database driver.
//! - The domain depends on its whitelist only.
//! - Every module (each `.rs` file under `crates/*/src`) opens with a `//!`
//!   doc.
//! - The code map of docs/ARCHITECTURE.md has a section for every crate and
//!   no other, mentions every module of the crate, and every file it names
//!   exists.
//!
//! Only `[dependencies]` (target-specific ones included) and
//! `[build-dependencies]` count: tests may use any crate to run the real
//! thing (the api's tests start Postgres databases through the adapter).
//! Each check is a function from text to the list of violations, tested
//! here on inputs that break it, so a check that cannot fail is caught too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates the domain may depend on (docs/ARCHITECTURE.md, "Architecture
/// invariants"): no I/O, no async, no database, HTTP or model library.
const DOMAIN_WHITELIST: &[&str] = &["base64", "serde", "serde_json", "thiserror", "time", "uuid"];

/// Database drivers and their types, which the shared SQL core must not
/// know: it builds SQL text and arguments, each adapter runs them.
const DRIVERS: &[&str] = &[
    "deadpool",
    "deadpool-postgres",
    "libsql",
    "pgvector",
    "postgres",
    "postgres-types",
    "rusqlite",
    "sqlx",
    "tokio-postgres",
];

/// The shared SQL core, the one adapter other adapters may depend on.
const SQL_CORE: &str = "memlayer-adapters-sql";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One crate of the workspace: its directory under `crates/`, its package
/// name and the packages it depends on outside tests.
#[derive(Debug)]
struct Manifest {
    dir: String,
    name: String,
    deps: BTreeSet<String>,
}

/// Parses a crate's `Cargo.toml`; renamed dependencies (`package = …`)
/// count under their package name.
fn manifest(dir: &str, text: &str) -> Manifest {
    let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("crates/{dir}/Cargo.toml: {e}"));
    let name = doc["package"]["name"].as_str().unwrap_or_else(|| panic!("crates/{dir}: no package name")).to_owned();
    let mut tables: Vec<&toml::Table> = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        tables.extend(doc.get(key).and_then(toml::Value::as_table));
    }
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for target in targets.values() {
            for key in ["dependencies", "build-dependencies"] {
                tables.extend(target.get(key).and_then(toml::Value::as_table));
            }
        }
    }
    let deps = tables
        .into_iter()
        .flat_map(|t| t.iter())
        .map(|(key, spec)| spec.get("package").and_then(toml::Value::as_str).unwrap_or(key).to_owned())
        .collect();
    Manifest { dir: dir.to_owned(), name, deps }
}

fn crate_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    dirs
}

fn manifests() -> Vec<Manifest> {
    crate_dirs()
        .iter()
        .map(|dir| manifest(dir, &fs::read_to_string(root().join("crates").join(dir).join("Cargo.toml")).unwrap()))
        .collect()
}

/// A crate's ring of the hexagon, innermost first; `None` for a name that
/// is not ours or not placed yet.
fn layer(name: &str) -> Option<u8> {
    match name {
        "memlayer-domain" => Some(0),
        "memlayer-ports" => Some(1),
        n if n.starts_with("memlayer-adapters-") => Some(2),
        "memlayer-app" => Some(3),
        "memlayer-api" => Some(4),
        _ => None,
    }
}

fn is_adapter(name: &str) -> bool {
    name.starts_with("memlayer-adapters-")
}

/// Every edge between our crates that points the wrong way.
fn direction_violations(crates: &[Manifest]) -> Vec<String> {
    let mut out = Vec::new();
    for c in crates {
        let Some(own) = layer(&c.name) else {
            out.push(format!("{} (crates/{}) has no place in the layers; add it to tidy.rs's `layer`", c.name, c.dir));
            continue;
        };
        for d in c.deps.iter().filter(|d| d.starts_with("memlayer-")) {
            let why = match layer(d) {
                None => Some("an unknown crate of ours"),
                Some(l) if l >= own && !(is_adapter(&c.name) && d == SQL_CORE && c.name != SQL_CORE) => {
                    Some("against the arrow (domain ← ports ← adapters-* ← app ← api)")
                }
                Some(_) if is_adapter(d) && !is_adapter(&c.name) && c.name != "memlayer-app" => {
                    Some("only memlayer-app names adapter crates")
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                out.push(format!("{} depends on {d}: {why}", c.name));
            }
        }
        if c.name == SQL_CORE {
            for d in c.deps.iter().filter(|d| DRIVERS.contains(&d.as_str())) {
                out.push(format!("{} depends on {d}: the shared SQL core knows no database driver", c.name));
            }
        }
    }
    out
}

/// The domain's dependencies outside [`DOMAIN_WHITELIST`].
fn domain_violations(crates: &[Manifest]) -> Vec<String> {
    crates
        .iter()
        .filter(|c| c.name == "memlayer-domain")
        .flat_map(|c| c.deps.iter().filter(|d| !DOMAIN_WHITELIST.contains(&d.as_str())))
        .map(|d| format!("memlayer-domain depends on {d}, outside its whitelist {DOMAIN_WHITELIST:?}"))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module file of a crate, relative to its `src/`.
fn modules(dir: &str) -> Vec<PathBuf> {
    let src = root().join("crates").join(dir).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut files: Vec<PathBuf> = files.into_iter().map(|f| f.strip_prefix(&src).unwrap().to_path_buf()).collect();
    files.sort();
    files
}

/// Whether a source file's first non-blank line is a `//!` doc.
fn opens_with_doc(source: &str) -> bool {
    source.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
}

/// The module a file under `src/` declares: its stem, or its directory's
/// name for `mod.rs`; `None` for the crate roots.
fn module_name(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    match stem {
        "lib" | "main" if file.parent().is_none_or(|p| p.as_os_str().is_empty()) => None,
        "mod" => file.parent()?.file_name()?.to_str().map(str::to_owned),
        _ => Some(stem.to_owned()),
    }
}

/// The `### ` sections of the code map: heading → body.
fn code_map(architecture: &str) -> BTreeMap<String, String> {
    let start = architecture.find("\n## Code map").expect("docs/ARCHITECTURE.md has a `## Code map`");
    let rest = &architecture[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let mut sections = BTreeMap::new();
    for part in rest[..end].split("\n### ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        sections.insert(heading.trim().to_owned(), body.to_owned());
    }
    sections
}

/// The code-span texts (between backticks) of a piece of Markdown.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The module names a section mentions: code spans that are a bare name
/// (`router`), a file (`seal.rs`, `onnx/mod.rs`) or a path (`contract::support`).
fn mentioned_modules(section: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for word in code_spans(section).iter().flat_map(|s| s.split_whitespace()) {
        let word = word.trim_end_matches([',', ';', ':', '.', ')']).trim_start_matches('(');
        if let Some(file) = word.strip_suffix(".rs") {
            names.extend(file.split('/').filter(|s| is_ident(s)).map(str::to_owned));
        } else if word.contains("::") {
            let path = word.split(['(', '<', '!']).next().unwrap_or(word);
            names.extend(path.split("::").filter(|s| is_ident(s)).map(str::to_owned));
        } else if is_ident(word) {
            names.insert(word.to_owned());
        }
    }
    names
}

/// The files a section names (code spans ending in `.rs`).
fn named_files(section: &str) -> Vec<&str> {
    code_spans(section)
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|w| w.trim_end_matches([',', ';', ':', '.', ')']).trim_start_matches('('))
        .filter(|w| w.ends_with(".rs"))
        .collect()
}

/// Whether `named` exists in the crate at `dir`: as a path under its `src/`,
/// under the crate, under the workspace, or as a file name anywhere in its
/// `src/`.
fn file_exists(dir: &Path, src_files: &[PathBuf], named: &str) -> bool {
    [dir.join("src").join(named), dir.join(named), root().join(named)].iter().any(|p| p.is_file())
        || src_files.iter().any(|f| f.ends_with(named))
}

/// Disagreements between the code map and the tree. `crates` pairs each
/// crate directory with its package name and module files.
fn code_map_violations(architecture: &str, crates: &[(String, String, Vec<PathBuf>)]) -> Vec<String> {
    let sections = code_map(architecture);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (heading, body) in &sections {
        let spans = code_spans(heading);
        let Some(dir) = spans.first().and_then(|s| s.strip_prefix("crates/")) else {
            // `tests/` and other non-crate sections: only their files are checked.
            for named in named_files(body) {
                if !root().join(named).is_file() && !root().join("tests/it").join(named).is_file() {
                    out.push(format!("code map section \"{heading}\" names {named}, which does not exist"));
                }
            }
            continue;
        };
        let Some((_, name, files)) = crates.iter().find(|(d, _, _)| d == dir) else {
            out.push(format!("code map has a section for crates/{dir}, which does not exist"));
            continue;
        };
        seen.insert(dir.to_owned());
        if spans.get(1).copied() != Some(name.as_str()) {
            out.push(format!("code map heading `{heading}` should name the package `{name}`"));
        }
        let mentioned = mentioned_modules(body);
        for file in files {
            if let Some(module) = module_name(file).filter(|m| !mentioned.contains(m)) {
                out.push(format!(
                    "code map section \"{heading}\" does not mention module `{module}` ({})",
                    file.display()
                ));
            }
        }
        let crate_dir = root().join("crates").join(dir);
        for named in named_files(body) {
            if !file_exists(&crate_dir, files, named) {
                out.push(format!("code map section \"{heading}\" names {named}, which does not exist in crates/{dir}"));
            }
        }
    }
    for (dir, name, _) in crates {
        if !seen.contains(dir) {
            out.push(format!("code map has no section for crates/{dir} ({name})"));
        }
    }
    out
}

fn assert_none(violations: &[String], what: &str) {
    assert!(violations.is_empty(), "{what}:\n  {}", violations.join("\n  "));
}

#[test]
fn dependencies_point_inwards() {
    assert_none(&direction_violations(&manifests()), "dependency direction broken");
}

#[test]
fn domain_depends_on_its_whitelist_only() {
    assert_none(&domain_violations(&manifests()), "the domain gained a dependency");
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for dir in crate_dirs() {
        for file in modules(&dir) {
            let path = Path::new("crates").join(&dir).join("src").join(&file);
            if !opens_with_doc(&fs::read_to_string(root().join(&path)).unwrap()) {
                missing.push(format!("{} does not open with a `//!` doc", path.display()));
            }
        }
    }
    assert_none(&missing, "modules without a doc");
}

#[test]
fn code_map_matches_the_tree() {
    let architecture = fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let crates: Vec<_> = manifests().into_iter().map(|m| (m.dir.clone(), m.name, modules(&m.dir))).collect();
    assert_none(
        &code_map_violations(&architecture, &crates),
        "docs/ARCHITECTURE.md's code map disagrees with the tree",
    );
}

/// The checks themselves, on small inputs that break each rule once.
mod checks_fail_on_violations {
    use super::*;

    fn crate_of(dir: &str, deps: &str) -> Manifest {
        manifest(dir, &format!("[package]\nname = \"memlayer-{dir}\"\n[dependencies]\n{deps}"))
    }

    fn sound() -> Vec<Manifest> {
        vec![
            crate_of("domain", "serde = \"1\"\nuuid = \"1\""),
            crate_of("ports", "memlayer-domain.workspace = true"),
            crate_of("adapters-sql", "memlayer-domain.workspace = true\nmemlayer-ports.workspace = true"),
            crate_of("adapters-libsql", "memlayer-adapters-sql.workspace = true\nlibsql = \"0.10\""),
            crate_of("app", "memlayer-adapters-libsql.workspace = true\nmemlayer-ports.workspace = true"),
            crate_of("api", "memlayer-app.workspace = true\nmemlayer-domain.workspace = true"),
        ]
    }

    fn with(dir: &str, deps: &str) -> Vec<Manifest> {
        let mut crates = sound();
        crates.retain(|c| c.dir != dir);
        crates.push(crate_of(dir, deps));
        crates
    }

    #[test]
    fn a_sound_workspace_passes() {
        assert_eq!(direction_violations(&sound()), Vec::<String>::new());
        assert_eq!(domain_violations(&sound()), Vec::<String>::new());
    }

    #[test]
    fn each_wrong_edge_is_reported() {
        for (dir, deps, expected) in [
            ("domain", "memlayer-ports = { path = \"../ports\" }", "memlayer-domain depends on memlayer-ports"),
            ("ports", "memlayer-app.workspace = true", "memlayer-ports depends on memlayer-app"),
            ("adapters-libsql", "memlayer-adapters-embed.workspace = true", "depends on memlayer-adapters-embed"),
            ("adapters-sql", "memlayer-adapters-libsql.workspace = true", "memlayer-adapters-sql depends on"),
            ("adapters-sql", "tokio-postgres = \"0.7\"", "knows no database driver"),
            ("adapters-sql", "db = { package = \"libsql\", version = \"0.10\" }", "depends on libsql"),
            ("api", "memlayer-adapters-libsql.workspace = true", "only memlayer-app names adapter crates"),
            ("app", "memlayer-api.workspace = true", "memlayer-app depends on memlayer-api"),
            ("widgets", "", "has no place in the layers"),
        ] {
            let violations = direction_violations(&with(dir, deps));
            assert!(violations.iter().any(|v| v.contains(expected)), "{dir} with {deps}: got {violations:?}");
        }
    }

    #[test]
    fn target_specific_dependencies_count() {
        let mut crates = sound();
        crates.retain(|c| c.dir != "domain");
        crates.push(manifest(
            "domain",
            "[package]\nname = \"memlayer-domain\"\n[target.'cfg(unix)'.dependencies]\ntokio = \"1\"",
        ));
        assert_eq!(domain_violations(&crates).len(), 1, "{:?}", domain_violations(&crates));
    }

    #[test]
    fn a_module_without_a_doc_is_reported() {
        assert!(opens_with_doc("\n//! Threads.\nuse std::fmt;"));
        assert!(!opens_with_doc("use std::fmt;\n//! Threads."));
        assert!(!opens_with_doc("/// Threads.\npub struct Thread;"));
        assert!(!opens_with_doc(""));
    }

    fn map(body: &str) -> String {
        format!("# x\n\n## Code map\n\n### `crates/domain` — `memlayer-domain`\n{body}\n\n## Architecture invariants\n")
    }

    fn domain(files: &[&str]) -> Vec<(String, String, Vec<PathBuf>)> {
        vec![("domain".into(), "memlayer-domain".into(), files.iter().map(PathBuf::from).collect())]
    }

    #[test]
    fn code_map_disagreements_are_reported() {
        let tree = domain(&["lib.rs", "page.rs", "seal.rs", "contract/mod.rs", "contract/support.rs"]);
        let good = "`Cursor` (`page.rs`) sealed by `seal`; `contract::support` in `contract`.";
        assert_eq!(code_map_violations(&map(good), &tree), Vec::<String>::new());
        for (body, expected) in [
            ("`page.rs`, `contract::support`, `contract`", "does not mention module `seal`"),
            ("`page.rs`, `seal`, `contract`, `support`, `cursor.rs`", "names cursor.rs, which does not exist"),
            ("`page.rs` and the seal, `contract::support`, `contract`", "does not mention module `seal`"),
        ] {
            let violations = code_map_violations(&map(body), &tree);
            assert!(violations.iter().any(|v| v.contains(expected)), "{body}: got {violations:?}");
        }
        let more = [tree.clone(), domain(&["lib.rs"])].concat();
        let mut renamed = more.clone();
        renamed[1].0 = "ports".into();
        let violations = code_map_violations(&map(good), &renamed);
        assert!(violations.iter().any(|v| v.contains("no section for crates/ports")), "{violations:?}");
        let violations = code_map_violations(&map(good).replace("crates/domain", "crates/domian"), &tree);
        assert!(violations.iter().any(|v| v.contains("crates/domian, which does not exist")), "{violations:?}");
    }
}
