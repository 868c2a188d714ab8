//! Loading, once per embedder: the ONNX Runtime library (once per process),
//! the provisioning manifest, the tokenizer and the pool of sessions.
//!
//! Every failure becomes a message that names the file at fault and ends
//! with [`FIX`]; nothing here panics on bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::batch;
use super::{DIM, MAX_TOKENS, MINILM_MODEL, OnnxConfig};

/// How to repair any load failure; every error message ends with it.
const FIX: &str =
    "run scripts/provision, or point MEMLAYER_CACHE_DIR (or the embedding.* settings) at a provisioned cache";
/// The graph output read: mean-pooled over the mask and L2-normalised.
pub(crate) const OUTPUT: &str = "sentence_embedding";
/// The graph inputs, all int64 `[batch, seq]`.
pub(crate) const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
const MODEL_FILE: &str = "model.onnx";
const TOKENIZER_FILE: &str = "tokenizer.json";
const MANIFEST_FILE: &str = "manifest.json";

/// The ONNX Runtime library is process-global: `ort` loads one, once. The
/// first embedder to load records which; a later one asking for another file
/// gets an error instead of silently running on the first.
static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// One session with the run options that select its output. `Session::run`
/// takes `&mut self`, so a slot is used by one batch at a time.
pub(crate) struct Slot {
    pub session: Session,
    pub options: RunOptions<HasSelectedOutputs>,
}

/// Everything a loaded embedder needs to run.
pub(crate) struct Loaded {
    pub tokenizer: Tokenizer,
    pub pad_id: u32,
    /// The batch lane's `config.sessions` sessions.
    pub slots: Vec<Slot>,
    /// The interactive lane's `config.interactive_sessions` sessions.
    pub interactive: Vec<Slot>,
}

/// Loads the runtime, checks the model directory against its manifest, and
/// builds the tokenizer, `config.sessions` sessions for batches and
/// `config.interactive_sessions` for interactive calls.
pub(crate) fn load(config: &OnnxConfig) -> Result<Loaded, String> {
    let dir = &config.model_dir;
    if !dir.is_dir() {
        return Err(format!("embedding model not found: {} does not exist; {FIX}", dir.display()));
    }
    let model_path = dir.join(MODEL_FILE);
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    for path in [&model_path, &tokenizer_path] {
        if !path.is_file() {
            return Err(format!("embedding model incomplete: {} is missing; {FIX}", path.display()));
        }
    }
    let environment = environment(&config.runtime_library)?;
    let manifest = Manifest::read(dir)?;

    let tokenizer_bytes = read(&tokenizer_path)?;
    manifest.verify(TOKENIZER_FILE, &tokenizer_path, &tokenizer_bytes)?;
    let (tokenizer, pad_id) = tokenizer(&tokenizer_bytes)
        .map_err(|e| format!("tokenizer {} could not be loaded (corrupt?): {e}; {FIX}", tokenizer_path.display()))?;

    let model_bytes = read(&model_path)?;
    manifest.verify(MODEL_FILE, &model_path, &model_bytes)?;
    let batch = config.sessions.max(1);
    let mut slots = Vec::with_capacity(batch + config.interactive_sessions.max(1));
    for _ in 0..batch + config.interactive_sessions.max(1) {
        let slot = session(&environment, &model_bytes, config.intra_threads.max(1)).map_err(|e| {
            format!("model {} could not be loaded by onnx runtime (corrupt?): {e}; {FIX}", model_path.display())
        })?;
        slots.push(slot);
    }
    drop(model_bytes);
    let first = slots.first_mut().ok_or_else(|| "no session was created".to_owned())?;
    check_signature(&mut first.session).map_err(|e| format!("model {} {e}; {FIX}", model_path.display()))?;
    let interactive = slots.split_off(batch);
    Ok(Loaded { tokenizer, pad_id, slots, interactive })
}

/// The process's ONNX Runtime environment, loading `library` on first use.
fn environment(library: &Path) -> Result<Environment, String> {
    if !library.is_file() {
        return Err(format!("onnx runtime not found: {} does not exist; {FIX}", library.display()));
    }
    // `ort` resolves a relative path against the executable, not the working
    // directory; hand it an absolute one.
    let wanted =
        fs::canonicalize(library).or_else(|_| std::path::absolute(library)).unwrap_or_else(|_| library.to_path_buf());
    let mut loaded = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((path, environment)) = loaded.as_ref() {
        return if *path == wanted {
            Ok(environment.clone())
        } else {
            Err(format!(
                "onnx runtime {} was already loaded in this process, it cannot also load {}: \
                 use one runtime library per process",
                path.display(),
                wanted.display()
            ))
        };
    }
    let environment = ort::init_from(&wanted)
        .map_err(|e| format!("onnx runtime {} could not be loaded: {e}; {FIX}", wanted.display()))?
        .with_name("memlayer")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("onnx runtime {} could not start: {e}; {FIX}", wanted.display()))?;
    tracing::info!(library = %wanted.display(), "onnx runtime loaded");
    *loaded = Some((wanted, environment.clone()));
    Ok(environment)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{} could not be read: {e}; {FIX}", path.display()))
}

