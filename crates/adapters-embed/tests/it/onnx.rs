//! `OnnxEmbedder` against the provisioned all-MiniLM-L6-v2 export: published
//! similarities, agreement with the Python reference pipeline, batching,
//! truncation, and clear `Unavailable` errors for missing or corrupt files.
//!
//! Tests that need the model print a visible skip line when it is not
//! provisioned, and fail when `CI` is set.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use memlayer_adapters_embed::{MINILM_MODEL, OnnxConfig, OnnxEmbedder, default_cache_dir};
use memlayer_ports::{Embedder, StoreError};

/// The provisioned configuration, or `None` (after a skip line) when the
/// model is absent locally. Panics when it is absent and `CI` is set.
pub(crate) fn provisioned() -> Option<OnnxConfig> {
    let config = OnnxConfig::from_cache_dir(&default_cache_dir());
    let present = config.model_dir.join("model.onnx").is_file() && config.runtime_library.is_file();
    if present {
        return Some(config);
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(!ci, "model not provisioned under {} and CI is set: run scripts/provision", default_cache_dir().display());
    eprintln!("SKIP: model not provisioned (run scripts/provision)");
    None
}

/// One embedder with the default settings, shared by the tests.
fn embedder() -> Option<&'static OnnxEmbedder> {
    static SHARED: OnceLock<Option<OnnxEmbedder>> = OnceLock::new();
    let config = provisioned()?;
    let embedder = SHARED.get_or_init(|| Some(OnnxEmbedder::new(config))).as_ref()?;
    if let Err(e) = embedder.status() {
        panic!("the provisioned model does not load: {e}");
    }
    Some(embedder)
}