/// The tokenizer with the shipped settings overridden: truncation to
/// [`MAX_TOKENS`] (the shipped 128 would cut long texts short) and no padding
/// (batches are padded to their longest row by [`batch::pad`]).
fn tokenizer(bytes: &[u8]) -> Result<(Tokenizer, u32), String> {
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: MAX_TOKENS,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| e.to_string())?;
    let pad_id = tokenizer.token_to_id("[PAD]").ok_or("it has no [PAD] token")?;
    Ok((tokenizer, pad_id))
}

/// One CPU session: `intra_threads` intra-op threads (not spinning when
/// idle), sequential execution, all graph optimisations (onnxruntime's
/// default, as in the Python reference).
fn session(environment: &Environment, model: &[u8], intra_threads: usize) -> ort::Result<Slot> {
    let session = Session::builder(environment)?
        .with_intra_threads(intra_threads)?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_log_level(LogLevel::Error)?
        // Idle intra-op threads sleep instead of spin-waiting: the embedder
        // shares the cores with the async runtime and the stores, and on a
        // busy 2-core machine spinning threads were slower, not faster.
        .with_config_entry("session.intra_op.allow_spinning", if intra_threads > 1 { "0" } else { "1" })?
        .commit_from_memory(model)?;
    let options = RunOptions::new()?.with_outputs(OutputSelector::no_default().with(OUTPUT));
    Ok(Slot { session, options })
}

/// Checks the graph's inputs and output, then runs `[CLS] [SEP]` through it
/// and checks the vector it gives.
fn check_signature(session: &mut Session) -> Result<(), String> {
    for name in INPUTS {
        if !session.inputs().iter().any(|i| i.name() == name) {
            return Err(format!("has no input `{name}`"));
        }
    }
    if !session.outputs().iter().any(|o| o.name() == OUTPUT) {
        return Err(format!("has no output `{OUTPUT}`"));
    }
    let padded = batch::pad(&[vec![101, 102]], 0);
    let options = RunOptions::new().map_err(|e| e.to_string())?.with_outputs(OutputSelector::no_default().with(OUTPUT));
    let vectors = super::run(session, &options, &padded).map_err(|e| format!("fails a test run: {e}"))?;
    match vectors.first() {
        Some(v) if v.len() == DIM => Ok(()),
        Some(v) => Err(format!("gives {}-dimensional vectors, {MINILM_MODEL} has {DIM}", v.len())),
        None => Err("gives no vector".to_owned()),
    }
}

/// `manifest.json` as written by `scripts/provision`: the model name and the
/// sha256 of each file. Absent means unchecked (a hand-made model directory).
struct Manifest(Option<serde_json::Value>);

impl Manifest {
    fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            tracing::warn!(dir = %dir.display(), "no manifest.json: model files are not checked against their sha256");
            return Ok(Self(None));
        }
        let value: serde_json::Value = serde_json::from_slice(&read(&path)?)
            .map_err(|e| format!("{} is not valid JSON: {e}; {FIX}", path.display()))?;
        match value.get("model").and_then(serde_json::Value::as_str) {
            Some(MINILM_MODEL) => {}
            other => {
                return Err(format!(
                    "{} holds model {}, expected {MINILM_MODEL}; {FIX}",
                    dir.display(),
                    other.unwrap_or("(unnamed)")
                ));
            }
        }
        Ok(Self(Some(value)))
    }

    /// Checks `bytes` (the content of `file`) against the recorded size and sha256.
    fn verify(&self, file: &str, path: &Path, bytes: &[u8]) -> Result<(), String> {
        let Some(manifest) = &self.0 else { return Ok(()) };
        let entry = &manifest["files"][file];
        let (Some(size), Some(want)) = (entry["bytes"].as_u64(), entry["sha256"].as_str()) else {
            return Err(format!("manifest.json has no size and sha256 for {file}; {FIX}"));
        };
        if size != bytes.len() as u64 {
            return Err(format!(
                "embedding model corrupt: {} is {} bytes, manifest.json says {size}; {FIX}",
                path.display(),
                bytes.len()
            ));
        }
        let got = hex(&Sha256::digest(bytes));
        if got != want {
            return Err(format!(
                "embedding model corrupt: {} has sha256 {got}, manifest.json says {want}; {FIX}",
                path.display()
            ));
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