async fn embed(embedder: &OnnxEmbedder, texts: &[&str]) -> Vec<Vec<f32>> {
    let embeddings = embedder.embed(texts.iter().map(ToString::to_string).collect()).await.unwrap();
    assert_eq!(embeddings.len(), texts.len());
    embeddings
        .into_iter()
        .map(|e| {
            assert_eq!((e.model(), e.dim()), (MINILM_MODEL, 384));
            let norm = e.vector().iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
            e.into_vector()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The error every `embed` of an unloadable embedder gives, checked against `status`.
async fn unavailable(embedder: &OnnxEmbedder) -> String {
    let status = embedder.status().unwrap_err();
    match embedder.embed(vec!["hello".to_owned()]).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains(&status), "{message:?} does not carry the status {status:?}");
            assert!(message.contains("scripts/provision"), "{message:?} does not say how to fix it");
            message
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn published_similarities() {
    let Some(embedder) = embedder() else { return };
    let info = embedder.info();
    assert_eq!((info.model.as_str(), info.dim, info.max_tokens), (MINILM_MODEL, 384, 256));
    assert_eq!(embedder.status().unwrap(), info);

    let v =
        embed(embedder, &["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]).await;
    for ((i, j), expected) in [((0, 1), 0.6660), ((0, 2), 0.1046), ((1, 2), 0.1411)] {
        let got = cosine(&v[i], &v[j]);
        assert!((got - expected).abs() < 1e-3, "cosine({i}, {j}) = {got:.4}, published {expected}");
    }
}

#[tokio::test]
async fn empty_inputs() {
    let Some(embedder) = embedder() else { return };
    assert!(embedder.embed(Vec::new()).await.unwrap().is_empty());
    let v = embed(embedder, &["", "   "]).await;
    assert!(max_abs_diff(&v[0], &v[1]) < 1e-6, "blank texts are both just [CLS] [SEP]");
}

#[tokio::test]
async fn batches_keep_input_order_and_match_one_by_one() {
    let Some(embedder) = embedder() else { return };
    let long = "memory layers keep what an agent learned across sessions. ".repeat(20);
    let texts: Vec<String> = (0..23)
        .map(|i| match i % 4 {
            0 => format!("short note {i}"),
            1 => format!("{i}: {long}"),
            2 => format!("a middle-sized sentence about thread {i}, its messages and the plans derived from them"),
            _ => String::new(),
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let mut one_by_one = Vec::new();
    for text in &refs {
        one_by_one.extend(embed(embedder, &[text]).await);
    }
    // The shared embedder: one session, every text in one or two batches.
    let batched = embed(embedder, &refs).await;
    // Small batches run on two sessions at once.
    let mut config = provisioned().unwrap();
    (config.sessions, config.max_batch_size, config.max_batch_tokens) = (2, 3, 300);
    let parallel = OnnxEmbedder::new(config);
    let parallel = embed(&parallel, &refs).await;

    for (i, single) in one_by_one.iter().enumerate() {
        for (how, got) in [("batched", &batched[i]), ("parallel", &parallel[i])] {
            let diff = max_abs_diff(single, got);
            assert!(diff <= 1e-5, "text {i} {how}: differs from one-by-one by {diff}");
        }
    }
    // Neighbours really differ, so a permutation would have been caught.
    assert!(max_abs_diff(&one_by_one[0], &one_by_one[4]) > 1e-3);
}

#[tokio::test]
async fn long_texts_are_truncated_not_rejected() {
    let Some(embedder) = embedder() else { return };
    let words: Vec<String> = (0..2000).map(|i| format!("word{}", i % 97)).collect();
    let text = words.join(" ");
    let longer = format!("{text} and then many more words that the model never sees {}", "tail ".repeat(300));
    let v = embed(embedder, &[&text, &longer]).await;
    let diff = max_abs_diff(&v[0], &v[1]);
    assert!(diff <= 1e-5, "words past the limit changed the vector by {diff}");

    // The limit is 256, not the 128 that tokenizer.json ships with: ~135
    // tokens and the same ~135 followed by ~70 others must differ.
    let head = "the quick brown fox jumps over the lazy dog ".repeat(15);
    let more = format!("{head}{}", "markets and interest rates moved sharply during the quarter ".repeat(7));
    let v = embed(embedder, &[&head, &more]).await;
    let diff = max_abs_diff(&v[0], &v[1]);
    assert!(diff > 1e-3, "tokens 129 to 256 were ignored (diff {diff}): truncation is not 256");
}

#[tokio::test]
async fn agrees_with_the_python_reference() {
    let Some(embedder) = embedder() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = default_cache_dir().join("python/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/provision", python.display());
    let dir = tempfile::tempdir().unwrap();
    let (texts_path, vectors_path) = (dir.path().join("texts.jsonl"), dir.path().join("vectors.jsonl"));

    run(Command::new("python3")
        .arg(root.join("scripts/corpus.py"))
        .args(["--count", "200", "--output"])
        .arg(&texts_path));
    run(Command::new(&python)
        .arg(root.join("scripts/embed_reference.py"))
        .arg("--model-dir")
        .arg(&embedder.config().model_dir)
        .arg("--input")
        .arg(&texts_path)
        .arg("--output")
        .arg(&vectors_path));

    let texts: Vec<String> = jsonl(&texts_path).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reference: Vec<Vec<f32>> = jsonl(&vectors_path).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((texts.len(), reference.len()), (200, 200));
    let ours = embedder.embed(texts).await.unwrap();
    let mut worst = (f64::INFINITY, 0);
    for (i, (ours, theirs)) in ours.iter().zip(&reference).enumerate() {
        let c = cosine(ours.vector(), theirs);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    eprintln!("lowest cosine to the Python reference over 200 texts: {:.9} (text {})", worst.0, worst.1);
    assert!(worst.0 >= 0.9999, "text {} has cosine {} to the Python reference", worst.1, worst.0);
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The non-blank lines of a JSONL file.
fn jsonl(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

#[tokio::test]
async fn missing_model_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = OnnxEmbedder::new(OnnxConfig::from_cache_dir(dir.path()));
    let message = unavailable(&embedder).await;
    assert!(message.contains("all-MiniLM-L6-v2"), "{message}");

    // Model files present but no runtime.
    let model_dir = dir.path().join("models/all-MiniLM-L6-v2");
    fs::create_dir_all(&model_dir).unwrap();
    fs::write(model_dir.join("model.onnx"), b"x").unwrap();
    fs::write(model_dir.join("tokenizer.json"), b"{}").unwrap();
    let embedder = OnnxEmbedder::new(OnnxConfig::from_cache_dir(dir.path()));
    let message = unavailable(&embedder).await;
    assert!(message.contains("onnx runtime not found"), "{message}");
}

/// A temporary copy of the provisioned model directory.
fn copy_model(config: &OnnxConfig) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for file in ["model.onnx", "tokenizer.json", "manifest.json", "config.json"] {
        fs::copy(config.model_dir.join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[tokio::test]
async fn corrupt_files_are_unavailable() {
    let Some(config) = provisioned() else { return };
    let with =
        |model_dir: &Path| OnnxEmbedder::new(OnnxConfig { model_dir: model_dir.to_path_buf(), ..config.clone() });

    // The intact copy loads.
    let (_keep, dir) = copy_model(&config);
    assert!(with(&dir).status().is_ok(), "{:?}", with(&dir).status());

    // Garbage model, caught by the manifest's sha256.
    fs::write(dir.join("model.onnx"), b"this is not an onnx graph").unwrap();
    let message = unavailable(&with(&dir)).await;
    assert!(message.contains("model.onnx") && message.contains("corrupt"), "{message}");

    // Without a manifest, onnxruntime itself rejects it.
    fs::remove_file(dir.join("manifest.json")).unwrap();
    let message = unavailable(&with(&dir)).await;
    assert!(message.contains("model.onnx") && message.contains("could not be loaded"), "{message}");

    // A flipped byte in the middle of the weights: only the manifest sees it.
    let (_keep, dir) = copy_model(&config);
    let mut bytes = fs::read(dir.join("model.onnx")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(dir.join("model.onnx"), bytes).unwrap();
    let message = unavailable(&with(&dir)).await;
    assert!(message.contains("sha256"), "{message}");

    // A garbage tokenizer, without a manifest.
    let (_keep, dir) = copy_model(&config);
    fs::remove_file(dir.join("manifest.json")).unwrap();
    fs::write(dir.join("tokenizer.json"), b"{ not json").unwrap();
    let message = unavailable(&with(&dir)).await;
    assert!(message.contains("tokenizer.json"), "{message}");
}

/// The interactive lane gives the batch lane's vectors, in order, to every
/// one of many concurrent calls (which it gathers into shared batches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_calls_get_the_batch_lanes_vectors_when_concurrent() {
    let Some(embedder) = embedder() else { return };
    let texts: Vec<String> = (0..24).map(|i| format!("question {i}: where did we put the {} keys?", i * 7)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = embed(embedder, &refs).await;

    let calls = texts.chunks(2).map(|pair| {
        let embedder = embedder.clone();
        let pair = pair.to_vec();
        tokio::spawn(async move { embedder.embed_interactive(pair).await })
    });
    let mut got = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        got.extend(call.await.unwrap().unwrap().into_iter().map(memlayer_domain::Embedding::into_vector));
    }
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let diff = max_abs_diff(g, e);
        assert!(diff <= 1e-5, "text {i}: the interactive vector differs from the batch one by {diff}");
    }
    assert!(embedder.embed_interactive(Vec::new()).await.unwrap().is_empty());
}
